"""The server against a careless or hostile client: every prompt gets its own room in the context window (a batch
mate's max_tokens never cuts it) and a text that does not fit is a 400, never cut silently; out-of-range sampling
values and templates that refuse a conversation are 4xx, not 500s; a stream that breaks ends with an error event and
[DONE]; an admin load or unload that times out leaves the list of models in step with the engine; a load that fails
leaves the model as it was; a symlink inside an adapter folder can't lead out of the roots; a long conversation is
cut in a few renders.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.e2e.test_serving import (
    FakeEngine,
    assert_error,
    bert_engine,
    lean_adapters,  # noqa: F401  (a fixture)
    live_server,
)

from adaptlab.errors import UserError
from adaptlab.serving.app import create_app
from adaptlab.serving.engine import BASE, AdapterInfo, GenerationChunk, GenerationParams
from adaptlab.serving.settings import ServerSettings

KEY = "hostile-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def llama(session_home):
    from adaptlab.generation.lm import context_window
    from adaptlab.models import resolve_model
    from adaptlab.serving.transformers_engine import TransformersEngine

    resolve_model("tiny-random-llama", cache_dir=session_home / "models")
    engine = TransformersEngine("tiny-random-llama", device="cpu", max_length=256)
    window = context_window(engine.model.config, engine.tokenizer)
    with TestClient(create_app(engine, ServerSettings(max_tokens=4 * window)), raise_server_exceptions=False) as c:
        yield c, engine, window


def completion(client, **body):
    return client.post("/v1/completions", json={"model": "base", "temperature": 0, **body})


def generated(engine, prompts, params) -> dict[int, dict]:
    out = {i: {"text": "", "prompt": None} for i in range(len(prompts))}
    for chunks in engine.generate(BASE, prompts, params):
        for c in chunks:
            out[c.index]["text"] += c.text
            out[c.index]["prompt"] = c.prompt_tokens
    return out


def test_each_prompt_has_its_own_room_and_a_text_that_does_not_fit_is_a_400(llama):
    client, engine, window = llama
    text = " ".join(["the ghost walks at night and the king is dead"] * 16)
    length = len(engine.tokenizer(text)["input_ids"])
    assert 100 < length < engine.max_length < window - 8
    alone = generated(engine, [text], [GenerationParams(max_tokens=4, temperature=0)])[0]
    assert alone["prompt"] == length
    # a batch mate asking for nearly the whole window: the long prompt keeps every token and its answer
    mates = generated(engine, [text, "x"], [GenerationParams(max_tokens=4, temperature=0),
                                            GenerationParams(max_tokens=window - 4, temperature=0)])
    assert mates[0] == alone
    # over the room left by its own max_tokens, or over the server's prompt limit: 400, never cut
    for max_tokens in (window - length + 1, window, window + 5):
        error = assert_error(completion(client, prompt=text, max_tokens=max_tokens), 400, "context_length_exceeded")
        assert f"max_tokens={max_tokens}" in error["message"]
    longer = " ".join([text] * 2)
    error = assert_error(completion(client, prompt=longer, max_tokens=2), 400, "context_length_exceeded")
    assert f"at most {engine.max_length}" in error["message"]
    ok = completion(client, prompt=text, max_tokens=window - length)
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == length


def test_a_batch_mate_asking_for_more_never_pushes_a_prompt_past_learned_positions(session_home):
    from adaptlab.generation.lm import context_window
    from adaptlab.models import resolve_model
    from adaptlab.serving.transformers_engine import TransformersEngine

    resolve_model("tiny-random-gpt2", cache_dir=session_home / "models")
    engine = TransformersEngine("tiny-random-gpt2", device="cpu", max_length=4096)  # GPT-2: a position table
    window = context_window(engine.model.config, engine.tokenizer)
    long = engine.tokenizer.decode(engine.tokenizer(" the king" * window)["input_ids"][: window - 10])
    params = [GenerationParams(max_tokens=5, temperature=0), GenerationParams(max_tokens=30, temperature=0)]
    together = generated(engine, [long, "hello"], params)
    assert together[0] == generated(engine, [long], params[:1])[0] and together[1]["text"]
    assert together[1] == generated(engine, ["hello"], params[1:])[0]


def test_out_of_range_sampling_values_are_refused_or_decoded_not_500s(llama):
    client, _, _ = llama
    greedy = completion(client, prompt="Hamlet", max_tokens=4).json()["choices"][0]["text"]
    tiny = completion(client, prompt="Hamlet", max_tokens=4, temperature=1e-300)
    assert tiny.status_code == 200 and tiny.json()["choices"][0]["text"] == greedy  # decoded greedily
    for field, value in (("seed", 2**64), ("seed", -(2**63) - 1), ("repetition_penalty", 1e-300),
                         ("max_tokens", 0), ("temperature", -1)):
        body = {"prompt": "Hamlet", "max_tokens": 4, "temperature": 1, field: value}
        assert field in str(assert_error(completion(client, **body), 422))
    for seed in (2**64 - 1, -(2**63)):
        assert completion(client, prompt="Hamlet", max_tokens=2, temperature=1, seed=seed).status_code == 200


def test_a_chat_template_that_refuses_the_messages_is_a_400(session_home):
    from adaptlab.serving.transformers_engine import TransformersEngine

    engine = TransformersEngine("tiny-random-llama", device="cpu")
    engine.tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}")
    with TestClient(create_app(engine), raise_server_exceptions=False) as client:
        body = {"model": "base", "max_tokens": 2, "temperature": 0}
        ok = client.post("/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200, ok.text
        refused = client.post("/v1/chat/completions", json={**body, "messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]})
        assert "System role not supported" in assert_error(refused, 400, "invalid_messages")["message"]
    engine = TransformersEngine("tiny-random-llama", device="cpu", max_length=40)
    engine.tokenizer.chat_template = (  # a template that wants the user first, as Llama 2's and Mistral's do
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with the user') }}"
        "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with TestClient(create_app(engine), raise_server_exceptions=False) as client:
        long = [{"role": "user", "content": "word " * 60}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "and then?"}]  # cut to fit: never to a start with the assistant
        cut = client.post("/v1/chat/completions", json={**body, "messages": long})
        alone = client.post("/v1/chat/completions", json={**body, "messages": long[2:]})
        assert cut.status_code == alone.status_code == 200 and cut.json()["usage"] == alone.json()["usage"]
        refused = client.post("/v1/chat/completions", json={**body, "messages": long[1:]})
        assert "Conversation must start with the user" in assert_error(refused, 400, "invalid_messages")["message"]


class Breaking(FakeEngine):
    """Streams one chunk, then fails with an error nothing expects."""

    def adapters(self):
        return [AdapterInfo(BASE, "generation", "base")]

    def generate(self, adapter, prompts, params):
        yield [GenerationChunk(0, "first")]
        raise ZeroDivisionError("a bug")


def test_a_stream_broken_by_an_unexpected_error_ends_with_an_error_event_and_done():
    with TestClient(create_app(Breaking()), raise_server_exceptions=False) as client:
        r = client.post("/v1/completions", json={"model": "base", "prompt": "x", "stream": True})
    events = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[0])["choices"][0]["text"] == "first"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "stream_error" and error["message"] == "internal error: ZeroDivisionError"
    assert "a bug" not in r.text and events[-1] == "[DONE]"


class Endless(FakeEngine):
    """A long generation that counts its steps."""

    def __init__(self):
        super().__init__()
        self.steps = 0

    def adapters(self):
        return [AdapterInfo(BASE, "generation", "base")]

    def generate(self, adapter, prompts, params):
        for _ in range(400):
            time.sleep(0.02)
            self.steps += 1
            yield [GenerationChunk(0, "x")]
        yield [GenerationChunk(0, "", "length")]


def test_a_client_that_leaves_a_whole_answer_stops_its_generation():
    engine = Endless()
    with live_server(create_app(engine, ServerSettings(timeout_s=60))) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/completions", json={"model": "base", "prompt": "x"}, timeout=0.5)
        seen, deadline = -1, time.monotonic() + 20
        while engine.steps != seen and time.monotonic() < deadline:  # until the engine is still for a while
            seen = engine.steps
            time.sleep(0.6)
        assert 0 < engine.steps < 300  # a whole answer is 400 steps (8 s); the server looks every quarter second
        assert 'status="499"} 1.0' in httpx.get(url + "/metrics").text


class SlowChat(FakeEngine):
    """Renders a chat in 0.6 s and generates in 0.6 s."""

    def adapters(self):
        return [AdapterInfo(BASE, "generation", "base")]

    def chat_prompt(self, adapter, messages):
        time.sleep(0.6)
        return messages[-1]["content"]

    def generate(self, adapter, prompts, params):
        time.sleep(0.6)
        yield [GenerationChunk(i, "done", "stop") for i in range(len(prompts))]


def test_a_chat_has_one_timeout_for_its_prompt_and_its_generation():
    with TestClient(create_app(SlowChat(), ServerSettings(timeout_s=1.0)), raise_server_exceptions=False) as client:
        chat = client.post("/v1/chat/completions", json={"model": "base", "messages": [{"role": "user",
                                                                                          "content": "hi"}]})
        assert "server's timeout (1 s)" in assert_error(chat, 504, "timeout")["message"]
        assert client.post("/v1/completions", json={"model": "base", "prompt": "hi"}).status_code == 200


class SlowAdmin(FakeEngine):
    """Loads and unloads take longer than the server's timeout, and keep going."""

    def __init__(self):
        super().__init__()
        self.loaded: set[str] = set()

    def load_adapter(self, spec):
        time.sleep(0.6)
        self.loaded.add(spec.name)
        return AdapterInfo(spec.name, "classification", "peft")

    def unload_adapter(self, name):
        time.sleep(0.6)
        self.loaded.discard(name)


def listed(client) -> set[str]:
    return {m["id"] for m in client.get("/v1/models").json()["data"]}


def test_an_admin_call_that_times_out_leaves_the_models_in_step_with_the_engine(lean_adapters):  # noqa: F811
    engine = SlowAdmin()
    settings = ServerSettings(api_key=KEY, adapter_roots=[lean_adapters["lean0"].parent], timeout_s=0.2)
    with TestClient(create_app(engine, settings), raise_server_exceptions=False) as client:
        r = client.post("/v1/admin/adapters", json={"name": "late", "path": str(lean_adapters["lean0"])},
                        headers=AUTH)
        assert "GET /v1/models" in assert_error(r, 504, "timeout")["message"]
        time.sleep(0.8)
        assert "late" in engine.loaded and "late" in listed(client)
        assert client.post("/v1/classify", json={"model": "late", "input": "fine"}).status_code == 200
        assert_error(client.delete("/v1/admin/adapters/late", headers=AUTH), 504, "timeout")
        time.sleep(0.8)
        assert "late" not in engine.loaded and "late" not in listed(client)
        assert_error(client.post("/v1/classify", json={"model": "late", "input": "fine"}), 404)


def mismatched(source: Path, dest: Path) -> Path:
    """``source``'s adapter under a config that says another rank: peft puts its layers in, then can't load them."""
    dest.mkdir()
    config = json.loads((source / "adapter_config.json").read_text())
    (dest / "adapter_config.json").write_text(json.dumps({**config, "r": config["r"] * 2}))
    (dest / "adapter_model.safetensors").write_bytes((source / "adapter_model.safetensors").read_bytes())
    return dest


def test_a_failed_load_leaves_the_model_as_it_was(lean_adapters, tmp_path):  # noqa: F811
    from peft.tuners.tuners_utils import BaseTunerLayer

    bad = mismatched(lean_adapters["lean1"], tmp_path / "bad")
    for loaded in ({}, {"lean0": lean_adapters["lean0"]}):  # onto the bare base, and next to an adapter
        engine = bert_engine(loaded)
        settings = ServerSettings(api_key=KEY, adapter_roots=[tmp_path, lean_adapters["lean1"].parent])
        with TestClient(create_app(engine, settings), raise_server_exceptions=False) as client:
            def answers(client=client, loaded=loaded):
                return [client.post("/v1/embeddings", json={"model": "base", "input": "a fine film"}).json(),
                        *[client.post("/v1/classify", json={"model": n, "input": "a fine film"}).json()
                          for n in loaded]]

            before = answers()
            assert_error(client.post("/v1/admin/adapters", json={"name": "x", "path": str(bad)}, headers=AUTH), 422)
            assert answers() == before
            tuned = [n for n, m in engine.model.named_modules() if isinstance(m, BaseTunerLayer)
                     and "x" in m.lora_A]
            assert not tuned and listed(client) == {BASE, *loaded}
            good = client.post("/v1/admin/adapters", json={"name": "x", "path": str(lean_adapters["lean1"])},
                               headers=AUTH)
            assert good.status_code == 201, good.text
            assert client.post("/v1/classify", json={"model": "x", "input": "fine"}).json()["data"][0]["label"] == \
                "LABEL_1"


def test_a_symlinked_file_inside_an_adapter_folder_can_not_lead_out_of_the_roots(lean_adapters, tmp_path):  # noqa
    from adaptlab.serving.adapters import OutsideRoots, resolve_adapter

    root = tmp_path / "root"
    (root / "linked").mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (root / "linked" / name).symlink_to(lean_adapters["lean0"] / name)
    with pytest.raises(OutsideRoots, match="linked/adapter_"):
        resolve_adapter("x", root / "linked", [root])
    assert resolve_adapter("x", root / "linked", [root, lean_adapters["lean0"].parent]).kind == "peft"
    assert resolve_adapter("x", root / "linked").kind == "peft"  # no roots (adapters given at start): any path
    (root / "loop").mkdir()
    (root / "loop" / "a").symlink_to(root / "loop" / "b")
    (root / "loop" / "b").symlink_to(root / "loop" / "a")
    (root / "loop" / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="leads nowhere"):
        resolve_adapter("x", root / "loop", [root])


def one_at_a_time(formatter, messages, budget) -> list[int]:
    """The reference cut: drop the oldest turn until the prompt fits (or one turn is left)."""
    msgs = list(messages)
    while len(ids := formatter.prompt_ids(msgs)) > budget and sum(m["role"] != "system" for m in msgs) > 1:
        msgs.pop(next(i for i, m in enumerate(msgs) if m["role"] != "system"))
    return ids


def test_cutting_a_conversation_drops_the_fewest_turns_wherever_its_system_messages_are(session_home):
    import random

    from transformers import AutoTokenizer

    from adaptlab.generation.formatting import Formatter, PromptStyle
    from adaptlab.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-random-gpt2").location)
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    def words(n: int, word: str = "word") -> str:
        return " ".join([word] * n)

    for size in (3, 6, 10, 15, 20):  # a system message mid-way: dropping the turns before it lengthens the prompt
        messages = [{"role": "user", "content": words(60)}, {"role": "assistant", "content": words(60)},
                    {"role": "user", "content": words(2, "a")}, {"role": "system", "content": words(size)},
                    *[{"role": "user" if i % 2 == 0 else "assistant", "content": words(2, w)}
                      for i, w in enumerate("bcdef")]]
        for budget in range(30, 140, 2):
            formatter = Formatter(tokenizer, PromptStyle("{text}", chat=True), "causal", budget)
            want = one_at_a_time(formatter, messages, budget)
            if len(want) <= budget:
                assert formatter.encode(messages).prompt_ids == want, (size, budget)
    rng = random.Random(0)
    for _ in range(150):
        roles = [rng.choice(["user", "assistant", "system"]) for _ in range(rng.randint(2, 8))]
        if all(r == "system" for r in roles):
            continue
        messages = [{"role": r, "content": " ".join(["word"] * rng.randint(0, 20))} for r in roles]
        budget = rng.randint(20, 120)
        formatter = Formatter(tokenizer, PromptStyle("{text}", rng.choice([None, "Be brief."]), chat=True),
                              "causal", budget)
        want = one_at_a_time(formatter, messages, budget)
        if len(want) <= budget:  # the cases that fit by dropping whole turns
            assert formatter.encode(messages).prompt_ids == want, (roles, budget)


def test_cuts_a_template_refuses_are_passed_over(session_home):
    from transformers import AutoTokenizer

    from adaptlab.generation.formatting import Formatter, PromptStyle
    from adaptlab.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-random-gpt2").location)
    tokenizer.chat_template = (  # Mistral-like: the conversation must start with the user
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('start with the user') }}{% endif %}"
        "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}")
    messages = [{"role": "user", "content": "word " * 20}, {"role": "assistant", "content": "word " * 20},
                {"role": "user", "content": "word " * 3}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "and?"}]
    formatter = Formatter(tokenizer, PromptStyle("{text}", chat=True), "causal", 1000)
    from_third, last = formatter.prompt_ids(messages[2:]), formatter.prompt_ids(messages[4:])
    assert len(last) < len(from_third) < len(formatter.prompt_ids(messages))
    for budget, want in ((len(from_third), from_third), (len(from_third) - 1, last), (len(last), last)):
        formatter = Formatter(tokenizer, PromptStyle("{text}", chat=True), "causal", budget)
        assert formatter.encode(messages).prompt_ids == want, budget  # never a cut starting with the assistant


def test_a_long_conversation_is_cut_to_its_newest_turns_in_a_few_renders(session_home):
    from transformers import AutoTokenizer

    from adaptlab.generation.formatting import Formatter, PromptStyle
    from adaptlab.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-random-llama").location)
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    messages = [{"role": "system", "content": "be brief"}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "word " * (i % 7)}
        for i in range(81)]
    formatter = Formatter(tokenizer, PromptStyle("{text}", chat=True), "causal", 120)
    renders = []
    real = formatter.prompt_ids
    formatter.prompt_ids = lambda *a, **k: renders.append(1) or real(*a, **k)
    ids = formatter.encode(messages).prompt_ids
    assert len(renders) <= 12  # one per turn would be 80
    kept = tokenizer.decode(ids)
    first = min(i for i in range(81) if f"turn {i} " in kept)
    assert "be brief" in kept and "turn 80 " in kept and all(f"turn {i} " in kept for i in range(first, 81))
    newest = [messages[0], *messages[first + 1:]]  # messages[i + 1] is turn i
    assert ids == real(newest) and len(ids) <= 120
    assert first > 0 and len(real([messages[0], *messages[first:]])) > 120  # one older turn would not fit
