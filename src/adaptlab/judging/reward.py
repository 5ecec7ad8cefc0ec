"""Reward scoring: a finished run scores every rung's test outputs.

A reward-model run (the preference task's ``reward_model`` rung) gives the scalar reward of prompt + response; a
classification run gives the probability of ``target_label`` for the response alone. Per rung: the mean reward and
the win rate against the ``against`` rung's outputs on the same inputs (a higher reward wins, a tie counts half),
each with a 95% bootstrap interval over test examples.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.errors import UserError
from adaptlab.evaluation.stats import bootstrap_mean
from adaptlab.runtime import kernels_as, kernels_kept, kernels_now

#: (prompts, responses) -> the reward of each response to its prompt
Scorer = Callable[[Sequence[Any], Sequence[str]], np.ndarray]

#: The method of the runs that score prompt + response with no labels (the preference task's reward model).
REWARD_MODEL = "reward_model"


#: The file that makes a folder an exported bundle (adaptlab.bundle.MANIFEST).
MANIFEST = "manifest.json"


def run_digest(run: str | Path) -> str:
    """A digest of a finished run's records (run.json and metrics.json, which change whenever it re-runs; a bundle's
    manifest): part of the resume hash of whatever it rewards or judges. Unreadable files count as missing."""
    digest = hashlib.sha256(str(Path(run).expanduser().resolve()).encode("utf-8"))
    for name in ("run.json", "metrics.json", MANIFEST):
        try:
            digest.update((Path(run).expanduser() / name).read_bytes())
        except OSError:
            digest.update(b"missing")
    return digest.hexdigest()


def source(run: Path, field: str) -> tuple[list[str], str | None]:
    """(labels, method) of what gives the reward: an exported classifier bundle (method None) or a finished
    classification or reward_model run; UserError naming ``field`` (the setting that gave the folder) otherwise."""
    if (run / MANIFEST).is_file():
        manifest = read_object(run / MANIFEST, field, "export the bundle again")
        kind = manifest.get("export_kind") or ("classifier" if manifest.get("task") == "classification" else None)
        if kind != "classifier" or not manifest.get("labels"):
            raise UserError(f"{field}: {run} is a {kind or manifest.get('task')} bundle; a reward bundle must be a "
                            "classifier (export a classification rung), or give a reward_model run folder.")
        return single_texts(list(manifest["labels"]), manifest, run, field), None
    if not (run / "run.json").is_file():
        raise UserError(f"{field}: {run} is neither a finished run folder nor an exported bundle; give "
                        "<output>/<rung> of a reward_model or classification rung, or a classifier bundle.")
    info = read_object(run / "run.json", field, "re-run that rung")
    status = read_object(run / "metrics.json", field, "re-run that rung").get("status")
    if status != "ok":
        raise UserError(f"{field}: {run} did not finish (status: {status}); re-run that rung, then this ladder.")
    task, method = info.get("context", {}).get("task"), info.get("rung", {}).get("method")
    if task == "classification":
        return single_texts(list(info["context"].get("label_names") or []), info, run, field), method
    if method != REWARD_MODEL:
        raise UserError(f"{field}: {run} is a '{method}' rung of a {task} ladder, which gives no reward; give a "
                        f"{REWARD_MODEL} rung of a preference ladder, or a classification rung (or its bundle) "
                        "with target_label.")
    return [], method


def read_object(path: Path, field: str, fix: str) -> dict:
    """A JSON object from ``path``; UserError naming ``field`` and the fix when it is missing or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise UserError(f"{field}: {path} is missing or not a JSON object; {fix}.")
    return value


def single_texts(labels: list[str], record: dict, run: Path, field: str) -> list[str]:
    """``labels``, once the classifier is known to read single texts: a reward scores one text, and a classifier
    trained on text pairs would read it without its second text."""
    data = record.get("data")
    if record.get("text_pair") is True or (isinstance(data, dict) and data.get("text_pair_column")):
        raise UserError(f"{field}: {run} was trained on text pairs; a reward scores one text. Give a classifier "
                        "trained on single texts.")
    return labels


def check(spec: Any, field: str = "task.judges.reward") -> list[str]:
    """Problems with reward settings ({run, target_label}, given as ``field``), found without loading weights."""
    run = Path(spec.run).expanduser()
    try:
        labels, _ = source(run, field)
    except UserError as e:
        return [str(e)]
    if labels and spec.target_label is None:
        return [f"{field}: {run} is a classifier (labels: {', '.join(labels)}); set target_label to the label whose "
                "probability is the reward."]
    if spec.target_label is not None and spec.target_label not in labels:
        which = f"its labels are: {', '.join(labels)}" if labels else "it has no labels"
        return [f"{field}.target_label: '{spec.target_label}' is not a label of {run}; {which}."]
    return []


def build_scorer(spec: Any, load: Callable[[Path], tuple], field: str = "task.judges.reward") -> Scorer:
    """The scorer of a finished run or bundle (loaded with the pipeline's ``load``: (task, scorer, record)): a
    reward model's reward of prompt + response, or a classifier's probability of ``target_label`` for the response
    alone."""
    run = Path(spec.run).expanduser()
    problems = check(spec, field)
    if problems:
        raise UserError(problems[0])
    labels, _ = source(run, field)
    with kernels_kept():  # loading sets the kernels the scorer predicts with; the rung calling it keeps its own
        _, method, _ = load(run)
        own = kernels_now()
    if spec.target_label is None:
        def reward(prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
            with kernels_as(own):
                return np.asarray(method.score_responses(list(prompts), list(responses)), dtype=float)
        return reward
    column = labels.index(spec.target_label)

    def probability(prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        texts = list(responses)
        if not texts:
            return np.zeros(0, dtype=float)
        with kernels_as(own):
            return np.concatenate([np.asarray(method.predict_proba(texts[i:i + spec.batch_size]))[:, column]
                                   for i in range(0, len(texts), spec.batch_size)]).astype(float)
    return probability


def mean_reward(scorer: Scorer, prompts: Sequence[Any], outputs: Sequence[str], seed: int) -> dict:
    """reward_mean alone, with its interval (no rung to compare with yet)."""
    mine = scorer(prompts, outputs)
    return {"metrics": {"reward_mean": float(mine.mean())},
            "interval": {"reward_mean": list(bootstrap_mean(mine, seed=seed))}, "detail": {"n": len(outputs)}}


def judge(scorer: Scorer, prompts: Sequence[Any], outputs: Sequence[str], against: Sequence[str],
          seed: int) -> dict:
    """reward_mean and reward_win_rate (against the other rung's outputs, ties half), with intervals."""
    mine, theirs = scorer(prompts, outputs), scorer(prompts, against)
    wins = np.where(mine > theirs, 1.0, np.where(mine == theirs, 0.5, 0.0))
    return {"metrics": {"reward_mean": float(mine.mean()), "reward_win_rate": float(wins.mean())},
            "interval": {"reward_mean": list(bootstrap_mean(mine, seed=seed)),
                         "reward_win_rate": list(bootstrap_mean(wins, seed=seed))},
            "detail": {"against_reward_mean": float(theirs.mean()), "n": len(outputs)}}
