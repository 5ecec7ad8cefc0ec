"""One contract for every rung that declares the ``embedding`` task, on a tiny random BERT and separable sets.

Trained rungs learn (retrieval MRR, or how well the cosine separates matching from other pairs, clearly above the
untrained base; TSDAE, which learns no matching, rebuilds its texts better), change only what they may train
(LoRA: the adapter; the base stays as it was), encode identically after save -> load, and refuse data they can't
learn from with a message that names the way out. The data is built here, in the task's own data classes.
"""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch
from tests.conftest import NEGATIVE, NEUTRAL, POSITIVE

from adaptlab.context import RunContext
from adaptlab.methods import METHODS
from adaptlab.methods._sentence import LOSS_STATE, delete_words, drawn_negatives
from adaptlab.tasks.embedding.data import EmbeddingData, EmbeddingSplit

EMBEDDING = [n for n in METHODS.names() if "embedding" in METHODS.get(n).tasks]
TRAINED = [n for n in EMBEDDING if METHODS.get(n).trains and METHODS.get(n).predicts]  # domain_mlm: a stage
FAST = {"max_steps": 40, "batch_size": 16, "learning_rate": 1e-3, "evals_per_epoch": 0, "logging_steps": 5}
LORA = {"learning_rate": 1e-2, "lora_r": 4}
#: The data each trained rung is checked on, and how its learning is measured.
FORMAT = {"embedding_mnr": "retrieval", "embedding_triplet": "retrieval", "embedding_tsdae": "retrieval",
          "embedding_cosine": "scored_pairs", "embedding_softmax": "labelled_pairs"}
OWN = {"embedding_softmax": {"learning_rate": 3e-3, "max_steps": 60},  # its classifier learns with the encoder
       "embedding_tsdae": {"learning_rate": 3e-3}}
#: Steps of the contract test (what changes, save -> load); learning is checked with FAST's.
CONTRACT_STEPS = 12

# Retrieval: a query and its document share one key word; the filler is common to all queries or all documents.
KEYS = ["apple", "tiger", "paris", "violin", "copper", "desert", "falcon", "glacier", "harbor", "island", "jungle",
        "kettle", "lemon", "marble", "needle", "orchid", "pepper", "rabbit", "saddle", "tomato", "walnut", "yacht",
        "zebra", "anchor", "bridge", "candle", "dragon", "engine", "forest", "garlic", "hammer", "iron"]
QUERY_FILL = ["what", "is", "known", "tell", "me", "something", "please", "about", "the", "a", "question", "on"]
DOC_FILL = ["this", "page", "describes", "many", "facts", "here", "we", "write", "notes", "people", "often", "say"]


def retrieval_split(keys: list[str], rng: random.Random, tag: str) -> EmbeddingSplit:
    queries = [" ".join(rng.sample(QUERY_FILL, 4) + [k] + rng.sample(QUERY_FILL, 2)) for k in keys]
    docs = [" ".join(rng.sample(DOC_FILL, 3) + [k] + rng.sample(DOC_FILL, 4)) for k in keys]
    doc_ids = [f"{tag}-d{i}" for i in range(len(keys))]
    return EmbeddingSplit(ids=[f"{tag}{i}" for i in range(len(keys))], first=queries, second=docs,
                          corpus_ids=doc_ids, corpus=docs, relevant=[[d] for d in doc_ids])


def retrieval_data(seed: int = 0) -> EmbeddingData:
    rng = random.Random(seed)
    return EmbeddingData("retrieval", retrieval_split(KEYS * 3, rng, "t"), retrieval_split(KEYS[:6], rng, "v"),
                         retrieval_split(KEYS, rng, "x"))


def pair_split(n: int, rng: random.Random, kind: str) -> EmbeddingSplit:
    """Pairs of short texts; they match when both take their words from the same group (positive, negative)."""
    groups = (POSITIVE, NEGATIVE)

    def text(group: int) -> str:
        return " ".join(["the", *rng.sample(groups[group], 2), *rng.sample(NEUTRAL, 2)])

    same = [i % 2 == 0 for i in range(n)]
    ga = [rng.randrange(2) for _ in range(n)]
    first = [text(g) for g in ga]
    second = [text(g if s else 1 - g) for g, s in zip(ga, same)]
    values = ({"score": [1.0 if s else 0.0 for s in same]} if kind == "scored_pairs"
              else {"label": [int(s) for s in same]})
    return EmbeddingSplit(ids=[str(i) for i in range(n)], first=first, second=second, **values)


def pair_data(kind: str, seed: int = 0) -> EmbeddingData:
    rng = random.Random(seed)
    names = ["different", "same"] if kind == "labelled_pairs" else []
    return EmbeddingData(kind, pair_split(160, rng, kind), pair_split(8, rng, kind), pair_split(80, rng, kind),
                         label_names=names)


def data_for(kind: str) -> EmbeddingData:
    return retrieval_data() if kind == "retrieval" else pair_data(kind)


def mrr(method, split: EmbeddingSplit) -> float:
    sims = method.encode(split.first) @ method.encode(split.corpus).T
    gold = [split.corpus_ids.index(r[0]) for r in split.relevant]
    return float(np.mean([1 / (1 + (row > row[g]).sum()) for row, g in zip(sims, gold)]))


def pair_auc(method, split: EmbeddingSplit) -> float:
    """How often a matching pair's cosine beats a non-matching one's (ROC AUC)."""
    cos = (method.encode(split.first) * method.encode(split.second)).sum(axis=1)
    truth = np.asarray(split.score if split.score is not None else split.label) > 0.5
    pos, neg = cos[truth], cos[~truth]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def quality(method, data: EmbeddingData) -> float:
    return mrr(method, data.test) if data.format == "retrieval" else pair_auc(method, data.test)


@pytest.fixture
def ctx(tiny_bert) -> RunContext:
    return RunContext(model_spec=tiny_bert, task="embedding", label_names=[], max_length=32, device="cpu")


def build(name: str, ctx: RunContext, **params):
    cls = METHODS.get(name)
    fields = cls.Params.model_fields
    wanted = {**FAST, **OWN.get(name, {}), **params}
    method = cls(cls.Params(**{k: v for k, v in wanted.items() if k in fields}), ctx)
    method.setup()
    return method


def base_quality(ctx: RunContext, data: EmbeddingData) -> float:
    return quality(build("embedding_base", ctx), data)


def test_every_embedding_rung_is_covered():
    assert {"embedding_base", "embedding_mnr", "embedding_cosine", "embedding_softmax", "embedding_triplet",
            "embedding_tsdae"} <= set(EMBEDDING)
    assert set(TRAINED) == set(FORMAT), "give every trained embedding rung its data in FORMAT"


def test_the_base_encodes_unit_rows_and_ships_no_weights(ctx, tmp_path):
    method = build("embedding_base", ctx)
    texts = retrieval_data().test.first
    vectors = method.encode(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (len(texts), 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert method.parameter_counts()[0] == 0 and not method.trainable_state()
    method.save(tmp_path / "weights")
    assert not list((tmp_path / "weights").rglob("*.safetensors"))
    reloaded = METHODS.get("embedding_base").load(tmp_path / "weights", method.params, ctx)
    with reloaded.uncached():
        np.testing.assert_array_equal(reloaded.encode(texts), vectors)


def _changed(before: dict, after: dict) -> list[str]:
    return [k for k in before if not torch.equal(before[k], after[k])]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("name", sorted(FORMAT))
def test_trained_rung_contract(name, lora, ctx, tmp_path):
    data = data_for(FORMAT[name])
    assert METHODS.get(name).check(METHODS.get(name).Params(lora=lora), ctx, data) == []
    method = build(name, ctx, lora=lora, max_steps=CONTRACT_STEPS, **(LORA if lora else {}))
    trainable_before, frozen_before = method.trainable_state(), method.frozen_state()
    if not lora:  # every weight trains but the pooler layer that sentence pooling never reads
        assert frozen_before and all(".pooler." in k for k in frozen_before)

    fit = method.fit(data, tmp_path / "work")

    trainable_after, frozen_after = method.trainable_state(), method.frozen_state()
    assert trainable_after.keys() == trainable_before.keys()
    unchanged = [k for k in trainable_before if k not in _changed(trainable_before, trainable_after)]
    assert not unchanged, f"{name}: trainable tensors did not change: {unchanged[:5]}"
    assert not _changed(frozen_before, frozen_after), f"{name}: frozen tensors changed"
    trainable, total = method.parameter_counts()
    assert trainable == sum(v.numel() for v in trainable_after.values())
    assert trainable + sum(v.numel() for v in frozen_after.values()) == total
    assert (trainable < total / 50) if lora else (trainable > total / 2)
    assert all("lora_" in k for k in trainable_after) == lora
    assert fit["samples"] > 0 and fit["tokens"] > 0 and fit["steps"] == CONTRACT_STEPS

    texts = data.test.first[:12] + data.test.second[:12]
    vectors = method.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    method.save(tmp_path / "weights")
    files = {p.name for p in (tmp_path / "weights").rglob("*") if p.is_file()}
    assert not {f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))}
    assert ("adapter_model.safetensors" in files and "model.safetensors" not in files) if lora else \
        ("model.safetensors" in files)
    reloaded = type(method).load(tmp_path / "weights", method.params, ctx)
    np.testing.assert_array_equal(reloaded.encode(texts), vectors)


@pytest.mark.parametrize("name", sorted(n for n in FORMAT if n != "embedding_tsdae"))
def test_trained_rung_learns_above_the_untrained_base(name, ctx, tmp_path):
    data = data_for(FORMAT[name])
    floor = base_quality(ctx, data)
    method = build(name, ctx)
    method.fit(data, tmp_path / "work")
    learned = quality(method, data)
    assert learned > floor + 0.1, f"{name} did not learn: {learned:.3f} vs base {floor:.3f}"


def test_lora_mnr_learns_above_the_untrained_base(ctx, tmp_path):
    data = retrieval_data()
    floor = base_quality(ctx, data)
    method = build("embedding_mnr", ctx, lora=True, **{**LORA, "max_steps": 60})
    method.fit(data, tmp_path / "work")
    assert mrr(method, data.test) > floor + 0.05


def test_one_base_serves_every_lora_rung(ctx, tmp_path):
    """What serving does with ``weights/adapter``: the base loaded once, each LoRA rung's adapter loaded next to it
    under its own name, and switched per request (the adapters off: the base itself)."""
    from adaptlab.methods._sentence import ADAPTER_DIR

    data, texts, expected = retrieval_data(), retrieval_data().test.first[:8], {}
    for name in ("embedding_mnr", "embedding_cosine"):
        method = build(name, ctx, lora=True, max_steps=4, **LORA)
        method.fit(data if name == "embedding_mnr" else pair_data("scored_pairs"), tmp_path / name)
        method.save(tmp_path / name / "weights")
        expected[name] = method.encode(texts)
    shared = build("embedding_mnr", ctx).base()
    for name in expected:
        shared.load_adapter(str(tmp_path / name / "weights" / ADAPTER_DIR), adapter_name=name)
    for name in ("embedding_cosine", "embedding_mnr"):
        shared.set_adapter(name)
        got = shared.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        np.testing.assert_allclose(got, expected[name], atol=1e-6)
    assert not np.allclose(expected["embedding_mnr"], expected["embedding_cosine"], atol=1e-4)
    shared.disable_adapters()
    plain = shared.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(plain, build("embedding_base", ctx).encode(texts), atol=1e-6)


def test_tsdae_learns_to_rebuild_its_texts(ctx, tmp_path):
    fit = build("embedding_tsdae", ctx).fit(retrieval_data(), tmp_path / "work")
    losses = [h["loss"] for h in fit["history"] if "loss" in h]
    assert losses[-1] < 0.75 * losses[0], losses


@pytest.mark.parametrize(("max_evaluations", "steps"), [(8, [6, 12, 16]), (2, [8, 16]), (1, [16])])
def test_validation_keeps_the_best_weights_within_max_evaluations(max_evaluations, steps, ctx, tmp_path):
    """With the task's scorer set (as the pipeline does), the validation split is scored every epoch, at most
    max_evaluations times in the run (the last step always), and the history holds the scores."""
    from adaptlab.training import VALIDATION_SCORER, ValidationScorer

    data = retrieval_data()  # 96 training pairs: 6 steps an epoch at batch 16
    method = build("embedding_mnr", ctx, max_steps=16, evals_per_epoch=1, max_evaluations=max_evaluations)
    token = VALIDATION_SCORER.set(ValidationScorer("mrr", True, lambda: mrr(method, data.validation)))
    try:
        fit = method.fit(data, tmp_path / "work")
    finally:
        VALIDATION_SCORER.reset(token)
    assert [h["step"] for h in fit["history"] if "eval_mrr" in h] == steps
    assert fit["selection"]["by"] == "metric" and fit["selection"]["evaluations"] == len(steps)
    best = max(h["eval_mrr"] for h in fit["history"] if "eval_mrr" in h)
    assert mrr(method, data.validation) == pytest.approx(best, abs=1e-6)


def test_softmax_resume_restores_its_classifier(ctx, tmp_path, monkeypatch):
    """SoftmaxLoss' classifier is no part of the model: checkpoints carry it, so a resumed run ends identical."""
    import adaptlab.training as training

    data = pair_data("labelled_pairs")
    params = {"max_steps": 10, "checkpoint_every_steps": 5}
    straight = build("embedding_softmax", ctx, **params)
    straight.fit(data, tmp_path / "straight")

    def crash(point: str) -> None:
        if point == "checkpoint:10":
            raise RuntimeError("crashed")

    crashy = tmp_path / "crashy"
    with monkeypatch.context() as patch:
        patch.setattr(training, "_fault_point", crash)
        with pytest.raises(RuntimeError, match="crashed"):
            build("embedding_softmax", ctx, **params).fit(data, crashy)
    assert (crashy / "checkpoints" / "checkpoint-5" / LOSS_STATE).is_file()
    resumed = build("embedding_softmax", ctx, **params)
    assert resumed.fit(data, crashy, resume=True)["resumed_from"] == "checkpoint-5"
    texts = data.test.first[:16]
    np.testing.assert_allclose(resumed.encode(texts), straight.encode(texts), atol=1e-6)


REFUSED = [  # rung, data, its params, the task's settings, the problem expected (None: none)
    ("embedding_cosine", retrieval_data, {}, {}, "learns from scored_pairs data, not retrieval"),
    ("embedding_softmax", lambda: pair_data("scored_pairs"), {}, {}, "learns from labelled_pairs data, not scored"),
    ("embedding_triplet", lambda: pair_data("labelled_pairs"), {}, {}, "not labelled_pairs: use embedding_softmax"),
    ("embedding_tsdae", lambda: pair_data("labelled_pairs"), {}, {}, None),
    ("embedding_mnr", lambda: pair_data("scored_pairs"), {"positive_score": 1.0}, {}, None),
    ("embedding_mnr", lambda: _all_scores(0.2), {}, {}, r"needs at least 2 matching pairs .* found 0 .*>= "
     r"embedding_mnr.params.positive_score \(0.8\)"),
    ("embedding_mnr", lambda: _relabelled(["no", "maybe"]), {}, {}, r"cannot tell which labels .*positive_labels"),
    ("embedding_mnr", lambda: _relabelled(["no", "maybe"]), {}, {"positive_labels": ["maybe"]}, None),
    ("embedding_mnr", lambda: _relabelled(["no", "maybe"]), {}, {"positive_labels": ["no"]}, None),
    ("embedding_mnr", lambda: _relabelled(["no", "yes"], label=0), {}, {}, r"found 0 \(pairs labelled \['yes'\]\)"),
]


def _all_scores(value: float) -> EmbeddingData:
    data = pair_data("scored_pairs")
    data.train.score = [value] * len(data.train)
    return data


def _relabelled(names: list[str], label: int | None = None) -> EmbeddingData:
    data = pair_data("labelled_pairs")
    data.label_names = names
    if label is not None:
        data.train.label = [label] * len(data.train)
    return data


@pytest.mark.parametrize(("name", "make", "params", "task", "message"), REFUSED)
def test_check_refuses_data_it_cannot_learn_from(name, make, params, task, message, ctx):
    cls = METHODS.get(name)
    ctx.extra["task"] = {"type": "embedding", **task}
    problems = cls.check(cls.Params(**params), ctx, make())
    if message is None:
        assert problems == []
    else:
        assert len(problems) == 1 and name in problems[0]
        assert re.search(message, problems[0]), problems[0]


def test_retrieval_negatives_are_other_rows_documents_and_seeded():
    split = retrieval_data().train
    negatives = drawn_negatives(split, seed=0)
    assert negatives == drawn_negatives(split, seed=0) != drawn_negatives(split, seed=1)
    assert all(n != p and n in split.second for n, p in zip(negatives, split.second))


def test_deletion_noise_is_seeded_and_keeps_a_word():
    texts = ["one two three four five six seven eight", "single", ""]
    assert delete_words(texts, 0.6, seed=0) == delete_words(texts, 0.6, seed=0)
    assert delete_words(texts, 0.0, seed=0) == texts
    kept = delete_words(texts, 0.99, seed=0)
    assert len(kept[0].split()) >= 1 and set(kept[0].split()) <= set(texts[0].split()) and kept[1:] == ["single", ""]
    noisy = delete_words(texts * 50, 0.6, seed=3)[::3]
    share = np.mean([len(n.split()) / 8 for n in noisy])
    assert 0.25 < share < 0.55, share
