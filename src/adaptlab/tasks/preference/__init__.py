"""Preference pairs: for a prompt, a chosen (preferred) and a rejected response. Primary metric: held-out
preference accuracy, the share of test pairs whose chosen response the rung scores above the rejected one.

Data (:mod:`.read`): prompt/chosen/rejected text columns (detected, or ``task.*_column``), or chat messages (the
responses as conversations ending with the assistant's reply, sharing their prompt turns, or with a prompt column),
from any file the readers take (JSONL, CSV, Parquet, saved datasets, builtins). Bad rows are DataErrors naming the
file and row.

What each rung scores (``score_pairs``, see :mod:`.data`): a generative rung the sum log-probability of the response
after the prompt (``base_preference``, the SFT rungs), DPO its implicit reward beta * (log pi - log pi_ref) against
its reference (the adapter switched off, or the frozen starting model), ORPO the log-odds of the response's mean
token probability, a reward model its scalar. Records per pair: id, prompt, chosen, rejected, score_chosen,
score_rejected, margin, correct, prediction (the response the rung prefers). Metrics and intervals: :mod:`.metrics`;
report and McNemar's paired test: :mod:`.report`. Baseline: the longer response wins (an honest lexical reference
point).

Real data offline: the ``chitchat_preference`` builtin (the true next reply chosen, a reply from another
conversation rejected; see :func:`adaptlab.data.builtins.chitchat_preference`)::

    task: {type: preference}
    data: {builtin: chitchat_preference, group_column: conversation_id, test_size: 0.1}

Export: none (``export_kind`` None). A DPO or ORPO rung is a LoRA adapter on a causal LM and would export as the
generation task's decoder does, but that export checks parity by greedy-decoding the recorded test prompts, which
preference runs don't record (they score pairs), and a reward model is a sequence classifier with one output;
``adaptlab export`` says so rather than ship an unchecked bundle.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from adaptlab.data.split import drop_shared_groups
from adaptlab.errors import DataError, UserError
from adaptlab.reporting.sections import RunResults, Section
from adaptlab.tasks import TASKS
from adaptlab.tasks.preference import read
from adaptlab.tasks.preference.data import PreferenceData, PreferenceSplit, empty_split
from adaptlab.tasks.preference.settings import PreferenceSettings

SPLITS = ("train", "validation", "test")


@TASKS.register("preference")
class PreferenceTask:
    Settings = PreferenceSettings
    export_kind = None  # see the module docstring
    primary_metric = "preference_accuracy"
    stratify_role = None  # pairs have no label to keep the mix of
    latency_examples = 20
    judges = None  # task.judges, set by prepare

    # -- data -----------------------------------------------------------------------------------------------------
    def prepare(self, spec: Any, frames: dict[str, pd.DataFrame]) -> PreferenceData:
        settings: PreferenceSettings = spec.task
        cols = read.resolve_columns(settings, frames["train"])
        fmt = read.detect_format(frames["train"], cols)
        frames, dropped = drop_shared_groups(frames, spec.data.group_column)
        splits = {name: read.read_split(frames[name], fmt, cols) if name in frames and len(frames[name])
                  else empty_split() for name in SPLITS}
        if not len(splits["train"]) and dropped:
            raise DataError(f"every training row shares a data.group_column ('{spec.data.group_column}') value with a "
                            "test row, so none is left to train on; use more groups or a smaller data.test_size.")
        for name in ("train", "test"):
            if not len(splits[name]):
                raise DataError(f"the {name} split has no pairs; give more data or a smaller data.test_size.")
        self.judges = _checked_judges(spec)
        return PreferenceData(fmt, cols, splits["train"], splits["validation"], splits["test"], dropped)

    @property
    def selection_metric(self) -> str:
        """Validation ranks checkpoints and tuning trials by the primary metric."""
        return self.primary_metric

    def fingerprint(self, data: PreferenceData) -> str:
        from adaptlab.runs.provenance import hash_records

        return hash_records([[data.format]] + [[name, s.ids, s.prompt_texts(), s.chosen, s.rejected] for name, s in
                                               (("train", data.train), ("validation", data.validation),
                                                ("test", data.test))])

    def inputs(self, split: Any) -> list[str]:
        """Each pair's prompt (a text or chat turns): what the overlap check compares."""
        from adaptlab.data.overlap import chat_text

        return [chat_text(p) for p in split.prompts]

    def encoder_objective(self, label_names: list[str], settings: Any) -> Any:
        raise UserError("the encoder rungs (head_only, top_layers, lora, full) train classifiers and can't learn "
                        "preference pairs; use base_preference, dpo, orpo, reward_model or the lm_* rungs.")

    # -- predictions ----------------------------------------------------------------------------------------------
    def predict(self, method: Any, split: PreferenceSplit) -> list[dict]:
        """One record per pair: the rung's score of each response and whether it prefers the chosen one."""
        chosen, rejected = method.score_pairs(split.prompts, split.chosen, split.rejected)
        prompts = split.prompt_texts()
        records = []
        for i in range(len(split)):
            sc, sr = float(chosen[i]), float(rejected[i])
            if not (np.isfinite(sc) and np.isfinite(sr)):
                raise UserError(f"the rung scored pair {split.ids[i]} as {sc} / {sr} (NaN or infinite): training "
                                "diverged? Lower the learning rate.")
            records.append({"id": split.ids[i], "prompt": prompts[i], "chosen": split.chosen[i],
                            "rejected": split.rejected[i], "score_chosen": round(sc, 6),
                            "score_rejected": round(sr, 6), "margin": round(sc - sr, 6), "correct": sc > sr,
                            "prediction": "chosen" if sc > sr else "rejected"})
        return records

    def predict_one(self, method: Any, split: PreferenceSplit, i: int) -> Any:
        return method.score_pairs([split.prompts[i]], [split.chosen[i]], [split.rejected[i]])

    # -- metrics --------------------------------------------------------------------------------------------------
    def score(self, records: list[dict], meta: dict) -> dict[str, float]:
        from adaptlab.tasks.preference.metrics import score

        return score(records)

    def evaluate(self, records: list[dict], meta: dict) -> dict:
        from adaptlab.tasks.preference.metrics import evaluate

        if not records:
            raise DataError("no test pairs to score: the test split is empty; give more data or a larger "
                            "data.test_size.")
        return {**evaluate(records, meta.get("seed", 0)), "n": len(records), "format": meta.get("format")}

    def baselines(self, data: PreferenceData, seed: int) -> dict[str, dict]:
        """The longer response wins (characters; a tie is wrong): how far length alone goes on these pairs."""
        from adaptlab.evaluation.stats import bootstrap_mean

        test = data.test
        if not len(test):
            return {}
        right = [float(len(c) > len(r)) for c, r in zip(test.chosen, test.rejected)]
        return {"longer_response_wins": {
            "value": float(np.mean(right)), "interval": list(bootstrap_mean(right, seed=seed)),
            "note": "prefer whichever response has more characters: length alone, no model",
        }}

    def diagnose(self, records: list[dict], fit: dict, data: PreferenceData) -> dict:
        """Degenerate when the rung scores the two responses of every pair the same (it tells nothing apart);
        doubted when it ties on most pairs."""
        if not records:
            return {"degenerate": False, "doubted": False, "findings": [], "advice": ""}
        ties = sum(float(r["score_chosen"]) == float(r["score_rejected"]) for r in records)
        findings = []
        if ties * 2 > len(records):
            findings.append(f"scores both responses the same on {ties} of {len(records)} pairs")
        return {"degenerate": ties == len(records), "doubted": bool(findings), "findings": findings,
                "advice": "check that the rung's scores depend on the response (training diverged or collapsed?)"
                if findings else ""}

    def judge(self, method: Any, records: list[dict], site: Any) -> dict:
        """task.judges.mmlu on the rung's language model (none for a reward model)."""
        from adaptlab import judging

        return judging.judge(self.judges, site, None, method.language_model())

    def judge_inputs(self) -> tuple[str | None, str | None]:
        """The configured judges' inputs beyond the rung (see :func:`adaptlab.judging.dependencies`)."""
        from adaptlab import judging

        return judging.dependencies(self.judges)

    def judge_ladder(self, ranked: list[str], site: Any) -> dict[str, dict]:
        """``task.judges.against: best``: every rung against the best one
        (:func:`adaptlab.judging.judge_against_best`)."""
        from adaptlab import judging

        return judging.judge_against_best(self.judges, site, ranked)

    # -- report ---------------------------------------------------------------------------------------------------
    def paired_test(self, best: list[dict], other: list[dict], metric: str) -> dict:
        """McNemar's test on per-pair correctness (preference accuracy)."""
        from adaptlab.tasks.preference.report import paired_test

        return paired_test(best, other, metric)

    def report_sections(self, runs: list[RunResults]) -> list[Section]:
        """Accuracy and margin of every rung, then the best rung's most wrong pairs."""
        from adaptlab.judging.report import judges_sections
        from adaptlab.tasks.preference.report import report_sections

        return report_sections(runs) + judges_sections(runs)


def _checked_judges(spec: Any) -> Any:
    """The task's judges; UserError listing every problem with them."""
    from adaptlab import judging

    judges = spec.task.judges
    problems = judging.check(judges, [r.run_name for r in spec.rungs], writes_text=False)
    if problems:
        raise UserError("\n".join(problems))
    return judges


__all__ = ["PreferenceData", "PreferenceSettings", "PreferenceSplit", "PreferenceTask"]
