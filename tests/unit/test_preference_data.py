"""Preference data: every file shape and column naming is read into the same pairs, and every bad input is a
DataError naming the file, the row and the fix."""

from __future__ import annotations

import json

import pytest
import yaml
from tests.preference_data import chat_rows, preference_rows, write_rows

from adaptlab.config import load_ladder
from adaptlab.data.source import load_frames
from adaptlab.errors import DataError, UserError
from adaptlab.tasks import get_task

ROWS = preference_rows(12)


def _config(tmp_path, data, task=None, rungs=None, model="tiny-random-llama", **data_extra):
    cfg = {"name": "pref", "task": {"type": "preference", **(task or {})},
           "data": {"path": str(data), "test_size": 0.25, "validation_size": 0.0, "max_length": 64, **data_extra},
           "model": model, "seed": 0, "output_dir": str(tmp_path / "out"),
           "rungs": rungs or [{"method": "base_preference"}]}
    path = tmp_path / "ladder.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _prepare(tmp_path, data, **kw):
    spec = load_ladder(_config(tmp_path, data, **kw))
    task = get_task("preference")
    return task, task.prepare(spec, load_frames(spec, task.stratify_role))


def _pairs(data):
    split = data.train
    return sorted(zip(split.ids, split.prompt_texts(), split.chosen, split.rejected))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_text_pairs_from_every_file_format(tmp_path, suffix):
    _, data = _prepare(tmp_path, write_rows(tmp_path / f"d{suffix}", ROWS))
    assert data.format == "text" and data.columns == {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}
    assert len(data.train) == 9 and len(data.test) == 3
    row = ROWS[int(data.test.ids[0]) - 1]  # ids are the source rows
    assert (data.test.prompts[0], data.test.chosen[0], data.test.rejected[0]) == (row["prompt"], row["chosen"],
                                                                                  row["rejected"])
    assert data.train.inputs == data.train.prompts and data.train.references == data.train.chosen  # the SFT view


def test_other_column_names_are_detected_or_configured(tmp_path):
    renamed = [{"question": r["prompt"], "response_j": r["chosen"], "response_k": r["rejected"]} for r in ROWS]
    _, detected = _prepare(tmp_path, write_rows(tmp_path / "a.jsonl", renamed))
    assert detected.columns == {"prompt": "question", "chosen": "response_j", "rejected": "response_k"}
    custom = [{"ask": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in ROWS]
    with pytest.raises(DataError, match="cannot tell which columns.*ask, good, bad"):
        _prepare(tmp_path, write_rows(tmp_path / "b.jsonl", custom))
    _, configured = _prepare(tmp_path, write_rows(tmp_path / "b.jsonl", custom),
                             task={"prompt_column": "ask", "chosen_column": "good", "rejected_column": "bad"})
    assert _pairs(configured) == _pairs(detected)
    with pytest.raises(DataError, match="no column 'god' \\(task.chosen_column\\).*Did you mean 'good'"):
        _prepare(tmp_path, write_rows(tmp_path / "b.jsonl", custom),
                 task={"prompt_column": "ask", "chosen_column": "god", "rejected_column": "bad"})


def test_chat_pairs_implicit_explicit_and_json_text_read_the_same(tmp_path):
    _, implicit = _prepare(tmp_path, write_rows(tmp_path / "implicit.jsonl", chat_rows(ROWS)))
    assert implicit.format == "chat" and implicit.columns["prompt"] is None
    explicit = [{"prompt": [{"role": "user", "content": r["prompt"]}],
                 "chosen": [{"role": "assistant", "content": r["chosen"]}],
                 "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in ROWS]
    _, explicit_data = _prepare(tmp_path, write_rows(tmp_path / "explicit.jsonl", explicit))
    as_text = [{k: json.dumps(v) for k, v in r.items()} for r in chat_rows(ROWS)]  # CSV cells hold JSON text
    _, csv_data = _prepare(tmp_path, write_rows(tmp_path / "chat.csv", as_text))
    assert _pairs(implicit) == _pairs(explicit_data) == _pairs(csv_data)
    assert implicit.train.prompts[0] == [{"role": "user", "content": ROWS[int(implicit.train.ids[0]) - 1]["prompt"]}]
    bracketed = [{**r, "prompt": f"[INST] {r['prompt'][0]['content']} [/INST]"} for r in explicit]
    _, text_prompts = _prepare(tmp_path, write_rows(tmp_path / "bracketed.jsonl", bracketed))
    first = int(text_prompts.train.ids[0]) - 1
    assert text_prompts.train.prompts[0] == [{"role": "user", "content": f"[INST] {ROWS[first]['prompt']} [/INST]"}]


def _bad(rows, index, **change):
    rows = [dict(r) for r in rows]
    rows[index].update(change)
    return rows


LINE = r"( \(line \d+\))?"  # CSV and JSONL rows also name their line in the file
TEXT_CASES = {
    "same": (_bad(ROWS, 4, rejected=ROWS[4]["chosen"]), r"the chosen and rejected responses are the same in row 5"),
    "empty response": (_bad(ROWS, 2, chosen="   "), rf"column 'chosen' is empty in 1 row: row 3{LINE}\. Drop"),
    "missing (NaN)": (_bad(ROWS, 6, rejected=None), rf"column 'rejected' is empty in 1 row: row 7{LINE}\. Drop"),
    "missing prompt": (_bad(ROWS, 0, prompt=None), rf"column 'prompt' is empty in 1 row: row 1{LINE}\. Drop"),
}


@pytest.mark.parametrize("case", list(TEXT_CASES))
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_bad_text_pairs_name_the_file_and_row(tmp_path, case, suffix):
    rows, message = TEXT_CASES[case]
    path = write_rows(tmp_path / f"bad{suffix}", rows)
    with pytest.raises(DataError, match=message) as err:
        _prepare(tmp_path, path)
    assert str(path) in str(err.value)


def _chat_bad(index, which, messages):
    rows = chat_rows(ROWS)
    rows[index] = {**rows[index], which: messages}
    return rows


USER = {"role": "user", "content": "hello"}
CHAT_CASES = {
    "no assistant reply": (_chat_bad(3, "chosen", [USER]), r"row 4, column 'chosen'.*does not end with the assistant"),
    "empty reply": (_chat_bad(1, "rejected", [USER, {"role": "assistant", "content": " "}]),
                    r"row 2, column 'rejected'.*reply is empty"),
    "different prompts": (_chat_bad(5, "rejected", [USER, {"role": "assistant", "content": "x"}]),
                          r"row 6: the chosen and rejected conversations differ before their last reply"),
    "bad role": (_chat_bad(2, "chosen", [{"role": "usr", "content": "a"}, {"role": "assistant", "content": "b"}]),
                 r"row 3, column 'chosen': message 1 has role 'usr'. Did you mean 'user'"),
    "no prompt": (_chat_bad(0, "chosen", [{"role": "assistant", "content": "b"}]), r"row 1: the chosen and rejected"),
    "same reply": (_chat_bad(7, "rejected", chat_rows(ROWS)[7]["chosen"]), r"the same in row 8"),
}


@pytest.mark.parametrize("case", list(CHAT_CASES))
def test_bad_chat_pairs_name_the_file_and_row(tmp_path, case):
    rows, message = CHAT_CASES[case]
    path = write_rows(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=message) as err:
        _prepare(tmp_path, path)
    assert str(path) in str(err.value)


def test_pairs_that_are_the_same_once_cut_to_max_length_are_named_before_any_rung_runs(tmp_path):
    from adaptlab.pipeline import prepare

    shared = " ".join(["castle"] * 80)  # far past data.max_length (64): only the last word tells them apart
    rows = [*ROWS[:3], *({**r, "chosen": f"{shared} splendid", "rejected": f"{shared} awful"} for r in ROWS[3:5]),
            *ROWS[5:]]
    path = write_rows(tmp_path / "cut.jsonl", rows)
    with pytest.raises(UserError, match=r"cut\.jsonl: the chosen and rejected responses of row\(s\) 4(, 5)? \(\w+ "
                                        r"split\) are the same within data\.max_length \(64 tokens\)"):
        prepare(load_ladder(_config(tmp_path, path)))
    prepare(load_ladder(_config(tmp_path, path, max_length=256)))  # room for the difference: no problem


def test_a_prompt_longer_than_the_context_window_is_named_before_any_rung_runs(tmp_path):
    from adaptlab.pipeline import prepare

    rows = _bad(ROWS, 8, prompt=" ".join(["castle"] * 700))  # tiny-random-llama's window is 512 tokens
    path = write_rows(tmp_path / "long.jsonl", rows)
    rungs = [{"method": "base_preference"}, {"method": "lm_lora"}]
    with pytest.raises(UserError, match=r"rungs\[0\] \(base_preference\).*long\.jsonl: the prompt of row\(s\) 9 "
                                        r"\((train|test) split\) is longer than the 512-token context window") as err:
        prepare(load_ladder(_config(tmp_path, path, rungs=rungs)))
    assert "lm_lora" not in str(err.value)  # the SFT rungs cut long prompts to data.max_length instead
    prepare(load_ladder(_config(tmp_path, write_rows(tmp_path / "ok.jsonl", ROWS), rungs=rungs)))


def test_groups_never_cross_the_split(tmp_path):
    rows = [{**r, "conversation": f"c{i // 3}"} for i, r in enumerate(preference_rows(30))]
    _, data = _prepare(tmp_path, write_rows(tmp_path / "g.jsonl", rows), group_column="conversation")
    group = {str(i + 1): r["conversation"] for i, r in enumerate(rows)}
    assert not {group[i] for i in data.train.ids} & {group[i] for i in data.test.ids}
    assert len(data.train) + len(data.test) == 30


def _records(correct: list[bool], margin: float = 1.0) -> list[dict]:
    return [{"id": str(i), "score_chosen": margin if c else 0.0, "score_rejected": 0.0 if c else margin,
             "correct": c} for i, c in enumerate(correct)]


def test_metrics_baseline_paired_test_and_diagnosis(tmp_path):
    task, data = _prepare(tmp_path, write_rows(tmp_path / "d.jsonl", preference_rows(40)))
    records = _records([True] * 6 + [False] * 2, margin=2.0)
    result = task.evaluate(records, {"seed": 0})
    assert result["metrics"] == {"preference_accuracy": 0.75, "mean_margin": 1.0} and result["n"] == 8
    low, high = result["interval"]["preference_accuracy"]
    assert low < 0.75 < high
    assert task.score(records, {}) == result["metrics"]
    test = data.test
    longer = sum(len(c) > len(r) for c, r in zip(test.chosen, test.rejected)) / len(test)
    assert task.baselines(data, 0)["longer_response_wins"]["value"] == pytest.approx(longer)
    other = _records([False] * 6 + [True] * 2)
    test_result = task.paired_test(records, other, "preference_accuracy")
    assert test_result["method"].startswith("McNemar") and (test_result["b"], test_result["c"]) == (6, 2)
    assert task.paired_test(records, other, "mean_margin")["p_value"] is None
    ties = [{"id": "1", "score_chosen": 0.5, "score_rejected": 0.5, "correct": False}] * 3
    assert task.diagnose(ties, {}, data)["degenerate"] and not task.diagnose(records, {}, data)["degenerate"]


def test_chitchat_preference_pairs_the_true_reply_with_another_conversations():
    from adaptlab.data.builtins import chitchat, load_builtin

    pairs, turns = load_builtin("chitchat_preference"), chitchat()
    assert len(pairs) == len(turns) and list(pairs["_row"]) == list(turns["_row"])
    assert (pairs["prompt"] == turns["context"]).all() and (pairs["chosen"] == turns["reply"]).all()
    assert (pairs["chosen"] != pairs["rejected"]).all()
    own = turns.groupby("conversation_id")["reply"].agg(set)
    from_own = [r in own[c] for c, r in zip(pairs["conversation_id"][:2000], pairs["rejected"][:2000])]
    assert sum(from_own) < 20  # only replies that happen to recur (e.g. "lol") are also in the pair's conversation
    assert pairs["rejected"].equals(load_builtin("chitchat_preference")["rejected"])  # seeded


def test_rungs_that_cannot_use_the_model_say_so_before_any_rung_runs(tmp_path):
    from adaptlab.pipeline import prepare

    path = write_rows(tmp_path / "d.jsonl", ROWS)
    rungs = [{"method": "base_preference"}, {"method": "dpo"}, {"method": "orpo"}, {"method": "reward_model"}]
    with pytest.raises(UserError) as err:
        prepare(load_ladder(_config(tmp_path, path, rungs=rungs, model="tiny-random-t5")))
    problems = str(err.value)
    assert "3 rung(s) cannot run" in problems and "rungs[0]" not in problems  # scoring a seq2seq model works
    named = ((1, "dpo"), (2, "orpo"), (3, "reward_model"))
    assert all(f"rungs[{i}] ({name}): {name}" in problems for i, name in named)
