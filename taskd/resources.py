"""What runs hold besides a slot: units of named pools (`pools: {db: 1}`: a pool of 1 is a mutex
between tasks) and of this node's capacity (`requests: {memory: 2G, cpu: 2}`). A run takes all it
needs at once or waits for all of it, in priority order, first come first served among equals;
a run that does not fit keeps the units it waits for from those behind it, so a large request is
never passed over for ever by small ones.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class _Waiter:
    priority: int
    order: int
    needs: Mapping[str, int]
    future: asyncio.Future[None]
    task_id: str


@dataclass(frozen=True)
class Holding:
    """One resource's size, what is held of it, and by how many runs; who waits for it."""

    name: str
    size: int
    held: int
    holders: int
    waiting: int

    @property
    def free(self) -> int:
        return max(0, self.size - self.held)


class Claims(Protocol):
    """Pools exact across the nodes sharing a store (the coordinator)."""

    async def claim_pools(self, run_id: str, pools: Mapping[str, int], sizes: Mapping[str, int]) -> bool: ...

    async def release_pools(self, run_id: str) -> None: ...


@dataclass
class Resources:
    """Named counted resources: `pool <name>` for pools, `memory` (bytes) and `cpu` (millicores)
    for this node's capacity."""

    sizes: dict[str, int] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)
    _holders: dict[str, int] = field(default_factory=dict)
    _waiters: list[_Waiter] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    claims: Claims | None = None
    """Where pool units are also claimed after this node's, for the nodes sharing its store (the
    coordinator: alone, it holds every claim at once)."""

    def pool_sizes(self) -> dict[str, int]:
        return {name[5:]: size for name, size in self.sizes.items() if name.startswith("pool ")}

    def set_sizes(self, sizes: Mapping[str, int]) -> None:
        """Resize (a reload): a larger size lets waiters in at once; a smaller one as runs give back."""
        self.sizes = dict(sizes)
        self._wake()

    def fits(self, needs: Mapping[str, int]) -> str | None:
        """Why `needs` can never be met (a resource smaller than the need, or missing), or None."""
        for name, units in needs.items():
            size = self.sizes.get(name)
            if size is None:
                return f"{name} does not exist"
            if units > size:
                return f"{name} needs {units}, more than its size {size}"
        return None

    def try_acquire(self, needs: Mapping[str, int]) -> bool:
        """Take everything at once if it is free and nobody waits for any of it; never waits."""
        self._drop_cancelled()
        if not needs:
            return True
        blocked = {name for waiter in self._waiters for name in waiter.needs}
        if blocked & set(needs) or not self._free_for(needs):
            return False
        self._take(needs)
        return True

    async def acquire(self, needs: Mapping[str, int], priority: int = 0, task_id: str = "") -> None:
        """Wait until everything in `needs` is free, then take it. Cancelling the wait gives up the
        place in line (or what was granted)."""
        if not needs or self.try_acquire(needs):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(priority, next(self._order), dict(needs), future, task_id))
        self._waiters.sort(key=lambda w: (-w.priority, w.order))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(needs)  # granted just as the wait was cancelled: give it back
            else:
                self._drop_cancelled()
                self._wake()
            raise

    def release(self, needs: Mapping[str, int]) -> None:
        for name, units in needs.items():
            held = self._held.get(name, 0)
            if held < units:
                raise RuntimeError(f"release of {units} {name} without a matching acquire")
            self._held[name] = held - units
            self._holders[name] = self._holders.get(name, 1) - 1
        self._wake()

    def waits_for(self, needs: Mapping[str, int]) -> list[str]:
        """What of `needs` is not free now (for a queued run's `waiting_for`)."""
        return [name for name, units in needs.items() if self.sizes.get(name, 0) - self._held.get(name, 0) < units]

    def holdings(self) -> list[Holding]:
        waiting: dict[str, int] = {}
        for waiter in self._waiters:
            if not waiter.future.done():
                for name in waiter.needs:
                    waiting[name] = waiting.get(name, 0) + 1
        return [
            Holding(name, size, self._held.get(name, 0), self._holders.get(name, 0), waiting.get(name, 0))
            for name, size in sorted(self.sizes.items())
        ]

    # -- inside ----------------------------------------------------------------------------------
    def _free_for(self, needs: Mapping[str, int]) -> bool:
        return all(self._held.get(name, 0) + units <= self.sizes.get(name, 0) for name, units in needs.items())

    def _take(self, needs: Mapping[str, int]) -> None:
        for name, units in needs.items():
            self._held[name] = self._held.get(name, 0) + units
            self._holders[name] = self._holders.get(name, 0) + 1

    def _drop_cancelled(self) -> None:
        self._waiters = [w for w in self._waiters if not w.future.done()]

    def _wake(self) -> None:
        """Grant the waiters that fit, in order; what an earlier waiter waits for stays kept for it."""
        blocked: set[str] = set()
        granted: list[_Waiter] = []
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            if not (blocked & set(waiter.needs)) and self._free_for(waiter.needs):
                self._take(waiter.needs)
                waiter.future.set_result(None)
                granted.append(waiter)
            else:
                blocked.update(waiter.needs)
        if granted:
            self._drop_cancelled()
