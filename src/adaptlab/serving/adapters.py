"""Adapter names and sources: what ``--adapter NAME=PATH`` (or the admin endpoint) may name, and what it points to.

A source is a finished run folder, an exported bundle, or a bare peft adapter folder (``adapter_config.json``).
It resolves to an :class:`AdapterSpec`: a peft adapter (LoRA, (IA)3, ...) loaded into the shared base with
``load_adapter``, or a small head over the base model's sentence embeddings (zero-shot, few-shot, linear probe).
What it is served as is its task's export kind (classifier, decoder, tagger), never the task's name.
Rungs that change the base's own weights (head only, top layers, full) can't share a base: export them
``--merge`` and serve the merged folder as ``--base``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.errors import UserError
from adaptlab.methods._encoder_start import START_FILE
from adaptlab.methods._peft import PEFT_CONFIG
from adaptlab.serving.engine import BASE, default_task, task_kind

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_NAME = re.compile(rf"^{NAME_PATTERN}$")
#: peft task types -> the export kind their adapters are served as.
PEFT_KINDS = {"SEQ_CLS": "classifier", "CAUSAL_LM": "decoder", "TOKEN_CLS": "tagger", "FEATURE_EXTRACTION": "embedder"}


class InvalidName(UserError):
    """An adapter name that is not a plain identifier."""


def check_name(name: str, *, allow_base: bool = False) -> str:
    """``name`` if it is 1-64 of [A-Za-z0-9_.-], starting alphanumeric, without ``..``; InvalidName otherwise."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        shown = repr(name)[:80]
        raise InvalidName(f"invalid adapter name {shown}: use 1-64 letters, digits, '_', '-' or '.', starting with a "
                          "letter or digit, no path separators and no '..'.")
    if name == BASE and not allow_base:
        raise InvalidName(f"'{BASE}' is reserved for the bare base model; choose another adapter name.")
    return name


def parse_adapter_option(value: str) -> tuple[str, Path]:
    """``NAME=PATH`` from the command line."""
    name, sep, path = value.partition("=")
    if not sep or not path:
        raise UserError(f"--adapter {value!r}: expected NAME=PATH, e.g. --adapter rt=runs/rotten_tomatoes/lora")
    return check_name(name.strip()), Path(path.strip()).expanduser()


class OutsideRoots(UserError):
    """An adapter path outside the folders the server may load adapters from (HTTP 403)."""


def _within(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _lexical(text: str | Path) -> Path:
    """An absolute, normalised path (``..`` and ``.`` folded) computed from the text alone, without the file system."""
    return Path(os.path.normpath(os.path.abspath(os.path.expanduser(str(text)))))


def check_path(path: str | Path, roots: list[Path] | None = None) -> Path:
    """The resolved folder, which must exist and, when ``roots`` are given, lie inside one of them.

    With ``roots``, the path is checked twice: first as text (made absolute and normalised, nothing on disk is
    looked at, so a path outside gets the same 403 whether or not it exists), then once resolved (so a symlink
    inside a root can't lead out of it).
    """
    text = str(path)
    if not text or "\x00" in text or len(text) > 4096 or not _encodable(text):
        raise UserError("invalid adapter path.")
    allowed: list[Path] = []
    if roots is not None:
        for root in roots:
            allowed += [_lexical(root), Path(root).expanduser().resolve()]
        if not _within(_lexical(text), allowed):
            _outside(text, roots)
    try:
        resolved = Path(text).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise UserError(f"adapter path {text!r} does not exist.") from None
    if roots is not None and not _within(resolved, [Path(r).expanduser().resolve() for r in roots]):
        _outside(text, roots)
    if not resolved.is_dir():
        raise UserError(f"adapter path {text!r} is not a folder.")
    return resolved


def _links_within(folder: Path, text: str | Path, roots: list[Path]) -> None:
    """Every symlink inside ``folder`` (at any depth) must lead inside the roots too: the folder being inside is not
    enough when its files point out of it."""
    allowed = [Path(r).expanduser().resolve() for r in roots]
    for entry in folder.rglob("*"):
        if not entry.is_symlink():
            continue
        try:
            target = entry.resolve()
        except (OSError, RuntimeError):  # a loop of links
            raise UserError(f"adapter path {text!r}: the link {entry.relative_to(folder)} leads nowhere (a loop).") \
                from None
        if not _within(target, allowed):
            _outside(f"{text}/{entry.relative_to(folder)}", roots)


def _outside(text: str, roots: list[Path]) -> None:
    allowed = ", ".join(str(r) for r in roots) or "(none)"
    raise OutsideRoots(f"adapter path {text!r} is outside the allowed adapter roots ({allowed}); start the server "
                       "with --adapter-root to allow more.")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class AdapterSpec:
    """A resolved adapter source."""

    name: str
    path: Path
    kind: str  # "peft" | "head"
    task: str
    weights: Path  # the peft adapter folder, or the rung's weights folder for a head
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    label_descriptions: dict[str, str] = field(default_factory=dict)
    max_length: int | None = None
    base_spec: str | None = None
    base_sha256: str | None = None
    prompt_template: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    #: Whether the rung was trained on text pairs (True), single texts (False), or unknown (None: a bare peft
    #: folder, or a bundle whose manifest doesn't say).
    text_pair: bool | None = None

    @property
    def export_kind(self) -> str | None:
        """What the adapter is served as: its task's export kind (classifier, decoder, tagger)."""
        return task_kind(self.task)


def resolve_adapter(name: str, path: str | Path, roots: list[Path] | None = None) -> AdapterSpec:
    """Read a run folder, bundle or peft adapter folder into an :class:`AdapterSpec` (UserError if it is none)."""
    from adaptlab.bundle import MANIFEST, read_manifest, trained_on_pairs

    name = check_name(name)
    folder = check_path(path, roots)
    if roots is not None:
        _links_within(folder, path, roots)
    if (folder / MANIFEST).is_file():
        manifest = read_manifest(folder)
        return _from_rung(name, folder, folder / "weights", manifest["method"], manifest["params"],
                          manifest["context"], manifest.get("base_model", {}).get("sha256"),
                          manifest.get("prompt_template"), manifest.get("metrics", {}), trained_on_pairs(manifest))
    if (folder / "run.json").is_file():
        from adaptlab.export.exporter import prompt_template, read_run

        info, metrics = read_run(folder)
        return _from_rung(name, folder, folder / "weights", info["rung"]["method"], info["params"], info["context"],
                          (metrics.get("provenance") or {}).get("model_sha256"), prompt_template(info),
                          metrics.get("metrics", {}), trained_on_pairs(info))
    if (folder / PEFT_CONFIG).is_file():
        return _from_peft_folder(name, folder)
    raise UserError(f"adapter '{name}': {folder} is not a run folder (run.json), an adaptlab bundle (manifest.json) "
                    f"or a peft adapter folder ({PEFT_CONFIG}).")


def _from_rung(name: str, folder: Path, weights: Path, method: str, params: dict, context: dict,
               base_sha256: str | None, template: str | None, metrics: dict, text_pair: bool | None) -> AdapterSpec:
    common = dict(
        name=name, path=folder, task=context["task"], method=method, params=params, context=context,
        labels=list(context.get("label_names", [])), label_descriptions=dict(context.get("label_descriptions", {})),
        max_length=context.get("max_length"), base_spec=context.get("model_spec"), base_sha256=base_sha256,
        prompt_template=template, metrics=metrics,
        text_pair=text_pair if task_kind(context["task"]) == "classifier" else None,
    )
    if (weights / START_FILE).is_file():  # from: domain_mlm: its adapter or head sits on another encoder
        raise UserError(f"adapter '{name}': rung '{method}' ({folder}) started from a domain_mlm rung's pre-trained "
                        "encoder, not the shared base, so it can't be served next to other adapters; serve it as the "
                        f"base: adaptlab export {folder} --to DIR --merge && adaptlab serve --base DIR/merged")
    from adaptlab.methods import METHODS

    if method in METHODS and not METHODS.get(method).shared_base:
        raise UserError(f"adapter '{name}': rung '{method}' ({folder}) was trained over a base held differently "
                        "(4-bit) from the shared one, so on it it would be another model; serve it merged as the "
                        f"base: adaptlab export {folder} --to DIR --merge && adaptlab serve --base DIR/merged")
    peft_dirs = sorted(p.parent for p in weights.rglob(PEFT_CONFIG)) if weights.is_dir() else []
    if peft_dirs:
        return AdapterSpec(kind="peft", weights=peft_dirs[0], **common)
    if (weights / "head.safetensors").is_file():
        return AdapterSpec(kind="head", weights=weights, **common)
    shipped = ", ".join(sorted(p.name for p in weights.iterdir())) if weights.is_dir() else "nothing"
    if (weights / "model" / "modules.json").is_file():  # a fully trained sentence-transformers model
        raise UserError(f"adapter '{name}': rung '{method}' ({folder}) trained every weight of the encoder, so it "
                        "can't share a base with other adapters; serve it as the base: adaptlab serve --base "
                        f"{weights / 'model'} (or train it with params.lora: true to serve it as an adapter).")
    raise UserError(
        f"adapter '{name}': rung '{method}' ({folder}) ships no peft adapter or embedding head (weights/: {shipped}), "
        "so there is nothing to load next to other adapters. A rung that changes the base model's own weights can "
        f"be served as the base instead: adaptlab export {folder} --to DIR --merge && adaptlab serve --base DIR/merged"
    )


def _from_peft_folder(name: str, folder: Path) -> AdapterSpec:
    config = json.loads((folder / PEFT_CONFIG).read_text(encoding="utf-8"))
    task_type = config.get("task_type")
    if task_type not in PEFT_KINDS:
        raise UserError(f"adapter '{name}': peft task_type {task_type!r} in {folder / PEFT_CONFIG} is not served; "
                        f"supported: {', '.join(PEFT_KINDS)}.")
    if PEFT_KINDS[task_type] == "tagger":  # its tag names (O, B-PER, ...) are in the run, not in the peft folder
        raise UserError(f"adapter '{name}': {folder} is a bare peft token-classification adapter, which does not say "
                        "its tag names; serve the run folder it came from (or its exported bundle) instead.")
    return AdapterSpec(name=name, path=folder, kind="peft", task=default_task(PEFT_KINDS[task_type]), weights=folder,
                       method=str(config.get("peft_type", "peft")).lower())
