"""``adaptlab generate`` and ``adaptlab inspect-data``: talk to a generative model, and see what it is trained on.

    adaptlab generate smollm2 "Name three colours."                   # chat template applied, greedy
    adaptlab generate smollm2 "Once upon a time" --raw --sample --temperature 0.8 --top-p 0.9 --seed 1
    adaptlab generate runs/chitchat_sft/lm_lora "hi! how was your weekend?"   # a trained rung, its prompt format
    adaptlab generate tiny-random-gpt2 "to be or" --raw --explain --max-new-tokens 5
    adaptlab inspect-data examples/chitchat_sft.yaml --rung lm_lora   # one example, trained tokens in [[ ]]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from adaptlab.cli import app, console
from adaptlab.errors import UserError

MARK_OPEN, MARK_CLOSE = "[[", "]]"


def _load(model_or_run: str, chat: bool | None, system: str | None) -> Any:
    """A ready generative method: a finished rung (folder with run.json) or a base model prompted as it is."""
    from adaptlab.methods._causal import GenerativeMethod

    folder = Path(model_or_run)
    if (folder / "run.json").is_file():
        from adaptlab.pipeline import load_run

        _, method, info = load_run(folder)
        if not isinstance(method, GenerativeMethod):
            raise UserError(f"{folder}: rung '{info['rung']['method']}' is a classifier, not a generative rung; "
                            "`generate` needs a generative rung (zero_shot_prompt, lm_lora, ...) or a model.")
        if chat is not None or system is not None:
            raise UserError("--chat/--no-chat and --system apply to a base model; a run uses its own prompt format.")
        return method
    return _base_method(model_or_run, chat, system)


def _base_method(model: str, chat: bool | None, system: str | None) -> Any:
    from adaptlab.config import TaskSpec
    from adaptlab.context import RunContext
    from adaptlab.generation import lm
    from adaptlab.methods._causal import ChoiceParams
    from adaptlab.methods.zero_shot_prompt import ZeroShotPrompt
    from adaptlab.models import resolve_model

    resolved = resolve_model(model)
    config = lm.load_config(resolved)
    if lm.model_kind(config) == "encoder":
        raise UserError(f"'{model}' is an encoder-only model ({', '.join(config.architectures or [])}); it cannot "
                        "generate text. Give a causal LM or seq2seq model (smollm2, tiny-random-gpt2, "
                        "tiny-random-t5, a folder) or a run folder of a generative rung.")
    window = lm.context_window(config) or 8192
    spec = TaskSpec(type="generation", chat_template=chat, system_prompt=system, forgetting_text=None)
    ctx = RunContext(model_spec=model, task="generation", label_names=[], max_length=window,
                     extra={"task": spec.model_dump(mode="json")})
    method = ZeroShotPrompt(ChoiceParams(), ctx)
    method.setup()
    return method


def prompt_ids(method: Any, prompt: str, raw: bool, max_new_tokens: int) -> list[int]:
    """The prompt's token ids; UserError when prompt plus new tokens exceed the model's context window."""
    tok = method.tokenizer
    ids = list(tok(prompt)["input_ids"]) if raw else method.formatter.prompt_ids(
        prompt, None, method.demos_for([prompt], None)[0])
    window = method.window
    if window:
        room = window - method.virtual_tokens
        over = len(ids) + max_new_tokens - room
        if over > 0:
            dropped = tok.decode(ids[:over])
            shown = dropped if len(dropped) <= 80 else dropped[:40] + " ... " + dropped[-35:]
            raise UserError(
                f"the prompt is {len(ids)} tokens; with --max-new-tokens {max_new_tokens} that is "
                f"{len(ids) + max_new_tokens}, {over} more than the {room}-token context window of "
                f"'{method.ctx.model_spec}'. Truncating would drop the first {over} tokens of the prompt: {shown!r}. "
                "Shorten the prompt or lower --max-new-tokens."
            )
    return ids


@app.command()
def generate(
    model_or_run: str = typer.Argument(..., help="A model (smollm2, a folder, tiny-random-gpt2) or a run folder."),
    prompt: str = typer.Argument(..., help="The prompt (the user message when the chat template is used)."),
    max_new_tokens: int = typer.Option(64, help="Most tokens to generate."),
    sample: bool = typer.Option(False, "--sample/--greedy", help="Sample (temperature, top-k, top-p) or greedy."),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    top_k: int | None = typer.Option(None, help="Sample among the k most likely tokens."),
    top_p: float | None = typer.Option(None, help="Nucleus sampling: the smallest set with probability >= p."),
    num_beams: int = typer.Option(1, help="Beam search width (1: none)."),
    repetition_penalty: float = typer.Option(1.0, help="Penalty (>1) for tokens already in the text."),
    stop: list[str] | None = typer.Option(None, help="Stop string (repeatable); the output is cut before it."),
    seed: int = typer.Option(0, help="Seed for sampling."),
    chat: bool | None = typer.Option(None, "--chat/--no-chat", help="Use the tokenizer's chat template "
                                     "(default: when it has one)."),
    system: str | None = typer.Option(None, help="System message (chat template only)."),
    raw: bool = typer.Option(False, help="Send the prompt as it is: no template, no chat template."),
    explain: bool = typer.Option(False, help="Show each step: the top next tokens, their probabilities, the choice."),
    top: int = typer.Option(5, help="With --explain: candidates shown per step."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Generate text with a model or a trained rung; --explain shows it token by token."""
    from pydantic import ValidationError

    from adaptlab.config import GenerationSpec, format_validation_error
    from adaptlab.generation.decoding import explain as explain_steps
    from adaptlab.generation.decoding import finish_text, generate_ids

    try:
        settings = GenerationSpec(max_new_tokens=max_new_tokens, do_sample=sample, num_beams=num_beams,
                                  temperature=temperature, top_k=top_k, top_p=top_p,
                                  repetition_penalty=repetition_penalty, stop=list(stop or []), seed=seed,
                                  batch_size=1)
    except ValidationError as err:
        flags = [f"--{line.split(':', 1)[0].replace('_', '-')}:{line.split(':', 1)[1]}"
                 for line in format_validation_error(err)]
        raise UserError("; ".join(flags)) from None
    method = _load(model_or_run, chat, system)
    ids = prompt_ids(method, prompt, raw, max_new_tokens)
    device = method.ctx.torch_device
    if explain:
        steps = explain_steps(method.model, method.tokenizer, method.kind, ids, settings, seed=seed, top_k=top,
                              device=device, use_cache=method.virtual_tokens == 0)
        _print_explain(method, ids, settings, steps, as_json)
        return
    new = generate_ids(method.model, method.tokenizer, method.kind, [ids], settings, seed=seed, device=device)[0]
    text = finish_text(method.tokenizer, new, settings.stop)
    if as_json:
        console.print_json(json.dumps({"prompt": method.tokenizer.decode(ids), "prompt_tokens": len(ids),
                                       "output": text, "output_tokens": len(new)}))
    else:
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def _print_explain(method: Any, ids: list[int], settings: Any, steps: list, as_json: bool) -> None:
    from adaptlab.generation.decoding import cut_at_stop

    text = cut_at_stop(method.tokenizer.decode([s.token_id for s in steps], skip_special_tokens=True), settings.stop)
    if as_json:
        console.print_json(json.dumps({
            "prompt": method.tokenizer.decode(ids), "prompt_tokens": len(ids), "output": text.strip(),
            "steps": [{"step": s.index, "token": s.token, "id": s.token_id, "probability": s.probability,
                       "top": [{"token": t, "probability": p} for t, p in s.top]} for s in steps],
        }))
        return
    how = "sampling" if settings.do_sample else "greedy"
    say = lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"prompt ({len(ids)} tokens): {method.tokenizer.decode(ids)!r}")
    say(f"decoding: {how}; per step the {len(steps[0].top) if steps else 0} most likely next tokens with their "
        "probabilities (after repetition penalty/temperature/top-k/top-p), and the chosen one (*)")
    for s in steps:
        cands = "  ".join(f"{'*' if t == s.token else ' '}{t!r} {p:.3f}" for t, p in s.top)
        say(f"step {s.index:>3}: chose {s.token!r} (p={s.probability:.3f})   | {cands}")
    say(f"output: {text.strip()!r}")


@app.command("inspect-data")
def inspect_data(
    config: Path = typer.Argument(..., help="Ladder spec (YAML)."),
    rung: str | None = typer.Option(None, help="The generative rung whose formatting to show (default: the first)."),
    split: str = typer.Option("train", help="train, validation or test."),
    index: int = typer.Option(0, help="Which example of the split (0-based)."),
    tokens: bool = typer.Option(False, help="Also list every token with its training label."),
) -> None:
    """Print one formatted example exactly as the model sees it, with the trained (scored) tokens marked."""
    import tempfile

    from adaptlab.config import load_ladder
    from adaptlab.methods._causal import GenerativeMethod, split_examples
    from adaptlab.pipeline import build_method, prepare

    spec = load_ladder(config)
    ladder = prepare(spec)
    rungs = [ladder.spec.rung(rung)] if rung else spec.rungs
    chosen = next((r for r in rungs if issubclass(_method_class(r.method), GenerativeMethod)), None)
    if chosen is None:
        raise UserError(f"{config}: {'rung ' + repr(rung) + ' is' if rung else 'no rung is'} a generative rung "
                        "(zero_shot_prompt, few_shot_prompt, lm_lora, ...); there is no prompt format to show.")
    if split not in ("train", "validation", "test"):
        raise UserError(f"--split must be train, validation or test, not '{split}'.")
    part = getattr(ladder.data, split)
    if not 0 <= index < len(part):
        raise UserError(f"--index {index}: the {split} split has {len(part)} examples (0 to {len(part) - 1}).")
    method = build_method(chosen, ladder.ctx)
    method.setup_formatting()
    if not method.trains:  # prompting rungs choose their in-context examples in fit (cheap, no weights)
        with tempfile.TemporaryDirectory() as tmp:
            method.fit(ladder.data, Path(tmp))
    x, pair, answer = split_examples(part, method.words)[index]
    demos = method.demos_for([x], [pair])[0]
    enc = method.formatter.encode(x, pair, answer, demos)
    role = "trained on (loss)" if method.trains else "scored (log-likelihood)"
    say = lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"{config}: rung '{chosen.run_name}' ({chosen.method}), model {spec.model} ({method.kind}), "
        f"{'chat template' if method.formatter.style.chat else 'plain template'}, "
        f"{split} example {index} of {len(part)} (id {part.ids[index]})")
    cut = f"; {enc.cut_tokens} input tokens cut to fit data.max_length" if enc.cut_tokens else ""
    shots = f", {len(demos)} in-context examples" if demos else ""
    say(f"{len(enc.prompt_ids) + len(enc.answer_ids)} tokens of {ladder.ctx.max_length}: {len(enc.prompt_ids)} "
        f"prompt (label -100, no loss{shots}), {len(enc.answer_ids)} answer tokens {role} between "
        f"{MARK_OPEN} {MARK_CLOSE}{cut}")
    say("-" * 60)
    say(method.formatter.marked(enc, MARK_OPEN, MARK_CLOSE))
    say("-" * 60)
    if tokens:
        rows = enc.labels if method.kind == "causal" else [-100] * len(enc.prompt_ids) + enc.answer_ids
        ids = enc.input_ids
        for i, (tid, label) in enumerate(zip(ids, rows)):
            say(f"{i:>5} {tid:>7} {method.tokenizer.decode([tid])!r:<24} {'-100' if label == -100 else 'loss'}")


def _method_class(name: str) -> type:
    from adaptlab.methods import METHODS

    return METHODS.get(name)
