"""Text generation: instruction/completion and chat (causal LMs) or source/target (seq2seq). Primary metric: rougeL.

Data formats, detected from an explicit list of column pairs unless configured:

- prompt/completion columns (``data.text_column`` + ``data.target_column``, or detected: prompt/completion,
  source/target, input/output, instruction/response, context/reply, question/answer);
- chat messages (``data.messages_column``, or a ``messages`` column): a list of ``{role, content}`` (or its JSON
  text) ending with the assistant turn to learn; the turns before it are the prompt.

Records: id, prompt (as the model saw it), input, reference, prediction, the reference's negative log-likelihood and
token count, and per-example ROUGE/exact match. Metrics: ROUGE-1/2/L/Lsum (stemmed), BLEU and chrF (sacrebleu),
exact match, perplexity of the references; bootstrap intervals for each (per-example means for ROUGE and exact
match, resampled corpus scores for BLEU, chrF and perplexity).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from adaptlab.data.split import drop_shared_groups
from adaptlab.errors import DataError, UserError, did_you_mean
from adaptlab.reporting.sections import RunResults, Section
from adaptlab.tasks import TASKS, _generation_report
from adaptlab.tasks._settings import GenerationSettings

#: (input column, output column) pairs recognised when data.target_column is not set, in this order.
COLUMN_PAIRS = (
    ("prompt", "completion"), ("source", "target"), ("input", "output"), ("instruction", "response"),
    ("context", "reply"), ("question", "answer"), ("text", "target"), ("text", "summary"),
)
MESSAGES = "messages"
#: Alpaca's columns: the instruction, an optional input (often empty) that goes under it, the reference output.
ALPACA = ("instruction", "input", "output")
log = logging.getLogger(__name__)
METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf", "exact_match", "perplexity")
CORPUS_RESAMPLES = 200
ROLES = ("system", "user", "assistant", "tool")


@dataclass
class GenSplit:
    """One split of a generation dataset: inputs (texts or chat messages before the answer) and references."""

    ids: list[str]
    inputs: list[Any]
    references: list[str]
    pairs: None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, index: Any) -> GenSplit:
        idx = list(index)
        return GenSplit(ids=[self.ids[i] for i in idx], inputs=[self.inputs[i] for i in idx],
                        references=[self.references[i] for i in idx])

    @property
    def texts(self) -> list[str]:
        """The inputs as text (chat messages as JSON)."""
        return [x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in self.inputs]



@dataclass
class GenerationData:
    train: GenSplit
    validation: GenSplit
    test: GenSplit
    format: str
    columns: dict[str, str]
    dropped_for_groups: int = 0

    def meta(self) -> dict[str, Any]:
        return {"label_names": [], "label_descriptions": {}, "format": self.format, "columns": self.columns,
                "dropped_for_groups": self.dropped_for_groups}


def detect_format(spec: Any, frame: pd.DataFrame, source: str) -> tuple[str, dict[str, str]]:
    """("chat", {"messages": col}) or ("completion", {"input": col, "target": col}) for this data spec and frame."""
    data = spec.data
    columns = [str(c) for c in frame.columns if c != "_row"]
    if data.messages_column or (MESSAGES in columns and not data.target_column):
        col = data.messages_column or MESSAGES
        if col not in columns:
            raise DataError(f"{source}: column '{col}' (data.messages_column) not found.{did_you_mean(col, columns)} "
                            f"Columns: {', '.join(columns)}.")
        _warn_unused_pair(data, columns, source)
        return "chat", {"messages": col}
    if data.target_column:
        missing = [c for c in (data.text_column, data.target_column) if c not in columns]
        if missing:
            hint = did_you_mean(missing[0], columns)
            raise DataError(f"{source}: column '{missing[0]}' not found.{hint} Columns: {', '.join(columns)}.")
        return "completion", {"input": data.text_column, "target": data.target_column}
    found = _known_columns(columns)
    if found and "text_column" in data.model_fields_set and found["input"] != data.text_column:
        raise DataError(f"{source}: data.text_column is '{data.text_column}' but data.target_column is not set, and "
                        f"the columns read as {found['input']}/{found['target']}; set data.target_column too.")
    if found:
        return "completion", found
    pairs = ", ".join(f"{a}/{b}" for a, b in COLUMN_PAIRS)
    raise DataError(
        f"{source}: cannot tell which columns hold the input and the reference output. Set data.text_column and "
        f"data.target_column (or data.messages_column for chat data). Recognised pairs: {pairs}, Alpaca's "
        f"instruction/input/output, or a 'messages' column. Columns: {', '.join(columns)}."
    )


def _warn_unused_pair(data: Any, columns: list[str], source: str) -> None:
    """Chat messages read by default where the columns also hold an input/output pair: say which was taken."""
    found = None if data.messages_column else _known_columns(columns)
    if found:
        log.warning("%s: read the '%s' column as chat messages and ignored the %s/%s columns; set data.target_column "
                    "(and data.text_column) to train on those instead, or data.messages_column to silence this.",
                    source, MESSAGES, found["input"], found["target"])


def _known_columns(columns: list[str]) -> dict[str, str] | None:
    """The input and target columns of a known layout: the first of :data:`COLUMN_PAIRS` present, Alpaca's (its
    optional input as ``context``) taking the place of input/output."""
    alpaca = ALPACA[0] in columns and ALPACA[2] in columns
    for i, o in COLUMN_PAIRS:
        if alpaca and i == ALPACA[1]:  # beside an instruction, 'input' is Alpaca's optional part, not the input
            break
        if i in columns and o in columns:
            return {"input": i, "target": o}
    if alpaca:
        return {"input": ALPACA[0], "target": ALPACA[2], **({"context": ALPACA[1]} if ALPACA[1] in columns else {})}
    return None


def message_list(value: Any, where: str) -> list[dict[str, str]]:
    """A list of {role, content} messages from a cell (a list or its JSON text); DataError naming ``where``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise DataError(f"{where}: not a list of messages (invalid JSON). Give [{{\"role\": \"user\", "
                            "\"content\": ...}, {\"role\": \"assistant\", \"content\": ...}].") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else type(value).__name__
        raise DataError(f"{where}: expected a non-empty list of {{role, content}} messages, got {got}.")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: message {i + 1} must be an object with string 'role' and 'content'.")
        if m["role"] not in ROLES:
            raise DataError(f"{where}: message {i + 1} has role '{m['role']}'.{did_you_mean(m['role'], ROLES)} "
                            f"Roles: {', '.join(ROLES)}.")
        messages.append({"role": m["role"], "content": m["content"]})
    return messages


def parse_messages(value: Any, source: str, row: int, column: str) -> tuple[list[dict], str]:
    """(prompt messages, assistant answer) from one chat cell; DataError naming the row when it isn't usable."""
    where = f"{source}: row {row}, column '{column}'"
    messages = message_list(value, where)
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the conversation has no assistant turn at the end, so there is nothing to learn "
                        "or compare with. End each conversation with the assistant's reply.")
    if not messages[-1]["content"].strip():
        raise DataError(f"{where}: the final assistant turn is empty. Fill it in or drop the row.")
    if not any(m["role"] != "system" for m in messages[:-1]):
        raise DataError(f"{where}: the conversation has no user turn before the assistant's reply.")
    return messages[:-1], messages[-1]["content"]


def check_settings(spec: Any) -> str:
    """The primary metric (a generation metric, or one of the configured judges'); UserError listing every problem
    with it and with the judges' settings."""
    from adaptlab import judging

    judges = spec.task.judges
    metric = spec.task.primary_metric or "rougeL"
    allowed = [*METRICS, *(judges.metrics() if judges else [])]
    problems = judging.check(judges, [r.run_name for r in spec.rungs], writes_text=True, primary=metric)
    if metric not in allowed:
        hint = did_you_mean(metric, allowed)
        problems.insert(0, f"task.primary_metric: '{metric}' is not a generation metric.{hint} Choose one of: "
                        f"{', '.join(allowed)} (judge metrics need their judge in task.judges).")
    if problems:
        raise UserError("\n".join(problems))
    return metric


def _row_ids(frame: pd.DataFrame) -> list[int]:
    return [int(r) for r in frame["_row"]] if "_row" in frame else list(range(1, len(frame) + 1))


def _scored(records: list[dict]) -> tuple[dict[str, float], dict[str, list[float]], list[float]]:
    """(metrics, per-example ROUGE, per-example exact match) of prediction records; perplexity when every record
    has its reference's nll and token count."""
    from adaptlab.evaluation import metrics as M

    preds = [r["prediction"] for r in records]
    refs = [r["reference"] for r in records]
    per_example = M.rouge_per_example(preds, refs)
    exact = [float(M.normalize_answer(p) == M.normalize_answer(r)) for p, r in zip(preds, refs)]
    metrics = {t: float(np.mean(v)) for t, v in per_example.items()}
    metrics.update(bleu=M.bleu(preds, refs), chrf=M.chrf(preds, refs), exact_match=float(np.mean(exact)))
    if all("nll" in r and r.get("tokens") for r in records):
        nll = np.array([r["nll"] for r in records], dtype=np.float64)
        tokens = np.array([r["tokens"] for r in records], dtype=np.float64)
        metrics["perplexity"] = M.perplexity_from_nll(float(nll.sum()), int(tokens.sum()))
    return metrics, per_example, exact


@TASKS.register("generation")
class GenerationTask:
    Settings = GenerationSettings
    export_kind = "decoder"  # what `adaptlab export` ships for its runs
    primary_metric = "rougeL"
    stratify_role = None  # no labels to stratify by
    latency_examples = 10  # one generation per example is slow on CPU
    judges = None  # task.judges, set by prepare

    @property
    def selection_metric(self) -> str:
        """The primary metric, or ROUGE-L when the primary is a judge's (the judges score the test outputs once;
        validation has no judged outputs at each evaluation)."""
        return self.primary_metric if self.primary_metric in METRICS else "rougeL"

    def prepare(self, spec: Any, frames: dict[str, pd.DataFrame]) -> GenerationData:
        self.primary_metric = check_settings(spec)
        self.judges = spec.task.judges
        first = frames["train"]
        fmt, columns = detect_format(spec, first, first.attrs.get("source", "train"))
        frames, dropped = drop_shared_groups(frames, spec.data.group_column)
        splits = {name: self._split(frame, fmt, columns, name) for name, frame in frames.items()}
        if len(splits["train"]) == 0 and dropped:
            raise DataError(f"every training row shares a data.group_column ('{spec.data.group_column}') value with a "
                            "test row, so none is left to train on; use more groups or a smaller data.test_size.")
        if len(splits["train"]) == 0 or len(splits["test"]) == 0:
            raise DataError("the generation data needs training and test rows; one of the splits is empty.")
        return GenerationData(splits["train"], splits.get("validation") or GenSplit([], [], []), splits["test"],
                              fmt, columns, dropped)

    @staticmethod
    def _split(frame: pd.DataFrame, fmt: str, columns: dict[str, str], name: str) -> GenSplit:
        from adaptlab.data.columns import check_columns, clean_text_column

        if len(frame) == 0:
            return GenSplit([], [], [])
        source = frame.attrs.get("source", name)
        rows = _row_ids(frame)
        if fmt == "chat":
            col = columns["messages"]
            check_columns(frame, {"messages": col}, source)  # each file: a test file may lack what train has
            parsed = [parse_messages(v, source, r, col) for v, r in zip(frame[col].tolist(), rows)]
            return GenSplit([str(r) for r in rows], [p for p, _ in parsed], [a for _, a in parsed])
        check_columns(frame, {"text": columns["input"], "target": columns["target"]}, source)
        inputs = clean_text_column(frame, columns["input"], source).tolist()
        if columns.get("context") in frame.columns:  # Alpaca: the instruction, then its input when a row has one
            extra = ["" if pd.isna(v) else str(v).strip() for v in frame[columns["context"]].tolist()]
            inputs = [f"{x}\n\n{c}" if c else x for x, c in zip(inputs, extra)]
        targets = clean_text_column(frame, columns["target"], source).tolist()  # empty completions: DataError
        return GenSplit([str(r) for r in rows], inputs, targets)

    # -- predictions ---------------------------------------------------------------------------------------------
    def fingerprint(self, data: GenerationData) -> str:
        from adaptlab.runs.provenance import hash_records

        return hash_records([[name, s.ids, s.texts, s.references] for name, s in
                             (("train", data.train), ("validation", data.validation), ("test", data.test))])

    def inputs(self, split: GenSplit) -> list[str]:
        """Each example's input (the prompt, or the chat before the answer): what the overlap check compares."""
        from adaptlab.data.overlap import chat_text

        return [chat_text(x) for x in split.inputs]

    def encoder_objective(self, label_names: list[str], settings: Any) -> Any:
        raise UserError("the encoder rungs (head_only, top_layers, lora, full) do not do generation; use the lm_* "
                        "rungs.")

    def predict(self, method: Any, split: GenSplit) -> list[dict]:
        from adaptlab.evaluation.metrics import ROUGE_TYPES, normalize_answer, rouge_per_example

        predictions = method.generate(split.inputs)
        nll = method.reference_nll(split.inputs, split.references)
        per_example = rouge_per_example(predictions, split.references)
        records = []
        for i, (x, ref, pred) in enumerate(zip(split.inputs, split.references, predictions)):
            scores = {t: round(per_example[t][i], 6) for t in ROUGE_TYPES}
            scores["exact_match"] = float(normalize_answer(pred) == normalize_answer(ref))
            records.append({
                "id": split.ids[i], "prompt": method.render_prompt(x), "input": x, "reference": ref,
                "prediction": pred, "nll": round(nll[i][0], 6), "tokens": nll[i][1], "metrics": scores,
            })
        return records

    def predict_one(self, method: Any, split: GenSplit, i: int) -> Any:
        """One example's generation, for latency."""
        return method.generate([split.inputs[i]])

    # -- metrics --------------------------------------------------------------------------------------------------
    def baselines(self, data: Any, seed: int) -> dict[str, dict]:
        """No trivial reference output for generated text."""
        return {}

    def diagnose(self, records: list[dict], fit: dict, data: Any) -> None:
        """No degenerate-rung check for generated text yet."""
        return None

    def score(self, records: list[dict], meta: dict) -> dict[str, float]:
        """ROUGE, BLEU, chrF, exact match and perplexity, without intervals (cheap: run at each validation)."""
        return _scored(records)[0]

    def evaluate(self, records: list[dict], meta: dict) -> dict:
        from adaptlab.evaluation import metrics as M
        from adaptlab.evaluation.stats import bootstrap_interval, bootstrap_mean

        seed = meta.get("seed", 0)
        preds = [r["prediction"] for r in records]
        refs = [r["reference"] for r in records]
        metrics, per_example, exact = _scored(records)
        interval = {t: list(bootstrap_mean(v, seed=seed)) for t, v in per_example.items()}
        interval["exact_match"] = list(bootstrap_mean(exact, seed=seed))
        n = len(records)
        for name, corpus in (("bleu", M.bleu), ("chrf", M.chrf)):
            interval[name] = list(bootstrap_interval(
                lambda idx, f=corpus: f([preds[i] for i in idx], [refs[i] for i in idx]), n,
                n_resamples=CORPUS_RESAMPLES, seed=seed))
        if "perplexity" in metrics:
            nll = np.array([r["nll"] for r in records], dtype=np.float64)
            tokens = np.array([r["tokens"] for r in records], dtype=np.float64)
            interval["perplexity"] = list(bootstrap_interval(
                lambda idx: math.exp(nll[idx].sum() / tokens[idx].sum()), n, seed=seed))
        return {"metrics": metrics, "interval": interval, "n": n}

    def judge(self, method: Any, records: list[dict], site: Any) -> dict:
        """The configured judges (task.judges) of the rung's test outputs: reward, LLM judge, MMLU."""
        from adaptlab import judging

        return judging.judge(self.judges, site, records, method.language_model())

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
        """A paired bootstrap on per-example ROUGE / exact match, else on the corpus BLEU or chrF."""
        return _generation_report.paired_test(best, other, metric)

    def report_sections(self, runs: list[RunResults]) -> list[Section]:
        """The judges' metrics (when task.judges ran), then the rungs' outputs side by side on the same inputs."""
        from adaptlab.judging.report import judges_sections

        return judges_sections(runs) + _generation_report.report_sections(runs)
