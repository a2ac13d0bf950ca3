"""Time as a parameter: the engine, the runner and the policies read the time from a `Clock`.

The daemon passes `SystemClock()`; tests pass a `FakeClock` and move it instead of sleeping.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Where the wall-clock time comes from."""

    def time(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    """The real wall clock."""

    time = staticmethod(time.time)  # no Python frame per reading: the fire loop reads it per run


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float | datetime = 1_800_000_000.0) -> None:
        self.now = start.timestamp() if isinstance(start, datetime) else float(start)

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds`; returns the new time."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds
        return self.now

    def set(self, moment: float | datetime) -> None:
        self.now = moment.timestamp() if isinstance(moment, datetime) else float(moment)


def utc(clock: Clock) -> datetime:
    """The clock's time as an aware UTC datetime."""
    return datetime.fromtimestamp(clock.time(), UTC)
