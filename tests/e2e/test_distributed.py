"""A ladder on two processes (``torchrun --nproc_per_node 2``, CPU, gloo): one set of files, the same results.

The ladder: ``full`` (trains through the Trainer, so both processes fit it as one DDP run) and
``embedding_zero_shot`` (trains nothing: the main process alone runs it). The launch is killed half way (process 1
is SIGKILLed while checkpoint 10 of 15 is written), says so and how to resume, and ``--resume`` finishes it. Then:

- exactly one set of files (one folder per rung, one leaderboard, one report) and one registry row per rung;
- a marker that only a rung's ``fit`` writes (installed through ``sitecustomize``): ``full`` was fitted by both
  processes, ``embedding_zero_shot`` by the main one only;
- the weights agree: each process's hash of its trained weights (``distributed.check_weights``, recorded in
  run.json by rank) is the hash of the weights the main process saved;
- the metrics equal a one-process run. Tolerance: the model is the tiny random BERT with dropout 0 (with dropout,
  each process draws masks for its half of the batch, so the two runs see different masks and their metrics
  differ by a few examples). ``batch_size`` is the examples per optimizer step on any number of processes (4 per
  process here), and both runs draw the same batches in the same order, so the only difference is the order of
  the floating-point sums when DDP averages the two halves' gradients: predicted probabilities within 1e-3
  (measured: 7.5e-5), metrics within one test example (in practice identical).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import write_sentiment_csv

FULL = {"method": "full", "params": {"max_steps": 15, "batch_size": 8, "learning_rate": 1e-3, "evals_per_epoch": 0,
                                     "checkpoint_every_steps": 5, "logging_steps": 5}}
RUNGS = [FULL, {"method": "embedding_zero_shot"}]

MARKER_HOOK = '''
import os
if os.environ.get("ADAPTLAB_TEST_MARKERS") and os.environ.get("RANK") is not None:
    if os.environ.get("ADAPTLAB_TEST_FSDP_ON_CPU"):
        # accelerate sets FSDP up only for processes on GPU-type devices; on CPU it runs the Trainer's FSDP as plain
        # DDP. Here it takes its GPU branch: the same plugin, set on its state as it is there.
        from accelerate.state import AcceleratorState, PartialState
        from accelerate.utils import DistributedType

        state_init = AcceleratorState.__init__
        def fsdp_state_init(self, *args, fsdp_plugin=None, **kwargs):
            state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
            if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
                self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, fsdp_plugin
                PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        AcceleratorState.__init__ = fsdp_state_init

    from adaptlab.methods._finetune import FineTuneMethod
    from adaptlab.methods.embedding_zero_shot import EmbeddingZeroShot

    def marked(cls):
        original = cls.fit
        def fit(self, *args, **kwargs):
            with open(os.environ["ADAPTLAB_TEST_MARKERS"], "a") as f:
                f.write(f"{self.name} {os.environ['RANK']}\\n")
            if os.environ.get("ADAPTLAB_TEST_FAIL_RANK") == os.environ["RANK"]:
                raise RuntimeError("fails on this process only")
            return original(self, *args, **kwargs)
        cls.fit = fit
    marked(FineTuneMethod)
    marked(EmbeddingZeroShot)

    from transformers import Trainer

    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    train = Trainer.train
    def engine_marked(self, *args, **kwargs):
        output = train(self, *args, **kwargs)
        with open(os.environ["ADAPTLAB_TEST_MARKERS"], "a") as f:
            fsdp = isinstance(self.model_wrapped, FSDPModule)
            f.write(f"engine {'FSDP' if fsdp else type(self.model_wrapped).__name__} {os.environ['RANK']}\\n")
            sliced = None  # weights of which each process holds a part, at the end
            if fsdp:
                sliced = sum(isinstance(p, DTensor) and p.to_local().numel() < p.numel()
                             for p in self.model.parameters())
            elif getattr(self.model_wrapped, "zero_optimization_stage", lambda: 0)() == 3:
                sliced = sum(p.ds_tensor.numel() < p.ds_numel for p in self.model.parameters())
            if sliced is not None:
                f.write(f"sliced {sliced} of {len(list(self.model.parameters()))} {os.environ['RANK']}\\n")
        if os.environ.get("ADAPTLAB_TEST_FAIL_AFTER_FIT"):  # every process, with the weights still sharded
            raise RuntimeError("fails after the fit")
        return output
    Trainer.train = engine_marked

    from adaptlab.distributed import ShardedFit

    detach = ShardedFit.detach
    def detach_marked(self, engine):
        kind = self.kind
        detach(self, engine)
        if kind:  # after a sharded fit: nothing of the engine's left on the model or in the process
            import types

            import torch
            hooks = [getattr(h, "hook", h) for m in self.model.modules()  # every hook table torch has (unwrapped)
                     for name, table in vars(m).items() if "hooks" in name and isinstance(table, dict)
                     for h in table.values()]
            owners = {getattr(getattr(h, "__func__", h), "__module__", None) or "" for h in hooks
                      if not isinstance(h, bool)}  # (the *_with_kwargs tables hold flags)
            clean = all(type(m._parameters) is dict for m in self.model.modules())
            if kind == "zero3":
                from deepspeed.runtime.zero import parameter_offload
                from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
                clean = clean and (not any(o.startswith("deepspeed") for o in owners)
                                   and torch.nn.functional.linear is torch._C._nn.linear
                                   and not parameter_offload.FWD_MODULE_STACK and not is_deepspeed_zero3_enabled())
            else:
                from torch.distributed._composable_state import _get_module_state
                from transformers.distributed.fsdp import is_fsdp_managed_module
                clean = clean and not any(o.startswith("torch.distributed") for o in owners) and not any(
                    isinstance(m, FSDPModule) or _get_module_state(m) is not None or is_fsdp_managed_module(m)
                    or any(isinstance(v, types.MethodType) and "fsdp" in v.__func__.__code__.co_filename
                           for v in vars(m).values()) for m in self.model.modules())
            with open(os.environ["ADAPTLAB_TEST_MARKERS"], "a") as f:
                f.write(f"detached clean={clean} {os.environ['RANK']}\\n")
    ShardedFit.detach = detach_marked
'''


def dropout_free_model(tiny_bert_dir: Path, folder: Path) -> Path:
    shutil.copytree(tiny_bert_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def ladder_file(folder: Path, model: Path, output: Path, **distributed: Any) -> Path:
    cfg = {"name": "tiny", "task": {"type": "classification"}, "model": str(model), "seed": 0, "device": "cpu",
           "data": {"path": str(write_sentiment_csv(folder / "data.csv", 160)), "test_size": 0.25,
                    "validation_size": 0.1, "max_length": 16},
           "output_dir": str(output), "rungs": RUNGS, "distributed": {"check_weights": True, **distributed}}
    path = folder / "ladder.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def launch_env(folder: Path, home: Path) -> dict:
    """The processes' environment: their own registry, one thread each, the marker hook on the path."""
    (folder / "hook").mkdir()
    (folder / "hook" / "sitecustomize.py").write_text(MARKER_HOOK)
    return {**os.environ, "ADAPTLAB_HOME": str(home), "OMP_NUM_THREADS": "1", "COLUMNS": "200",
            "PYTHONPATH": os.pathsep.join([str(folder / "hook"), os.environ.get("PYTHONPATH", "")]),
            "ADAPTLAB_TEST_MARKERS": str(folder / "markers.txt")}


def torchrun(config: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "adaptlab", "compare", str(config), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert, session_home):
    """The two-process ladder killed half way then resumed, and the same ladder on one process."""
    from adaptlab.config import load_ladder
    from adaptlab.models import resolve_model
    from adaptlab.pipeline import compare, prepare

    folder = tmp_path_factory.mktemp("distributed")
    model = dropout_free_model(resolve_model(tiny_bert, cache_dir=session_home / "models").path, folder / "model")
    home = folder / "home"
    env = launch_env(folder, home)
    out = folder / "out"
    config = ladder_file(folder, model, out)
    # process 1 dies while checkpoint 10 is written: checkpoint 5 is complete (every process waited for it to be
    # published); whether the main process publishes checkpoint 10 before the launcher stops it is a race
    crashed = torchrun(config, env={**env, "ADAPTLAB_FAULT": "checkpoint:10", "ADAPTLAB_FAULT_RANK": "1"})
    staged = sorted((p.name for p in (out / ".partial" / "full" / "checkpoints").glob("checkpoint-*")),
                    key=lambda name: int(name.rsplit("-", 1)[1]))
    after_crash = {"published": sorted(p.name for p in out.iterdir()), "checkpoints": staged}
    (folder / "markers.txt").unlink(missing_ok=True)
    resumed = torchrun(config, "--resume", env=env)
    with pytest.MonkeyPatch.context() as mp:  # the one-process reference, in its own folder and registry
        mp.setenv("ADAPTLAB_HOME", str(folder / "home1"))
        compare(prepare(load_ladder(config), folder / "one"))
    return {"crashed": crashed, "after_crash": after_crash, "resumed": resumed, "out": out, "one": folder / "one",
            "home": home, "markers": folder / "markers.txt"}


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_a_killed_process_stops_the_run_with_a_clear_error_and_keeps_its_checkpoints(runs):
    crashed = runs["crashed"]
    assert crashed.returncode != 0
    err = crashed.stderr
    assert "interrupted: finished rungs are kept" in err and "--resume" in err, err[-3000:]
    assert "exitcode  : -9" in err or "Signal 9 (SIGKILL)" in err, err[-3000:]  # torchrun names the killed process
    assert "full" not in runs["after_crash"]["published"]  # the interrupted rung doesn't look finished
    assert runs["after_crash"]["checkpoints"], "no checkpoint kept to resume from"


def test_resume_finishes_with_one_set_of_files(runs):
    resumed, out = runs["resumed"], runs["out"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock", "embedding_zero_shot", "full", "ladder.json", "leaderboard.json", "report.html", "report.md"]
    assert resumed.stdout.count("[1/2] full: ok") == 1  # one process prints
    board = read(out / "leaderboard.json")
    assert sorted((e["rung"], e["status"]) for e in board["rungs"]) == [("embedding_zero_shot", "ok"), ("full", "ok")]
    assert read(out / "full" / "metrics.json")["resumed_from"] == runs["after_crash"]["checkpoints"][-1]
    con = sqlite3.connect(runs["home"] / "runs.sqlite")
    rows = sorted(con.execute("SELECT rung, status FROM runs").fetchall())
    con.close()
    assert rows == [("embedding_zero_shot", "ok"), ("full", "ok")]


def test_trained_rungs_fit_on_every_process_the_others_on_the_main_one(runs):
    fits = sorted(runs["markers"].read_text().split("\n")[:-1])
    assert fits == ["embedding_zero_shot 0", "engine DistributedDataParallel 0", "engine DistributedDataParallel 1",
                    "full 0", "full 1"]


def test_every_process_holds_the_saved_weights(runs):
    from adaptlab.distributed import state_digest
    from adaptlab.pipeline import load_run

    record = read(runs["out"] / "full" / "run.json")["distributed"]
    assert record["processes"] == 2 and record["strategy"] == "ddp"
    _, method, _ = load_run(runs["out"] / "full")  # the model as saved, loaded again
    saved = state_digest(method.trainable_state())
    assert record["weights_sha256"] == [saved, saved]


def test_metrics_equal_a_one_process_run(runs):
    assert_same_results(runs["out"], runs["one"])


def assert_same_results(many: Path, one: Path, rungs: tuple[str, ...] = ("full", "embedding_zero_shot")) -> None:
    for rung in rungs:
        two = read(many / rung / "metrics.json")
        one_ = read(one / rung / "metrics.json")
        preds = [[json.loads(line) for line in (folder / rung / "predictions.jsonl").read_text().splitlines()]
                 for folder in (many, one)]
        assert len(preds[0]) == len(preds[1])
        gaps = [abs(a["scores"][k] - b["scores"][k]) for a, b in zip(*preds) for k in a["scores"]]
        assert max(gaps) < 1e-3, (rung, max(gaps))
        for name, value in one_["metrics"].items():  # at most one test example predicted otherwise
            assert two["metrics"][name] == pytest.approx(value, abs=1 / len(preds[1]) + 1e-9), (rung, name)


def test_one_process_takes_no_distributed_path(monkeypatch):
    from adaptlab import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.trainer_fields(8, own_loss=True) == {}
    agreement = distributed.RungAgreement("full", shared=True)
    agreement.fitted(lambda: pytest.fail("no weights are hashed on one process"))
    assert distributed._CHANNEL is None  # nothing connected


def test_weights_are_read_and_written_whole_on_one_process_without_torch_distributed(monkeypatch):
    """Best-checkpoint copy and restore on one process never import torch's distributed packages (some torch builds
    have none)."""
    import torch

    from adaptlab import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for name in ("torch.distributed.tensor", "torch.distributed.fsdp"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    model = torch_module()
    weight = distributed.resharded(model)[0].weight
    copy = distributed.read_whole(weight)
    distributed.write_whole(weight, torch.zeros_like(copy))
    assert not weight.any() and copy.any()


def test_batch_size_must_split_evenly(monkeypatch):
    from adaptlab import distributed
    from adaptlab.errors import TrainingError

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.trainer_fields(8, own_loss=True)["per_device_train_batch_size"] == 4
    assert distributed.trainer_fields(8, own_loss=True)["average_tokens_across_devices"] is False
    with pytest.raises(TrainingError, match="multiple of 2"):
        distributed.trainer_fields(7, own_loss=False)



DEEPSPEED_INSTALL = "pip install --no-build-isolation deepspeed==0.19.8"


@pytest.mark.slow
def test_deepspeed_zero2_on_two_cpu_processes(tmp_path, tiny_bert, session_home):
    """ZeRO-2 (optimizer state and gradients sharded over the two processes, DeepSpeed's CPU accelerator, gloo):
    the same results as one process, within the tolerance above. The first run JIT-builds a DeepSpeed op (minutes)."""
    pytest.importorskip("deepspeed", reason=f"DeepSpeed is not installed: {DEEPSPEED_INSTALL}")
    from adaptlab.config import load_ladder
    from adaptlab.models import resolve_model
    from adaptlab.pipeline import compare, prepare

    model = dropout_free_model(resolve_model(tiny_bert, cache_dir=session_home / "models").path, tmp_path / "model")
    config = ladder_file(tmp_path, model, tmp_path / "out", strategy="deepspeed", zero_stage=2)
    done = torchrun(config, env={**launch_env(tmp_path, tmp_path / "home"), "DS_ACCELERATOR": "cpu"})
    assert done.returncode == 0, done.stderr[-3000:]
    engines = sorted(line for line in (tmp_path / "markers.txt").read_text().splitlines() if line.startswith("engine"))
    assert engines == ["engine DeepSpeedEngine 0", "engine DeepSpeedEngine 1"]
    record = read(tmp_path / "out" / "full" / "run.json")["distributed"]
    assert record["strategy"] == "deepspeed" and len(set(record["weights_sha256"])) == 1
    compare(prepare(load_ladder(config), tmp_path / "one"))
    assert_same_results(tmp_path / "out", tmp_path / "one")


def zero3_file(folder: Path) -> str:
    """A DeepSpeed file for ZeRO-3 that slices every weight, however small (the tiny models' all are), across the
    processes; its name relative to ``folder`` (where the ladder file goes)."""
    auto = {k: "auto" for k in ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps",
                                "gradient_clipping")}
    (folder / "ds.json").write_text(json.dumps({**auto, "zero_optimization": {
        "stage": 3, "stage3_param_persistence_threshold": 0}, "zero_allow_untested_optimizer": True}))
    return "ds.json"


#: Trained rungs for the sharded-weights tests: ``full`` keeps its best validation loss (at step 6 of 12 on one
#: process, so the restore of the best weights counts); ``lora`` without dropout (each process would draw its masks).
SHARDED_FULL = {**FULL, "params": {**FULL["params"], "max_steps": 12, "learning_rate": 3e-3, "evals_per_epoch": 4,
                                   "select_best": "loss"}}
SHARDED_LORA = {"method": "lora", "params": {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-2,
                                             "evals_per_epoch": 2, "dropout": 0.0}}


def killed_then_resumed(config: Path, rungs: list[dict], env: dict) -> list[str]:
    """Run the ladder ``config`` with ``rungs`` on two processes, process 1 killed at checkpoint 10 of ``full``,
    then resumed to the end; the markers of the resumed launch."""
    folder = config.parent
    cfg = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**cfg, "rungs": rungs}))
    env = {**launch_env(folder, folder / "home"), **env}
    crashed = torchrun(config, env={**env, "ADAPTLAB_FAULT": "checkpoint:10", "ADAPTLAB_FAULT_RANK": "1"})
    assert crashed.returncode != 0 and "interrupted: finished rungs are kept" in crashed.stderr, crashed.stderr[-3000:]
    (folder / "markers.txt").unlink(missing_ok=True)
    done = torchrun(config, "--resume", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read(folder / "out" / "full" / "metrics.json")["resumed_from"].startswith("checkpoint-")
    return (folder / "markers.txt").read_text().splitlines()


def assert_sharded_fits(markers: list[str], engine: str, fits: int) -> None:
    """``fits`` fits ran on ``engine`` in both processes, every weight sliced at the end, the engine detached clean."""
    assert sorted(m for m in markers if m.startswith("engine")) == [f"engine {engine} 0"] * fits + [
        f"engine {engine} 1"] * fits, markers
    sliced = [m.split() for m in markers if m.startswith("sliced")]
    assert len(sliced) == 2 * fits and all(m[1] == m[3] for m in sliced), markers  # every weight really sharded
    assert sorted(m for m in markers if m.startswith("detached")) == ["detached clean=True 0"] * fits + [
        "detached clean=True 1"] * fits, markers


def assert_saved_weights_everywhere(out: Path, rungs: tuple[str, ...]) -> None:
    """Both processes ended each rung with the trained weights the main process saved (adapters: theirs only)."""
    from adaptlab.distributed import state_digest
    from adaptlab.pipeline import load_run

    for rung in rungs:
        record = read(out / rung / "run.json")["distributed"]
        _, method, _ = load_run(out / rung)  # the model as saved, loaded again (adapters: frozen)
        adapter = rung == "lora"
        saved = {n: p for n, p in method.model.named_parameters()
                 if not adapter or "lora_" in n or "to_save" in n}
        assert record["weights_sha256"] == [state_digest(saved)] * 2, rung


def assert_one_process_results(config: Path, rungs: tuple[str, ...], kept_best: tuple[str, ...]) -> None:
    """The same ladder on one process gives the same results, and the rungs ``kept_best`` kept the same best
    validation checkpoint (by the loss, before their last step)."""
    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare, prepare

    folder = config.parent
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTLAB_HOME", str(folder / "home1"))
        compare(prepare(load_ladder(config), folder / "one"))
    assert_same_results(folder / "out", folder / "one", rungs)
    for rung in kept_best:
        selection = [read(folder / run / rung / "metrics.json")["training"]["selection"] for run in ("out", "one")]
        assert selection[0]["by"] == "loss" and selection[0]["evaluations"] == 4, rung
        assert selection[0]["kept_step"] == selection[1]["kept_step"] < 12, rung


@pytest.mark.slow
def test_deepspeed_zero3_shards_the_weights_and_gathers_them_for_the_main_process(tmp_path, tiny_bert, session_home):
    """ZeRO-3 from the user's DeepSpeed file (weights sharded too: with a persistence threshold of 0 every weight
    of the tiny model is sliced across the two processes while it trains). ``full`` keeps its best validation
    checkpoint by the validation loss (both processes gather the sliced weights to copy and restore them) and is
    killed half way, then resumed from DeepSpeed's sharded checkpoint; ``lora`` trains an adapter over a frozen
    base, scored on the validation split while it trains. After each fit both processes hold the whole trained
    model (the hash of the one the main process saved) and the results equal a one-process run, within the
    tolerance above."""
    pytest.importorskip("deepspeed", reason=f"DeepSpeed is not installed: {DEEPSPEED_INSTALL}")
    from adaptlab.models import resolve_model

    model = dropout_free_model(resolve_model(tiny_bert, cache_dir=session_home / "models").path, tmp_path / "model")
    zero3 = zero3_file(tmp_path)
    config = ladder_file(tmp_path, model, tmp_path / "out", strategy="deepspeed", deepspeed_config=zero3)
    rungs = [SHARDED_FULL, SHARDED_LORA, {"method": "embedding_zero_shot"}]  # the last on the main process alone
    markers = killed_then_resumed(config, rungs, {"DS_ACCELERATOR": "cpu"})
    assert_sharded_fits(markers, "DeepSpeedEngine", 2)
    assert_saved_weights_everywhere(tmp_path / "out", ("full", "lora"))
    assert_one_process_results(config, ("full", "lora", "embedding_zero_shot"), kept_best=("full",))


def test_fsdp_shards_the_weights_and_gathers_them_for_the_main_process(tmp_path, tiny_bert, session_home):
    """``strategy: fsdp`` (PyTorch FSDP2 through accelerate, every weight sliced across the two processes while it
    trains). accelerate sets FSDP up only on GPU-type devices, so the marker hook makes it take that branch on CPU
    (gloo): the Trainer, accelerate's FSDP2 preparation and checkpointing, and adaptlab's side are the real ones.
    ``full`` keeps its best validation checkpoint by the validation loss (every process copies and restores the
    whole weights) and is killed half way, then resumed from the Trainer's FSDP checkpoint; ``lora`` trains an
    adapter over a frozen base. After each fit both processes hold the whole trained model (the hash of the one the
    main process saved), FSDP is detached (no FSDP class, hook or record left), and the results equal a one-process
    run within the tolerance above."""
    from adaptlab.models import resolve_model

    model = dropout_free_model(resolve_model(tiny_bert, cache_dir=session_home / "models").path, tmp_path / "model")
    config = ladder_file(tmp_path, model, tmp_path / "out", strategy="fsdp")
    # the same without checkpoints: its fit ends on a validation pass, after which FSDP keeps the root's own weights
    # (embeddings, head) gathered, as copies it discards: the best weights must be restored into their slices
    kept = {**SHARDED_FULL, "name": "full_kept",
            "params": {**SHARDED_FULL["params"], "checkpoint_every_steps": None}}
    rungs = [SHARDED_FULL, kept, SHARDED_LORA, {"method": "embedding_zero_shot"}]
    markers = killed_then_resumed(config, rungs, {"ADAPTLAB_TEST_FSDP_ON_CPU": "1"})
    assert_sharded_fits(markers, "FSDP", 3)
    assert_saved_weights_everywhere(tmp_path / "out", ("full", "full_kept", "lora"))
    for rung in ("full", "full_kept", "lora"):
        assert read(tmp_path / "out" / rung / "run.json")["distributed"]["strategy"] == "fsdp", rung
    assert_one_process_results(config, ("full", "full_kept", "lora", "embedding_zero_shot"),
                               kept_best=("full", "full_kept"))


def test_the_distributed_section_is_validated_and_its_deepspeed_file_resolved(tmp_path, sentiment_csv):
    from adaptlab.config import parse_ladder
    from adaptlab.distributed import deepspeed_config
    from adaptlab.errors import ConfigError
    from adaptlab.pipeline import Ladder, distributed_settings

    raw = {"name": "t", "data": {"path": str(sentiment_csv)}, "model": "tiny-random-bert",
           "rungs": [{"method": "full"}], "distributed": {"strategy": "deepspeed", "deepspeed_config": "ds.json"}}
    spec = parse_ladder(raw, base_dir=tmp_path)
    ladder = Ladder(spec, None, None, None, tmp_path / "out", "", "")
    assert distributed_settings(ladder).deepspeed_config == str(tmp_path / "ds.json")
    with pytest.raises(ConfigError, match=r"distributed.strategy: .*'ddp', 'fsdp' or 'deepspeed'"):
        parse_ladder({**raw, "distributed": {"strategy": "horovod"}})
    assert parse_ladder({**raw, "distributed": {"strategy": "fsdp"}}).distributed.strategy == "fsdp"
    with pytest.raises(ConfigError, match=r"distributed.stage: unknown key. Did you mean 'zero_stage'"):
        parse_ladder({**raw, "distributed": {"stage": 2}})
    zero3 = parse_ladder({**raw, "distributed": {"strategy": "deepspeed", "zero_stage": 3}})
    stage3 = distributed_settings(Ladder(zero3, None, None, None, tmp_path / "out", "", ""))
    assert deepspeed_config(stage3)["zero_optimization"] == {"stage": 3,
                                                             "stage3_gather_16bit_weights_on_model_save": True}
    assert deepspeed_config(stage3.model_copy(update={"zero_stage": 2}))["zero_optimization"] == {"stage": 2}
    with pytest.raises(ConfigError, match=r"distributed.zero_stage"):
        parse_ladder({**raw, "distributed": {"strategy": "deepspeed", "zero_stage": 4}})


@pytest.mark.slow
def test_fsdp_on_cpu_processes_is_refused_not_run_as_ddp(tmp_path, tiny_bert, session_home):
    """Without the test hook's GPU branch, accelerate runs the Trainer's FSDP on CPU processes as plain DDP: the rung
    fails with the clear message, in both processes alike, and the ladder goes on."""
    from adaptlab.models import resolve_model

    model = resolve_model(tiny_bert, cache_dir=session_home / "models").path
    config = ladder_file(tmp_path, model, tmp_path / "out", strategy="fsdp")
    done = torchrun(config, env=launch_env(tmp_path, tmp_path / "home"))
    board = {e["rung"]: e for e in read(tmp_path / "out" / "leaderboard.json")["rungs"]}
    assert "accelerate did not set it up for this fit" in board["full"]["error"], done.stderr[-3000:]
    assert board["embedding_zero_shot"]["status"] == "ok"
    assert "engine" not in (tmp_path / "markers.txt").read_text()  # refused before training


def test_fsdp_shards_each_repeated_layer_but_not_twice_the_embeddings(tiny_bert, session_home):
    """FSDP's groups: the model's repeated layers, never a class holding the input embeddings (accelerate shards those
    on their own, and BERT names its embeddings module among the layers not to split: sharded twice, it fails)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from adaptlab.distributed import fsdp_config
    from adaptlab.models import resolve_model

    bert = AutoModelForSequenceClassification.from_pretrained(
        resolve_model(tiny_bert, cache_dir=session_home / "models").path, num_labels=2)
    assert set(bert._no_split_modules) == {"BertEmbeddings", "BertLayer"}
    assert fsdp_config(bert) == {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                 "transformer_layer_cls_to_wrap": ["BertLayer"]}
    adapted = get_peft_model(bert, LoraConfig(r=2, target_modules=["query"]))  # the transformers model inside
    assert fsdp_config(adapted)["transformer_layer_cls_to_wrap"] == ["BertLayer"]
    llama = AutoModelForCausalLM.from_pretrained(
        resolve_model("tiny-random-llama", cache_dir=session_home / "models").path)
    assert fsdp_config(llama)["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert fsdp_config(torch_module()) == {"version": 2, "auto_wrap_policy": "NO_WRAP"}  # no transformers model


def torch_module():
    import torch

    return torch.nn.Sequential(torch.nn.Linear(2, 2))


def test_fsdp_that_accelerate_would_run_as_plain_ddp_is_refused(monkeypatch):
    """On CPU accelerate runs the Trainer's FSDP as plain DDP: a rung asking for it is refused, not run unsharded."""
    from types import SimpleNamespace

    from adaptlab import distributed
    from adaptlab.errors import TrainingError

    monkeypatch.setenv("WORLD_SIZE", "2")
    token = distributed.SETTINGS.set(distributed.DistributedSpec(strategy="fsdp"))
    try:
        model = torch_module()
        fit = distributed.ShardedFit(model)
        assert fit.kind == "fsdp" and distributed.weights_sharded()
        assert distributed.trainer_fields(8, own_loss=False, model=model)["fsdp"] is True
        with pytest.raises(TrainingError, match="accelerate did not set it up for this fit"):
            fit.watch(SimpleNamespace(model=model, is_fsdp_enabled=False))
        assert fit.watch(SimpleNamespace(model=model, is_fsdp_enabled=True)).is_fsdp_enabled
    finally:
        distributed.SETTINGS.reset(token)


@pytest.mark.slow
def test_a_rung_failing_on_one_process_only_stops_the_run_instead_of_hanging(tmp_path, tiny_bert, session_home):
    """Process 1 fails before training while process 0 waits for it inside training (the process group's set-up):
    process 1 waits failure_wait_seconds for the others to report, says so and exits; torchrun stops process 0
    (after its 30 s grace period: process 0 is blocked in C++ and can't handle SIGTERM sooner)."""
    from adaptlab.models import resolve_model

    model = resolve_model(tiny_bert, cache_dir=session_home / "models").path
    config = ladder_file(tmp_path, model, tmp_path / "out", failure_wait_seconds=5)
    env = {**launch_env(tmp_path, tmp_path / "home"), "ADAPTLAB_TEST_FAIL_RANK": "1"}
    start = time.monotonic()
    done = torchrun(config, env=env)
    assert done.returncode != 0
    assert time.monotonic() - start < 200
    assert ("adaptlab: process 1: rung 'full' failed here (RuntimeError: fails on this process only), but the other "
            "processes did not report within 5 s") in done.stderr, done.stderr[-3000:]
    assert "--resume" in done.stderr
    assert not (tmp_path / "out" / "full").exists()


def sharded(engine: str, folder: Path) -> tuple[dict, dict]:
    """The ``distributed`` section and launch environment for weights sharded by ``engine`` ("zero3": every weight
    sliced; "fsdp": on CPU through the marker hook, see the FSDP test above); skips ZeRO-3 without DeepSpeed."""
    if engine == "zero3":
        pytest.importorskip("deepspeed", reason=f"DeepSpeed is not installed: {DEEPSPEED_INSTALL}")
        return {"strategy": "deepspeed", "deepspeed_config": zero3_file(folder)}, {"DS_ACCELERATOR": "cpu"}
    return {"strategy": "fsdp"}, {"ADAPTLAB_TEST_FSDP_ON_CPU": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["zero3", "fsdp"])
def test_sharded_generation_rungs_scored_while_they_train(engine, tmp_path, session_home):
    """Weights sharded (ZeRO-3 with every weight sliced, or FSDP), on the tiny random Llama: SFT rungs (full
    fine-tune, LoRA and (IA)3 over a frozen base) scored on the validation split while they train (greedy decoding,
    every process) keep their best checkpoint, and finish with the same weights in both processes. Under ZeRO-3,
    decoding in torch's inference mode made the frozen weights gathered for it inference tensors, and the next
    training step failed ("Inference tensors cannot be saved for backward")."""
    from tests.generative_data import write_generation_csv

    data = write_generation_csv(tmp_path / "gen.csv", 48)
    params = {"max_steps": 4, "batch_size": 8, "learning_rate": 1e-2, "evals_per_epoch": 2, "select_best": "metric"}
    cfg = {"name": "gen", "task": {"type": "generation", "forgetting_tokens": 64, "generation": {"max_new_tokens": 4}},
           "data": {"path": str(data), "test_size": 0.25, "validation_size": 0.2, "max_length": 64},
           "model": "tiny-random-llama", "seed": 0, "device": "cpu", "output_dir": str(tmp_path / "out"),
           "rungs": [{"method": m, "params": params} for m in ("lm_full", "lm_lora", "lm_ia3")]}
    distributed, env = sharded(engine, tmp_path)
    cfg["distributed"] = {**distributed, "check_weights": True}
    config = tmp_path / "ladder.yaml"
    config.write_text(yaml.safe_dump(cfg))
    done = torchrun(config, env={**launch_env(tmp_path, tmp_path / "home"), **env})
    assert done.returncode == 0, done.stderr[-3000:]
    detached = [m for m in (tmp_path / "markers.txt").read_text().splitlines() if m.startswith("detached")]
    assert sorted(detached) == ["detached clean=True 0"] * 3 + ["detached clean=True 1"] * 3, detached
    for rung in ("lm_full", "lm_lora", "lm_ia3"):
        metrics = read(tmp_path / "out" / rung / "metrics.json")
        assert metrics["status"] == "ok", (rung, metrics.get("error"))
        assert metrics["training"]["selection"]["evaluations"] >= 2, rung
        hashes = read(tmp_path / "out" / rung / "run.json")["distributed"]["weights_sha256"]
        assert len(hashes) == 2 and len(set(hashes)) == 1, rung


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["zero3", "fsdp"])
def test_sharded_preference_rungs_and_the_one_refused(engine, tmp_path, session_home):
    """Weights sharded (``zero_stage: 3``, adaptlab's own DeepSpeed config, or FSDP) on the preference ladder: DPO
    with LoRA (its reference is the adapter switched off) and the reward model train, and the main process scores
    them alone afterwards; DPO with ``lora: false`` fails with a clear message (its separate reference model would be
    sharded and never gathered back, while the main process scores pairs against it alone) and the ladder goes on."""
    from tests.preference_data import preference_rows, write_rows

    data = write_rows(tmp_path / "pairs.jsonl", preference_rows(48))
    fast = {"max_steps": 4, "batch_size": 8, "learning_rate": 5e-3, "evals_per_epoch": 0}
    rungs = [{"method": "dpo", "params": fast},
             {"method": "dpo", "name": "dpo_full", "params": {**fast, "lora": False}},
             {"method": "reward_model", "params": fast}]
    cfg = {"name": "pref", "task": {"type": "preference", "forgetting_tokens": 64},
           "data": {"path": str(data), "test_size": 0.25, "validation_size": 0.0, "max_length": 64},
           "model": "tiny-random-llama", "seed": 0, "device": "cpu", "output_dir": str(tmp_path / "out"),
           "rungs": rungs}
    distributed, env = sharded(engine, tmp_path)
    if engine == "zero3":
        distributed = {"strategy": "deepspeed", "zero_stage": 3}
    cfg["distributed"] = {**distributed, "check_weights": True}
    config = tmp_path / "ladder.yaml"
    config.write_text(yaml.safe_dump(cfg))
    done = torchrun(config, env={**launch_env(tmp_path, tmp_path / "home"), **env})
    board = {e["rung"]: e for e in read(tmp_path / "out" / "leaderboard.json")["rungs"]}
    assert board["dpo"]["status"] == "ok" and board["reward_model"]["status"] == "ok", done.stderr[-3000:]
    assert "separate reference model" in board["dpo_full"]["error"], board["dpo_full"]
    for rung in ("dpo", "reward_model"):
        hashes = read(tmp_path / "out" / rung / "run.json")["distributed"]["weights_sha256"]
        assert len(hashes) == 2 and len(set(hashes)) == 1, rung


@pytest.mark.slow
def test_a_zero3_fit_failing_everywhere_leaves_the_processes_clean_for_the_next_rung(tmp_path, tiny_bert,
                                                                                   session_home):
    """A rung whose ZeRO-3 fit fails in every process (here: right after training, the weights still sliced) is
    recorded as failed and DeepSpeed is detached all the same: the next rung, which the main process runs alone
    (loading a model), neither waits for the others nor inherits transformers' ZeRO-3 switch."""
    pytest.importorskip("deepspeed", reason=f"DeepSpeed is not installed: {DEEPSPEED_INSTALL}")
    from adaptlab.models import resolve_model

    model = resolve_model(tiny_bert, cache_dir=session_home / "models").path
    zero3 = zero3_file(tmp_path)
    config = ladder_file(tmp_path, model, tmp_path / "out", strategy="deepspeed", deepspeed_config=zero3)
    env = {**launch_env(tmp_path, tmp_path / "home"), "DS_ACCELERATOR": "cpu", "ADAPTLAB_TEST_FAIL_AFTER_FIT": "1"}
    start = time.monotonic()
    done = torchrun(config, env=env)
    assert time.monotonic() - start < 240, "the main process waited for the others"
    board = {e["rung"]: e for e in read(tmp_path / "out" / "leaderboard.json")["rungs"]}
    assert "fails after the fit" in board["full"]["error"] and board["embedding_zero_shot"]["status"] == "ok", \
        done.stderr[-3000:]
    markers = (tmp_path / "markers.txt").read_text().splitlines()
    assert sorted(m for m in markers if m.startswith("detached")) == ["detached clean=True 0",
                                                                      "detached clean=True 1"], markers
