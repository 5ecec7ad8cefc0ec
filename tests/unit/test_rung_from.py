"""A rung's ``from:`` in the config (unknown rung, itself, cycles, later rungs, methods that can't), and the typed
rung result (:class:`RungResult`) that metrics.json and the leaderboard are read back with."""

from __future__ import annotations

import json

import pytest

from adaptlab.config import from_problems, parse_ladder
from adaptlab.errors import ConfigError, UserError
from adaptlab.runs.result import RungResult


def raw(*rungs: dict) -> dict:
    return {"name": "x", "data": {"path": "a.csv"}, "model": "m", "rungs": list(rungs)}


SFT = {"method": "lm_lora", "name": "sft"}


def test_a_valid_from_parses_and_dumps_as_the_yaml_key():
    spec = parse_ladder(raw(SFT, {"method": "lm_full", "from": "sft"}))
    assert spec.rungs[1].from_ == "sft" and spec.rungs[0].from_ is None
    assert spec.rungs[1].model_dump()["from"] == "sft"
    # rungs without `from` dump (and so hash) exactly as before the field existed
    assert spec.model_dump(mode="json")["rungs"][0] == {"method": "lm_lora", "name": "sft", "params": {}}


def test_an_unknown_rung_is_reported_with_a_suggestion():
    with pytest.raises(ConfigError) as err:
        parse_ladder(raw(SFT, {"method": "lm_full", "from": "stf"}))
    assert err.value.problems == ["rungs[1].from: no rung named 'stf'. Did you mean 'sft'? Rungs: ['sft', 'lm_full']"]


def test_a_rung_starting_from_itself_is_reported():
    problems = from_problems([{"method": "lm_full", "name": "ft", "from": "ft"}])
    assert problems == ["rungs[0].from: rung 'ft' starts from itself; name an earlier rung, or drop `from` to start "
                        "from the base model."]


def test_a_cycle_is_reported_once():
    rungs = [{"method": "lm_full", "name": "a", "from": "c"}, {"method": "lm_full", "name": "b", "from": "a"},
             {"method": "lm_full", "name": "c", "from": "b"}]
    assert from_problems(rungs) == ["rungs[0].from: the rungs a -> c -> b -> a start from each other in a cycle; one "
                                    "of them must start from the base model (no `from`)."]


def test_a_rung_that_comes_later_is_reported():
    rungs = [{"method": "lm_full", "name": "ft", "from": "sft"}, SFT]
    assert from_problems(rungs) == ["rungs[0].from: rung 'sft' is rungs[1], after 'ft'; rungs run in order, so move "
                                    "'sft' above 'ft'."]


def test_methods_that_cannot_start_from_that_rung_are_reported():
    rungs = [SFT, {"method": "lm_lora", "name": "again", "from": "sft"}, {"method": "linear_probe"},
             {"method": "lm_full", "from": "linear_probe"}]
    first, second = from_problems(rungs)
    prefix = ("rungs[1].from: method 'lm_lora' can't start from another rung's output (it always starts from the base "
              "model); methods that can: ")
    assert first.startswith(prefix) and first.endswith(".")
    able = first[len(prefix):-1].split(", ")  # every method with a starts_from, sorted (the list grows with rungs)
    assert able == sorted(able) and {"lm_full", "lora", "full", "setfit", "linear_probe"} <= set(able)
    assert "lm_lora" not in able
    assert second == ("rungs[3].from: method 'lm_full' can start from a rung of lm_full, lm_ia3, lm_lora, not from a "
                      "'linear_probe' rung.")


def test_a_misspelt_from_key_suggests_from():
    with pytest.raises(ConfigError) as err:
        parse_ladder(raw(SFT, {"method": "lm_full", "form": "sft"}))
    assert "rungs[1].form: unknown key. Did you mean 'from'? Allowed keys: method, name, params, from, runtime." in \
        err.value.problems


def test_the_default_start_from_refuses(tmp_path):
    from adaptlab.methods import METHODS

    method = METHODS.get("embedding_zero_shot")(METHODS.get("embedding_zero_shot").Params(), None)
    with pytest.raises(UserError, match="embedding_zero_shot can't start from another rung's output"):
        method.start_from(tmp_path, {})


# -- RungResult ----------------------------------------------------------------------------------------------------

FINISHED = {
    "rung": "lora", "method": "lora", "dir": "lora", "primary_metric": "macro_f1", "status": "ok", "value": 0.8,
    "interval": [0.7, 0.9], "metrics": {"macro_f1": 0.8}, "cost": {"train_seconds": 1.5}, "error": None,
    "diagnosis": {"degenerate": False}, "task": "classification", "higher_is_better": True,
    "per_class": {"pos": {"f1": 0.8}}, "confusion_matrix": [[4, 1], [1, 4]], "n": 10,
    "intervals": {"macro_f1": [0.7, 0.9]}, "history": [{"step": 1, "loss": 0.5}], "resumed_from": None,
    "training": {}, "provenance": {"seed": 0},
}


def test_the_task_keys_are_details_and_go_back_to_the_top_level():
    result = RungResult.model_validate(FINISHED)
    assert result.details == {"per_class": {"pos": {"f1": 0.8}}, "confusion_matrix": [[4, 1], [1, 4]], "n": 10}
    dumped = result.model_dump()
    assert dumped == FINISHED and list(dumped) == list(FINISHED)  # same keys, same order
    assert json.loads(result.model_dump_json()) == FINISHED
    assert result.entry() == {k: FINISHED[k] for k in ("rung", "method", "dir", "primary_metric", "status", "value",
                                                        "interval", "metrics", "cost", "error", "diagnosis")}


def test_an_older_failed_record_reads_with_defaults():
    old = {"rung": "full", "method": "full", "dir": "full", "primary_metric": "macro_f1", "status": "failed",
           "value": None, "interval": None, "metrics": {}, "cost": {}, "error": "TrainingError: NaN"}
    result = RungResult.model_validate(old)
    assert not result.ok and result.error == "TrainingError: NaN"
    assert (result.diagnosis, result.history, result.provenance, result.details) == (None, [], {}, {})
    assert result.entry() == {**old, "diagnosis": None}


def test_a_malformed_record_is_a_validation_error():
    with pytest.raises(ValueError, match="value"):
        RungResult.model_validate({**FINISHED, "value": "high"})
    with pytest.raises(ValueError, match="details may not use the field names"):
        RungResult(status="ok", details={"value": 1})


def test_encoder_rungs_start_from_a_domain_mlm_rung_only():
    rungs = [{"method": "domain_mlm"}, {"method": "lora", "from": "domain_mlm"}, {"method": "head_only"},
             {"method": "full", "from": "head_only"}, {"method": "embedding_zero_shot", "from": "domain_mlm"}]
    problems = from_problems(rungs)
    assert problems[0] == ("rungs[3].from: method 'full' can start from a rung of domain_mlm, not from a "
                           "'head_only' rung.")
    assert problems[1].startswith("rungs[4].from: method 'embedding_zero_shot' can't start from another rung's output")
    assert len(problems) == 2
