"""A ladder on many processes (``torchrun``, ``accelerate launch``): who is who, and how the processes agree.

The launcher starts the same ``adaptlab compare CONFIG`` once per device and says which process is which in the
environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). With one process (no
launcher, or ``WORLD_SIZE=1``) nothing here initialises anything and adaptlab behaves exactly as on one process.

With several, the main process (rank 0) *leads*: it alone takes the output lock and writes (run folders,
leaderboard, report, registry), runs the rungs that don't train through the Trainer, evaluates, measures and saves.
Before it fits a rung that trains with the Trainer (``Method.data_parallel``), it announces the rung; the other
processes *follow*: they build the same method and fit it with it, the Trainer (accelerate) making that one DDP, FSDP
or DeepSpeed run, each process on its own local device. After the fit every process reports its outcome and all
agree: the rung failed if any process failed (the pipeline records the failure and goes on) or, with ``check_weights``,
if the trained weights differ between processes.

The processes talk through the launcher's key-value store (``torch.distributed.TCPStore``), not through collective
operations: a wait has its own timeout and never blocks the device, so a follower can wait for hours while the main
process runs a prompting rung. A process that fails alone while the others are still inside a collective operation
of training would wait for them forever; it waits ``failure_wait_seconds``, then stops the whole run (the launcher
stops the others) with a clear error, leaving the staged rung and its checkpoints for ``--resume``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from adaptlab.errors import TrainingError, UserError
from adaptlab.specs import Spec


class DistributedSpec(Spec):
    """How a ladder trains when it is launched on several processes (torchrun, accelerate launch)."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp", description="ddp: every process holds the whole model, gradients are averaged "
        "(DistributedDataParallel). fsdp: PyTorch FSDP2 through accelerate, weights, gradients and optimizer state "
        "sharded across processes, the weights gathered into every process after the fit (GPUs only: accelerate "
        "runs FSDP on no CPU setup, and a rung refuses to train as plain DDP instead). deepspeed: DeepSpeed ZeRO "
        "(stage 1 or 2: optimizer state and gradients sharded; stage 3: the weights too, gathered after the fit; "
        "needs `pip install --no-build-isolation deepspeed`).")
    zero_stage: Literal[1, 2, 3] = Field(
        2, description="With strategy deepspeed and no deepspeed_config: the ZeRO stage.")
    deepspeed_config: str | None = Field(
        None, description="With strategy deepspeed: a DeepSpeed JSON config file (relative to the ladder's folder); "
        "'auto' values are filled from the rung's params. Default: ZeRO zero_stage with everything 'auto'.")
    check_weights: bool = Field(
        False, description="After each fit, compare a hash of every process's trained weights and fail the rung if "
        "they differ (costs one copy of the trained weights per process).")
    timeout_minutes: float = Field(
        24 * 60, gt=0, description="How long a process waits for the others (e.g. while the main process runs a "
        "prompting rung or evaluates) before it gives up.")
    failure_wait_seconds: float = Field(
        120, gt=0, description="How long a process whose fit failed waits for the others to report; if they don't "
        "(they are still training, waiting for it), the run stops and can be resumed with --resume.")


#: The settings of the ladder being run (set while a ladder runs on several processes).
SETTINGS: contextvars.ContextVar[DistributedSpec | None] = contextvars.ContextVar("SETTINGS", default=None)


# -- who is who ------------------------------------------------------------------------------------------------------
def world_size() -> int:
    """How many processes run this ladder (1 unless a launcher set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0) if world_size() > 1 else 0


def local_rank() -> int:
    """This process's index on its machine: the device it trains on (cuda:LOCAL_RANK)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if world_size() > 1 else 0


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    """The process that writes (always true on one process)."""
    return rank() == 0


def settings() -> DistributedSpec:
    return SETTINGS.get() or DistributedSpec()


# -- talking through the launcher's store ----------------------------------------------------------------------------
class Channel:
    """Messages between the processes of this run, through the launcher's TCPStore (JSON values).

    Every process calls the same sequence of operations, so a per-topic counter names each message the same way in
    every process. Waits poll in short slices, so signals (the launcher's SIGTERM) are handled while waiting."""

    def __init__(self, store: Any, rank_: int, size: int):
        self.store, self.rank, self.size = store, rank_, size
        self.counters: dict[str, int] = {}

    def next_key(self, topic: str) -> str:
        n = self.counters.get(topic, 0)
        self.counters[topic] = n + 1
        return f"{topic}/{n}"

    def post(self, key: str, value: Any) -> None:
        self.store.set(key, json.dumps(value))

    def wait(self, key: str, seconds: float) -> Any:
        """The value posted under ``key``; TimeoutError after ``seconds``."""
        deadline = time.monotonic() + seconds
        while not self.store.check([key]):
            if time.monotonic() > deadline:
                raise TimeoutError(key)
            time.sleep(0.05)
        return json.loads(self.store.get(key))

    def share(self, topic: str, value: Any = None, seconds: float | None = None) -> Any:
        """The main process's ``value``, in every process (the others' ``value`` is ignored)."""
        key = self.next_key(topic)
        if self.rank == 0:
            self.post(key, value)
            return value
        return self.wait(key, seconds or settings().timeout_minutes * 60)

    def gather(self, topic: str, value: Any, seconds: float | None = None) -> list[Any]:
        """Every process's ``value``, by rank, in every process (TimeoutError when one doesn't report in time)."""
        key = self.next_key(topic)
        self.post(f"{key}/{self.rank}", value)
        seconds = seconds or settings().timeout_minutes * 60
        deadline = time.monotonic() + seconds
        return [self.wait(f"{key}/{r}", max(0.0, deadline - time.monotonic())) for r in range(self.size)]


_CHANNEL: Channel | None = None


def channel() -> Channel:
    """This run's channel, connected on first use to the store the launcher hosts (torchrun's agent store) or, for
    launchers without one, to the store of the process group (which is initialised for it)."""
    global _CHANNEL
    if _CHANNEL is None:
        import torch.distributed as dist

        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" and not dist.is_initialized():
            from accelerate import PartialState

            PartialState(cpu=not _cuda())  # rank 0 hosts the store of the process group
        host, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500"))
        store = dist.TCPStore(host, port, is_master=False, timeout=timedelta(minutes=5))
        prefix = f"adaptlab/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        _CHANNEL = Channel(dist.PrefixStore(prefix, store), rank(), world_size())
    return _CHANNEL


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# -- leading and following -------------------------------------------------------------------------------------------
STOP = "stop"


@contextlib.contextmanager
def leading(spec: DistributedSpec) -> Iterator[None]:
    """The main process's side of a run on several processes: the launcher's SIGTERM (another process died) becomes
    a KeyboardInterrupt (the CLI says how to resume); on leaving, the followers are told to stop (with the error
    the main process stops with, if any). On one process it only sets nothing and yields."""
    if not is_distributed():
        yield
        return
    token = SETTINGS.set(spec)
    old = signal.signal(signal.SIGTERM, _interrupt)
    error: str | None = None
    try:
        yield
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, UserError) else str(exc)
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
        with contextlib.suppress(Exception):
            channel().share("command", {"op": STOP, "error": error})
        SETTINGS.reset(token)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by the launcher (signal {signum}): another process of this run stopped")


def follow(spec: DistributedSpec, fit: Callable[[dict], None]) -> None:
    """A follower's side: wait for the main process's commands and fit each rung it announces (``fit`` gets the
    announcement); return when it stops. A UserError when the main process stopped on an error."""
    token = SETTINGS.set(spec)
    try:
        while True:
            command = channel().share("command")
            if command["op"] == STOP:
                if command.get("error"):
                    raise UserError(f"process {rank()}: the main process stopped ({command['error']}).")
                return
            fit(command)
    finally:
        SETTINGS.reset(token)


@contextlib.contextmanager
def main_first(what: str) -> Iterator[None]:
    """The main process does the block first (e.g. download or build the model into the shared cache), then the
    others; if it fails, the others stop with a UserError instead of trying too."""
    if not is_distributed():
        yield
        return
    if not is_main():
        outcome = channel().share(what)
        if outcome:
            raise UserError(f"process {rank()}: the main process failed while {what}: {outcome}")
        yield
        return
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(Exception):
            channel().share(what, str(exc) or type(exc).__name__)
        raise
    channel().share(what, None)


def announce(command: dict) -> None:
    """Main process: tell the followers to fit a rung (``command`` is what :func:`follow`'s ``fit`` gets)."""
    channel().share("command", {"op": "fit", **command})


class RungAgreement:
    """The processes' agreement on one rung fitted by all of them: :meth:`fitted` or :meth:`failed`, once.

    On one process, or for a rung only the main process runs, both do nothing. ``chan`` and ``spec`` default to
    this run's channel and settings (tests pass their own)."""

    def __init__(self, rung: str, shared: bool, chan: Channel | None = None, spec: DistributedSpec | None = None):
        self.rung, self.chan, self.spec = rung, chan, spec
        self.pending = shared and (chan is not None or is_distributed())

    def fitted(self, trainable_state: Callable[[], dict[str, Any]],
               record: Callable[..., None] | None = None) -> None:
        """This process fitted the rung: report it (with a hash of the weights when ``check_weights``); raises
        TrainingError (in every process) when another process failed or the weights differ. ``record`` (the main
        process's run.json) gets ``distributed``: the processes, the strategy and the weights' hash by rank."""
        if not self.pending:
            return
        spec = self.spec or settings()
        digest = state_digest(trainable_state()) if spec.check_weights else None
        chan = self.chan or channel()
        digests = self._agree(chan, {"ok": True, "weights": digest, "rank": chan.rank}, spec.timeout_minutes * 60)
        if record is not None and chan.rank == 0:
            record(distributed={"processes": len(digests), "strategy": strategy_used(spec),
                                "weights_sha256": digests if spec.check_weights else None})

    def failed(self, exc: BaseException) -> None:
        """This process failed before or while fitting: report it and wait (``failure_wait_seconds``) for the
        others; if they don't report, they are stuck in training waiting for this one: stop the whole run."""
        if not self.pending:
            return
        detail = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        chan, spec = self.chan or channel(), self.spec or settings()
        try:
            self._agree(chan, {"ok": False, "error": detail, "rank": chan.rank}, spec.failure_wait_seconds)
        except TrainingError:
            return  # the rung failed; the caller records this process's own error

    def _agree(self, chan: Channel, outcome: dict, seconds: float) -> list[str | None]:
        """Every process's outcome; the weights' hashes by rank when all fitted the same weights."""
        self.pending = False
        try:
            outcomes = chan.gather(f"agree/{self.rung}", outcome, seconds)
        except TimeoutError:
            here = f"failed here ({outcome['error']})" if not outcome["ok"] else "was fitted here"
            stop_run(f"process {chan.rank}: rung '{self.rung}' {here}, but the other processes did not report within "
                     f"{seconds:.0f} s (they are still training, waiting for this one, or stopped)")
            raise  # stop_run does not return
        failed = [o for o in outcomes if not o["ok"]]
        if failed:
            first = failed[0]
            raise TrainingError(f"process {first['rank']} of {len(outcomes)} failed: {first['error']}")
        digests = {o["weights"] for o in outcomes}
        if len(digests) > 1:
            raise TrainingError(f"the trained weights differ between processes after training (hashes by rank: "
                                f"{[o['weights'][:12] for o in outcomes]}); the processes did not train one model.")
        return [o["weights"] for o in outcomes]


def stop_run(why: str) -> None:
    """Stop this process at once (the launcher then stops the others), saying why and how to go on."""
    sys.stderr.write(f"adaptlab: {why}. Stopping the run; finished rungs are kept and the interrupted rung continues "
                     "from its last checkpoint when you run the same command with --resume.\n")
    sys.stderr.flush()
    os._exit(1)


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 of named tensors (names, shapes, dtypes and bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(-1).view(dtype=_byte_dtype()).numpy().tobytes())
    return h.hexdigest()


def _byte_dtype() -> Any:
    import torch

    return torch.uint8


# -- the Trainer's arguments -----------------------------------------------------------------------------------------
def trainer_fields(batch_size: int, own_loss: bool, use_cpu: bool = False, model: Any = None) -> dict[str, Any]:
    """TrainingArguments fields for a fit on several processes ({} on one process).

    ``batch_size`` stays the examples per optimizer step, however many processes share it: each process takes
    ``batch_size / world_size`` of them, so a rung trains on the same batches, for the same steps, as on one
    process. ``own_loss``: the fit passes its own ``compute_loss_func`` (a mean per batch), which the Trainer must
    not scale by the number of processes. ``use_cpu``: training on CPU (gloo; DeepSpeed's CPU accelerator).
    ``model``: the model to train (FSDP shards it layer by layer, :func:`fsdp_config`)."""
    size = world_size()
    if size == 1:
        return {}
    if batch_size % size:
        raise TrainingError(f"batch_size {batch_size} can't be shared evenly by {size} processes; use a multiple of "
                            f"{size} (batch_size is the examples per optimizer step, on any number of processes).")
    spec = settings()
    fields: dict[str, Any] = {"per_device_train_batch_size": batch_size // size,
                              "ddp_timeout": int(spec.timeout_minutes * 60)}
    if own_loss:
        fields["average_tokens_across_devices"] = False
    if spec.strategy == "fsdp":
        fields.update(fsdp=True, fsdp_config=fsdp_config(model))
    if spec.strategy == "deepspeed":
        fields["deepspeed"] = deepspeed_config(spec)
        if use_cpu:  # accelerate runs DeepSpeed only off its cpu mode; gloo and DeepSpeed's CPU accelerator instead
            _deepspeed_on_cpu(spec)
            fields.update(use_cpu=False, ddp_backend="gloo", accelerator_config={"use_configured_state": True})
    return fields


def _deepspeed_on_cpu(spec: DistributedSpec) -> None:
    """Set up accelerate's process state for DeepSpeed over gloo on CPU before the Trainer's arguments do: they
    would ask for DeepSpeed without a backend, which accelerate takes, on a machine without GPUs, for one process."""
    from accelerate.state import AcceleratorState, PartialState

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if PartialState._shared_state:  # set up by an earlier rung: keep the processes, drop that rung's DeepSpeed state
        AcceleratorState._reset_state()  # (as the Trainer does off CPU) else its next Accelerator refuses to start
        return
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend="gloo", timeout=timedelta(minutes=spec.timeout_minutes))
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]


def fsdp_config(model: Any) -> dict[str, Any]:
    """The Trainer's FSDP2 settings: each of the repeated layers of the transformers model inside ``model`` (its
    ``_no_split_modules``) its own shard group, except a class that holds the input embeddings (BERT's
    ``BertEmbeddings``): accelerate shards the embeddings on their own as well, and sharding them twice fails.
    Without such classes nothing is grouped by layer (accelerate still gives the embeddings and the last layers
    their own groups)."""
    from transformers import PreTrainedModel

    base = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None) if model is not None else None
    layers = set(base._no_split_modules or ()) if base is not None else set()
    embeddings = None
    with contextlib.suppress(NotImplementedError, AttributeError):
        embeddings = base.get_input_embeddings() if layers else None
    modules = list(base.modules()) if layers else []
    holders = {type(m).__name__ for m in modules if any(c is embeddings for c in m.modules())}
    keep = sorted(({type(m).__name__ for m in modules} & layers) - holders)  # (a class not in the model: refused)
    if not keep:
        return {"version": 2, "auto_wrap_policy": "NO_WRAP"}
    return {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "transformer_layer_cls_to_wrap": keep}


def deepspeed_config(spec: DistributedSpec) -> dict[str, Any] | str:
    """The DeepSpeed config: the file the ladder names, or ZeRO ``zero_stage`` with the batch, accumulation and
    clipping left 'auto' (the Trainer fills them from the rung's params). Any stage works with the pipeline:
    weights sharded by stage 3 are gathered after the fit (:class:`ShardedFit`)."""
    if spec.deepspeed_config:
        path = Path(spec.deepspeed_config)
        if not path.is_file():
            raise UserError(f"distributed.deepspeed_config: '{path}' is not a file.")
        return str(path)
    zero: dict[str, Any] = {"stage": spec.zero_stage}
    if spec.zero_stage == 3:  # checkpoints hold the whole model too (gathered), not only DeepSpeed's shards
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {"zero_optimization": zero, "train_micro_batch_size_per_gpu": "auto",
            "train_batch_size": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False}


def agree_on_main(flag: bool) -> bool:
    """Inside training on several processes: the main process's ``flag`` in every process (a decision taken from a
    clock, such as a timed checkpoint, must be the same everywhere)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    box = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


# -- sharded weights (FSDP, DeepSpeed ZeRO-3) -------------------------------------------------------------------------
def weights_sharded() -> bool:
    """Whether fits on these processes shard the weights: each process then holds a slice of every large weight.
    FSDP (``strategy: fsdp``, or an ``accelerate launch`` FSDP config) or DeepSpeed ZeRO stage 3 (from a
    ``zero_stage`` of 3 or the user's DeepSpeed file)."""
    return _fsdp() or _zero3()


def _fsdp() -> bool:
    return is_distributed() and strategy_used(settings()) == "fsdp"


def strategy_used(spec: DistributedSpec) -> str:
    """The strategy fits run with: the ladder's, or FSDP where an ``accelerate launch`` FSDP config asks for it
    (accelerate reads it from the environment, whatever the ladder says)."""
    from_launcher = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    return "fsdp" if from_launcher and spec.strategy == "ddp" else spec.strategy


def _zero3() -> bool:
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def read_whole(p: Any, device: Any = "cpu") -> Any:
    """A copy of the whole weight ``p`` on ``device``, in every process; inside a fit with sharded weights every
    process must call it (it gathers ``p``'s slices across them)."""
    if _zero3():
        import deepspeed

        with deepspeed.zero.GatheredParameters([p]):
            return p.detach().to(device, copy=True).contiguous()
    value = p.detach().full_tensor() if _is_dtensor(p) else p.detach()  # FSDP: from every process's slice
    return value.to(device, copy=True).contiguous()


def write_whole(p: Any, value: Any) -> None:
    """Set the whole weight ``p`` to ``value`` (every process calls it with the same value; inside a sharded fit each
    keeps its own slice of it)."""
    import torch

    with torch.no_grad():
        if _zero3():
            import deepspeed

            with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
                p.copy_(value.to(device=p.device, dtype=p.dtype))
        elif _is_dtensor(p):  # no communication: each process cuts its own slice from the whole
            from torch.distributed.tensor import distribute_tensor

            whole = value.to(device=p.device, dtype=p.dtype)
            p.copy_(distribute_tensor(whole, p.device_mesh, p.placements, src_data_rank=None))
        else:
            p.copy_(value.to(device=p.device, dtype=p.dtype))


def _is_dtensor(p: Any) -> bool:
    """Whether ``p`` is a slice FSDP holds (never on one process, where torch may be built without distributed)."""
    if not is_distributed():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(p, DTensor)


def resharded(model: Any) -> Any:
    """``model`` with every weight back in its FSDP slice (returned): FSDP keeps some gathered after a forward (the
    root's own and the last layers', until the next backward), as plain tensors it discards when it reshards, so a
    weight read or written whole must be its slice. Local (no communication); nothing to do without FSDP."""
    if not is_distributed():
        return model
    for module in model.modules():
        if isinstance(module, _fsdp_module()):
            module.reshard()
    return model


def predicting(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a prediction function under ``torch.inference_mode``, or under ``torch.no_grad`` where fits shard the
    weights (validation scoring during an FSDP or ZeRO-3 fit): under ZeRO-3, weights gathered in inference mode were
    inference tensors, which the training steps after it couldn't use (FSDP was not seen to break; same path)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad() if weights_sharded() else torch.inference_mode():
            return fn(*args, **kwargs)

    return wrapper


#: The hook tables of a module (``torch.nn.Module``'s own attributes) a sharded fit may add to.
_HOOK_TABLES = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
                "_forward_hooks_always_called", "_backward_pre_hooks", "_backward_hooks", "_state_dict_pre_hooks",
                "_state_dict_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


class ShardedFit:
    """A context around one Trainer fit that may shard the weights (FSDP, DeepSpeed ZeRO-3), entered once the
    Trainer's arguments exist (they say whether it does) and before the Trainer is built (:meth:`watch` it).
    Without sharding it does nothing.

    :meth:`gather` (every process, after a fit that finished): ``model`` becomes an ordinary model holding all of its
    trained weights, gathered from every process weight by weight, so the main process can evaluate and save it
    alone. On leaving, however the block ends (every process; no collective operation), :meth:`detach` removes what
    the engine put on the model and in the process: the hooks added since entering (forward, backward and state-dict
    hooks), then FSDP's module classes and records, or DeepSpeed's record of the module, its parameter tables, its
    replacement of torch's linear function, and transformers' ZeRO-3 switch, which would make the next model the main
    process loads alone, or its ``generate``, wait for the other processes. The engine and its optimizer shards are
    then freed with the Trainer. An error while detaching after a failure is logged, not raised over the failure."""

    def __init__(self, model: Any):
        self.model, self.trainer = model, None
        self.kind = "zero3" if _zero3() else "fsdp" if _fsdp() else None
        self.hooks: dict[int, dict[str, set]] = {}
        self._snapshot(model)

    def _snapshot(self, model: Any) -> None:
        if self.kind:
            self.hooks.update({id(m): {t: set(getattr(m, t)) for t in _HOOK_TABLES} for m in model.modules()
                               if id(m) not in self.hooks})

    def watch(self, trainer: Any) -> Any:
        """The Trainer of this fit (its model, and the engine it makes when it trains); returns it. Refuses an FSDP
        fit that accelerate would run as plain DDP (on CPU)."""
        self.trainer, self.model = trainer, trainer.model
        self._snapshot(trainer.model)  # a wrapper the Trainer put around the model, if any
        if self.kind == "fsdp" and not trainer.is_fsdp_enabled:
            raise TrainingError("FSDP (strategy fsdp, or accelerate launch's FSDP config): accelerate did not set it "
                                "up for this fit (it runs FSDP only on GPUs, and would have trained with plain DDP "
                                "instead); on CPU use strategy deepspeed with zero_stage 3 to shard the weights, or "
                                "strategy ddp.")
        return trainer

    def __enter__(self) -> ShardedFit:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        engine = self.kind
        try:
            self.detach(self.trainer.model_wrapped if self.trainer is not None else None)
        except Exception as exc:
            if error is None:
                raise
            import logging

            logging.getLogger(__name__).warning("detaching %s after the failed fit failed too: %s", engine, exc)

    def gather(self) -> None:
        if not self.kind:
            return
        import torch

        resharded(self.model)
        replaced: dict[int, Any] = {}  # tied weights stay one parameter
        for p in self.model.parameters():  # one at a time: the whole model is held once, not twice
            replaced[id(p)] = torch.nn.Parameter(read_whole(p, p.device), requires_grad=p.requires_grad)
        for module in self.model.modules():  # (DeepSpeed's parameter table gathers on lookup: read it as a dict)
            for name, p in list(dict.items(module._parameters)):
                if p is not None and id(p) in replaced:
                    dict.__setitem__(module._parameters, name, replaced[id(p)])

    def detach(self, engine: Any) -> None:
        if not self.kind:
            return
        kind, self.kind = self.kind, None
        if kind == "fsdp":
            self._strip_hooks()
            _strip_fsdp(self.model)
            return
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        try:
            from deepspeed import DeepSpeedEngine

            if isinstance(engine, DeepSpeedEngine):
                engine.destroy()  # (its own hooks first)
            self._strip_hooks()
            _strip_zero3(self.model)
        finally:
            unset_hf_deepspeed_config()  # above all: later models load and generate on one process

    def _strip_hooks(self) -> None:
        for module in self.model.modules():
            before = self.hooks.get(id(module), {})
            for table in _HOOK_TABLES:
                hooks = getattr(module, table)
                for key in set(hooks) - before.get(table, set()):
                    del hooks[key]


def _fsdp_module() -> type:
    from torch.distributed.fsdp import FSDPModule

    return FSDPModule


#: Where FSDP's code lives (a method it wraps keeps the original's name and module, not its code's file).
_FSDP_CODE = os.path.join("torch", "distributed", "fsdp", "")


def _strip_fsdp(model: Any) -> None:
    """Undo ``fully_shard`` on every module: its class (``FSDP<Class>`` -> ``Class``), the methods FSDP wraps on the
    instance (the Trainer has it wrap ``generate``), and FSDP's records and marks on it."""
    import types

    from torch.distributed import _composable_state
    from torch.distributed._composable.contract import REGISTRY_KEY, STATE_KEY

    for module in model.modules():
        if isinstance(module, _fsdp_module()):
            module.__class__ = next(c for c in type(module).__mro__ if not issubclass(c, _fsdp_module()))
        for name, value in list(vars(module).items()):
            code = getattr(value.__func__, "__code__", None) if isinstance(value, types.MethodType) else None
            if code is not None and _FSDP_CODE in code.co_filename:
                del module.__dict__[name]
        # FSDP's state, and its marks (which make transformers' generate wait for the other processes at each token)
        for key in (STATE_KEY, REGISTRY_KEY, "_is_fsdp_managed_module", "_fsdp_use_orig_params",
                    "_is_accelerate_prepared"):  # (the last: accelerate's, it would not prepare the model again)
            module.__dict__.pop(key, None)
        _composable_state._module_state_mapping.pop(module, None)


def _strip_zero3(model: Any) -> None:
    """DeepSpeed's parameter tables and record of every module, and its replacement of torch's linear function."""
    import torch
    from deepspeed.runtime.zero import parameter_offload
    from deepspeed.runtime.zero.linear import zero3_linear_wrap
    from deepspeed.runtime.zero.partition_parameters import InsertPostInitMethodToModuleSubClasses

    for module in model.modules():
        if "_original_parameters" in vars(module):
            del module._original_parameters
        module._parameters = dict(dict.items(module._parameters))  # a plain table again
    ours = {id(m) for m in model.modules()}
    parameter_offload.FWD_MODULE_STACK[:] = [m for m in parameter_offload.FWD_MODULE_STACK if id(m) not in ours]
    if torch.nn.functional.linear is zero3_linear_wrap:
        torch.nn.functional.linear = InsertPostInitMethodToModuleSubClasses.linear_bk
