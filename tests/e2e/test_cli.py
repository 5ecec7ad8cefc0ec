"""The command line as a user meets it: a real ladder on a tiny model, and every kind of user mistake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import write_config

from adaptlab.cli import main


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["adaptlab", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as exc:
        main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


RUNGS = [
    {"method": "embedding_zero_shot"},
    {"method": "linear_probe"},
    {"method": "lora", "params": {"learning_rate": 5e-3, "batch_size": 16, "epochs": 3, "evals_per_epoch": 1}},
]


def test_compare_runs_list_predict(tmp_path, sentiment_csv, tiny_bert, monkeypatch, capsys):
    config = write_config(tmp_path, sentiment_csv, tiny_bert, RUNGS)
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 0, err
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert [e["status"] for e in board["rungs"]] == ["ok"] * 3
    assert board["split"] == {"train": 156, "validation": 24, "test": 60, "seed": 0}
    for entry in board["rungs"]:
        folder = tmp_path / "out" / entry["rung"]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["provenance"]["data_sha256"] == board["data_sha256"]
        assert metrics["provenance"]["seed"] == 0 and metrics["provenance"]["packages"]["torch"]
        lines = (folder / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == 60
        assert {"id", "text", "reference", "prediction", "scores"} <= json.loads(lines[0]).keys()
        low, high = entry["interval"]
        assert low <= entry["value"] <= high
        cost = entry["cost"]
        assert cost["total_params"] > 0 and cost["size_on_disk_bytes"] > 0 and cost["latency_ms_p50"] > 0
    lora = next(e for e in board["rungs"] if e["rung"] == "lora")
    assert 0 < lora["cost"]["trainable_pct"] < 100
    assert list((tmp_path / "out" / "lora" / "weights" / "adapter").glob("*.safetensors"))
    assert list((tmp_path / "out" / "lora" / "tensorboard").glob("events.*"))
    assert not (tmp_path / "out" / ".partial").exists()
    # metrics are recomputable from the saved predictions alone
    from adaptlab.pipeline import read_predictions
    from adaptlab.tasks import get_task

    records = read_predictions(tmp_path / "out" / "lora")
    again = get_task("classification").evaluate(records, {"label_names": ["neg", "pos"], "seed": 0})
    assert again["metrics"] == lora["metrics"]

    code, out, _ = run_cli(monkeypatch, capsys, "runs", "list")
    assert code == 0 and "lora" in out and "linear_probe" in out

    code, out, _ = run_cli(monkeypatch, capsys, "predict", tmp_path / "out" / "lora", "the wonderful superb film",
                           "--json")
    assert code == 0
    result = json.loads(out)
    assert result[0]["label"] in ("pos", "neg") and abs(sum(result[0]["scores"].values()) - 1) < 1e-3
    code, out, err = run_cli(monkeypatch, capsys, "predict", tmp_path / "out" / "lora", "[/bold] a [b]great[/b] film")
    assert code == 0 and "[/bold] a [b]great[/b] film" in out, err  # the text as given, never read as markup


def test_resume_skips_finished_rungs(tmp_path, sentiment_csv, tiny_bert, monkeypatch, capsys, caplog):
    config = write_config(tmp_path, sentiment_csv, tiny_bert, RUNGS[:2])
    assert run_cli(monkeypatch, capsys, "compare", config)[0] == 0
    before = (tmp_path / "out" / "linear_probe" / "metrics.json").stat().st_mtime_ns
    code, out, _ = run_cli(monkeypatch, capsys, "compare", config, "--resume")
    assert code == 0 and "already finished" in out
    assert (tmp_path / "out" / "linear_probe" / "metrics.json").stat().st_mtime_ns == before
    code, out, _ = run_cli(monkeypatch, capsys, "compare", config, "--resume", "--rungs", "linear_probe, linear_probe")
    assert code == 0 and "[1/1] linear_probe" in out and "/2]" not in out  # a rung named twice runs once
    for empty in ("", " , ", "linear_probe,"):
        code, _, err = run_cli(monkeypatch, capsys, "compare", config, "--rungs", empty)
        assert code == 2 and "has an empty name" in err, err
    for damage in ("weights", "predictions.jsonl"):  # a folder damaged since it finished is run again, not kept
        folder = tmp_path / "out" / "linear_probe"
        victim = next(p for p in sorted(folder.glob(f"{damage}*/**/*") if damage == "weights" else [folder / damage])
                      if p.is_file())
        victim.unlink()
        caplog.clear()
        code, out, err = run_cli(monkeypatch, capsys, "compare", config, "--resume")
        assert code == 0 and "[2/2] linear_probe: ok" in " ".join(out.split()), out
        assert "changed or went missing since the rung finished" in caplog.text and victim.is_file()
        assert victim.relative_to(folder).as_posix() in caplog.text


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["rungs"].append({"method": "lroa"}), "Did you mean 'lora'"),
        (lambda c: c["data"].update(label_column="lable"), "Did you mean 'label'"),
        (lambda c: c.update(model="minlm"), "minilm"),
        (lambda c: c["data"].update(path="missing.csv"), "missing.csv"),
        (lambda c: c["rungs"][0].update(params={"learning_rat": 0.1}), "learning_rate"),
        (lambda c: c.update(epochs=3), "epochs"),
    ],
)
def test_user_mistakes_exit_2_with_a_message(mutate, expected, tmp_path, sentiment_csv, tiny_bert, monkeypatch,
                                             capsys):
    import yaml

    config = write_config(tmp_path, sentiment_csv, tiny_bert, [{"method": "lora"}])
    cfg = yaml.safe_load(config.read_text())
    mutate(cfg)
    config.write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 2, (out, err)
    assert expected in err.replace("\n", " ")
    assert "Traceback" not in err + out


def test_all_config_problems_reported_at_once(tmp_path, sentiment_csv, monkeypatch, capsys):
    import yaml

    config = write_config(tmp_path, sentiment_csv, "tiny-random-bert",
                          [{"method": "lroa"}, {"method": "lora", "params": {"r": -1}}], seed="zero")
    cfg = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump(cfg))
    code, _, err = run_cli(monkeypatch, capsys, "validate", config)
    assert code == 2
    for needle in ("seed", "rungs[0].method", "rungs[1].params.r", "3 problems"):
        assert needle in err.replace("\n", " ")
    good = write_config(tmp_path, sentiment_csv, "tiny-random-bert", [{"method": "linear_probe"}])
    code, out, err = run_cli(monkeypatch, capsys, "validate", good)
    assert code == 0 and "ok" in out and "adaptlab plan" in out, err
    sentiment_csv.rename(tmp_path / "elsewhere.csv")
    code, _, err = run_cli(monkeypatch, capsys, "validate", good)
    assert code == 2 and "data.path: " in err and "sentiment.csv: file not found" in err


@pytest.mark.parametrize(
    "content, expected",
    [
        ("text,label\n", "no data rows"),
        ("text,label\na good film,pos\nnice,\nbad film,neg\n", "row 2"),
        ("text,label\na,pos\nb,pos\nc,pos\nd,pos\n", "pos"),
    ],
)
def test_bad_data_exit_2(content, expected, tmp_path, tiny_bert, monkeypatch, capsys):
    data = tmp_path / "bad.csv"
    data.write_text(content)
    config = write_config(tmp_path, data, tiny_bert, [{"method": "linear_probe"}])
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 2, (out, err)
    assert "bad.csv" in err and expected in err
    assert not (tmp_path / "out" / "linear_probe").exists()


def test_real_entry_point_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "adaptlab", "compare", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "nope.yaml" in proc.stderr and "Traceback" not in proc.stderr


def test_failing_rung_does_not_stop_the_ladder(tmp_path, sentiment_csv, tiny_bert, monkeypatch, capsys):
    rungs = [{"method": "top_layers", "params": {"layers": 99}}, {"method": "linear_probe"}]
    config = write_config(tmp_path, sentiment_csv, tiny_bert, rungs)
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 1, err  # the ladder goes on, but a failed rung is not a success
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    status = {e["rung"]: (e["status"], e["error"]) for e in board["rungs"]}
    assert status["linear_probe"][0] == "ok"
    assert status["top_layers"][0] == "failed" and "only 2 layers" in status["top_layers"][1]


def test_methods_lists_every_rung_and_what_tuning_searches(monkeypatch, capsys):
    from adaptlab.methods import METHODS

    code, out, _ = run_cli(monkeypatch, capsys, "methods")
    assert code == 0
    assert all(f"  {name} (" in out for name in METHODS.names())
    lora = out.split("  lora (")[1].split("\n  ")[1]
    assert lora.startswith("    tuning searches: learning_rate [0.0001, 0.005, log], r {4, 8, 16}")
    zero = out.split("  embedding_zero_shot (")[1].split("\n  ")[1]
    assert not zero.startswith("    tuning searches")  # nothing to search


def test_a_damaged_run_folder_is_named_not_a_traceback(sentiment_run, tmp_path, monkeypatch, capsys):
    import shutil

    def damaged(name: str, harm) -> Path:
        folder = shutil.copytree(sentiment_run, tmp_path / name)
        harm(folder)
        return folder

    def truncate(folder: Path) -> None:
        for file in (folder / "weights").rglob("*.safetensors"):
            file.write_bytes(file.read_bytes()[:100])

    cases = [
        (("predict",), damaged("no_weights", lambda f: shutil.rmtree(f / "weights")), "weights can't be read"),
        (("predict",), damaged("cut_weights", truncate), "weights can't be read"),
        (("predict",), damaged("bad_run", lambda f: (f / "run.json").write_text("{")), "run.json: can't be read"),
        (("runs", "show"), damaged("bad_metrics", lambda f: (f / "metrics.json").write_text('{"rung": ')),
         "metrics.json: can't be read"),
        (("export",), tmp_path / "bad_metrics", "metrics.json: can't be read"),
        (("export",), tmp_path / "cut_weights", "weights can't be read"),
    ]
    for command, folder, message in cases:
        extra = {"predict": ["a fine film"], "export": ["--to", str(tmp_path / "bundle")]}.get(command[0], [])
        code, _, err = run_cli(monkeypatch, capsys, *command, folder, *extra)
        assert code == 2 and message in err and "folder is damaged" in err, (command, folder.name, err)
    assert not (tmp_path / "bundle").exists()
