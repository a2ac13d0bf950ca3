"""Live events for followers: a run's log lines as they are written, and every run's state changes.

Each stream (one run's, or all state changes) is a bounded channel shared by its followers, each
reading with a cursor of its own. Publishing appends once and wakes the waiting followers once, so
it costs the same for 1 follower as for 200, and a dictionary lookup when nobody follows. A
follower that falls a whole channel behind is cut off (and told so): a slow or stuck client never
holds memory or slows the runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import Iterator
from typing import NamedTuple

from taskd.store.base import LogLine

CHANNEL_LIMIT = 10_000
"""Events kept for one run's followers."""
ALL_RUNS_LIMIT = 100_000
"""State changes kept for the followers of every run: a burst of 10,000 runs makes 30,000."""


class StateChange(NamedTuple):
    """A run entering a state (a tuple: made for every transition that someone follows)."""

    run_id: str
    task_id: str
    state: str
    at: float
    error: str | None = None


Event = LogLine | StateChange


class Channel:
    """The latest `limit` events of one stream, numbered; followers read them by number."""

    def __init__(self, limit: int = CHANNEL_LIMIT) -> None:
        self._events: collections.deque[Event] = collections.deque(maxlen=limit)
        self.first = 0  # the number of the oldest event kept
        self.next = 0  # the number the next event gets
        self.followers = 0
        self._waiter: asyncio.Future[None] | None = None

    def publish(self, event: Event) -> None:
        if len(self._events) == self._events.maxlen:
            self.first += 1
        self._events.append(event)
        self.next += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def since(self, number: int) -> list[Event]:
        """The events numbered `number` and after (`number` must not be older than `first`); taken
        from the newest end, so a follower that keeps up pays for what it reads, not for the backlog."""
        count = self.next - number
        if count <= 0:
            return []
        newest = list(itertools.islice(reversed(self._events), count))
        newest.reverse()
        return newest

    async def wait_beyond(self, number: int) -> None:
        """Until an event numbered `number` exists."""
        while self.next <= number:
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            # Shielded: a follower that gives up waiting must not cancel the others' wake-up.
            await asyncio.shield(self._waiter)


class Subscription:
    """One follower's place in a channel; `overflowed` once it fell a whole channel behind."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._cursor = channel.next
        self.overflowed = False

    def pending(self) -> list[Event]:
        """The events published since the last call (none once overflowed)."""
        channel = self._channel
        if self.overflowed:
            return []
        if self._cursor < channel.first:
            self.overflowed = True
            return []
        events = channel.since(self._cursor)
        self._cursor = channel.next
        return events

    async def wait(self) -> None:
        """Until there is something pending (at once when overflowed: the follower must leave)."""
        if not self.overflowed:
            await self._channel.wait_beyond(self._cursor)


class LiveHub:
    """Fans log lines and state changes out to the followers that asked for them."""

    def __init__(self, limit: int = CHANNEL_LIMIT, all_runs_limit: int = ALL_RUNS_LIMIT) -> None:
        self._limit = limit
        self._runs: dict[str, Channel] = {}
        self._all = Channel(all_runs_limit)

    @property
    def followers(self) -> int:
        return self._all.followers + sum(channel.followers for channel in self._runs.values())

    def line_written(self, line: LogLine) -> None:
        channel = self._runs.get(line.run_id)
        if channel is not None:
            channel.publish(line)

    def state_entered(self, run_id: str, task_id: str, state: str, at: float, error: str | None) -> None:
        channel = self._runs.get(run_id)
        if channel is None and not self._all.followers:
            return  # nobody follows: not even the event is made
        change = StateChange(run_id, task_id, state, at, error)
        if channel is not None:
            channel.publish(change)
        if self._all.followers:
            self._all.publish(change)

    @contextlib.contextmanager
    def follow_run(self, run_id: str) -> Iterator[Subscription]:
        """The run's lines and state changes from now on, while the context lasts."""
        channel = self._runs.get(run_id)
        if channel is None:
            channel = self._runs[run_id] = Channel(self._limit)
        channel.followers += 1
        try:
            yield Subscription(channel)
        finally:
            channel.followers -= 1
            if not channel.followers and self._runs.get(run_id) is channel:
                del self._runs[run_id]

    @contextlib.contextmanager
    def follow_all(self) -> Iterator[Subscription]:
        """Every run's state changes from now on, while the context lasts."""
        self._all.followers += 1
        try:
            yield Subscription(self._all)
        finally:
            self._all.followers -= 1
