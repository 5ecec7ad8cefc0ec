"""Content hashes of model folders, cached in a sidecar file, and atomic writes into the model cache.

:func:`model_sha256` hashes the weight files and ``config.json`` of a model folder. Hashing MiniLM (90 MB) or
SmolLM2 (260 MB) takes a noticeable fraction of a second, so each file's digest is remembered in
``<cache_dir>/sha256-cache.json`` keyed by (absolute path, size, mtime); a repeated call reads no weights.

:func:`build_once` builds a cache folder in a temporary sibling and renames it into place, under a lock, so a
crash never leaves a half-written model and two processes never build the same one at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from adaptlab.paths import models_cache_dir

log = logging.getLogger(__name__)

HASH_CACHE_NAME = "sha256-cache.json"
SAFETENSORS_SUFFIX = ".safetensors"
GGUF_SUFFIX = ".gguf"
# Weight files that are Python pickles: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_CHUNK = 1 << 20


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a model folder, sorted by name: safetensors if any, else GGUF, else pickles."""
    files = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name)
    for suffixes in ((SAFETENSORS_SUFFIX,), (GGUF_SUFFIX,), PICKLE_SUFFIXES):
        found = [p for p in files if p.name.endswith(suffixes)]
        if found:
            return found
    return []


def pickle_files(folder: Path) -> list[Path]:
    """Pickle checkpoints (pytorch_model.bin, *.pt, ...) directly in ``folder``, sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.name.endswith(PICKLE_SUFFIXES)),
                  key=lambda p: p.name)


def file_sha256(path: Path) -> str:
    """The sha256 of one file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def model_sha256(path: Path, *, cache_dir: Path | None = None) -> str:
    """One sha256 for a model folder: over (name, sha256) of its weight files (sorted by name) and config.json.

    Per-file digests are cached in ``<cache_dir>/sha256-cache.json`` (default ``$ADAPTLAB_HOME/models``) and
    reused while a file's absolute path, size and mtime are unchanged.
    """
    folder = Path(path).expanduser().resolve()
    files = weight_files(folder)
    config = folder / "config.json"
    if config.is_file():
        files.append(config)
    if not files:
        raise FileNotFoundError(f"{folder}: no weight files or config.json to hash")
    cache_file = (cache_dir if cache_dir is not None else models_cache_dir()) / HASH_CACHE_NAME
    cache = _read_cache(cache_file)
    changed = False
    total = hashlib.sha256()
    for file in files:
        digest, fresh = _cached_file_sha256(file, cache)
        changed = changed or fresh
        total.update(f"{file.name}\0{digest}\n".encode())
    if changed:
        _write_cache(cache_file, cache)
    return total.hexdigest()


def _cached_file_sha256(file: Path, cache: dict) -> tuple[str, bool]:
    """(digest, whether it had to be computed) for ``file``, using and updating ``cache`` in place."""
    stat = file.stat()
    key = str(file)
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"]), False
    digest = file_sha256(file)
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    return digest, True


def _read_cache(cache_file: Path) -> dict:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache_file: Path, cache: dict) -> None:
    """Write the sidecar atomically; a cache that cannot be written only costs time, so errors are logged."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{cache_file.name}.", dir=cache_file.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(cache, f, indent=1, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, cache_file)
    except OSError as exc:
        log.debug("could not write the hash cache %s: %s", cache_file, exc)


# -- atomic cache builds ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX ``flock``); on systems without fcntl the atomic rename still protects."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def build_once(final: Path, build: Callable[[Path], None]) -> Path:
    """Return ``final``, first building it with ``build(tmp_dir)`` if it does not exist yet.

    The build writes into a temporary folder next to ``final`` that is renamed into place only when complete,
    so a crash or Ctrl-C never leaves a half folder; leftovers of a crashed build are removed on the next try.
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(final.parent / f".{final.name}.lock"):
        if final.is_dir():  # another process built it while we waited
            return final
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            build(tmp)
            tmp.chmod(0o755)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not final.is_dir():
                raise
            # lost a race (no fcntl lock on this system): the other build is complete, use it
    return final
