"""Domain pre-training (``domain_mlm``) and the rungs that start from it (``from: domain_mlm``), through the whole
pipeline on a tiny random BERT.

domain_mlm trains on the training texts plus an extra text file (its masked-LM loss and perplexity go down), predicts
nothing (no value, ranked after the rungs that have one); head_only, lora, linear_probe and setfit started from it
really start from its encoder, carry its training time in their cost, and ship without its folder; the report shows
the gain of pre-training with the paired test; a bad ``extra_text`` file stops the ladder before any rung (exit 2).
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from tests.conftest import write_config, write_sentiment_csv
from tests.generative_data import one_torch_thread  # noqa: F401 (autouse)

from adaptlab.cli import main
from adaptlab.config import load_ladder
from adaptlab.methods._encoder_start import encoder_body, encoder_state
from adaptlab.methods.domain_mlm import mlm_perplexity
from adaptlab.pipeline import build_method, compare, load_run, prepare

FAST = {"epochs": 2, "batch_size": 16, "learning_rate": 1e-2, "evals_per_epoch": 0, "logging_steps": 1}
MLM = {"max_steps": 20, "batch_size": 16, "learning_rate": 1e-3, "evals_per_epoch": 0, "logging_steps": 1,
       "extra_text": "extra.txt"}
EXTRA = [f"the {w} film was {w} and the plot {w}" for w in ("great", "dull", "moving", "tedious", "superb")]
RUNGS = [
    {"method": "domain_mlm", "params": MLM},
    {"method": "head_only", "params": FAST},
    {"method": "head_only", "name": "head_only_domain", "from": "domain_mlm", "params": FAST},
    {"method": "lora", "name": "lora_domain", "from": "domain_mlm", "params": FAST},
    {"method": "linear_probe", "name": "probe_domain", "from": "domain_mlm"},
    {"method": "setfit", "name": "setfit_domain", "from": "domain_mlm", "params": {"num_iterations": 2}},
]
CHILDREN = ("head_only_domain", "lora_domain", "probe_domain", "setfit_domain")


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_bert):
    """The ladder, run once: (prepared ladder, leaderboard)."""
    tmp = tmp_path_factory.mktemp("domain_mlm")
    (tmp / "extra.txt").write_text("\n".join(EXTRA) + "\n\n", encoding="utf-8")
    ladder = prepare(load_ladder(write_config(tmp, write_sentiment_csv(tmp / "d.csv", 96), tiny_bert, RUNGS)))
    return ladder, compare(ladder)


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_domain_mlm_trains_on_the_train_and_extra_texts_and_predicts_nothing(ran):
    ladder, board = ran
    entries = {e["rung"]: e for e in board["rungs"]}
    assert {n: e["status"] for n, e in entries.items()} == {r.get("name", r["method"]): "ok" for r in RUNGS}
    assert entries["domain_mlm"]["value"] is None
    assert board["rungs"][-1]["rung"] == "domain_mlm"  # unranked: after every rung with a value
    folder = ladder.output / "domain_mlm"
    metrics = read(folder / "metrics.json")
    assert metrics["predicts"] is False and not (folder / "predictions.jsonl").exists()
    # it trained on the training split's texts and the extra file's non-blank lines
    assert read(folder / "run.json")["training"]["schedule"]["examples"] == len(ladder.data.train) + len(EXTRA)
    losses = [h["loss"] for h in metrics["history"] if "loss" in h]
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    own = metrics["metrics"]
    assert own["perplexity_texts"] == len(ladder.data.test)
    assert own["perplexity_after"] < own["perplexity_before"], own
    from adaptlab.errors import UserError
    from adaptlab.export import export_run

    with pytest.raises(UserError, match="predicts nothing on its own; export a rung that starts from it"):
        export_run(folder, folder.parent.parent / "domain_bundle")


def test_its_perplexity_on_the_training_texts_drops(ran):
    ladder, _ = ran
    _, trained, _ = load_run(ladder.output / "domain_mlm")
    base = trained.base_mlm()
    train = ladder.data.train
    kwargs = dict(max_length=16, batch_size=32, probability=0.15, seed=1, device="cpu")
    before = mlm_perplexity(base, trained.tokenizer, train.texts, None, **kwargs)
    after = mlm_perplexity(trained.model, trained.tokenizer, train.texts, None, **kwargs)
    assert after < 0.9 * before, (before, after)


def test_a_child_starts_from_the_pretrained_encoder_not_the_base(ran):
    ladder, _ = ran
    parent = ladder.output / "domain_mlm"
    pretrained = encoder_state(parent / "weights")
    bodies = {}
    for name in ("head_only_domain", "probe_domain", "setfit_domain", "head_only"):
        method = build_method(ladder.spec.rung(name), ladder.ctx)
        if name != "head_only":
            method.start_from(parent, read(parent / "run.json"))
        method.setup()
        bodies[name] = (encoder_body(method.model) if name.startswith("head_only")
                        else (method.embedder.model if name == "probe_domain" else method.body)[0].auto_model)
    for name, body in bodies.items():
        state = body.state_dict()
        assert set(state) - {k for k in state if k.startswith("pooler.")} == set(pretrained), name
        same = [k for k in pretrained if torch.equal(state[k], pretrained[k])]
        if name == "head_only":  # the base model's encoder: domain_mlm changed its weights
            assert len(same) < len(pretrained) / 2, same
        else:
            assert same == list(pretrained), name


def test_the_childs_cost_includes_the_parents_training(ran):
    _, board = ran
    entries = {e["rung"]: e for e in board["rungs"]}
    parent = entries["domain_mlm"]["cost"]
    for name in CHILDREN:
        cost = entries[name]["cost"]
        assert cost["from_rung"]["rung"] == "domain_mlm", name
        assert cost["from_rung"]["train_seconds"] == parent["train_seconds"]
        assert cost["from_rung"]["trainable_params"] == parent["trainable_params"]
        assert cost["train_seconds"] == round(cost["own"]["train_seconds"] + parent["train_seconds"], 3)
        assert cost["train_seconds"] > parent["train_seconds"]
    assert "from_rung" not in entries["head_only"]["cost"] and "own" not in entries["head_only"]["cost"]


def test_a_child_loads_and_predicts_as_recorded_without_the_parents_folder(ran, tmp_path):
    ladder, _ = ran
    for name in CHILDREN:
        copy = shutil.copytree(ladder.output / name, tmp_path / name)  # the child alone, domain_mlm nowhere near
        task, method, _ = load_run(copy)
        recorded = [json.loads(line) for line in (copy / "predictions.jsonl").read_text().splitlines()]
        again = task.predict(method, ladder.data.test)
        assert [r["scores"] for r in again] == [r["scores"] for r in recorded], name


def test_the_report_shows_the_gain_of_pretraining_with_the_paired_test(ran, tmp_path):
    from adaptlab.reporting.report import write_report

    ladder, board = ran
    md_path, html_path = write_report([ladder.output], tmp_path, quiet=True)
    md = md_path.read_text(encoding="utf-8")
    section = md.split("## Gain from domain pre-training", 1)[1].split("\n## ", 1)[0]
    values = {e["rung"]: e["value"] for e in board["rungs"]}
    gain = values["head_only_domain"] - values["head_only"]
    assert (f"| head_only_domain | head_only | domain_mlm | {values['head_only_domain']:.3f} | "
            f"{values['head_only']:.3f} | {gain:+.3f} | McNemar") in section
    assert "`domain_mlm`: masked-LM perplexity on 24 test texts" in section
    assert "lora_domain" not in section  # no lora without `from` to compare with
    assert "domain_mlm" not in md.split("## Leaderboard", 1)[1].split("\n## ", 1)[0]  # not ranked, not "failed"
    assert 'id="pretraining"' in html_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("content, expected", [
    (None, "can't be read"),
    (b"\x00\x01binary", "looks like a binary file"),
    (b"caf\xe9\n", "is not UTF-8 text"),
    (b"\n  \n", "holds no text"),
])
def test_a_bad_extra_text_file_exits_2_naming_it(content, expected, tmp_path, tiny_bert, monkeypatch, capsys):
    extra = tmp_path / "unlabelled.txt"
    if content is not None:
        extra.write_bytes(content)
    rungs = [{"method": "domain_mlm", "params": {**MLM, "extra_text": "unlabelled.txt"}}]
    config = write_config(tmp_path, write_sentiment_csv(tmp_path / "d.csv", 48), tiny_bert, rungs)
    monkeypatch.setattr(sys, "argv", ["adaptlab", "compare", str(config)])
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as exc:
        main()
    err = " ".join(capsys.readouterr().err.split())
    assert exc.value.code == 2
    assert f"params.extra_text: '{extra}'" in err and expected in err, err
    assert not (tmp_path / "out" / "domain_mlm").exists()  # stopped before any rung


def test_a_child_is_not_served_as_an_adapter_of_the_shared_base(ran):
    from adaptlab.errors import UserError
    from adaptlab.serving.adapters import resolve_adapter

    ladder, _ = ran
    for name in ("lora_domain", "probe_domain"):
        with pytest.raises(UserError, match="started from a domain_mlm rung's pre-trained encoder"):
            resolve_adapter(name, ladder.output / name)


def test_an_edited_extra_text_file_invalidates_the_stage_and_its_children(ran):
    """The resume hash covers the extra text's content, not only its path: --resume re-runs both after an edit."""
    from adaptlab.pipeline import rung_hash

    ladder, _ = ran
    extra = ladder.spec.base_dir / "extra.txt"
    stage, child = ladder.spec.rung("domain_mlm"), ladder.spec.rung("lora_domain")
    before = rung_hash(ladder, stage), rung_hash(ladder, child), rung_hash(ladder, ladder.spec.rung("head_only"))
    original = extra.read_text(encoding="utf-8")
    try:
        extra.write_text(original + "one more unlabelled review\n", encoding="utf-8")
        after = rung_hash(ladder, stage), rung_hash(ladder, child), rung_hash(ladder, ladder.spec.rung("head_only"))
    finally:
        extra.write_text(original, encoding="utf-8")
    assert after[0] != before[0] and after[1] != before[1]
    assert after[2] == before[2]  # a rung that reads no such file keeps its hash
    assert rung_hash(ladder, stage) == before[0]
