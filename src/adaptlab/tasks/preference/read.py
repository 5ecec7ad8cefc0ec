"""Frames -> preference pairs: which columns hold the prompt and the two responses, text or chat, and every check
that names the file (``frame.attrs["source"]``), the row (``_row``) and the fix.

Two shapes of rows:

- text: a prompt column and two response columns of plain text (``prompt``/``chosen``/``rejected`` and the other
  names in :data:`COLUMN_SETS`);
- chat: the responses are chat messages (a list of ``{role, content}``, or its JSON text) ending with the
  assistant's reply. The prompt is either a prompt column (text or messages) or, without one, the turns before the
  reply, which the chosen and the rejected conversation must share (trl's "implicit prompt").

Refused, naming the rows: a missing value (pandas reads empty cells as NaN), an empty response, a pair whose
chosen and rejected responses are the same (it says nothing about what is preferred), messages that are not a list
of ``{role, content}``, a conversation that does not end with the assistant's reply, chosen and rejected
conversations whose prompt turns differ.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from adaptlab.data.columns import ROW_COLUMN, clean_text_column, row_numbers
from adaptlab.errors import DataError, did_you_mean
from adaptlab.tasks.generation import message_list
from adaptlab.tasks.preference.data import Format, PreferenceSplit
from adaptlab.tasks.preference.settings import PreferenceSettings

#: (prompt, chosen, rejected) column names recognised when the task's *_column settings are not set, in this order;
#: None: no prompt column (chat pairs whose conversations carry the prompt).
COLUMN_SETS: tuple[tuple[str | None, str, str], ...] = (
    ("prompt", "chosen", "rejected"), ("question", "chosen", "rejected"), ("instruction", "chosen", "rejected"),
    ("context", "chosen", "rejected"), ("input", "chosen", "rejected"), ("query", "chosen", "rejected"),
    ("prompt", "response_chosen", "response_rejected"), ("question", "response_j", "response_k"),
    (None, "chosen", "rejected"),
)
MAX_LISTED = 10


def resolve_columns(settings: PreferenceSettings, frame: pd.DataFrame) -> dict[str, str | None]:
    """{"prompt", "chosen", "rejected"} -> column (prompt may be None); DataError when nothing fits."""
    source = frame.attrs.get("source", "train")
    columns = [str(c) for c in frame.columns if c != ROW_COLUMN]
    given = {"prompt": settings.prompt_column, "chosen": settings.chosen_column,
             "rejected": settings.rejected_column}
    for prompt, chosen, rejected in COLUMN_SETS:
        found = {"prompt": given["prompt"] or prompt, "chosen": given["chosen"] or chosen,
                 "rejected": given["rejected"] or rejected}
        if all(c is None or c in columns for c in found.values()):
            return found
    for role, column in given.items():
        if column and column not in columns:
            raise DataError(f"{source}: no column '{column}' (task.{role}_column).{did_you_mean(column, columns)} "
                            f"Columns: {', '.join(columns)}.")
    known = "; ".join("/".join(c or "(no prompt)" for c in s) for s in COLUMN_SETS)
    raise DataError(f"{source}: cannot tell which columns hold the prompt and the chosen and rejected responses "
                    f"(columns: {', '.join(columns)}). Set task.prompt_column, task.chosen_column and "
                    f"task.rejected_column, or name the columns as one of: {known}.")


def detect_format(frame: pd.DataFrame, cols: dict[str, str | None]) -> Format:
    """chat when the first chosen response is a list of messages (or its JSON text), else text."""
    if len(frame) == 0:
        return "text"
    value = frame[cols["chosen"]].iloc[0]
    if isinstance(value, (list, np.ndarray)):
        return "chat"
    if isinstance(value, str) and value.lstrip().startswith("[{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return "text"
        return "chat" if isinstance(parsed, list) and all(isinstance(m, dict) for m in parsed) else "text"
    return "text"


def read_split(frame: pd.DataFrame, fmt: Format, cols: dict[str, str | None]) -> PreferenceSplit:
    """The pairs of one split, every problem a DataError naming the file and rows."""
    source = frame.attrs.get("source", "data")
    missing = [c for c in cols.values() if c is not None and c not in frame.columns]
    if missing:
        raise DataError(f"{source}: no column '{missing[0]}', which the training data has; give every split the same "
                        "columns.")
    ids = [str(r) for r in row_numbers(frame, list(range(len(frame))))]
    if fmt == "text":
        if cols["prompt"] is None:
            raise DataError(f"{source}: the responses are plain text but there is no prompt column; set "
                            "task.prompt_column, or give chosen/rejected as chat messages that include the prompt.")
        prompts, chosen, rejected = (clean_text_column(frame, cols[r], source).tolist()
                                     for r in ("prompt", "chosen", "rejected"))
    else:
        prompts, chosen, rejected = _chat_rows(frame, cols, ids, source)
    same = [i for i, (c, r) in enumerate(zip(chosen, rejected)) if c.strip() == r.strip()]
    if same:
        raise DataError(f"{source}: the chosen and rejected responses are the same in {_rows(frame, same)}, so the "
                        "pair says nothing about which is preferred; fix the responses or drop these rows.")
    return PreferenceSplit(ids, prompts, chosen, rejected, source)


def _chat_rows(frame: pd.DataFrame, cols: dict[str, str | None], ids: list[str],
               source: str) -> tuple[list, list[str], list[str]]:
    """(prompt messages, chosen reply, rejected reply) of every row of a chat split."""
    _no_missing(frame, [c for c in cols.values() if c is not None], source)
    prompts, chosen, rejected = [], [], []
    prompt_values = frame[cols["prompt"]].tolist() if cols["prompt"] else [None] * len(frame)
    for row, p, c, r in zip(ids, prompt_values, frame[cols["chosen"]].tolist(), frame[cols["rejected"]].tolist()):
        c_prior, c_reply = _reply(c, f"{source}: row {row}, column '{cols['chosen']}'")
        r_prior, r_reply = _reply(r, f"{source}: row {row}, column '{cols['rejected']}'")
        if p is not None:
            prompt = _prompt_messages(p, f"{source}: row {row}, column '{cols['prompt']}'")
            shared = [x for x in (c_prior, r_prior) if x and x != prompt]
            if shared:
                raise DataError(f"{source}: row {row}: the chosen or rejected conversation has turns before the "
                                f"reply that differ from the prompt ('{cols['prompt']}'); give only the reply there, "
                                "or the prompt turns unchanged.")
        else:
            if c_prior != r_prior:
                raise DataError(f"{source}: row {row}: the chosen and rejected conversations differ before their last "
                                "reply, so they answer different prompts; give both the same prompt turns, or a "
                                "prompt column.")
            prompt = c_prior
        if not any(m["role"] != "system" for m in prompt):
            raise DataError(f"{source}: row {row}: the pair has no prompt (no user turn before the replies); add the "
                            "prompt turns or a prompt column.")
        prompts.append(prompt)
        chosen.append(c_reply)
        rejected.append(r_reply)
    return prompts, chosen, rejected


def _reply(value: Any, where: str) -> tuple[list[dict[str, str]], str]:
    """(the turns before the reply, the reply) of a response cell: messages ending with the assistant's turn."""
    messages = message_list(value, where)
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the conversation does not end with the assistant's reply, so there is no response "
                        "to compare. End it with the assistant turn.")
    if not messages[-1]["content"].strip():
        raise DataError(f"{where}: the assistant's reply is empty. Fill it in or drop the row.")
    return messages[:-1], messages[-1]["content"]


def _prompt_messages(value: Any, where: str) -> list[dict[str, str]]:
    """A prompt cell of chat data: messages (a list, or its JSON text), or a text read as the user's turn: a text
    that only starts like JSON ("[INST] ...", "[Q] ...") is a text."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not (isinstance(parsed, list) and parsed and all(isinstance(m, dict) for m in parsed)):
            return [{"role": "user", "content": value}]
    return message_list(value, where)


def _no_missing(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    for column in columns:
        empty = [i for i, v in enumerate(frame[column].tolist()) if _missing(v)]
        if empty:
            raise DataError(f"{source}: column '{column}' is empty in {_rows(frame, empty)}. Drop these rows or fill "
                            "them in.")


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _rows(frame: pd.DataFrame, positions: list[int]) -> str:
    rows = row_numbers(frame, positions)
    more = f" and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else ""
    return f"{'row' if len(rows) == 1 else 'rows'} {', '.join(map(str, rows[:MAX_LISTED]))}{more}"
