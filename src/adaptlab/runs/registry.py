"""The run registry: one SQLite database (WAL) indexing every finished or failed rung on this machine.

It lives at ``$ADAPTLAB_HOME/runs.sqlite``. Rows are keyed by the run folder's absolute path, so re-running a rung
replaces its row instead of adding a duplicate. The run folders stay the source of truth; the registry is an index.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adaptlab.paths import adaptlab_home

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    path TEXT PRIMARY KEY,
    ladder TEXT NOT NULL,
    rung TEXT NOT NULL,
    method TEXT NOT NULL,
    task TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    metric TEXT,
    value REAL,
    low REAL,
    high REAL,
    train_seconds REAL,
    trainable_params INTEGER,
    error TEXT,
    updated TEXT NOT NULL
)
"""


TRIALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    path TEXT NOT NULL,
    ladder TEXT NOT NULL,
    rung TEXT NOT NULL,
    number INTEGER NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    metric TEXT,
    value REAL,
    seconds REAL,
    trainable_params INTEGER,
    error TEXT,
    PRIMARY KEY (path, number)
)
"""


def db_path() -> Path:
    return adaptlab_home() / "runs.sqlite"


def connect(path: Path | None = None) -> sqlite3.Connection:
    path = path or db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(SCHEMA)
    con.execute(TRIALS_SCHEMA)
    return con


def record(entry: dict[str, Any], ladder: str, task: str, model: str, path: Path) -> None:
    interval = entry.get("interval") or [None, None]
    cost = entry.get("cost") or {}
    with connect() as con:
        con.execute(
            "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                str(path.resolve()), ladder, entry["rung"], entry["method"], task, model, entry["status"],
                entry.get("primary_metric"), entry.get("value"), interval[0], interval[1],
                cost.get("train_seconds"), cost.get("trainable_params"), entry.get("error"),
                datetime.now(timezone.utc).isoformat(timespec="seconds"),
            ),
        )
    con.close()


def record_trials(path: Path, ladder: str, rung: str, metric: str, trials: list[dict[str, Any]]) -> None:
    """A rung's tuning trials (``tuning:``), keyed by its run folder; a new search replaces the old rows."""
    import json

    key = str(path.resolve())
    with connect() as con:
        con.execute("DELETE FROM trials WHERE path = ?", (key,))
        con.executemany(
            "INSERT INTO trials VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(key, ladder, rung, t["number"], json.dumps(t["params"], sort_keys=True), t["state"], metric,
              t.get("value"), t.get("seconds"), t.get("trainable_params"), t.get("error")) for t in trials],
        )
    con.close()


def list_trials(path: Path) -> list[dict[str, Any]]:
    con = connect()
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM trials WHERE path = ? ORDER BY number",
                                         (str(Path(path).resolve()),))]
    con.close()
    return rows


def list_runs(ladder: str | None = None) -> list[dict[str, Any]]:
    con = connect()
    con.row_factory = sqlite3.Row
    query = "SELECT * FROM runs" + (" WHERE ladder = ?" if ladder else "") + " ORDER BY updated DESC"
    rows = [dict(r) for r in con.execute(query, (ladder,) if ladder else ())]
    con.close()
    return rows
