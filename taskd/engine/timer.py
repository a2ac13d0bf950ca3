"""The timer: it decides *when* schedules are due and hands each fire, with its instants, to a
callback. This is the only module that imports APScheduler.

APScheduler 3 can neither cancel nor drain running coroutines, so it runs no job code here: a
small executor passes every due job straight to the callback, and the engine owns the runs.
`ManualTimer` fires the same schedules from a clock that tests move by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

from taskd.clock import Clock, utc
from taskd.schedule import Schedule

FireCallback = Callable[[str, list[datetime]], None]
"""Called with a job's key and every instant it came due at since it last fired."""

MAX_INSTANTS_PER_FIRE = 1000


class Timer(Protocol):
    """Fires keyed schedules through the callback it was made with."""

    @property
    def running(self) -> bool: ...

    def start(self) -> None: ...

    def shutdown(self) -> None: ...

    def add(self, key: str, schedule: Schedule) -> None: ...

    def remove(self, key: str) -> None: ...


class ScheduleTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 ships no type hints
    """An APScheduler trigger backed by a taskd Schedule (crontab(5) semantics, not APScheduler's)."""

    __slots__ = ("schedule",)

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        # APScheduler asks for the first fire with previous=None, then for the one after each fire.
        return self.schedule.next_after(previous_fire_time if previous_fire_time is not None else now)

    def __str__(self) -> str:
        return f"taskd[{self.schedule.expression}]"

    def __repr__(self) -> str:
        return f"<ScheduleTrigger {self.schedule.expression!r} tz={self.schedule.tz}>"


class _FireExecutor(BaseExecutor):  # type: ignore[misc]
    """Hands due jobs straight to the callback, with every instant they were due at."""

    def __init__(self, callback: FireCallback) -> None:
        super().__init__()
        self._callback = callback

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        try:
            self._callback(job.id, run_times)
        finally:
            self._run_job_success(job.id, [])


def _never_called() -> None:  # the fire executor never calls job functions
    raise AssertionError("taskd's fire executor does not call job functions")


class APSchedulerTimer:
    """APScheduler's AsyncIOScheduler as a timer, on the running event loop's wall clock."""

    def __init__(self, callback: FireCallback) -> None:
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            executors={"default": _FireExecutor(callback)},
            job_defaults={"coalesce": False, "misfire_grace_time": None, "max_instances": 1_000_000},
        )

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def add(self, key: str, schedule: Schedule) -> None:
        self._scheduler.add_job(_never_called, ScheduleTrigger(schedule), id=key, name=key, replace_existing=True)

    def remove(self, key: str) -> None:
        if self._scheduler.get_job(key) is not None:
            self._scheduler.remove_job(key)


class ManualTimer:
    """A timer driven by a clock: `fire_due()` fires every schedule due up to the clock's time.

    Like APScheduler with `coalesce: False`, a job that came due several times since it last
    fired is called once with all its instants.
    """

    def __init__(self, callback: FireCallback, clock: Clock) -> None:
        self._callback = callback
        self._clock = clock
        self._jobs: dict[str, tuple[Schedule, datetime | None]] = {}
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        self._running = True

    def shutdown(self) -> None:
        self._running = False

    def add(self, key: str, schedule: Schedule) -> None:
        self._jobs[key] = (schedule, schedule.next_after(utc(self._clock)))

    def remove(self, key: str) -> None:
        self._jobs.pop(key, None)

    def fire_due(self) -> int:
        """Fire every job due at or before the clock's time; return how many jobs fired."""
        if not self._running:
            return 0
        now = utc(self._clock)
        fired = 0
        for key, (schedule, due) in list(self._jobs.items()):
            instants: list[datetime] = []
            while due is not None and due <= now and len(instants) < MAX_INSTANTS_PER_FIRE:
                instants.append(due)
                due = schedule.next_after(due)
            if not instants:
                continue
            self._jobs[key] = (schedule, due)
            fired += 1
            self._callback(key, instants)
        return fired
