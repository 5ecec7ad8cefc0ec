"""The runtime section: what each option resolves to on CPU and on CUDA, what is reported as not applied, how a
rung's section overrides the ladder's, and that padding-free batches train exactly like padded ones."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import write_config, write_sentiment_csv

from adaptlab.config import LadderSpec, RungSpec
from adaptlab.errors import ConfigError
from adaptlab.runtime import CAUSAL_SFT_OPTIONS, TRAINER_OPTIONS, Machine, Runtime, RuntimeSpec, cpu_kernels, resolve

CPU = Machine("cpu")
GPU = Machine("cuda", bf16=True, liger_installed=True)


def test_auto_is_plain_on_cpu_and_the_fast_path_on_cuda():
    assert resolve(RuntimeSpec(), CPU, CAUSAL_SFT_OPTIONS, causal=True, rung="r") == Runtime("cpu")
    fast = resolve(RuntimeSpec(), GPU, CAUSAL_SFT_OPTIONS, causal=True, rung="r")
    assert (fast.precision, fast.liger, fast.packing, fast.compile, fast.optimizer) == \
        ("bf16", True, True, True, "adamw_fused")
    assert not fast.gradient_checkpointing and not fast.notes
    old_gpu = resolve(RuntimeSpec(), Machine("cuda", bf16=False), CAUSAL_SFT_OPTIONS, causal=True, rung="r")
    assert old_gpu.precision == "fp16" and not old_gpu.liger  # liger-kernel not installed: auto stays off, silently
    assert not old_gpu.notes


def test_an_encoder_on_cuda_gets_no_causal_lm_options():
    fast = resolve(RuntimeSpec(), GPU, TRAINER_OPTIONS, causal=False, rung="lora")
    assert (fast.precision, fast.liger, fast.packing, fast.compile) == ("bf16", False, False, True)
    asked = resolve(RuntimeSpec(liger=True, packing=True), GPU, TRAINER_OPTIONS, causal=False, rung="lora")
    assert not asked.liger and not asked.packing
    assert len(asked.notes) == 2 and all("rung 'lora' does not train with it" in n for n in asked.notes)


def test_what_cannot_apply_on_cpu_is_reported_and_the_rest_applies():
    asked = RuntimeSpec(precision="fp16", liger=True, packing=True, compile=True, gradient_checkpointing=True,
                        optimizer="adamw_8bit")
    got = resolve(asked, CPU, CAUSAL_SFT_OPTIONS, causal=True, rung="lm_lora")
    assert (got.precision, got.liger, got.optimizer) == ("fp32", False, "adamw_fused")
    assert got.packing and got.compile and got.gradient_checkpointing
    notes = " | ".join(got.notes)
    assert "precision=fp16 not applied: fp16 needs CUDA" in notes
    assert "liger=true not applied: Liger's kernels need CUDA" in notes
    assert "optimizer=adamw_8bit not applied" in notes and len(got.notes) == 3
    bf16 = resolve(RuntimeSpec(precision="bf16", optimizer="adamw"), CPU, TRAINER_OPTIONS, False, "full")
    assert (bf16.precision, bf16.optimizer, bf16.notes) == ("bf16", "adamw", ())
    assert bf16.changed() == {"precision": "bf16", "optimizer": "adamw"}
    assert bf16.trainer_args()["bf16"] and bf16.trainer_args()["optim"] == "adamw_torch"
    assert Runtime().trainer_args()["optim"] == "adamw_torch_fused"  # transformers' own default: nothing changes


def test_a_rung_that_trains_nothing_reports_every_explicit_option():
    got = resolve(RuntimeSpec(precision="bf16", compile=True), GPU, frozenset(), causal=True, rung="zero_shot")
    assert got == Runtime("cuda", notes=got.notes) and len(got.notes) == 2
    assert resolve(RuntimeSpec(), GPU, frozenset(), causal=True, rung="zero_shot").notes == ()


def test_a_rungs_section_overrides_the_ladders_field_by_field():
    ladder = RuntimeSpec(precision="bf16", compile=True)
    rung = RungSpec.model_validate({"method": "lm_lora", "runtime": {"compile": False}})
    merged = rung.runtime.over(ladder)
    assert (merged.precision, merged.compile, merged.packing) == ("bf16", False, "auto")
    assert "runtime" not in RungSpec(method="lora").model_dump()  # rungs without one dump (and hash) as before


def test_unknown_runtime_options_and_the_old_precision_param_are_config_errors(tmp_path):
    from adaptlab.config import parse_ladder

    base = {"name": "x", "data": {"path": "d.csv"}, "model": "tiny-random-llama"}
    with pytest.raises(ConfigError, match="runtime"):
        parse_ladder({**base, "rungs": [{"method": "lm_lora"}], "runtime": {"precison": "bf16"}})
    with pytest.raises(ConfigError, match="precision moved to the runtime section"):
        parse_ladder({**base, "rungs": [{"method": "lm_lora", "params": {"precision": "bf16"}}]})
    spec = LadderSpec.model_validate({**base, "rungs": [{"method": "lm_lora"}], "runtime": {"packing": True}})
    assert spec.runtime.packing is True


def test_padding_free_batches_give_the_padded_loss(session_home):
    """The packed layout (one row, position ids restarting per example) must keep examples apart: per-token losses
    equal the padded batch's. With a key/value cache built in the forward pass transformers would not see the
    packing, which is why SFT rungs train without one."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from adaptlab.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-random-llama").location).eval()
    gen = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(5, 100, (n,), generator=gen).tolist()} for n in (7, 12, 3, 9)]
    for r in rows:
        r["labels"] = [-100, -100] + r["input_ids"][2:]

    def token_losses(padding_free: bool) -> torch.Tensor:
        batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free)(rows)
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
        with torch.no_grad():
            logits = model(**inputs, use_cache=False).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                   reduction="none", ignore_index=-100)
        return losses[labels.reshape(-1) != -100]

    padded, packed = token_losses(False), token_losses(True)
    assert len(padded) == len(packed) == 23
    assert torch.allclose(padded, packed, atol=1e-5), (padded - packed).abs().max()


@pytest.fixture
def onednn_on():
    """oneDNN on as torch starts (loading a fp32 rung elsewhere in this process turns it off), restored after."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = True
    yield
    torch.backends.mkldnn.enabled = before


def test_oneDNN_is_off_while_an_fp32_rung_runs_on_a_cpu_and_back_after(tmp_path, tiny_bert, monkeypatch, onednn_on):
    """oneDNN keeps a compiled kernel per input shape (memory grows with each length a run meets): a fp32 rung on a
    CPU runs without it, in its fit and its predictions; bf16 keeps it; the setting is restored after the rung; the
    rung loaded again predicts without it, as recorded."""
    from adaptlab.config import load_ladder
    from adaptlab.methods.linear_probe import LinearProbe
    from adaptlab.pipeline import compare, load_run, prepare


    seen: list[tuple[str, bool]] = []
    fit, predict = LinearProbe.fit, LinearProbe.predict_proba

    def fit_(self, *args, **kwargs):
        seen.append(("fit", torch.backends.mkldnn.enabled))
        return fit(self, *args, **kwargs)

    def predict_(self, *args, **kwargs):
        seen.append(("predict", torch.backends.mkldnn.enabled))
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(LinearProbe, "fit", fit_)
    monkeypatch.setattr(LinearProbe, "predict_proba", predict_)
    assert torch.backends.mkldnn.enabled
    config = write_config(tmp_path, write_sentiment_csv(tmp_path / "s.csv", 60), tiny_bert,
                          [{"method": "linear_probe"}], device="cpu")
    board = compare(prepare(load_ladder(config)))
    assert board["rungs"][0]["status"] == "ok", board["rungs"][0]["error"]
    assert {s for s, _ in seen} == {"fit", "predict"} and not any(on for _, on in seen), seen
    assert torch.backends.mkldnn.enabled  # restored
    load_run(tmp_path / "out" / "linear_probe")
    assert not torch.backends.mkldnn.enabled  # a loaded fp32 rung predicts with the kernels it ran with
    with cpu_kernels(Runtime(device="cpu", precision="bf16")):
        assert torch.backends.mkldnn.enabled
    with cpu_kernels(Runtime(device="cuda", precision="fp32")):
        assert torch.backends.mkldnn.enabled


@pytest.mark.parametrize(("method", "params", "half"), [
    ("lm_lora", {}, False),  # auto: the weights as stored (fp32 here; bf16 for smollm2)
    ("lm_lora", {"dtype": "bfloat16"}, True),
    ("lm_lora", {"dtype": "float32"}, False),
    ("qlora", {"dtype": "float32"}, True),  # its 4-bit layers multiply in bf16
    ("qlora", {"compute_dtype": "float32"}, False),
    ("lora", {}, False),
])
def test_a_rung_computing_in_half_precision_keeps_oneDNN_on_a_cpu(method, params, half, onednn_on):
    from adaptlab.context import RunContext
    from adaptlab.methods import METHODS

    cls = METHODS.get(method)
    rung = cls(cls.Params.model_validate(params), RunContext(model_spec="tiny-random-llama", task="classification",
                                                                 label_names=["a", "b"]))
    assert rung.computes_in_half() is half
    with cpu_kernels(Runtime(device="cpu", precision="fp32"), rung.computes_in_half()):
        assert torch.backends.mkldnn.enabled is half
    assert torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    with cpu_kernels(Runtime(device="cpu", precision="fp32"), rung.computes_in_half()):
        assert torch.backends.mkldnn.enabled is half  # set for the block, whatever it was
    assert not torch.backends.mkldnn.enabled


def test_ner_prompt_computes_in_the_dtype_its_model_is_stored_in(tmp_path, onednn_on):
    """It loads its model as stored: a bf16 checkpoint (smollm2) computes in half, keeping oneDNN."""
    import json
    import shutil

    from adaptlab.context import RunContext
    from adaptlab.methods import METHODS
    from adaptlab.models import resolve_model

    stored = resolve_model("tiny-random-llama").location
    bf16 = shutil.copytree(stored, tmp_path / "bf16")
    config = json.loads((bf16 / "config.json").read_text())
    (bf16 / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16", "torch_dtype": "bfloat16"}))
    cls = METHODS.get("ner_prompt")
    ctx = RunContext(model_spec="tiny-random-llama", task="token_classification", label_names=["O", "B-PER"])
    assert cls(cls.Params(), ctx).computes_in_half() is False
    assert cls(cls.Params(model=str(bf16)), ctx).computes_in_half() is True


def test_the_server_process_runs_a_fp32_base_on_a_cpu_without_oneDNN(tiny_bert, onednn_on):
    from adaptlab.serving.transformers_engine import load_engine

    engine = load_engine(tiny_bert, [], device="cpu", threads=torch.get_num_threads())
    assert engine.device == "cpu" and not torch.backends.mkldnn.enabled
