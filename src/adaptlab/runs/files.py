"""Writing run files so that nothing half-written ever looks finished.

Files are written to a temporary name in the same folder, flushed and fsynced, then renamed over the target.
A rung is built in ``<output>/.partial/<rung>/`` and renamed to ``<output>/<rung>/`` only when complete.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from adaptlab.errors import UserError


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows))


#: What to do about a damaged run folder.
RUN_AGAIN = "Run the rung again (adaptlab compare CONFIG --rungs NAME)."


def read_run_json(path: Path) -> dict:
    """A run folder's JSON file (run.json, metrics.json) as a dict; UserError naming the file when it can't be read
    or parsed (a damaged folder: a disk filled up, a hand edit) instead of a traceback."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: can't be read ({err}); this run folder is damaged. {RUN_AGAIN}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: holds {type(value).__name__}, not a JSON object; this run folder is damaged. "
                        f"{RUN_AGAIN}")
    return value


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_run_jsonl(path: Path) -> list[dict]:
    """A run's JSON-lines file (predictions.jsonl); a missing or unreadable one is a UserError naming it."""
    try:
        records = read_jsonl(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: can't be read ({err}); this run folder is damaged. {RUN_AGAIN}") from None
    if not all(isinstance(r, dict) for r in records):
        raise UserError(f"{path}: a line holds no JSON object; this run folder is damaged. {RUN_AGAIN}")
    return records


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def partial_dir(output: Path, rung: str) -> Path:
    return output / ".partial" / rung


#: What a finished rung's folder must still hold for --resume to keep it (run.json's ``files`` lists their sizes).
KEPT_FILES = ("weights", "predictions.jsonl")


def file_sizes(folder: Path, entries: tuple[str, ...] = KEPT_FILES) -> dict[str, int]:
    """The size of every file of ``entries`` (files, or folders taken whole) in ``folder``, by relative path."""
    sizes: dict[str, int] = {}
    for entry in entries:
        path = folder / entry
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        sizes.update({p.relative_to(folder).as_posix(): p.stat().st_size for p in found})
    return sizes


def changed_files(folder: Path, recorded: dict[str, int]) -> list[str]:
    """The recorded files of ``folder`` that are gone or no longer the size they were written at."""
    return [name for name, size in recorded.items()
            if not (folder / name).is_file() or (folder / name).stat().st_size != size]


def publish(staging: Path, final: Path) -> None:
    """Move a finished rung folder into place, replacing an older run of the same rung."""
    _fsync_dir(staging)
    if final.exists():
        trash = final.parent / ".partial" / f".old-{final.name}"
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
    _fsync_dir(final.parent)


def check_output_folder(output: Path, fix: str = "Pass --output a folder (new or existing), or set output_dir in "
                        "the config.") -> None:
    """UserError naming the path when ``output``, or a folder above it, is an existing file (runs need a folder);
    ``fix`` says what to give instead."""
    output = Path(output)
    for p in (output, *output.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "" if p == output else f" (it is above '{output}')"
                raise UserError(f"output folder '{output}': '{p}' is an existing file, not a folder{where}. {fix}")
            return


#: What a ladder writes at the top of its output folder next to its rungs' folders: no rung may be named so.
LADDER_ENTRIES = ("ladder.json", "leaderboard.json", "report.md", "report.html", "train_ids.json", "tuning", "seeds",
                  "train_sizes")


def check_rung_folders(output: Path, names: list[str]) -> None:
    """UserError naming the path when a rung's folder exists but holds no run (no run.json or metrics.json: the
    user's own files, or a symlink), which publishing the rung would replace."""
    for name in names:
        folder = Path(output) / name
        if not (folder.exists() or folder.is_symlink()):
            continue
        if folder.is_symlink() or not any((folder / f).is_file() for f in ("run.json", "metrics.json")):
            raise UserError(f"output folder '{output}': '{folder}' exists and is not an adaptlab run (no run.json), "
                            f"and running rung '{name}' would replace it. Move it away, or set output_dir (or "
                            "--output) to another folder.")


class OutputLock:
    """An exclusive lock on an output folder, so two ladders never write into the same runs."""

    def __init__(self, output: Path):
        self.path = output / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        check_output_folder(self.path.parent)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(
                f"{self.path.parent}: another adaptlab process (pid {holder}) is writing into this output folder. "
                "Wait for it to finish, or pass a different --output."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
