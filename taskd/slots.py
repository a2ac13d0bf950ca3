"""The global slot limit: at most N runs hold a slot; waiters are served by priority, then FIFO."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class SlotPool:
    """A counting semaphore whose waiters are released highest priority first, FIFO among equals."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("slot limit must be at least 1")
        self._limit = limit
        self._held = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def held(self) -> int:
        return self._held

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiters if not f.done())

    def set_limit(self, limit: int) -> None:
        """Change the limit; a higher one releases waiters at once, a lower one takes effect as runs end."""
        if limit < 1:
            raise ValueError("slot limit must be at least 1")
        self._limit = limit
        self._wake()

    def try_acquire(self) -> bool:
        """Take a slot at once if one is free and nobody is waiting; never waits."""
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)  # cancelled waiters at the front hold nothing
        if self._held < self._limit and not self._waiters:
            self._held += 1
            return True
        return False

    async def acquire(self, priority: int = 0) -> None:
        """Wait for a slot. Cancelling the wait gives up the place in line (or the slot, if granted)."""
        if self._held < self._limit and not self._waiters:
            self._held += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (-priority, next(self._order), future))
        self._wake()  # the heap may hold only cancelled waiters while slots are free
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # The slot was handed over just as the wait was cancelled: pass it on.
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back and hand it to the best waiter, if any."""
        if self._held <= 0:
            raise RuntimeError("release() without a matching acquire()")
        self._held -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._held < self._limit:
            _, _, future = heapq.heappop(self._waiters)
            if future.done():  # cancelled while waiting
                continue
            self._held += 1
            future.set_result(None)
