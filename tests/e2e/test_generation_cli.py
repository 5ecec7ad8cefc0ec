"""The generative ladder from the command line: compare, generate (--explain), inspect-data, and bad input."""

from __future__ import annotations

import json

import yaml
from tests.e2e.test_cli import run_cli
from tests.generative_data import (  # noqa: F401  (one_torch_thread is an autouse fixture)
    one_torch_thread,
    write_csv,
    write_generation_csv,
    write_ladder,
)

RUNGS = [
    {"method": "zero_shot_prompt"},
    {"method": "lm_lora", "params": {"max_steps": 4, "learning_rate": 1e-2, "batch_size": 8, "evals_per_epoch": 0}},
]


def test_compare_generation_ladder(tmp_path, monkeypatch, capsys):
    config = write_ladder(tmp_path, write_generation_csv(tmp_path / "g.csv", 24), "tiny-random-llama", RUNGS)
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 0, err
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert board["primary_metric"] == "rougeL" and board["higher_is_better"] is True
    assert [e["status"] for e in board["rungs"]] == ["ok", "ok"], [e["error"] for e in board["rungs"]]
    for entry in board["rungs"]:
        m = entry["metrics"]
        assert {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf", "exact_match", "perplexity"} <= m.keys()
        f = m["forgetting"]
        assert f["base_ppl"] > 1 and abs(f["delta"] - (f["adapted_ppl"] - f["base_ppl"])) <= 1.5e-4  # each rounded
        assert entry["interval"][0] <= entry["value"] <= entry["interval"][1]
        metrics = json.loads((tmp_path / "out" / entry["rung"] / "metrics.json").read_text())
        assert metrics["forgetting"] == f and metrics["intervals"]["perplexity"]
        record = json.loads((tmp_path / "out" / entry["rung"] / "predictions.jsonl").read_text().splitlines()[0])
        assert {"id", "prompt", "reference", "prediction", "nll", "tokens"} <= record.keys()
        assert record["prompt"].endswith("<|im_start|>assistant\n")
    by_rung = {e["rung"]: e for e in board["rungs"]}
    assert by_rung["zero_shot_prompt"]["metrics"]["forgetting"]["delta"] == 0
    assert by_rung["zero_shot_prompt"]["cost"]["trainable_params"] == 0
    assert 0 < by_rung["lm_lora"]["cost"]["trainable_params"] < by_rung["lm_lora"]["cost"]["total_params"]
    assert list((tmp_path / "out" / "lm_lora" / "weights" / "adapter").glob("*.safetensors"))
    # metrics are recomputable from the saved predictions alone
    from adaptlab.pipeline import read_predictions
    from adaptlab.tasks import get_task

    again = get_task("generation").evaluate(read_predictions(tmp_path / "out" / "lm_lora"), {"seed": 0})
    assert again["metrics"]["rougeL"] == by_rung["lm_lora"]["value"]

    code, out, err = run_cli(monkeypatch, capsys, "generate", tmp_path / "out" / "lm_lora", "repeat: king queen",
                             "--max-new-tokens", "3", "--json")
    assert code == 0, err
    assert json.loads(out)["prompt"].startswith("<|im_start|>user\nrepeat: king queen")
    code, out, err = run_cli(monkeypatch, capsys, "predict", tmp_path / "out" / "lm_lora", "repeat: king")
    assert code == 2 and "a rung of a generation task" in err and "adaptlab generate" in err and "internal" not in err


def test_generate_explain_step_by_step(monkeypatch, capsys):
    args = ("generate", "tiny-random-gpt2", "to be or not", "--raw", "--max-new-tokens", "4")
    code, plain, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, *args, "--explain", "--top", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "prompt (4 tokens): 'to be or not'"
    steps = [line for line in lines if line.startswith("step ")]
    assert len(steps) == 4
    for line in steps:  # greedy: the chosen token is the first, starred candidate
        chosen = line.split("chose ")[1].split(" (p=")[0]
        assert line.split("| ")[1].startswith("*" + chosen)
        assert line.count("'") >= 8
    assert lines[-1] == f"output: {plain.strip()!r}"


def test_generate_prompt_longer_than_the_context_window(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "generate", "tiny-random-gpt2", "ghost " * 600, "--raw",
                             "--max-new-tokens", "8")
    assert code == 2
    text = " ".join(err.split())
    assert "more than the 512-token context window of 'tiny-random-gpt2'" in text
    assert "Truncating would drop the first" in text and "Traceback" not in err


def test_inspect_data_marks_the_trained_tokens(tmp_path, monkeypatch, capsys):
    rows = [{"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": f"say {w}"},
                          {"role": "assistant", "content": f"{w}!"}]} for w in ("king", "queen", "ghost", "crown") * 4]
    config = write_ladder(tmp_path, write_csv(tmp_path / "chat.jsonl", rows), "tiny-random-gpt2", RUNGS)
    code, out, err = run_cli(monkeypatch, capsys, "inspect-data", config, "--rung", "lm_lora", "--tokens")
    assert code == 0, err
    assert "answer tokens trained on (loss) between [[ ]]" in out
    marked = out.split("-" * 60)[1]
    assert marked.strip().startswith("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nsay ")
    answer = marked.split("[[")[1].split("]]")[0]
    assert answer in {f"{w}!<|im_end|>" for w in ("king", "queen", "ghost", "crown")}
    listing = out.split("-" * 60)[2].strip().splitlines()
    assert [line.split()[-1] for line in listing][-3:] == ["loss", "loss", "loss"]
    assert listing[0].split()[-1] == "-100"


def test_bad_generative_configs_exit_2_before_training(tmp_path, tiny_bert, monkeypatch, capsys):
    cases = [
        ({"model": "tiny-random-bert"}, "encoder-only model"),
        ({"task": {"type": "generation", "template": "no input here"}}, "no {text} placeholder"),
        ({"rungs": [{"method": "free_text_prompt"}]}, "does not support task 'generation'"),
        ({"task": {"type": "generation", "primary_metric": "rogueL"}}, "Did you mean 'rougeL'"),
    ]
    data = write_generation_csv(tmp_path / "g.csv", 16)
    for change, expected in cases:
        config = write_ladder(tmp_path, data, "tiny-random-gpt2", RUNGS)
        cfg = yaml.safe_load(config.read_text())
        cfg.update(change)
        config.write_text(yaml.safe_dump(cfg))
        code, out, err = run_cli(monkeypatch, capsys, "compare", config)
        assert code == 2, (change, out, err)
        assert expected in " ".join(err.split()), err
        assert not (tmp_path / "out" / "lm_lora").exists()
