"""``POST /v1/ner``: token-classification runs served next to classification adapters on one tiny base.

A tiny NER ladder (lora and head_only, a few steps on the separable set of tests/ner_data.py) is trained once. The
lora run is served as an adapter over tiny-random-bert, loaded before a classification LoRA (so the classification
adapter shares a peft model that a token adapter started), and once more with its peft task type rewritten to
TOKEN_CLS (whichever task type the rung writes, the run's task decides how it is served); head_only changes the
base's own weights, so it is
exported ``--merge`` and its merged folder served as the base, as whole-model classifiers are. Both must find, for
every test sentence, the entities their run recorded in predictions.jsonl (same offsets, types and text); every
wrong route, unknown name and hostile input gets a JSON 4xx, and the server keeps serving.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.e2e.test_serving import assert_error, classifier_adapter, reference_probs
from tests.generative_data import one_torch_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)
from tests.ner_data import write_ner_config, write_ner_jsonl

from adaptlab.serving.settings import ServerSettings

KEY = "ner-key"
FAST = {"max_steps": 40, "batch_size": 8, "learning_rate": 2e-2, "evals_per_epoch": 0}
MAX_INPUTS = 8


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, tiny_bert) -> Path:
    """The finished tiny NER ladder (out/lora, out/head_only), head_only exported with --merge to bundle/."""
    from adaptlab.config import load_ladder
    from adaptlab.export import export_run
    from adaptlab.pipeline import compare, prepare

    root = tmp_path_factory.mktemp("ner_serve")
    data = write_ner_jsonl(root / "ner.jsonl", 120)
    rungs = [{"method": "lora", "params": FAST}, {"method": "head_only", "params": FAST}]
    board = compare(prepare(load_ladder(write_ner_config(root, data, tiny_bert, rungs))))
    assert [e["status"] for e in board["rungs"]] == ["ok", "ok"]
    export_run(root / "out" / "head_only", root / "bundle", merge=True)
    token_cls = shutil.copytree(root / "out" / "lora", root / "lora_token_cls")
    _set_task_type(token_cls / "weights" / "adapter", "TOKEN_CLS")
    return root


def _set_task_type(folder: Path, task_type: str) -> None:
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "task_type": task_type}))


def records(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert sum(len(r["entities"]) for r in rows) > 5  # the run finds entities: equal lists say something
    return rows


def served_entities(client, model: str, texts: list[str]) -> list[list[dict]]:
    """The entities served for each text, asked MAX_INPUTS texts at a time."""
    found = []
    for start in range(0, len(texts), MAX_INPUTS):
        chunk = texts[start:start + MAX_INPUTS]
        response = client.post("/v1/ner", json={"model": model, "input": chunk})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "list" and body["model"] == model and body["usage"] == {"inputs": len(chunk)}
        assert [d["index"] for d in body["data"]] == list(range(len(chunk)))
        found += [d["entities"] for d in body["data"]]
    return found


def assert_same_as_run(found: list[list[dict]], rows: list[dict]) -> None:
    """Served entities are the run's recorded ones (offsets into the record's text, type, text), each scored."""
    for entities, row in zip(found, rows, strict=True):
        assert [{k: e[k] for k in ("start", "end", "label", "text")} for e in entities] == row["entities"], row
        for e in entities:
            assert row["text"][e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1


@pytest.fixture(scope="module")
def lean(tmp_path_factory, tiny_bert) -> Path:
    """A classification LoRA over tiny-random-bert that leans to LABEL_1."""
    return classifier_adapter(tmp_path_factory.mktemp("lean") / "lean1", [-4.0, 4.0], seed=2)


@pytest.fixture(scope="module")
def client(ladder, lean):
    """The NER lora run as a TOKEN_CLS peft adapter, as written, then a classification LoRA, on one base."""
    from fastapi.testclient import TestClient

    from adaptlab.serving.adapters import resolve_adapter
    from adaptlab.serving.app import create_app
    from adaptlab.serving.transformers_engine import TransformersEngine

    engine = TransformersEngine("tiny-random-bert", device="cpu")
    engine.load_adapter(resolve_adapter("ner_tok", ladder / "lora_token_cls"))
    engine.load_adapter(resolve_adapter("ner", ladder / "out" / "lora"))
    engine.load_adapter(resolve_adapter("sent", lean))
    settings = ServerSettings(api_key=KEY, adapter_roots=[ladder], max_inputs=MAX_INPUTS, max_input_chars=2_000,
                              max_body_bytes=100_000)
    with TestClient(create_app(engine, settings)) as c:
        yield c


def test_served_entities_are_the_lora_runs_predictions(client, ladder):
    rows = records(ladder / "out" / "lora")
    texts = [r["text"] for r in rows]
    assert_same_as_run(served_entities(client, "ner", texts), rows)
    assert_same_as_run(served_entities(client, "ner_tok", texts), rows)
    one = client.post("/v1/ner", json={"model": "ner", "input": rows[0]["text"]}).json()  # a single text
    assert len(one["data"]) == 1 and one["data"][0]["entities"] == served_entities(client, "ner", [rows[0]["text"]])[0]


def test_a_classifier_next_to_the_tagger_answers_as_it_does_alone(client, lean):
    texts = ["alice went to paris", "the film was dull"]
    body = client.post("/v1/classify", json={"model": "sent", "input": texts}).json()
    got = np.array([[d["scores"][f"LABEL_{i}"] for i in range(2)] for d in body["data"]])
    assert np.max(np.abs(got - reference_probs(lean, texts, 2))) < 1e-5
    data = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert {k: (m["task"], m["export_kind"]) for k, m in data.items()} == {
        "base": ("classification", "classifier"), "sent": ("classification", "classifier"),
        "ner": ("token_classification", "tagger"), "ner_tok": ("token_classification", "tagger")}
    assert data["ner"]["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_a_model_on_the_wrong_route_is_told_which_route_serves_it(client):
    cases = [("/v1/ner", {"model": "sent", "input": "x"}, "sent", "/v1/classify"),
             ("/v1/ner", {"model": "base", "input": "x"}, "base", "/v1/classify"),
             ("/v1/classify", {"model": "ner", "input": "x"}, "ner", "/v1/ner"),
             ("/v1/completions", {"model": "ner", "prompt": "x"}, "ner", "/v1/ner"),
             ("/v1/chat/completions", {"model": "ner", "messages": [{"role": "user", "content": "x"}]}, "ner",
              "/v1/ner")]
    for path, body, name, route in cases:
        error = assert_error(client.post(path, json=body), 400, "wrong_endpoint")
        assert f"'{name}'" in error["message"] and route in error["message"] and error["served_on"] == route


def test_hostile_inputs_get_json_4xx_and_the_server_keeps_serving(client):
    error = assert_error(client.post("/v1/ner", json={"model": "nre", "input": "x"}), 404, "model_not_found")
    assert "Did you mean 'ner'" in error["message"]
    assert_error(client.post("/v1/ner", json={"model": "../ner", "input": "x"}), 400, "invalid_model_name")
    for body in ({"model": "ner"}, {"model": "ner", "input": [1, 2]}, {"model": "ner", "input": ["a", None]},
                 {"model": "ner", "input": {"text": "a"}}, {"model": "ner", "input": [["a"]]},
                 {"model": 7, "input": "a"}, [1, 2]):
        assert_error(client.post("/v1/ner", json=body), 422, "invalid_request")
    lone_surrogate = b'{"model": "ner", "input": ["paris", "\\ud800 paris"]}'
    assert_error(client.post("/v1/ner", content=lone_surrogate), 422, "invalid_request")
    assert_error(client.post("/v1/ner", content=b'{"model": "ner", "input": '), 400, "invalid_json")
    assert_error(client.post("/v1/ner", json={"model": "ner", "input": []}), 400, "invalid_input")
    assert_error(client.post("/v1/ner", json={"model": "ner", "input": ["a"] * 9}), 400, "too_many_inputs")
    assert_error(client.post("/v1/ner", json={"model": "ner", "input": "x " * 1_001}), 400, "input_too_long")
    assert_error(client.post("/v1/ner", json={"model": "ner", "input": ["a"] * 40_000}), 413, "body_too_large")
    texts = ["", "   \n\t", "\x00\x01\x7f\u200b", "\x00alice\x1b[31m in \u202eparis\x00 " + "oslo " * 300]
    found = served_entities(client, "ner", texts)
    assert found[:3] == [[], [], []]  # no words, no entities
    for e in found[3]:  # offsets index the text as sent, control characters included
        assert texts[3][e["start"]:e["end"]] == e["text"]
    metrics = client.get("/metrics").text
    assert 'adaptlab_model_requests_total{endpoint="ner",model="ner"}' in metrics
    assert 'adaptlab_batch_size_count{kind="ner"}' in metrics
    assert 'adaptlab_http_requests_total{path="/v1/ner",status="422"}' in metrics


def test_admin_loads_and_unloads_a_tagger_next_to_the_others(client, ladder):
    auth = {"Authorization": f"Bearer {KEY}"}
    created = client.post("/v1/admin/adapters", json={"name": "ner2", "path": str(ladder / "out" / "lora")},
                          headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["export_kind"] == "tagger"
    texts = [r["text"] for r in records(ladder / "out" / "lora")[:MAX_INPUTS]]
    assert served_entities(client, "ner2", texts) == served_entities(client, "ner", texts)
    assert client.delete("/v1/admin/adapters/ner2", headers=auth).status_code == 200
    assert_error(client.post("/v1/ner", json={"model": "ner2", "input": "x"}), 404, "model_not_found")
    assert served_entities(client, "ner", texts)  # the others still answer
    assert client.post("/v1/classify", json={"model": "sent", "input": "x"}).status_code == 200
    error = assert_error(client.post("/v1/admin/adapters", json={"name": "h", "path": str(ladder / "out" /
                                                                                            "head_only")},
                                     headers=auth), 400, "invalid_adapter")
    assert "--merge" in error["message"]  # a whole-model rung is served as the base


def test_a_bare_peft_token_adapter_is_refused_for_want_of_tag_names(ladder, tmp_path):
    from adaptlab.errors import UserError
    from adaptlab.serving.adapters import resolve_adapter

    bare = shutil.copytree(ladder / "lora_token_cls" / "weights" / "adapter", tmp_path / "bare")
    with pytest.raises(UserError, match="tag names"):
        resolve_adapter("bare", bare)


def test_a_merged_whole_model_tagger_is_served_as_the_base(ladder):
    from fastapi.testclient import TestClient

    from adaptlab.serving.adapters import resolve_adapter
    from adaptlab.serving.app import create_app
    from adaptlab.serving.engine import EngineError
    from adaptlab.serving.transformers_engine import TransformersEngine

    engine = TransformersEngine(str(ladder / "bundle" / "merged"), device="cpu", max_length=32)
    with pytest.raises(EngineError, match="trained on base"):  # lora was trained on tiny-random-bert, not this one
        engine.load_adapter(resolve_adapter("ner", ladder / "out" / "lora"))
    rows = records(ladder / "out" / "head_only")
    with TestClient(create_app(engine, ServerSettings(max_inputs=MAX_INPUTS))) as client:
        assert_same_as_run(served_entities(client, "base", [r["text"] for r in rows]), rows)
        base = client.get("/v1/models").json()["data"][0]
        assert (base["task"], base["export_kind"]) == ("token_classification", "tagger")
        error = assert_error(client.post("/v1/classify", json={"model": "base", "input": "x", "labels": ["a", "b"]}),
                             400, "wrong_endpoint")
        assert "/v1/ner" in error["message"]
