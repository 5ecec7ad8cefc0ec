"""Tiny random models (``tiny-random-{bert,gpt2,llama,t5}``) built offline in about a second, for tests.

Each is 2 layers of width 64 with 4 heads, seeded, so a build gives the same bytes every time with the same
library versions. Tokenizers are real but small:

- bert: the uncased WordPiece vocabulary shipped with the MiniLM package (30,522 tokens); saved as a
  ``BertModel`` with pooler, like MiniLM, so task heads load on top with only the head missing.
- gpt2, llama, t5: a byte-level BPE of 1,024 tokens trained on Hamlet (``tokenizers``' BPE trainer is
  deterministic; its Unigram trainer is not, so T5 gets a BPE too). gpt2 and llama share it and carry a
  ChatML chat template with ``{% generation %}`` marks (assistant-token masks work); t5 appends ``</s>``.

The model's vocabulary size equals ``len(tokenizer)``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from adaptlab.errors import UserError, did_you_mean
from adaptlab.models.hashing import build_once
from adaptlab.models.packaged import hamlet_path, minilm_vocab

TINY_PREFIX = "tiny-random-"
TINY_ARCHS = ("bert", "gpt2", "llama", "t5")
# Bump when a build below changes, so caches built by older code are not reused.
RECIPE = 1
SEED = 0

HIDDEN = 64
LAYERS = 2
HEADS = 4
INTERMEDIATE = 128
MAX_POSITIONS = 512
BPE_VOCAB = 1024

# Causal models: ids 0-3 in this order.
CAUSAL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
# T5: pad 0 (also the decoder start), eos 1, unk 2, as in the original T5 vocabulary.
T5_SPECIAL = ["<pad>", "</s>", "<unk>"]

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def tiny_names() -> list[str]:
    return [TINY_PREFIX + arch for arch in TINY_ARCHS]


def tiny_arch(spec: str) -> str | None:
    """The architecture of a ``tiny-random-<arch>`` spec, None for other specs, UserError for unknown archs."""
    if not spec.startswith(TINY_PREFIX):
        return None
    arch = spec[len(TINY_PREFIX):]
    if arch not in TINY_ARCHS:
        raise UserError(
            f"model '{spec}': unknown tiny random architecture '{arch}'.{did_you_mean(spec, tiny_names())} "
            f"Available: {', '.join(tiny_names())}"
        )
    return arch


def tiny_model_dir(arch: str, cache_dir: Path) -> Path:
    """The folder of ``tiny-random-<arch>`` in ``cache_dir``, built on first use."""
    final = cache_dir / f"{TINY_PREFIX}{arch}-r{RECIPE}"
    return build_once(final, lambda tmp: build_tiny(arch, tmp))


def build_tiny(arch: str, dest: Path) -> None:
    """Write tokenizer, config and seeded random weights (float32 safetensors) of a tiny model into ``dest``."""
    import tokenizers
    import torch
    import transformers

    tokenizer = _bert_tokenizer() if arch == "bert" else _bpe_tokenizer(t5=arch == "t5")
    model_class, config = _config(arch, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_class(config)
    generation = getattr(model, "generation_config", None)  # None for encoders
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        value = getattr(config, name, None)
        if generation is not None and value is not None:
            setattr(generation, name, value)
    with _quiet_progress_bars():
        model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    about = {
        "model": TINY_PREFIX + arch, "recipe": RECIPE, "seed": SEED, "torch": torch.__version__,
        "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
    }
    (dest / "adaptlab_model.json").write_text(json.dumps(about, indent=1, sort_keys=True), encoding="utf-8")


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Hide transformers' "Writing model shards" bar for a one-second build, then restore the setting."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _config(arch: str, tokenizer):
    """(model class, config) for ``arch``, sized to the tokenizer."""
    from transformers import (
        BertConfig,
        BertModel,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    vocab = len(tokenizer)
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if arch == "bert":
        return BertModel, BertConfig(
            vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            intermediate_size=INTERMEDIATE, max_position_embeddings=MAX_POSITIONS, pad_token_id=tokenizer.pad_token_id,
        )
    if arch == "gpt2":
        return GPT2LMHeadModel, GPT2Config(
            vocab_size=vocab, n_positions=MAX_POSITIONS, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
            n_inner=INTERMEDIATE, bos_token_id=tokenizer.bos_token_id, **ids,
        )
    if arch == "llama":
        return LlamaForCausalLM, LlamaConfig(
            vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, num_key_value_heads=HEADS // 2, max_position_embeddings=MAX_POSITIONS,
            tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, **ids,
        )
    if arch == "t5":
        return T5ForConditionalGeneration, T5Config(
            vocab_size=vocab, d_model=HIDDEN, d_kv=HIDDEN // HEADS, d_ff=INTERMEDIATE, num_layers=LAYERS,
            num_decoder_layers=LAYERS, num_heads=HEADS, decoder_start_token_id=tokenizer.pad_token_id, **ids,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}")


def _bert_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab=str(minilm_vocab()), do_lower_case=True, model_max_length=MAX_POSITIONS)


def _train_bpe(special_tokens: list[str]):
    """A byte-level BPE of BPE_VOCAB tokens trained on Hamlet; the BPE trainer gives the same merges each run."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    lines = [line for line in hamlet_path().read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer)
    return tokenizer


def _bpe_tokenizer(*, t5: bool):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    if t5:
        raw = _train_bpe(T5_SPECIAL)
        raw.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", T5_SPECIAL.index("</s>"))]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
            model_max_length=MAX_POSITIONS,
        )
    raw = _train_bpe(CAUSAL_SPECIAL)
    raw.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|im_end|>", unk_token="<|endoftext|>",
        pad_token="<|pad|>", model_max_length=MAX_POSITIONS, chat_template=CHATML_TEMPLATE,
    )
