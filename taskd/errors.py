"""The exception hierarchy: every error taskd raises on purpose is a TaskdError."""

from __future__ import annotations

from collections.abc import Sequence


class TaskdError(Exception):
    """Base class of taskd's own errors."""


class ScheduleError(TaskdError, ValueError):
    """A schedule expression that cannot be parsed or can never fire."""


class DurationError(TaskdError, ValueError):
    """A duration that is not a non-negative number of seconds or a `1h30m`-style string."""


class ConfigError(TaskdError):
    """One or more problems in the configuration; `problems` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class UnknownTask(TaskdError):
    """No task with that id (never defined, removed, or deleted)."""


class UnknownRun(TaskdError):
    """No run with that id (never started, or pruned by retention)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} does not exist")


class Conflict(TaskdError):
    """The request contradicts the task's state or policy (e.g. `forbid` with a run active);
    `reason` is a short code for it (a fire skipped for it is counted under that reason)."""

    def __init__(self, message: str, reason: str = "conflict") -> None:
        super().__init__(message)
        self.reason = reason


class Overloaded(Conflict):
    """taskd refuses new runs until it has caught up (too many writes staged, or too many runs
    waiting); `retry_after_s` is when to try again."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, "overloaded")
        self.retry_after_s = retry_after_s
