"""Errors a user can act on (exit code 2) versus internal failures (exit code 1).

Every user-facing problem is a :class:`UserError` whose message names the file, row, column or config field
and says how to fix it. Config validation collects all problems and raises once (:class:`ConfigError`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input. The CLI prints the message and exits with code 2, never a traceback."""

    exit_code = 2


class ConfigError(UserError):
    """Several problems in one config, reported together."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: {len(problems)} {noun} in the config:\n{lines}")


class DataError(UserError):
    """A problem with a data file: names the file and, where known, the row and column."""


class TrainingError(Exception):
    """A rung failed during training (e.g. the loss became NaN). The ladder records it and goes on."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest known name, or '' when nothing is close."""
    matches = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" Did you mean '{matches[0]}'?" if matches else ""
