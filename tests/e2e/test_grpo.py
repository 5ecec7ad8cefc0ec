"""The grpo rung: reinforcement learning from a finished run's reward, with the KL to the base reported.

- It learns: on a tiny Llama built here with weights large enough for its output to move (the shared tiny models'
  0.02-scale weights barely change their near-uniform output under LoRA), a reward that favours even token ids
  (a separable reward: half the vocabulary) rises well above its starting level, and the KL estimate is positive.
- In a ladder: rewarded by a real classification run (linear probe on the tiny BERT), next to a base rung judged by
  the same run, it finishes, records reward and KL, ships an adapter that loads to the same outputs.
- Bad settings stop the ladder before any rung runs, naming params.reward and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.generative_data import one_torch_thread, write_generation_csv, write_ladder  # noqa: F401  (autouse)

from adaptlab.config import GenerationSpec, load_ladder
from adaptlab.errors import UserError
from adaptlab.judging.report import judges_sections
from adaptlab.pipeline import build_method, compare, load_run, prepare
from adaptlab.reporting.sections import RunResults
from adaptlab.training import FINISHED_RUNS

SAMPLED = GenerationSpec(max_new_tokens=8, do_sample=True, temperature=1.0, seed=3, batch_size=16)


@pytest.fixture(scope="module")
def movable_llama(tmp_path_factory, session_home) -> str:
    """A tiny random Llama (the shared one's shape and tokenizer) initialised at 0.3 scale, seeded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from adaptlab.models import resolve_model

    source = resolve_model("tiny-random-llama", cache_dir=session_home / "models").location
    folder = tmp_path_factory.mktemp("llama03")
    config = AutoConfig.from_pretrained(source)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder)


class EvenTokens:
    """A stub reward run: the share of a completion's tokens with an even id."""

    def __init__(self, model: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)

    def share(self, text: str) -> float:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return float(sum(i % 2 == 0 for i in ids) / max(1, len(ids)))

    def score_responses(self, prompts, responses):
        return np.array([self.share(r) for r in responses])


def reward_folder(tmp_path: Path) -> Path:
    """A run folder that reads as a finished reward_model rung (its weights come from the stub loader)."""
    run = tmp_path / "reward"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"context": {"label_names": []}, "rung": {"method": "reward_model"}}))
    (run / "metrics.json").write_text(json.dumps({"status": "ok"}))
    return run


def test_grpo_raises_a_separable_reward(movable_llama, tmp_path):
    data = write_generation_csv(tmp_path / "d.csv", 48)
    params = {"reward": str(reward_folder(tmp_path)), "max_steps": 60, "learning_rate": 3e-2, "batch_size": 4,
              "num_generations": 4, "max_new_tokens": 8, "logging_steps": 5, "beta": 0.0, "kl_prompts": 12}
    ladder = prepare(load_ladder(write_ladder(tmp_path, data, movable_llama, [{"name": "rl", "method": "grpo",
                                                                                "params": params}])))
    method = build_method(ladder.spec.rung("rl"), ladder.ctx)
    method.setup()
    stub = EvenTokens(movable_llama)
    prompts = ladder.data.test.inputs * 4

    def mean_reward() -> float:
        return float(np.mean([stub.share(t) for t in method.generate(prompts, settings=SAMPLED)]))

    before = mean_reward()
    frozen = method.frozen_state()
    token = FINISHED_RUNS.set(lambda _: (None, stub, {}))
    try:
        fit = method.fit(ladder.data, tmp_path / "work")
    finally:
        FINISHED_RUNS.reset(token)
    after = mean_reward()
    assert after > before + 0.15, (before, after)
    assert all(np.array_equal(v, method.frozen_state()[k]) for k, v in frozen.items())  # the base stays frozen
    logged = [h["reward"] for h in fit["history"] if "reward" in h]
    assert len(logged) >= 10 and np.mean(logged[-3:]) > np.mean(logged[:3]) + 0.1, logged
    method.generate(ladder.data.test.inputs)  # the test prompts, as a ladder predicts them
    kl = method.extra_metrics()["kl_to_base"]
    assert kl["completions"] == len(ladder.data.test.inputs) and kl["interval"][0] > 0 and kl["per_token"] > 0


def rl_ladder(tmp_path: Path, reward: dict | None, judge: dict | None = None) -> Path:
    """base and grpo rungs rewarded by ``reward``; the judge (default: the same run) scores both."""
    data = write_generation_csv(tmp_path / "d.csv", 40)
    rungs = [{"name": "base", "method": "zero_shot_prompt"},
             {"name": "rl", "method": "grpo", "params": {"reward": reward, "max_steps": 4, "batch_size": 2,
                                                         "num_generations": 2, "max_new_tokens": 4,
                                                         "logging_steps": 1, "kl_prompts": 4}}]
    task = {"type": "generation", "primary_metric": "reward_mean",
            "judges": {"against": "base", "reward": judge or reward}}
    return write_ladder(tmp_path, data, "tiny-random-llama", rungs, task=task)


def test_grpo_in_a_ladder_rewarded_by_a_classifier(sentiment_run, tmp_path):
    reward = {"run": str(sentiment_run), "target_label": "pos"}
    board = compare(prepare(load_ladder(rl_ladder(tmp_path, reward))))
    rungs = {r["rung"]: r for r in board["rungs"]}
    assert all(r["status"] == "ok" for r in rungs.values()), [r["error"] for r in rungs.values()]
    metrics = json.loads((tmp_path / "out" / "rl" / "metrics.json").read_text())
    base = json.loads((tmp_path / "out" / "base" / "metrics.json").read_text())
    assert metrics["judges"]["reward"]["against_reward_mean"] == pytest.approx(base["metrics"]["reward_mean"])
    assert 0 <= metrics["metrics"]["reward_mean"] <= 1 and rungs["rl"]["value"] == metrics["metrics"]["reward_mean"]
    assert metrics["metrics"]["kl_to_base"]["completions"] == 4
    assert [h["step"] for h in metrics["history"] if "reward" in h] == [1, 2, 3, 4]
    [section] = judges_sections([RunResults("base", base, None), RunResults("rl", metrics, None)])
    assert "KL to base" in section.markdown and "reward_mean" in section.markdown
    _, method, _ = load_run(tmp_path / "out" / "rl")  # the shipped adapter answers as the rung did
    shipped = [json.loads(x) for x in (tmp_path / "out" / "rl" / "predictions.jsonl").read_text().splitlines()]
    inputs = [r["input"] for r in shipped]
    assert method.generate(inputs) == [r["prediction"] for r in shipped]


@pytest.mark.parametrize("reward, message", [
    ({"run": "SENTIMENT"}, "set target_label"),
    ({"run": "SENTIMENT", "target_label": "positive"}, "'positive' is not a label"),
    ({"run": "MISSING"}, "neither a finished run folder"),
    (None, "grpo needs params.reward"),
])
def test_bad_reward_settings_stop_the_ladder_first(sentiment_run, tmp_path, reward, message):
    path = {"SENTIMENT": str(sentiment_run), "MISSING": str(tmp_path / "nope")}
    given = {**reward, "run": path[reward["run"]]} if reward else None
    config = rl_ladder(tmp_path, given, judge={"run": str(sentiment_run), "target_label": "pos"})
    with pytest.raises(UserError) as err:
        compare(prepare(load_ladder(config)))
    assert message in str(err.value) and "params.reward" in str(err.value)
    assert not (tmp_path / "out" / "base" / "metrics.json").exists()  # found before any rung ran


def test_the_reward_scores_what_the_task_would_show(movable_llama):
    """Completions are rewarded as predictions show them: special tokens dropped, cut at the stop strings, stripped."""
    from transformers import AutoTokenizer

    from adaptlab.methods.grpo import reward_function

    tokenizer = AutoTokenizer.from_pretrained(movable_llama)
    seen = []

    def scorer(prompts, responses):
        seen.append((list(prompts), list(responses)))
        return np.arange(len(responses), dtype=float)

    ids = tokenizer(" king\nqueen", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    rewards = reward_function(scorer, ["p0", "p1"], tokenizer, ["\n"])(
        prompts=["x", "y"], completions=["raw", "raw"], row=[1, 0], completion_ids=[ids, ids[:1]])
    assert rewards == [0.0, 1.0]
    assert seen == [(["p1", "p0"], ["king", tokenizer.decode(ids[:1]).strip()])]


def test_a_seq2seq_model_is_refused_before_any_rung_runs(sentiment_run, tmp_path):
    data = write_generation_csv(tmp_path / "d.csv", 40)
    reward = {"run": str(sentiment_run), "target_label": "pos"}
    rungs = [{"name": "rl", "method": "grpo", "params": {"reward": reward}}]
    config = write_ladder(tmp_path, data, "tiny-random-t5", rungs)
    with pytest.raises(UserError, match="grpo trains causal LMs only"):
        compare(prepare(load_ladder(config)))
