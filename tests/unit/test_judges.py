"""Judges of generative rungs (task.judges): reward scoring, the LLM as pairwise judge, MMLU through lm-eval.

Stubs pin the arithmetic (win rates, ties, order agreement, a perfect and a hopeless MMLU "model"); tiny random
models check that the real plumbing runs offline; bad settings are errors naming the field and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tests.generative_data import write_generation_csv, write_ladder

from adaptlab.config import load_ladder
from adaptlab.errors import UserError
from adaptlab.judging import JudgeSite, llm_judge, mmlu, reward
from adaptlab.judging.report import judges_sections
from adaptlab.judging.settings import JudgesSpec, MMLUJudge, RewardJudge
from adaptlab.pipeline import compare, load_run, prepare
from adaptlab.reporting.sections import RunResults
from adaptlab.runtime import kernels_for, kernels_kept

SUBJECTS = ["anatomy", "astronomy"]


# ------------------------------------------------------------------------------------------------------ reward
def length_scorer(prompts, responses):
    """A stub reward: the response's length."""
    return np.array([len(x) for x in responses], dtype=float)


def test_reward_win_rate_counts_ties_half():
    outputs, against = ["long answer", "same", "x", "abcdef"], ["short", "four", "longer", "ab"]
    out = reward.judge(length_scorer, ["p"] * 4, outputs, against, seed=0)
    # wins on 0 and 3, a tie on 1 (both 4 characters), a loss on 2
    assert out["metrics"]["reward_win_rate"] == pytest.approx(2.5 / 4)
    assert out["metrics"]["reward_mean"] == pytest.approx(np.mean([11, 4, 1, 6]))
    assert out["detail"]["against_reward_mean"] == pytest.approx(np.mean([5, 4, 6, 2]))
    lo, hi = out["interval"]["reward_win_rate"]
    assert 0 <= lo <= out["metrics"]["reward_win_rate"] <= hi <= 1 and lo < hi


def test_reward_model_run_scores_responses(tmp_path):
    """A reward-model run (no labels): its score_responses rewards each prompt + response."""
    (tmp_path / "run.json").write_text(json.dumps({"context": {"label_names": []},
                                                   "rung": {"method": "reward_model"}}))
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "ok"}))

    kernels = []

    class StubRewardModel:
        def score_responses(self, prompts, responses):
            kernels.append(torch.backends.mkldnn.enabled)
            return np.array([r.count("good") for r in responses], float)

    def load(_):  # as loading a bf16 reward model on a CPU does, it sets the kernels it predicts with
        kernels_for("cpu", half=True)
        return None, StubRewardModel(), {}

    with kernels_kept():
        torch.backends.mkldnn.enabled = False  # the fp32 rung on a CPU that loads and calls it
        scorer = reward.build_scorer(RewardJudge(run=str(tmp_path)), load)
        assert not torch.backends.mkldnn.enabled  # loading it left the rung's kernels as they were
        out = reward.judge(scorer, ["q"] * 3, ["good good", "good", "bad"], ["good", "good", "good"], seed=0)
        assert kernels and all(kernels) and not torch.backends.mkldnn.enabled  # its own, then the rung's again
    assert out["metrics"]["reward_win_rate"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert out["metrics"]["reward_mean"] == pytest.approx(1.0)


def test_reward_from_classification_run(sentiment_run, tmp_path):
    scorer = reward.build_scorer(RewardJudge(run=str(sentiment_run), target_label="pos"), load_run)
    positive = ["the great wonderful film story", "the superb charming plot cast"]
    negative = ["the awful boring film story", "the dull terrible plot cast"]
    better = reward.judge(scorer, ["p", "p"], positive, negative, seed=0)
    assert better["metrics"]["reward_win_rate"] == 1.0
    assert 0.5 < better["metrics"]["reward_mean"] <= 1.0  # the probability of "pos"
    assert reward.judge(scorer, ["p", "p"], negative, positive, seed=0)["metrics"]["reward_win_rate"] == 0.0
    assert reward.judge(scorer, ["p", "p"], positive, positive, seed=0)["metrics"]["reward_win_rate"] == 0.5


def test_reward_from_an_exported_classifier_bundle(sentiment_run, tmp_path):
    """A classifier bundle (adaptlab export) rewards as the run it came from; a bundle's labels are checked too."""
    from adaptlab.export.exporter import export_run
    from adaptlab.pipeline import load_scorer

    bundle = tmp_path / "bundle"
    export_run(sentiment_run, bundle)
    texts = ["the great wonderful film story", "the awful boring film story", "the dull terrible plot cast"]
    from_run = reward.build_scorer(RewardJudge(run=str(sentiment_run), target_label="pos"), load_scorer)
    from_bundle = reward.build_scorer(RewardJudge(run=str(bundle), target_label="pos"), load_scorer)
    assert np.allclose(from_bundle(["p"] * 3, texts), from_run(["p"] * 3, texts), atol=1e-5)
    problems = reward.check(RewardJudge(run=str(bundle), target_label="positive"))
    assert len(problems) == 1 and "'positive' is not a label" in problems[0] and "neg, pos" in problems[0]
    before = reward.run_digest(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "exported_at": "again"}))  # exported again
    assert reward.run_digest(bundle) != before


def test_reward_target_label_not_in_run(sentiment_run, tmp_path):
    problems = reward.check(RewardJudge(run=str(sentiment_run), target_label="positive"))
    assert len(problems) == 1 and "'positive' is not a label" in problems[0] and "neg, pos" in problems[0]
    missing = reward.check(RewardJudge(run=str(sentiment_run)))
    assert "set target_label" in missing[0] and "neg, pos" in missing[0]
    assert "neither a finished run folder" in reward.check(RewardJudge(run=str(tmp_path / "nope")))[0]


def test_reward_run_must_give_a_reward(tmp_path):
    """A run with no labels that is not a reward model (e.g. an SFT rung) scores nothing: said before any rung runs."""
    (tmp_path / "run.json").write_text(json.dumps({"context": {"label_names": []}, "rung": {"method": "lm_lora"}}))
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "ok"}))
    problems = reward.check(RewardJudge(run=str(tmp_path)), "rungs[rl].params.reward")
    assert len(problems) == 1 and problems[0].startswith("rungs[rl].params.reward:") and "'lm_lora'" in problems[0]
    tagger = tmp_path / "tagger"  # labels, but of tokens: no reward either
    tagger.mkdir()
    (tagger / "run.json").write_text(json.dumps({"context": {"task": "token_classification", "label_names": ["O"]},
                                                 "rung": {"method": "lora"}}))
    (tagger / "metrics.json").write_text(json.dumps({"status": "ok"}))
    refused = reward.check(RewardJudge(run=str(tagger), target_label="O"))
    assert len(refused) == 1 and "token_classification ladder, which gives no reward" in refused[0]
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "failed"}))  # a reward run that failed
    failed = reward.check(RewardJudge(run=str(tmp_path)))
    assert len(failed) == 1 and "did not finish (status: failed)" in failed[0]


# ------------------------------------------------------------------------------------------------- LLM judge
ANSWER = {"A": [0.0, -5.0, -9.0], "B": [-5.0, 0.0, -9.0], "tie": [-5.0, -9.0, 0.0]}


def content_judge(items):
    """A stub judge that prefers the longer response wherever it stands (ties on equal length)."""
    return np.array([ANSWER["A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"] for _, a, b in items])


def position_judge(items):
    """A stub judge that always answers A."""
    return np.array([ANSWER["A"] for _ in items])


def test_judge_both_orders_win_rate_and_agreement():
    outputs, against = ["a long reply", "hi", "four", "same"], ["short", "a long reply", "five", "same"]
    out = llm_judge.judge(content_judge, ["p"] * 4, outputs, against, seed=0)
    # a win, a loss, a tie (equal length), identical outputs (a tie without asking)
    assert out["metrics"]["judge_win_rate"] == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    assert out["metrics"]["judge_order_agreement"] == 1.0
    assert out["detail"]["judged"] == 3 and out["detail"]["identical"] == 1
    lo, hi = out["interval"]["judge_win_rate"]
    assert 0 <= lo <= out["metrics"]["judge_win_rate"] <= hi <= 1


def test_position_biased_judge_agrees_never_and_wins_nothing():
    out = llm_judge.judge(position_judge, ["p"] * 3, ["x", "yy", "zzz"], ["a", "b", "c"], seed=0)
    assert out["metrics"]["judge_order_agreement"] == 0.0
    assert out["metrics"]["judge_win_rate"] == 0.5  # first-position wins cancel second-position losses
    assert out["detail"]["verdicts"]["A_first"] == 3 and out["detail"]["verdicts"]["A_second"] == 3


def test_tiny_llama_judge_scores_three_answers():
    spec = JudgesSpec(llm_judge="tiny-random-llama").llm_judge
    judge = llm_judge.LMJudge(spec, "cpu")
    scores = judge.logprobs([("repeat: king", "king", "queen"), ("hi", "hello there", "x" * 2000)])
    assert scores.shape == (2, 3) and np.isfinite(scores).all() and (scores < 0).all()


@pytest.mark.parametrize(("dtype", "inside", "outside"), [("bfloat16", False, True), ("float32", True, False)])
def test_a_judge_runs_with_its_own_kernels_inside_the_rung_it_judges(dtype, inside, outside):
    """oneDNN on a CPU is on for a bf16 judge and off for a fp32 one, whatever the judged rung runs with."""
    judge = llm_judge.LMJudge(JudgesSpec(llm_judge={"model": "tiny-random-llama", "dtype": dtype}).llm_judge, "cpu")
    seen = []
    judge.model.register_forward_pre_hook(lambda *_: seen.append(torch.backends.mkldnn.enabled))
    with kernels_kept():
        torch.backends.mkldnn.enabled = inside
        judge.logprobs([("repeat: king", "king", "queen")])
        assert seen and all(s is outside for s in seen) and torch.backends.mkldnn.enabled is inside


# ------------------------------------------------------------------------------------------------------- MMLU
def test_mmlu_draw_drops_broken_rows_and_balances_subjects():
    # the file holds 14,044 rows; two are broken (correct_answer is the literal "answer")
    assert len(mmlu.questions()) == 14_042 and len(mmlu.subjects()) == 57
    assert {r["correct_answer"] for r in mmlu.questions()} == {"A", "B", "C", "D"}
    rows = mmlu.draw(MMLUJudge(subjects=SUBJECTS, sample=10, seed=3))
    assert sorted(r["topic"] for r in rows) == ["anatomy"] * 5 + ["astronomy"] * 5
    assert rows == mmlu.draw(MMLUJudge(subjects=SUBJECTS, sample=10, seed=3))  # seeded
    assert rows != mmlu.draw(MMLUJudge(subjects=SUBJECTS, sample=10, seed=4))
    assert all(r["answer_a"] is not None and "ABCD"[r["label"]] == r["correct_answer"] for r in rows)


class AnswerKey:
    """An lm-eval LM that puts all its probability on one letter: the right one, or a wrong one."""

    def __new__(cls, right: bool):
        from lm_eval.api.model import LM

        class Fake(LM):
            def loglikelihood(self, requests):
                out = []
                for req in requests:
                    letter = req.arguments[1].strip()
                    truth = req.doc["correct_answer"]
                    best = letter == truth if right else letter == ("A" if truth != "A" else "B")
                    out.append((0.0 if best else -10.0, best))
                return out

            def loglikelihood_rolling(self, requests):
                raise NotImplementedError

            def generate_until(self, requests):
                raise NotImplementedError

        return Fake()


@pytest.mark.parametrize("right, expected", [(True, 1.0), (False, 0.0)])
def test_mmlu_plumbing_scores_a_perfect_and_a_hopeless_model(right, expected):
    out = mmlu.evaluate_lm(AnswerKey(right), MMLUJudge(subjects=SUBJECTS, sample=10), seed=0)
    assert out["metrics"]["mmlu_accuracy"] == expected and out["detail"]["n"] == 10
    assert out["interval"]["mmlu_accuracy"] == [expected, expected]
    assert out["detail"]["subjects"] == {"anatomy": expected, "astronomy": expected}


def test_mmlu_on_tiny_llama_offline():
    from adaptlab.generation import lm
    from adaptlab.models import resolve_model

    resolved = resolve_model("tiny-random-llama")
    model, tokenizer = lm.load_model(resolved, "causal", "float32"), lm.load_tokenizer(resolved.location)
    out = mmlu.evaluate_model(model, tokenizer, "causal", MMLUJudge(subjects=SUBJECTS, sample=10), 0, "cpu")
    acc, (lo, hi) = out["metrics"]["mmlu_accuracy"], out["interval"]["mmlu_accuracy"]
    assert 0 <= lo <= acc <= hi <= 1 and out["detail"]["n"] == 10


def test_mmlu_task_yaml(tmp_path):
    import yaml

    config = yaml.safe_load(mmlu.write_task(mmlu.draw(MMLUJudge(subjects=SUBJECTS, sample=4)), tmp_path).read_text())
    assert config["dataset_path"] == "json" and config["output_type"] == "multiple_choice"
    data = config["dataset_kwargs"]["data_files"]["test"]
    assert len(open(data, encoding="utf-8").readlines()) == 4


def test_unknown_subject_lists_valid_ones():
    problems = mmlu.check(MMLUJudge(subjects=["anatomy", "anatomyy", "cooking"]))
    assert len(problems) == 2 and "'anatomyy'" in problems[0] and "Did you mean 'anatomy'" in problems[0]
    assert "high school biology" in problems[1]


# ------------------------------------------------------------------------------------------------ the ladder
def _gen_ladder(tmp_path, judges, rungs=None, primary=None):
    task = {"type": "generation", "judges": judges, **({"primary_metric": primary} if primary else {})}
    return write_ladder(tmp_path, write_generation_csv(tmp_path / "g.csv", 16), "tiny-random-llama",
                        rungs or [{"method": "zero_shot_prompt"}, {"method": "lm_lora", "params": {"max_steps": 1}}],
                        task=task)


@pytest.mark.parametrize("judges, primary, expected", [
    ({"mmlu": {"subjects": ["anatomyy"]}}, None, "Subjects: abstract algebra, anatomy"),
    ({"llm_judge": "no-such-judge-model"}, None, "task.judges.llm_judge.model: 'no-such-judge-model' can't be"),
    ({"mmlu": {"subjects": ["anatomy"]}}, "judge_win_rate", "judge_win_rate"),
    ({"mmlu": {}, "against": "zero_shot", "llm_judge": "tiny-random-llama"}, None, "no rung named 'zero_shot'"),
    ({"against": "lm_lora", "llm_judge": "tiny-random-llama"}, None, "'lm_lora' must run first"),
    ({"reward": "no/such/run"}, None, "neither a finished run folder"),
    ({"against": "best", "llm_judge": "tiny-random-llama"}, "judge_win_rate", "can't then be 'judge_win_rate'"),
])
def test_bad_judges_settings_are_user_errors(tmp_path, judges, primary, expected):
    with pytest.raises(UserError, match=expected.replace("(", r"\(")):
        prepare(load_ladder(_gen_ladder(tmp_path, judges, primary=primary)))


def test_bad_judge_exits_2(tmp_path, monkeypatch, capsys):
    from tests.e2e.test_cli import run_cli

    code, _, err = run_cli(monkeypatch, capsys, "compare", _gen_ladder(tmp_path, {"mmlu": {"subjects": ["x"]}}))
    assert code == 2 and "is not an MMLU subject" in err and "Traceback" not in err


def test_ladder_records_judges_and_ranks_by_one(tmp_path, sentiment_run):
    """All three judges on a tiny ladder: metrics.json, the leaderboard and the report carry them with intervals."""
    judges = {"llm_judge": "tiny-random-llama", "mmlu": {"subjects": SUBJECTS, "sample": 8},
              "reward": {"run": str(sentiment_run), "target_label": "pos"}}
    board = compare(prepare(load_ladder(_gen_ladder(tmp_path, judges, primary="mmlu_accuracy"))))
    assert board["primary_metric"] == "mmlu_accuracy" and board["higher_is_better"] is True
    for entry in board["rungs"]:
        assert entry["status"] == "ok", entry["error"]
        assert entry["value"] == entry["metrics"]["mmlu_accuracy"] and 0 <= entry["value"] <= 1
        saved = json.loads((tmp_path / "out" / entry["rung"] / "metrics.json").read_text())
        assert {"judge_win_rate", "mmlu_accuracy", "reward_mean", "reward_win_rate", "rougeL",
                "forgetting"} <= set(saved["metrics"])
        assert 0 <= saved["metrics"]["reward_mean"] <= 1  # the probability of "pos"
        assert len(saved["intervals"]["mmlu_accuracy"]) == 2 and saved["judges"]["mmlu"]["n"] == 8
        assert saved["judges"]["llm_judge"]["against"] == "zero_shot_prompt"
    zero = json.loads((tmp_path / "out" / "zero_shot_prompt" / "metrics.json").read_text())
    assert zero["metrics"]["judge_win_rate"] == 0.5 and zero["judges"]["llm_judge"]["judged"] == 0  # vs itself
    assert zero["metrics"]["reward_win_rate"] == 0.5
    from adaptlab.reporting.report import write_report

    markdown = write_report([tmp_path / "out"], tmp_path / "report", quiet=True)[0].read_text(encoding="utf-8")
    judges_part = markdown.split("Judges", 1)[1]
    assert "mmlu_accuracy" in judges_part and "reward_win_rate" in judges_part and "rougeL" in judges_part
    assert "135M" in judges_part


def test_preference_ladder_benchmarks_its_generative_rungs(tmp_path):
    """On the preference task MMLU runs on the generative rungs; a reward model has no language model to ask."""
    from tests.preference_data import preference_rows, write_rows

    data = write_rows(tmp_path / "pairs.jsonl", preference_rows(24))
    task = {"type": "preference", "forgetting_tokens": 64, "judges": {"mmlu": {"subjects": SUBJECTS, "sample": 4}}}

    def config(task: dict, rungs: list[dict]) -> Path:
        cfg = {"name": "pref", "task": task, "model": "tiny-random-llama", "seed": 0, "rungs": rungs,
               "data": {"path": str(data), "test_size": 0.25, "validation_size": 0.0, "max_length": 64},
               "output_dir": str(tmp_path / "out")}
        (tmp_path / "pref.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
        return tmp_path / "pref.yaml"

    board = compare(prepare(load_ladder(config(task, [
        {"method": "base_preference"}, {"method": "reward_model", "params": {"max_steps": 1, "batch_size": 4}}]))))
    entries = {e["rung"]: e for e in board["rungs"]}
    assert all(e["status"] == "ok" for e in entries.values()), [e["error"] for e in entries.values()]
    assert 0 <= entries["base_preference"]["metrics"]["mmlu_accuracy"] <= 1
    assert "mmlu_accuracy" not in entries["reward_model"]["metrics"]
    saved = json.loads((tmp_path / "out" / "reward_model" / "metrics.json").read_text())
    assert "no plain language model" in saved["judges"]["mmlu"]["note"]
    bad = {**task, "judges": {"llm_judge": "tiny-random-llama"}}
    with pytest.raises(UserError, match="write none"):
        prepare(load_ladder(config(bad, [{"method": "base_preference"}])))


# ---------------------------------------------------------------------------------------------------- report
def test_report_section_shows_intervals_and_the_weak_judge_note():
    metrics = {"metrics": {"rougeL": 0.25, "judge_win_rate": 0.6, "mmlu_accuracy": 0.3,
                           "forgetting": {"adapted_ppl": 12.5}},
               "intervals": {"judge_win_rate": [0.45, 0.75], "mmlu_accuracy": [0.2, 0.4]},
               "judges": {"llm_judge": {"against": "zero_shot_prompt"}, "mmlu": {"n": 40}}}
    [section] = judges_sections([RunResults("lm_lora", metrics, None), RunResults("zero", {"metrics": {}}, None)])
    assert "0.600 [0.450, 0.750]" in section.markdown and "0.300 [0.200, 0.400]" in section.markdown
    assert "12.500" in section.markdown and "zero_shot_prompt" in section.markdown
    assert "135M" in section.markdown and "40 questions" in section.markdown
    assert judges_sections([RunResults("x", {"metrics": {"rougeL": 0.2}}, None)]) == []


def test_judge_site_reads_the_against_rungs_outputs(tmp_path):
    from adaptlab.judging import against_outputs

    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "predictions.jsonl").write_text('{"id": "1", "prediction": "a"}\n'
                                                         '{"id": "2", "prediction": "b"}\n')
    site = JudgeSite(tmp_path, "lora", 0, "cpu", load_run)
    assert against_outputs("zero", site, [{"id": "2"}, {"id": "1"}]) == ["b", "a"]
    with pytest.raises(UserError, match="lacks test ids"):
        against_outputs("zero", site, [{"id": "3"}])
    with pytest.raises(UserError, match="run it first"):
        against_outputs("missing", site, [{"id": "1"}])


def test_a_judge_primary_with_a_validation_split_keeps_checkpoints_by_rouge(tmp_path):
    """Validation can't be judged at each evaluation: checkpoints are chosen by ROUGE-L (the task's selection metric)
    while the ladder still ranks by the judge metric; the trained rung must not fail."""
    import yaml

    path = _gen_ladder(tmp_path, {"mmlu": {"subjects": SUBJECTS, "sample": 4}}, primary="mmlu_accuracy",
                       rungs=[{"method": "zero_shot_prompt"},
                              {"method": "lm_lora", "params": {"max_steps": 2, "evals_per_epoch": 1}}])
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["validation_size"] = 0.2
    path.write_text(yaml.safe_dump(cfg))
    ladder = prepare(load_ladder(path))
    assert ladder.task.selection_metric == "rougeL" and ladder.task.primary_metric == "mmlu_accuracy"
    board = compare(ladder)
    assert [e["status"] for e in board["rungs"]] == ["ok", "ok"], [e["error"] for e in board["rungs"]]
    saved = json.loads((tmp_path / "out" / "lm_lora" / "metrics.json").read_text())
    assert saved["training"]["selection"]["metric"] == "rougeL"


def test_judged_rungs_rehash_when_what_they_are_judged_with_changes(tmp_path):
    """--resume keeps a judged rung only while the `against` rung's settings and the reward run's records are the
    ones it was judged with; rungs of a ladder without judges hash as before."""
    from adaptlab.pipeline import rung_hash

    run = tmp_path / "reward"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"context": {"label_names": []}, "rung": {"method": "reward_model"}}))
    (run / "metrics.json").write_text(json.dumps({"status": "ok", "finished": 1}))

    def hashes(zero_params: dict, judges: dict | None = None, judged: bool = True) -> dict:
        judges = judges or ({"reward": str(run), "against": "zero"} if judged else None)
        rungs = [{"name": "zero", "method": "zero_shot_prompt", "params": zero_params},
                 {"name": "lora", "method": "lm_lora", "params": {"max_steps": 1}}]
        task = {"type": "generation", **({"judges": judges} if judges else {})}
        config = write_ladder(tmp_path, write_generation_csv(tmp_path / "g.csv", 16), "tiny-random-llama", rungs,
                              task=task)
        ladder = prepare(load_ladder(config))
        return {r.run_name: rung_hash(ladder, r) for r in ladder.spec.rungs}

    first = hashes({})
    assert hashes({}) == first  # stable
    other_against = hashes({"length_normalize": True})
    assert other_against["lora"] != first["lora"]  # judged against other outputs
    (run / "metrics.json").write_text(json.dumps({"status": "ok", "finished": 2}))  # the reward run re-ran
    rerun = hashes({})
    assert rerun["lora"] != first["lora"] and rerun["zero"] != first["zero"]
    plain = hashes({"length_normalize": True}, judged=False)
    assert plain["lora"] == hashes({}, judged=False)["lora"]  # without judges other rungs don't matter


def test_against_best_judges_every_rung_once_the_ladder_has_run(tmp_path, sentiment_run):
    """`against: best`: the mean reward is measured as each rung runs; the win rates against the rung ranked best
    (by ROUGE-L here) join every rung's metrics.json and the leaderboard after the last rung."""
    judges = {"against": "best", "reward": {"run": str(sentiment_run), "target_label": "pos"}}
    rungs = [{"method": "zero_shot_prompt"}, {"method": "lm_lora", "params": {"max_steps": 2, "learning_rate": 1e-2}}]
    board = compare(prepare(load_ladder(_gen_ladder(tmp_path, judges, rungs=rungs))))
    best = board["rungs"][0]["rung"]
    assert all(e["status"] == "ok" for e in board["rungs"])
    saved = {e["rung"]: json.loads((tmp_path / "out" / e["rung"] / "metrics.json").read_text())
             for e in board["rungs"]}
    for entry in board["rungs"]:
        mine = saved[entry["rung"]]
        assert mine["judges"]["reward"]["against"] == f"best ({best})"
        assert entry["metrics"]["reward_win_rate"] == mine["metrics"]["reward_win_rate"]
        assert len(mine["intervals"]["reward_win_rate"]) == 2 and "reward_mean" in mine["metrics"]
        theirs = saved[best]["metrics"]["reward_mean"]
        assert mine["judges"]["reward"]["against_reward_mean"] == pytest.approx(theirs)
    assert saved[best]["metrics"]["reward_win_rate"] == 0.5  # against itself
    on_disk = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert all("reward_win_rate" in e["metrics"] for e in on_disk["rungs"])
