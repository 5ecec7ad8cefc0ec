"""Reward scoring: a finished run scores every rung's test outputs.

A reward-model run (the preference task's ``reward_model`` rung) gives the scalar reward of prompt + response; a
classification run gives the probability of ``target_label`` for the response alone. Per rung: the mean reward and
the win rate against the ``against`` rung's outputs on the same inputs (a higher reward wins, a tie counts half),
each with a 95% bootstrap interval over test examples.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.errors import UserError
from adaptlab.evaluation.stats import bootstrap_mean

#: (prompts, responses a, responses b) -> (reward of each a, reward of each b)
Scorer = Callable[[Sequence[Any], Sequence[str], Sequence[str]], tuple[np.ndarray, np.ndarray]]


def run_labels(run: Path) -> list[str]:
    """The labels a finished run predicts (empty for a reward model); UserError when it is not a run folder."""
    try:
        info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"task.judges.reward.run: {run} is not a finished run folder (no readable run.json); give "
                        "<output>/<rung> of a reward_model or classification rung.") from None
    return list(info.get("context", {}).get("label_names") or [])


def check(spec: Any) -> list[str]:
    """Problems with the reward judge's settings, found without loading the run's weights."""
    run = Path(spec.run).expanduser()
    try:
        labels = run_labels(run)
    except UserError as e:
        return [str(e)]
    if labels and spec.target_label is None:
        return [f"task.judges.reward: {run} is a classification run (labels: {', '.join(labels)}); set target_label "
                "to the label whose probability is the reward."]
    if spec.target_label is not None and spec.target_label not in labels:
        which = f"its labels are: {', '.join(labels)}" if labels else "it has no labels (a reward model)"
        return [f"task.judges.reward.target_label: '{spec.target_label}' is not a label of {run}; {which}."]
    return []


def build_scorer(spec: Any, load_run: Callable[[Path], tuple]) -> Scorer:
    """The scorer of a finished run (loaded with the pipeline's ``load_run``)."""
    run = Path(spec.run).expanduser()
    problems = check(spec)
    if problems:
        raise UserError(problems[0])
    _, method, _ = load_run(run)
    if spec.target_label is None:
        def reward(prompts: Sequence[Any], a: Sequence[str], b: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
            ra, rb = method.score_pairs(list(prompts), list(a), list(b))
            return np.asarray(ra, dtype=float), np.asarray(rb, dtype=float)
        return reward
    column = method.label_names.index(spec.target_label)

    def probability(prompts: Sequence[Any], a: Sequence[str], b: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        texts = list(a) + list(b)
        out = np.concatenate([method.predict_proba(texts[i:i + spec.batch_size])[:, column]
                              for i in range(0, len(texts), spec.batch_size)]).astype(float)
        return out[: len(a)], out[len(a):]
    return probability


def judge(scorer: Scorer, prompts: Sequence[Any], outputs: Sequence[str], against: Sequence[str],
          seed: int) -> dict:
    """reward_mean and reward_win_rate (against the other rung's outputs, ties half), with intervals."""
    mine, theirs = scorer(prompts, outputs, against)
    wins = np.where(mine > theirs, 1.0, np.where(mine == theirs, 0.5, 0.0))
    return {"metrics": {"reward_mean": float(mine.mean()), "reward_win_rate": float(wins.mean())},
            "interval": {"reward_mean": list(bootstrap_mean(mine, seed=seed)),
                         "reward_win_rate": list(bootstrap_mean(wins, seed=seed))},
            "detail": {"against_reward_mean": float(theirs.mean()), "n": len(outputs)}}
