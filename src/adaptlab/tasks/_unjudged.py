"""The judging hooks of a task whose outputs its own metrics score fully (labels, tags, embeddings): no judges."""

from __future__ import annotations

from typing import Any


class Unjudged:
    """Task mixin: no ``task.judges`` (see :class:`adaptlab.tasks.Task` for the hooks)."""

    def judge(self, method: Any, records: list[dict], site: Any) -> dict:
        """No judges: the outputs are scored against the references by the task's own metrics."""
        return {"metrics": {}, "interval": {}, "judges": {}}

    def judge_inputs(self) -> tuple[str | None, str | None]:
        """No judges: nothing beyond the rung itself."""
        return None, None

    def judge_ladder(self, ranked: list[str], site: Any) -> dict[str, dict]:
        """No judges: nothing to add once the ladder has run."""
        return {}
