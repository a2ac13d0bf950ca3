"""Faults the daemon survives: what is wrong right now, since when, and why.

A fault is raised by whoever sees it (the store's writer, the store watch, a reload, retention, the alerter)
and cleared when it passes. Each change is logged once; `/health` shows the current faults and
the metrics count them. A fault of the store (`STORE_KINDS`) makes the daemon unhealthy (HTTP
503): its history cannot be trusted to reach the disk. The others (a refused reload, a failed
prune, an alert channel that does not take alerts) leave it serving and are shown as warnings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("taskd.faults")

STORE_WRITE = "store_write"
"""Commits fail (a full disk, a locked or read-only database, the server gone)."""
STORE_FILE = "store_file"
"""The store's file or directory was removed or replaced under the daemon."""
STORE_UNREACHABLE = "store_unreachable"
"""The store does not answer (PostgreSQL down or unreachable)."""
RELOAD = "reload"
"""The last reload was refused; the previous configuration keeps running."""
RETENTION = "retention"
"""The last retention prune failed; it is tried again later."""
ALERTS = "alerts"
"""An alert channel's last delivery failed after its retries; cleared once the channel takes one."""

STORE_KINDS = frozenset({STORE_WRITE, STORE_FILE, STORE_UNREACHABLE})
KINDS = (STORE_WRITE, STORE_FILE, STORE_UNREACHABLE, RELOAD, RETENTION, ALERTS)


@dataclass(frozen=True)
class Fault:
    kind: str
    reason: str
    since: float


class Faults:
    """The current faults of one daemon, and how many times each kind was raised."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._current: dict[str, Fault] = {}
        self.raised: dict[str, int] = dict.fromkeys(KINDS, 0)

    def set(self, kind: str, reason: str) -> None:
        """Raise `kind` (or update its reason); logged when it starts or its reason changes."""
        held = self._current.get(kind)
        if held is not None and held.reason == reason:
            return
        if held is None:
            self.raised[kind] = self.raised.get(kind, 0) + 1
        self._current[kind] = Fault(kind, reason, held.since if held else self._now())
        log.error("fault", kind=kind, reason=reason)

    def clear(self, kind: str) -> None:
        held = self._current.pop(kind, None)
        if held is not None:
            log.warning("fault_cleared", kind=kind, lasted_s=round(self._now() - held.since, 3))

    def current(self) -> list[Fault]:
        return sorted(self._current.values(), key=lambda fault: fault.since)

    def get(self, kind: str) -> Fault | None:
        return self._current.get(kind)

    @property
    def healthy(self) -> bool:
        """No fault of the store."""
        return not STORE_KINDS & self._current.keys()

    def outage_since(self) -> float | None:
        """Since when a store fault has lasted without a break, or None."""
        held = [fault.since for kind, fault in self._current.items() if kind in STORE_KINDS]
        return min(held) if held else None
