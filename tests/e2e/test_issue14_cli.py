"""Issue 14: exit codes and messages of `compare`/`report` as a user meets them (tiny model, a few seconds each)."""

from __future__ import annotations

import json

import pytest
import yaml
from tests.conftest import write_config
from tests.e2e.test_cli import run_cli


def flat(text: str) -> str:
    return " ".join(text.split())


# -- 5: failed rungs are not a success; the user's causes are caught before any rung starts -----------------------


def test_failed_rungs_exit_1_with_the_full_reason(tmp_path, sentiment_csv, tiny_bert, monkeypatch, capsys):
    from adaptlab.methods.linear_probe import LinearProbe

    reason = "the probe broke [red]: ['x'] " + " ".join(f"detail-{i}" for i in range(40)) + " END-OF-REASON"

    def broken(self, data, workdir, resume=False):
        raise RuntimeError(reason)

    monkeypatch.setattr(LinearProbe, "fit", broken)
    config = write_config(tmp_path, sentiment_csv, tiny_bert, [{"method": "linear_probe"}])
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 1, (out, err)
    assert f"RuntimeError: {reason}" in flat(err)  # in full, not cut at the table's width
    assert "1 of 1 rung(s) failed" in flat(err)
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert [e["status"] for e in board["rungs"]] == ["failed"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"device": "gpu"}, "device: unknown device"),
        ({"device": "cuda"}, "asks for a CUDA GPU"),
        ({"device": "cuda:0"}, "asks for a CUDA GPU"),
    ],
)
def test_device_mistakes_exit_2_before_any_rung(extra, needle, tmp_path, sentiment_csv, tiny_bert, monkeypatch,
                                                capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    config = write_config(tmp_path, sentiment_csv, tiny_bert, [{"method": "linear_probe"}], **extra)
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 2, (out, err)
    assert needle in flat(err) and "Traceback" not in err
    assert not (tmp_path / "out" / "linear_probe").exists()


def test_lora_target_modules_that_match_nothing_exit_2_before_any_rung(tmp_path, sentiment_csv, tiny_bert,
                                                                      monkeypatch, capsys):
    rungs = [{"method": "linear_probe"}, {"method": "lora", "params": {"target_modules": ["qkv_proj"]}}]
    config = write_config(tmp_path, sentiment_csv, tiny_bert, rungs)
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 2, (out, err)
    assert "rungs[1] (lora)" in flat(err) and "qkv_proj" in err and "query" in err  # names the layers it has
    assert not (tmp_path / "out" / "linear_probe").exists()  # nothing ran


# -- 6: seeds ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_out_of_range_is_a_config_error(seed, tmp_path, sentiment_csv, tiny_bert, monkeypatch, capsys):
    config = write_config(tmp_path, sentiment_csv, tiny_bert, [{"method": "linear_probe"}])
    cfg = yaml.safe_load(config.read_text())
    cfg["seed"] = seed
    config.write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 2, (out, err)
    assert "seed:" in err and "4294967295" in flat(err)
    assert "stratify" not in err + out


# -- 7: --output at a file ----------------------------------------------------------------------------------------


def test_output_that_is_a_file_exits_2_naming_it(tmp_path, sentiment_csv, tiny_bert, monkeypatch, capsys):
    config = write_config(tmp_path, sentiment_csv, tiny_bert, [{"method": "linear_probe"}])
    target = tmp_path / "taken.txt"
    target.write_text("not a folder")
    for output in (target, target / "sub"):
        code, out, err = run_cli(monkeypatch, capsys, "compare", config, "--output", output)
        assert code == 2, (out, err)
        assert str(target) in flat(err) and "not a folder" in err and "FileExistsError" not in err + out
    assert target.read_text() == "not a folder"


# -- 8 and 12: Ctrl-C keeps finished rungs and says how to resume; the report names the rungs that never ran -------


def test_ctrl_c_says_how_to_resume_and_report_names_rungs_that_never_ran(tmp_path, sentiment_csv, tiny_bert,
                                                                         monkeypatch, capsys):
    from adaptlab import pipeline

    real = pipeline.run_rung

    def interrupt_second(ladder, rung, **kwargs):
        if rung.run_name == "few_shot":
            raise KeyboardInterrupt
        return real(ladder, rung, **kwargs)

    monkeypatch.setattr(pipeline, "run_rung", interrupt_second)
    rungs = [{"method": "linear_probe"}, {"method": "few_shot"}, {"method": "embedding_zero_shot"}]
    config = write_config(tmp_path, sentiment_csv, tiny_bert, rungs)
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 130, (out, err)
    assert f"adaptlab compare {config} --resume" in flat(err) and "finished rungs are kept" in flat(err)
    assert json.loads((tmp_path / "out" / "linear_probe" / "metrics.json").read_text())["status"] == "ok"

    code, out, err = run_cli(monkeypatch, capsys, "report", tmp_path / "out")
    assert code == 0, (out, err)
    assert "never ran (few_shot, embedding_zero_shot)" in flat(err)  # the terminal
    md = (tmp_path / "out" / "report.md").read_text()
    html = (tmp_path / "out" / "report.html").read_text()
    recommendation = md.split("## Recommendation")[1].split("## Leaderboard")[0]
    assert "few_shot, embedding_zero_shot never ran" in flat(recommendation)
    assert "never ran (few_shot, embedding_zero_shot)" in flat(md.split("## Warnings")[1])
    assert "few_shot, embedding_zero_shot never ran" in html and "never ran (few_shot, embedding_zero_shot)" in html


def test_report_of_a_complete_ladder_names_no_missing_rungs(tmp_path, sentiment_csv, tiny_bert, monkeypatch,
                                                            capsys):
    config = write_config(tmp_path, sentiment_csv, tiny_bert, [{"method": "linear_probe"}])
    assert run_cli(monkeypatch, capsys, "compare", config)[0] == 0
    code, out, err = run_cli(monkeypatch, capsys, "report", tmp_path / "out")
    assert code == 0 and "never ran" not in err + out
    assert "never ran" not in (tmp_path / "out" / "report.md").read_text()


# -- 9: declared labels absent from the data ----------------------------------------------------------------------


def test_declared_labels_absent_from_the_data_are_left_out_of_macro_f1(tmp_path, sentiment_csv, tiny_bert,
                                                                       monkeypatch, capsys, caplog):
    labels = ["neg", "pos", *[f"unused{i}" for i in range(98)]]
    config = write_config(tmp_path, sentiment_csv, tiny_bert, [{"method": "linear_probe"}],
                          task={"type": "classification", "labels": labels})
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 0, (out, err)
    assert "98 of the 100 declared labels never occur" in caplog.text
    metrics = json.loads((tmp_path / "out" / "linear_probe" / "metrics.json").read_text())
    assert metrics["macro_labels"] == ["neg", "pos"]
    assert metrics["labels_not_in_data"] == labels[2:]
    per_class = metrics["per_class"]
    assert metrics["metrics"]["macro_f1"] == pytest.approx((per_class["neg"]["f1"] + per_class["pos"]["f1"]) / 2)
    assert metrics["metrics"]["macro_f1"] > 0.3  # averaged with 98 zeros it would be below 0.02
    low, high = metrics["intervals"]["macro_f1"]
    assert low <= metrics["metrics"]["macro_f1"] <= high <= 1.0


# -- 10: clamps are warned about and recorded ----------------------------------------------------------------------


def test_max_length_and_shots_clamps_are_recorded(tmp_path, sentiment_csv, tiny_bert, monkeypatch, capsys, caplog):
    rungs = [{"method": "head_only", "params": {"epochs": 1, "batch_size": 32, "evals_per_epoch": 1}},
             {"method": "few_shot", "params": {"shots": 500}}]
    config = write_config(tmp_path, sentiment_csv, tiny_bert, rungs)
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["max_length"] = 600  # the tiny model has 512 positions
    config.write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 0, (out, err)
    head = json.loads((tmp_path / "out" / "head_only" / "run.json").read_text())
    assert head["adjustments"]["data.max_length"]["requested"] == 600
    assert head["adjustments"]["data.max_length"]["used"] == 512
    assert "data.max_length is 600 but 512 is used" in caplog.text
    few = json.loads((tmp_path / "out" / "few_shot" / "run.json").read_text())
    train = json.loads((tmp_path / "out" / "leaderboard.json").read_text())["split"]["train"]
    assert few["adjustments"]["params.shots"]["requested"] == 500
    assert few["adjustments"]["params.shots"]["used"] in (train // 2, (train + 1) // 2)
    assert "params.shots is 500 but" in caplog.text
    assert "adjustments" not in few["params"]  # the requested params stay as configured (they rebuild the rung)


def test_no_adjustments_recorded_when_nothing_is_clamped(tmp_path, sentiment_csv, tiny_bert, monkeypatch, capsys):
    config = write_config(tmp_path, sentiment_csv, tiny_bert, [{"method": "few_shot", "params": {"shots": 4}}])
    assert run_cli(monkeypatch, capsys, "compare", config)[0] == 0
    assert "adjustments" not in json.loads((tmp_path / "out" / "few_shot" / "run.json").read_text())


# -- 13: messages ---------------------------------------------------------------------------------------------------


def test_compare_a_folder_says_it_is_a_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "ladder.yaml").write_text("name: x\n")
    code, out, err = run_cli(monkeypatch, capsys, "compare", tmp_path / "configs")
    assert code == 2
    assert "is a folder, not a config file" in flat(err) and "ladder.yaml" in err and "not found" not in err


def test_binary_config_and_data_are_called_binary(tmp_path, tiny_bert, monkeypatch, capsys):
    data = tmp_path / "data.csv"
    data.write_bytes(b"text,label\n\x00\x01\x02\x89PNG\xff\xfe,pos\n")
    config = write_config(tmp_path, data, tiny_bert, [{"method": "linear_probe"}])
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 2, (out, err)
    assert "looks like a binary file" in flat(err) and "NUL" in err and "latin-1" not in err
    binary_config = tmp_path / "model.yaml"
    binary_config.write_bytes(b"\x7fELF\x00\x00\x01" + bytes(range(256)))
    code, out, err = run_cli(monkeypatch, capsys, "compare", binary_config)
    assert code == 2 and "looks like a binary file" in flat(err) and "UTF-8" not in err


def test_one_class_error_speaks_of_the_training_split(tmp_path, tiny_bert, monkeypatch, capsys):
    data = tmp_path / "one.csv"
    data.write_text("text,label\n" + "".join(f"review {i},pos\n" for i in range(12)))
    config = write_config(tmp_path, data, tiny_bert, [{"method": "linear_probe"}])
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 2, (out, err)
    assert "only one class, 'pos', in the training split (7 rows)" in flat(err)


def test_data_paths_in_messages_work_from_where_the_user_stands(tmp_path, tiny_bert, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "project" / "data").mkdir(parents=True)
    (tmp_path / "project" / "data" / "bad.csv").write_text("text,label\na good film,pos\nnice,\nbad film,neg\n")
    config = write_config(tmp_path / "project", tmp_path / "project" / "data" / "bad.csv", tiny_bert,
                          [{"method": "linear_probe"}])
    cfg = yaml.safe_load(config.read_text())
    for relative in ("data/bad.csv", "data/missing.csv"):  # relative to the config's folder, as documented
        cfg["data"]["path"] = relative
        config.write_text(yaml.safe_dump(cfg))
        code, out, err = run_cli(monkeypatch, capsys, "compare", "project/ladder.yaml")
        assert code == 2, (out, err)
        shown = f"project/{relative}"
        assert f"{shown}:" in flat(err)  # a path that opens from the working directory
        assert f" {relative}:" not in f" {flat(err)}"


def test_real_ctrl_c_exits_130_with_the_resume_command(tmp_path, sentiment_csv, tiny_bert):
    import os
    import signal
    import subprocess
    import sys
    import time

    rungs = [{"method": "linear_probe"},
             {"method": "lora", "params": {"max_steps": 100000, "batch_size": 8, "evals_per_epoch": 0}}]
    config = write_config(tmp_path, sentiment_csv, tiny_bert, rungs)
    proc = subprocess.Popen([sys.executable, "-m", "adaptlab", "compare", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "250", "PYTHONFAULTHANDLER": "1"},
                            # a terminal's Ctrl-C: the child must not inherit an ignored SIGINT from this process
                            # (an earlier in-process test can leave it ignored; the child then trains on forever)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    finished = tmp_path / "out" / "linear_probe" / "metrics.json"
    try:
        deadline = time.monotonic() + 120
        while not finished.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # into the lora rung
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack: where it hangs
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"no exit 120 s after Ctrl-C; stdout: {out[-2000:]}\nstderr: {err[:8000]}")
    finally:
        proc.kill()  # never leave a training process behind when the test fails
    assert proc.returncode == 130, (out, err)
    assert "finished rungs are kept" in flat(err) and f"adaptlab compare {config} --resume" in flat(err)
    assert "Traceback" not in err and json.loads(finished.read_text())["status"] == "ok"
