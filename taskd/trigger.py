"""Adapter that lets APScheduler 3 fire on taskd's own schedule semantics."""

from __future__ import annotations

from datetime import datetime

from apscheduler.triggers.base import BaseTrigger

from taskd.schedule import Schedule


class ScheduleTrigger(BaseTrigger):
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
