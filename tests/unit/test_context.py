"""RunContext.shared: one object per key for the whole run, emptied (not rebuilt) between rungs."""

from __future__ import annotations

from adaptlab.context import RunContext


class Counter:
    def __init__(self) -> None:
        self.cache = {"a": 1}

    def clear(self) -> None:
        self.cache.clear()


def test_shared_objects_are_built_once_and_cleared_by_reset_caches():
    ctx = RunContext(model_spec="tiny-random-bert", task="classification", label_names=["neg", "pos"])
    built: list[Counter] = []

    def build() -> Counter:
        built.append(Counter())
        return built[-1]

    first = ctx.shared(("embedder", "m", 128), build)
    assert ctx.shared(("embedder", "m", 128), build) is first and len(built) == 1
    other = ctx.shared(("embedder", "m", 64), build)  # another key, another object
    assert other is not first and len(built) == 2
    ctx.reset_caches()
    assert first.cache == {} and other.cache == {}
    assert ctx.shared(("embedder", "m", 128), build) is first  # still shared after the reset
    assert "_shared" not in ctx.to_dict()  # never written to run.json
