"""Time as a parameter: whatever reads the time or waits for it goes through a `Clock`.

The daemon passes `SystemClock()`; tests pass a `FakeClock` and move it instead of sleeping, so a
backoff of ten minutes, a lease that expires or a retention pass takes no wall time in a test.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol, Self


class Deadline(Protocol):
    """What `Clock.timeout()` gives: an async context manager that cancels the code it wraps when
    the time is up (which then raises TimeoutError), and says whether that happened."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None: ...

    def expired(self) -> bool: ...


class Clock(Protocol):
    """Where the wall-clock time comes from, and how long waits are measured."""

    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...

    def timeout(self, seconds: float | None) -> Deadline:
        """A deadline `seconds` of this clock's time from now (None: no deadline)."""
        ...


class SystemClock:
    """The real wall clock; waits are the event loop's."""

    time = staticmethod(time.time)  # no Python frame per reading: the fire loop reads it per run
    sleep = staticmethod(asyncio.sleep)
    timeout = staticmethod(asyncio.timeout)


class FakeClock:
    """A clock that moves only when told to. Sleeps and deadlines taken on it end when it is moved
    past them: `advance()` moves it at once, `await run_for()` moves it from one waiter's instant to
    the next and lets the event loop run in between, as if the time had passed."""

    def __init__(self, start: float | datetime = 1_800_000_000.0) -> None:
        self.now = start.timestamp() if isinstance(start, datetime) else float(start)
        self._waiters: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._catch_up: list[Callable[[], Awaitable[None]]] = []

    def waits_for(self, catch_up: Callable[[], Awaitable[None]]) -> None:
        """Let `run_for` await `catch_up` before each step forward: work done in real time (a
        store's commit in its thread) finishes before the fake time moves on."""
        self._catch_up.append(catch_up)

    async def _settle(self) -> None:
        await settle()
        for catch_up in self._catch_up:
            await catch_up()
            await settle()

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        self.at(self.now + seconds, wake)
        await woken

    def timeout(self, seconds: float | None) -> Deadline:
        return _FakeDeadline(self, seconds)

    def at(self, instant: float, callback: Callable[[], None]) -> int:
        """Call `callback` once the clock reaches `instant`; returns a number that `forget` takes."""
        number = next(self._order)
        heapq.heappush(self._waiters, (instant, number, callback))
        return number

    def forget(self, number: int) -> None:
        """Drop a waiter that is no longer waited for (a deadline whose block has ended)."""
        self._waiters = [waiter for waiter in self._waiters if waiter[1] != number]
        heapq.heapify(self._waiters)

    @property
    def next_wakeup(self) -> float | None:
        """The instant of the earliest sleep or deadline still waiting, if any."""
        return self._waiters[0][0] if self._waiters else None

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds` at once, waking every sleep and deadline due; returns the new time."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds
        self._wake()
        return self.now

    def set(self, moment: float | datetime) -> None:
        instant = moment.timestamp() if isinstance(moment, datetime) else float(moment)
        if instant < self.now:
            raise ValueError("a clock does not go backwards")
        self.now = instant
        self._wake()

    async def run_for(self, seconds: float) -> float:
        """Let `seconds` pass: stop at each waiter's instant on the way, wake it and let the loop run
        what it started (which may wait on the clock again) before going on."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        target = self.now + seconds
        await self._settle()
        while self._waiters and self._waiters[0][0] <= target:
            self.now = max(self.now, self._waiters[0][0])
            self._wake()
            await self._settle()
        self.now = target
        await self._settle()
        return self.now

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.now:
            _, _, callback = heapq.heappop(self._waiters)
            callback()


async def settle(turns: int = 20) -> None:
    """Let the event loop run what is ready, a few turns deep (a woken task may wake another)."""
    for _ in range(turns):
        await asyncio.sleep(0)


class _FakeDeadline:
    """asyncio's own timeout, expired by the fake clock instead of the loop's clock."""

    def __init__(self, clock: FakeClock, seconds: float | None) -> None:
        self._clock = clock
        self._seconds = seconds
        self._inner = asyncio.timeout(None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: int | None = None
        self._inside = False

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        self._loop = asyncio.get_running_loop()
        self._inside = True
        if self._seconds is not None and self._seconds <= 0:
            self._expire()  # as asyncio's: no time at all expires at the next await
        elif self._seconds is not None:
            self._waiter = self._clock.at(self._clock.now + self._seconds, self._expire)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self._inside = False
        if self._waiter is not None:
            self._clock.forget(self._waiter)
        await self._inner.__aexit__(kind, exc, tb)
        return None

    def _expire(self) -> None:
        if self._inside and self._loop is not None:
            self._inner.reschedule(self._loop.time())

    def expired(self) -> bool:
        return self._inner.expired()


def utc(clock: Clock) -> datetime:
    """The clock's time as an aware UTC datetime."""
    return datetime.fromtimestamp(clock.time(), UTC)
