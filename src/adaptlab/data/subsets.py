"""Nested, seeded subsets of a training split: the data-efficiency curve's training sets (``train_sizes:``).

    subsets = nested_subsets(["pos", "neg", "pos", ...], [8, 16], seed=0)   # 8 and 16 examples per class
    subsets = nested_subsets(None, [100, 200], seed=0, n=1000)              # no label: 100 and 200 examples

With classes (``strata``, the class of each example) a size counts examples *per class*: each class's examples are
shuffled once with the seed and a size takes the first ``size`` of each, so every smaller subset lies inside every
larger one of the same seed and every class has exactly ``size`` examples. Without classes a size counts examples
of one shuffled order. Positions come back in the split's own order. Pure functions, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from adaptlab.errors import DataError


def nested_subsets(strata: Sequence[str] | None, sizes: Sequence[int], seed: int,
                   n: int | None = None) -> dict[int, list[int]]:
    """Per size, the positions in the training split of its subset (see the module docstring). ``n`` is the
    split's length when there are no ``strata``."""
    rng = np.random.default_rng(seed)
    if strata is None:
        order = [rng.permutation(n or 0).tolist()]
    else:
        members: dict[str, list[int]] = {}
        for i, label in enumerate(strata):
            members.setdefault(str(label), []).append(i)
        order = [[members[c][j] for j in rng.permutation(len(members[c]))] for c in sorted(members)]
    return {size: sorted(i for shuffled in order for i in shuffled[:size]) for size in sizes}


def size_problems(strata: Sequence[str] | None, sizes: Sequence[int], n: int) -> list[str]:
    """What is wrong with ``train_sizes`` on this training split: the sizes above what the smallest class has (or,
    with no classes, above the split's length), named with the class, its count and the fix."""
    if strata is None:
        most, what, unit = n, f"the training split has ({n} examples)", "examples"
    else:
        counts = Counter(str(label) for label in strata)
        smallest, most = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
        what, unit = f"class '{smallest}' has in the training split ({most} of {n} examples)", "examples per class"
    over = [s for s in sizes if s > most]
    if not over:
        return []
    verb = "is" if len(over) == 1 else "are"
    return [f"train_sizes: {', '.join(map(str, over))} {unit} {verb} more than {what}; use sizes up to {most}, "
            "or `all` (the whole training split), or give the training split more examples "
            "(data.max_train_examples, data.test_size, data.validation_size)."]


def check_sizes(strata: Sequence[str] | None, sizes: Sequence[int], n: int, source: str = "data") -> None:
    """DataError listing every size the training split can't provide (see :func:`size_problems`)."""
    problems = size_problems(strata, sizes, n)
    if problems:
        raise DataError(f"{source}: " + " ".join(problems))
