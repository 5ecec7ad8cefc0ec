"""Typed ladder specs, read from YAML and validated once.

A ladder spec names the task, the data, the base model and the rungs to run on the same split::

    name: rotten_tomatoes
    task: {type: classification, label_descriptions: {fresh: a positive review, rotten: a negative review}}
    data: {builtin: rotten_tomatoes, test_size: 0.2, validation_size: 0.1}
    model: minilm
    rungs:
      - method: linear_probe
      - {method: lora, params: {r: 8, learning_rate: 5.0e-4}}

Every problem in a config (unknown keys, wrong types, unknown methods, bad rung params) is collected and reported
together, each with its field path and the fix (:class:`adaptlab.errors.ConfigError`).
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from adaptlab.distributed import DistributedSpec
from adaptlab.errors import ConfigError, UserError, did_you_mean
from adaptlab.runs.files import LADDER_ENTRIES
from adaptlab.runtime import RuntimeSpec
from adaptlab.specs import MAX_SEED, Spec, check_seed, next_to_config
from adaptlab.tasks._settings import TEMPLATE_FIELDS, GenerationSpec, TaskSpec
from adaptlab.textcodec import bom_codec

__all__ = ["MAX_SEED", "TEMPLATE_FIELDS", "DataSpec", "GenerationSpec", "LadderSpec", "RungSpec", "Spec", "TaskSpec",
           "TrainSizesSpec", "TuningSpec",
           "check_seed", "load_ladder", "parse_ladder", "rung_params"]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Devices a ladder can run on.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class DataSpec(Spec):
    """Where the examples come from and which columns hold what. Give exactly one source."""

    builtin: str | None = Field(None, description="A dataset shipped by an installed package, e.g. rotten_tomatoes.")
    path: str | None = Field(None, description="One file (CSV, TSV, JSONL, JSON, Parquet) or a save_to_disk folder.")
    hub: str | None = Field(None, description="A Hugging Face hub dataset id (needs internet).")
    hub_config: str | None = Field(None, description="The hub dataset's configuration name, if it has several.")
    train: str | None = Field(None, description="An explicit training file; then validation/test files are optional.")
    validation: str | None = Field(None, description="An explicit validation file.")
    test: str | None = Field(None, description="An explicit test file.")
    format: str | None = Field(
        None, description="File format when the suffix doesn't tell: csv, tsv, jsonl, json, parquet."
    )
    encoding: str | None = Field(None, description="Text encoding of the files (default utf-8, BOM allowed).")
    text_column: str = Field("text", description="Column with the input text.")
    text_pair_column: str | None = Field(None, description="Optional second text column (sentence pairs).")
    label_column: str = Field("label", description="Column with the label (classification).")
    validation_size: float = Field(
        0.1, ge=0.0, lt=1.0, description="Fraction held out for validation (stratified, seeded); with explicit "
        "train files and no validation file it is carved from the training file. 0: no validation split.")
    test_size: float = Field(0.2, gt=0.0, lt=1.0, description="Fraction held out for test when splitting.")
    max_train_examples: int | None = Field(None, gt=0, description="Stratified subsample of the training split.")
    max_test_examples: int | None = Field(None, gt=0, description="Stratified subsample of the test split.")
    max_length: int = Field(128, ge=8, le=8192, description="Tokens per example; longer inputs are truncated. At "
                            "least 8: a tokenizer's special tokens alone take up to 4 (a text pair), and below what "
                            "they need it would not truncate at all.")
    target_column: str | None = Field(
        None,
        description="Generation: column with the reference output (completion, target, reply). Default: detected "
        "from the columns (prompt/completion, source/target, input/output, instruction/response, context/reply).",
    )
    messages_column: str | None = Field(
        None,
        description="Generation: column with chat messages, a list of {role, content} (or its JSON text) whose last "
        "message is the assistant turn to learn; the turns before it are the prompt.",
    )
    group_column: str | None = Field(
        None,
        description="Rows sharing a value here (e.g. a conversation id) stay in one split: when adaptlab splits, "
        "whole groups are held out (seeded); with an explicit test file, training and validation rows sharing a "
        "group with a test row are dropped (generation and embedding tasks).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        given = [k for k in ("builtin", "path", "hub", "train") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one data source: `builtin`, `path`, `hub`, "
                "or `train` (with optional `validation`/`test`)"
                + (f"; got {', '.join(given)}" if given else "")
            )
        if self.validation_size + self.test_size >= 1.0:
            raise ValueError("validation_size + test_size must leave some data for training (sum < 1)")
        if self.messages_column and self.target_column:
            raise ValueError("give data.messages_column (chat data) or data.target_column (input/output columns), "
                             "not both: they are two ways of reading a generation example")
        return self


class RungSpec(Spec):
    """One rung of the ladder: a registered method and its hyperparameters."""

    method: str = Field(..., description="A registered method, e.g. lora, full, linear_probe.")
    name: str | None = Field(None, description="Run name (default: the method name); must be unique in the ladder.")
    params: dict[str, Any] = Field(default_factory=dict, description="Method hyperparameters (see the method).")
    from_: str | None = Field(
        None, alias="from", description="Start from this earlier rung's finished output instead of the base model "
        "(its name). Rungs run in order, so it must come earlier. Supported by lm_full (from an lm_full, lm_lora or "
        "lm_ia3 rung), dpo (from an lm_lora, lm_ia3 or lm_full SFT rung: also its reference), and by head_only, "
        "top_layers, lora, full, linear_probe, setfit and the embedding rungs (from a domain_mlm rung: its "
        "pre-trained encoder). The rung's cost includes its parent's training time.")

    runtime: RuntimeSpec | None = Field(
        None, description="How this rung trains here (precision, kernels, packing, compile, checkpointing, "
        "optimiser): its fields override the ladder's runtime section.")

    model_config = ConfigDict(populate_by_name=True)  # RungSpec(from_=...) in Python, `from:` in YAML
    _base_dir: Path | None = PrivateAttr(None)  # the config's folder (set by its ladder; never dumped)

    def found_next_to(self, base_dir: Path) -> None:
        """Models named in ``params`` (a judge, an embedder) are found next to the config file in ``base_dir``."""
        self._base_dir = base_dir

    def params_context(self) -> dict[str, Any]:
        """The validation context of ``params``: where models named there are found."""
        return {"base_dir": self._base_dir}

    @property
    def run_name(self) -> str:
        return self.name or self.method

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """Dumped as the YAML key ``from``, and only when set: rungs without it dump (and hash) as before."""
        data = handler(self)
        data.pop("from_", None)
        data.pop("from", None)
        if self.runtime is None:
            data.pop("runtime", None)
        else:  # only what the rung sets: the rest comes from the ladder's section (a rung rebuilt from this dump too)
            data["runtime"] = self.runtime.model_dump(mode="json", exclude_unset=True)
        return {**data, "from": self.from_} if self.from_ is not None else data

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str | None) -> str | None:
        if v is not None and not NAME_PATTERN.match(v):
            raise ValueError("use letters, digits, '_', '-' and '.', starting with a letter or digit (max 64)")
        if v in LADDER_ENTRIES:
            raise ValueError(f"'{v}' is what the ladder names one of its own files or folders in the output folder "
                             f"({', '.join(LADDER_ENTRIES)}); choose another name")
        return v


class TuningSpec(Spec):
    """An equal tuning budget for every tuned rung, chosen on the validation split (the test split is read once,
    by each rung's chosen configuration). Tuned rungs: those whose method declares a search space (every rung that
    trains), or the ones named in ``rungs``. Trial 0 is always the rung's configured (default) settings."""

    trials: int | None = Field(None, gt=0, le=1000, description="Trials per tuned rung (the budget).")
    minutes: float | None = Field(
        None, gt=0, description="Minutes of search per tuned rung (no new trial starts after them); with trials, "
        "whichever ends first.")
    metric: str | None = Field(None, description="Validation metric to optimise (default: the task's primary one).")
    pruning: bool = Field(True, description="Stop a trial early when its intermediate validation score is below the "
                          "median of earlier trials at the same step (Optuna's MedianPruner).")
    rungs: list[str] | None = Field(None, description="Rungs to tune (default: every rung with a search space).")
    space: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per rung name, hyperparameters to search and their range "
        "({low, high, log}) or choices ([...]), replacing the method's default dimension of that name.")

    @model_validator(mode="after")
    def _budget(self) -> TuningSpec:
        from adaptlab.search_space import parse_dim

        if self.trials is None and self.minutes is None:
            raise ValueError("give a budget: trials (per rung), minutes (per rung) or both")
        for rung, dims in self.space.items():
            for name, raw in dims.items():
                try:
                    parse_dim(raw)
                except ValidationError as exc:  # a range's own fields: say which, in one line
                    what = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'range'}: {e['msg']}" for e in exc.errors())
                    raise ValueError(f"space.{rung}.{name}: {what} (a range is {{low, high[, log]}}, choices "
                                     "a list)") from None
                except ValueError as exc:
                    raise ValueError(f"space.{rung}.{name}: {exc}") from None
        return self


class TrainSizesSpec(Spec):
    """The data-efficiency curve ("how many labels do I need?"): the chosen rungs re-run on nested, seeded subsets
    of the training split (same validation and test split), e.g. ``train_sizes: [8, 16, 32, 64, all]``. A list
    alone sets ``sizes``."""

    sizes: list[int | str] = Field(
        ..., min_length=1, description="Training examples per class for tasks that stratify by a label (each class "
        "gets exactly that many), else training examples in all; ascending, each once. `all` (last): the whole "
        "training split, the ladder's own run of the rung (not run again).")
    repeats: int = Field(
        3, gt=0, le=100, description="Seeds each size below `all` runs with (a different subset and training seed "
        "each): the ladder's training seeds (`seeds:`, else `seed`), continued with the next integers.")
    rungs: list[str] | None = Field(
        None, description="Rungs on the curve (default: every rung). Rungs that don't train (prompting) are flat "
        "references: their one run on the ladder.")

    @field_validator("sizes", mode="before")
    @classmethod
    def _sizes(cls, v: Any) -> Any:
        """Positive whole numbers, then optionally `all`; ascending and each once."""
        if not isinstance(v, list):
            return v  # the schema says what it should be
        bad = [x for x in v if not (x == "all" or (isinstance(x, int) and not isinstance(x, bool) and x > 0))]
        if bad:
            raise ValueError(f"each size is a positive whole number or 'all', got {bad!r}")
        numbers = [x for x in v if x != "all"]
        if "all" in v and v.index("all") != len(v) - 1 or v.count("all") > 1:
            raise ValueError("'all' is the largest size: write it once, last")
        if numbers != sorted(set(numbers)):
            raise ValueError(f"sizes must be ascending and each once (e.g. {sorted(set(numbers))})")
        return v


class LadderSpec(Spec):
    """A whole ladder: every rung runs on the same split of the same data with the same base model."""

    name: str = Field(..., description="Ladder name, used for the output folder and the run registry.")
    task: SerializeAsAny[BaseModel] = Field(
        default_factory=TaskSpec, description="What is learned: `type` names a registered task and the rest are that "
        "task's own settings (its Settings model).")
    data: DataSpec
    model: str = Field(
        ..., description="Local folder, packaged model (minilm, smollm2), tiny-random-<arch> or hub id."
    )
    rungs: list[RungSpec] = Field(..., min_length=1)
    seed: int = Field(0, description="Seed for the split, initialisation and data order.")
    seeds: list[int] | None = Field(
        None, min_length=1, description="Training seeds: each rung that trains is repeated with each (same split, "
        "from `seed`); the leaderboard shows mean and spread, and two rungs are called different only when the "
        "difference holds on every seed. The first seed's run is the one shipped.")
    tuning: TuningSpec | None = Field(None, description="Tune every trained rung with the same budget (Optuna).")
    train_sizes: TrainSizesSpec | None = Field(
        None, description="The data-efficiency curve: re-run the rungs on nested subsets of the training split "
        "(e.g. [8, 16, 32, 64, all] examples per class), each size with several seeds, written under "
        "<output>/train_sizes/n-<size>/seed-<seed>/<rung>; the report's \"How many labels do I need?\".")
    distributed: DistributedSpec | None = Field(
        None, description="How trained rungs train when the ladder is launched on several processes (torchrun, "
        "accelerate launch): strategy ddp (default), fsdp or deepspeed. Ignored on one process.")
    output_dir: str | None = Field(None, description="Where runs are written (default: runs/<name>).")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    runtime: RuntimeSpec = Field(
        default_factory=RuntimeSpec, description="How trained rungs train here (each rung may override it): "
        "precision, Liger kernels, padding-free packing, torch.compile, gradient checkpointing, optimiser. auto: the "
        "fast path on a GPU, plain settings on CPU.")
    trust_remote_code: bool = Field(False, description="Run code shipped with a hub model. Off unless you trust it.")
    allow_pickle: bool = Field(False, description="Allow pickle checkpoints (.bin). Off: unpickling runs code.")
    base_dir: Path = Field(Path("."), exclude=True, description="Folder relative paths are resolved against.")

    _seed = field_validator("seed")(check_seed)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        for seed in v or []:
            check_seed(seed)
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"seeds repeat ({v}); each training seed once")
        return v

    @field_validator("train_sizes", mode="before")
    @classmethod
    def _sizes_alone(cls, v: Any) -> Any:
        return {"sizes": v} if isinstance(v, list) else v

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if not DEVICE_PATTERN.match(v):
            hint = did_you_mean(v, ("auto", "cpu", "cuda", "mps"))
            raise ValueError(f"unknown device.{hint} Use auto (a GPU when there is one), cpu, cuda, cuda:N or mps")
        return v

    @field_validator("task", mode="before")
    @classmethod
    def _task_settings(cls, v: Any, info: ValidationInfo) -> Any:
        """``task:`` validated by the settings model of the task its type names (an unknown type is reported by
        :func:`parse_ladder`; the shared settings model stands in for it)."""
        v = {"type": v} if isinstance(v, str) else v
        if not isinstance(v, dict):
            return v
        return task_settings(v.get("type") or "classification").model_validate(v, context=info.context)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not NAME_PATTERN.match(v):
            raise ValueError("use letters, digits, '_', '-' and '.', starting with a letter or digit (max 64)")
        return v

    def output_path(self) -> Path:
        """Where the runs go: ``output_dir`` (``~`` expanded; a relative one is under the current folder, as the
        default ``runs/<name>`` is)."""
        return Path(self.output_dir).expanduser() if self.output_dir else Path("runs") / self.name

    @model_validator(mode="after")
    def _model_next_to_config(self) -> LadderSpec:
        """``model: ./folder`` (or ``../folder``) is a folder next to the config file when one is there: data paths
        are read that way too. Anything else (a name, a hub id, an absolute path) is left as written. The rungs'
        params read their models (a judge, an embedder) the same way when they are validated."""
        self.model = next_to_config(self.model, self.base_dir)
        for rung in self.rungs:  # absolute: its params are validated later, maybe from another folder
            rung.found_next_to(self.base_dir.resolve())
        return self

    def resolve_path(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def rung(self, name: str) -> RungSpec:
        for r in self.rungs:
            if r.run_name == name:
                return r
        names = [r.run_name for r in self.rungs]
        raise UserError(f"no rung named '{name}' in ladder '{self.name}'.{did_you_mean(name, names)} Rungs: {names}")


def task_settings(task_type: str) -> type[BaseModel]:
    """The settings model of a registered task (the shared one for unknown names, reported elsewhere)."""
    from adaptlab.tasks import TASKS

    return TASKS.get(task_type).Settings if isinstance(task_type, str) and task_type in TASKS else TaskSpec


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def format_validation_error(err: ValidationError, prefix: str = "",
                            fields: dict[str, type[BaseModel]] | None = None) -> list[str]:
    """One line per pydantic error: the field path, what is wrong, and for unknown keys the closest valid key.
    ``fields`` names the model of a field whose annotation doesn't (``task``: its task's settings model)."""
    problems = []
    for e in err.errors():
        loc = _loc(tuple(x for x in e["loc"] if not (isinstance(x, str) and x in ("function-after",))))
        field = f"{prefix}{'.' if prefix and loc else ''}{loc}" if loc != "(top level)" else (prefix or loc)
        if e["type"] == "extra_forbidden":
            key = e["loc"][-1]
            model = _model_at(err.title, e["loc"][:-1], fields or {})
            keys = [f.alias or name for name, f in model.model_fields.items()  # YAML's `from`; not base_dir
                    if not f.exclude] if model else []
            hint = did_you_mean(key, keys) if model else ""
            allowed = f" Allowed keys: {', '.join(keys)}." if model else ""
            problems.append(f"{field}: unknown key.{hint}{allowed}")
        elif e["type"] == "missing":
            problems.append(f"{field}: required, but missing.")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"{field}: {msg} (got {e.get('input')!r}).")
    return problems


_SECTIONS: dict[str, type[BaseModel]] = {"LadderSpec": LadderSpec}


def _model_at(title: str, loc: tuple[Any, ...], fields: dict[str, type[BaseModel]]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = _SECTIONS.get(title)
    if model is None:
        from adaptlab.methods import METHODS

        for name in METHODS.names():
            if METHODS.get(name).Params.__name__ == title:
                model = METHODS.get(name).Params
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None) if field else None
        if model is _SECTIONS.get(title) and part in fields:
            model = fields[part]
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif ann is not None and hasattr(ann, "__args__"):
            inner = [a for a in ann.__args__ if isinstance(a, type) and issubclass(a, BaseModel)]
            model = inner[0] if inner else model
    return model


def _task_name(raw: dict) -> Any:
    """The task a raw config names (``task: NAME`` or ``task: {type: NAME}``; classification by default)."""
    task = raw.get("task")
    return ((task or {}).get("type") if isinstance(task, dict) else task) or "classification"


def parse_ladder(raw: Any, source: str = "<config>", base_dir: Path | None = None) -> LadderSpec:
    """Validate a ladder from plain data; raise one ConfigError listing every problem."""
    from adaptlab.tasks import TASKS

    if not isinstance(raw, dict):
        raise ConfigError(source, [f"expected a mapping at the top level, got {type(raw).__name__}"])
    problems: list[str] = []
    spec: LadderSpec | None = None
    try:
        spec = LadderSpec.model_validate({**raw, "base_dir": base_dir or Path(".")},
                                         context={"base_dir": base_dir or Path(".")})
    except ValidationError as err:
        problems += format_validation_error(err, fields={"task": task_settings(_task_name(raw))})

    task_name = _task_name(raw)
    if not isinstance(task_name, str):
        problems.append(f"task: give the task's name (task: classification, or task: {{type: classification, ...}}), "
                        f"not {type(task_name).__name__} {task_name!r}; tasks: {', '.join(TASKS.names())}")
    elif task_name not in TASKS:
        problems.append(f"task.type: {TASKS.unknown_message(task_name)}")

    rungs = raw.get("rungs") if isinstance(raw.get("rungs"), list) else []
    problems += rung_problems(rungs, task_name if isinstance(task_name, str) and task_name in TASKS else None)
    problems += from_problems(rungs)
    if spec is not None and spec.tuning is not None:
        problems += tuning_problems(spec)
    if spec is not None and spec.train_sizes is not None:
        problems += train_sizes_problems(spec)
    if problems:
        raise ConfigError(source, problems)
    assert spec is not None
    return spec


def rung_problems(rungs: list[Any], task_name: str | None) -> list[str]:
    """Repeated rung names, unknown methods, methods that don't support the task (``task_name``, None when it is
    unknown) and params their method refuses, rung by rung (what the schema already reported is skipped)."""
    from adaptlab.methods import METHODS

    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, rung in enumerate(rungs):
        if not isinstance(rung, dict) or not isinstance(rung.get("method"), str):
            continue
        method_name = rung["method"]
        run_name = rung.get("name") or method_name
        if run_name in seen:
            problems.append(
                f"rungs[{i}].name: '{run_name}' is also rungs[{seen[run_name]}]; give one of them a distinct `name`."
            )
        seen[run_name] = i
        if method_name not in METHODS:
            problems.append(f"rungs[{i}].method: {METHODS.unknown_message(method_name)}")
            continue
        method = METHODS.get(method_name)
        if task_name is not None and task_name not in method.tasks:
            problems.append(f"rungs[{i}].method: '{method_name}' does not support task '{task_name}' "
                            f"(it supports: {', '.join(sorted(method.tasks))}).")
        params = rung.get("params") or {}
        if not isinstance(params, dict):
            continue  # the schema said params must be a mapping
        if "precision" in params:
            problems.append(f"rungs[{i}].params.precision: precision moved to the runtime section; give the rung "
                            f"`runtime: {{precision: {params['precision']}}}` (or set it in the ladder's runtime:).")
        try:
            method.Params.model_validate(params)
        except ValidationError as err:
            problems += format_validation_error(err, prefix=f"rungs[{i}].params")
    return problems


def from_problems(rungs: list[Any]) -> list[str]:
    """What is wrong with the rungs' ``from:``: an unknown rung, a rung starting from itself, a cycle, a rung that
    comes later (rungs run in order, so the one started from must be finished first), or a method that can't start
    from that rung's output (its ``starts_from``)."""
    from adaptlab.methods import METHODS

    named = [(i, r.get("name") or r.get("method"), r) for i, r in enumerate(rungs)
             if isinstance(r, dict) and isinstance(r.get("method"), str)]
    index: dict[str, int] = {}  # the first rung of a name (duplicates are reported elsewhere)
    method_of: dict[str, str] = {}
    for i, name, r in named:
        index.setdefault(name, i)
        method_of.setdefault(name, r["method"])
    parent_of = {name: r["from"] for _, name, r in named if isinstance(r.get("from"), str)}
    problems = []
    for i, name, rung in named:
        parent = rung.get("from")
        if not isinstance(parent, str):
            continue  # none, or a wrong type reported by the schema
        where = f"rungs[{i}].from"
        if parent == name:
            problems.append(f"{where}: rung '{name}' starts from itself; name an earlier rung, or drop `from` to "
                            "start from the base model.")
        elif parent not in index:
            problems.append(f"{where}: no rung named '{parent}'.{did_you_mean(parent, index)} Rungs: {list(index)}")
        elif (cycle := _cycle(name, parent_of)) is not None:
            if index[name] == min(index[n] for n in cycle):  # report each cycle once
                problems.append(f"{where}: the rungs {' -> '.join([*cycle, cycle[0]])} start from each other in a "
                                "cycle; one of them must start from the base model (no `from`).")
        elif index[parent] > i:
            problems.append(f"{where}: rung '{parent}' is rungs[{index[parent]}], after '{name}'; rungs run in "
                            f"order, so move '{parent}' above '{name}'.")
        elif rung["method"] in METHODS and method_of[parent] not in METHODS.get(rung["method"]).starts_from:
            problems.append(f"{where}: {_cannot_start(rung['method'], method_of[parent], METHODS)}")
    return problems


def tuning_problems(spec: LadderSpec) -> list[str]:
    """What is wrong with ``tuning:`` beyond its own schema: rungs it names that the ladder lacks, searched
    hyperparameters the rung's method doesn't have, range ends or choices the method refuses."""
    from adaptlab.evaluation.metrics import METRICS
    from adaptlab.methods import METHODS
    from adaptlab.search_space import Choice, parse_dim

    names = [r.run_name for r in spec.rungs]
    tuning = spec.tuning
    problems = [f"tuning.rungs: no rung named '{n}'.{did_you_mean(n, names)} Rungs: {names}"
                for n in tuning.rungs or [] if n not in names]
    problems += [f"tuning.rungs: '{n}' ({spec.rung(n).method}) has nothing to search (its method declares no search "
                 f"space); give it one under tuning.space.{n}, or drop it from tuning.rungs."
                 for n in tuning.rungs or [] if n in names and not METHODS.get(spec.rung(n).method).search_space
                 and not tuning.space.get(n)]
    if tuning.metric is not None and tuning.metric not in METRICS:
        problems.append(f"tuning.metric: {METRICS.unknown_message(tuning.metric)}")
    for rung_name, dims in tuning.space.items():
        if rung_name not in names:
            problems.append(f"tuning.space.{rung_name}: no rung of that name.{did_you_mean(rung_name, names)}")
            continue
        if tuning.rungs is not None and rung_name not in tuning.rungs:
            problems.append(f"tuning.space.{rung_name}: '{rung_name}' is not in tuning.rungs, so it isn't searched; "
                            "add it there or drop its space.")
            continue
        rung = spec.rung(rung_name)
        params_model = METHODS.get(rung.method).Params
        for name, raw in dims.items():
            where = f"tuning.space.{rung_name}.{name}"
            if name not in params_model.model_fields:
                fields = list(params_model.model_fields)
                problems.append(f"{where}: {rung.method} has no parameter '{name}'.{did_you_mean(name, fields)}")
                continue
            dim = parse_dim(raw)
            for value in dim.values if isinstance(dim, Choice) else (dim.low, dim.high):
                value = int(value) if not isinstance(dim, Choice) and dim.integer else value
                try:
                    params_model.model_validate({**rung.params, name: value})
                except ValidationError as err:
                    problems += format_validation_error(err, prefix=f"{where} ({value!r})")
    return problems


def train_sizes_problems(spec: LadderSpec) -> list[str]:
    """What is wrong with ``train_sizes.rungs``: rungs the ladder lacks, and rungs starting (``from``) from a rung
    that is not on the curve (at each size a rung starts from its parent trained on the same subset)."""
    names = [r.run_name for r in spec.rungs]
    chosen = spec.train_sizes.rungs
    if chosen is None:
        return []
    problems = [f"train_sizes.rungs: no rung named '{n}'.{did_you_mean(n, names)} Rungs: {names}"
                for n in chosen if n not in names]
    problems += [f"train_sizes.rungs: '{r.run_name}' starts from '{r.from_}', which is not on the curve; add "
                 f"'{r.from_}' to train_sizes.rungs (each size trains it first), or drop '{r.run_name}'."
                 for r in spec.rungs if r.run_name in chosen and r.from_ is not None and r.from_ not in chosen]
    return problems


def _cycle(name: str, parent_of: dict[str, str]) -> list[str] | None:
    """The rungs of the cycle of ``from`` links that ``name`` is on, starting at ``name``; None when it is on none."""
    chain = [name]
    while (parent := parent_of.get(chain[-1])) is not None and parent not in chain:
        chain.append(parent)
    return chain if parent == name else None


def _cannot_start(method: str, parent_method: str, methods: Any) -> str:
    """Why ``method`` can't start from a ``parent_method`` rung, naming what can."""
    allowed = methods.get(method).starts_from
    if not allowed:
        able = [n for n in methods.names() if methods.get(n).starts_from]
        return (f"method '{method}' can't start from another rung's output (it always starts from the base model); "
                f"methods that can: {', '.join(able) or 'none'}.")
    return (f"method '{method}' can start from a rung of {', '.join(sorted(allowed))}, not from a "
            f"'{parent_method}' rung.")


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML would keep the last one silently: two
    ``data:`` sections, and the first is ignored)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: keys given after it override it
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # PyYAML refuses it itself
                continue
            line = key_node.start_mark.line + 1
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"'{key}' is given twice in one section (lines {lines[key]} and {line}); keep one",
                    key_node.start_mark)
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


def load_ladder(path: str | Path) -> LadderSpec:
    """Read and validate a YAML ladder spec. Paths inside it are relative to the file's folder."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.y*ml"))
        hint = f" YAML files in it: {', '.join(inside[:10])}." if inside else " It holds no .yaml files."
        raise UserError(f"'{path}' is a folder, not a config file; pass the ladder's YAML file.{hint}")
    if not path.is_file():
        siblings = [p.name for p in path.parent.glob("*.y*ml")] if path.parent.is_dir() else []
        raise UserError(f"config file '{path}' not found.{did_you_mean(path.name, siblings)}")
    data = path.read_bytes()
    encoding = bom_codec(data) or "utf-8-sig"
    nul = -1 if encoding != "utf-8-sig" else data[: 1 << 16].find(b"\x00")
    if nul >= 0:
        raise UserError(f"{path}: looks like a binary file (a NUL byte at byte offset {nul}), not a YAML config; "
                        "pass the ladder's .yaml file.")
    try:
        raw = yaml.load(data.decode(encoding), Loader=UniqueKeyLoader)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not {encoding.removesuffix('-sig').upper()} text ({e.reason} at byte {e.start}); "
                        "save the config as UTF-8.") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    return parse_ladder(raw, source=str(path), base_dir=path.parent)


def rung_params(spec: RungSpec) -> BaseModel:
    """The rung's validated hyperparameters (the method's Params model)."""
    from adaptlab.methods import METHODS

    return METHODS.get(spec.method).Params.model_validate(spec.params, context=spec.params_context())
