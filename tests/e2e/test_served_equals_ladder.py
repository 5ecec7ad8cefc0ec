"""The server writes what the ladder predicted: same adapter, same decoding settings, same prompt, same text.

A tiny generative ladder trains an lm_lora rung (with a system prompt, so the rung's prompt style matters, and a
repetition penalty, so the next-token rule is more than an argmax); its run folder is served, and each test
example's user turn is sent to /v1/chat/completions with the ladder's decoding settings. The served completion must
be the ladder's prediction (predictions.jsonl) for every example, and stay so with a stop string: the prompt (system
prompt, chat template, tokenization), the next-token rule, the end-of-sequence ids and the stop strings are one
implementation (adaptlab.generation) on both paths.
"""

from __future__ import annotations

import json

from tests.generative_data import (  # noqa: F401  (one_torch_thread is an autouse fixture)
    one_torch_thread,
    write_generation_csv,
    write_ladder,
)

SYSTEM = "Repeat the words after 'repeat:'."
DECODING = {"max_new_tokens": 6, "repetition_penalty": 3.0}
USER_TURN = ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n")


def user_turn(prompt: str) -> str:
    """The user's text in a rendered ChatML prompt (what a chat client would send)."""
    start, end = USER_TURN
    assert prompt.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n") and prompt.endswith(end), prompt
    return prompt[prompt.index(start) + len(start): -len(end)]


def serve(client, model: str, inputs: list[str], stop: list[str] | None = None) -> list[str]:
    """The served chat completion of each input, greedy with the ladder's settings."""
    body = {"model": model, "max_tokens": DECODING["max_new_tokens"], "temperature": 0,
            "repetition_penalty": DECODING["repetition_penalty"], "stop": stop}
    texts = []
    for text in inputs:
        r = client.post("/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": text}]})
        assert r.status_code == 200, r.text
        texts.append(r.json()["choices"][0]["message"]["content"])
    return texts


def test_served_completions_are_the_ladders_predictions(tmp_path, session_home):
    from fastapi.testclient import TestClient

    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare, load_run, prepare
    from adaptlab.serving.adapters import resolve_adapter
    from adaptlab.serving.app import create_app
    from adaptlab.serving.transformers_engine import TransformersEngine

    params = {"max_steps": 2, "batch_size": 8, "learning_rate": 3e-3, "evals_per_epoch": 0}
    task = {"type": "generation", "system_prompt": SYSTEM, "forgetting_text": None, "generation": DECODING}
    config = write_ladder(tmp_path, write_generation_csv(tmp_path / "gen.csv", 24), "tiny-random-llama",
                          [{"method": "lm_lora", "params": params}], task=task)
    ladder = prepare(load_ladder(config))
    assert compare(ladder)["rungs"][0]["status"] == "ok"
    run_dir = ladder.output / "lm_lora"
    records = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    inputs, predictions = [user_turn(r["prompt"]) for r in records], [r["prediction"] for r in records]
    assert len(set(predictions)) > 1  # the answers depend on the prompt: equal lists say something

    engine = TransformersEngine("tiny-random-llama", device="cpu")
    engine.load_adapter(resolve_adapter("tuned", run_dir))
    with TestClient(create_app(engine)) as client:
        tuned, base = serve(client, "tuned", inputs), serve(client, "base", inputs)
        assert [text.strip() for text in tuned] == predictions  # the ladder strips its predictions
        assert base != tuned  # the adapter is what made these answers
        text = tuned[0]  # a stop string from its second half (plain characters) cuts it short, perhaps others too
        at = next(i for i in range(len(text) // 2, len(text) - 1) if text[i: i + 2].isascii() and text[i].strip())
        stop = [text[at: at + 2]]
        stopped = serve(client, "tuned", inputs, stop)

    _, method, _ = load_run(run_dir)
    settings = method.spec.generation.model_copy(update={"stop": stop})
    expected = method.generate(inputs, settings=settings)
    assert [text.strip() for text in stopped] == expected and expected[0] != predictions[0]
