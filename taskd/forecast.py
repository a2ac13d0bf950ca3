"""The forecast of fires (`taskd plan`, `GET /plan`): how many runs each hour brings, and the
minutes when more tasks are due at once than `max_concurrent_tasks` lets run, with their names.
Pure: the schedules and the start are passed in.

A task counts once in a minute however often it fires in it: a task's own runs do not run side by
side (unless its concurrency allows), so one firing every second is one slot, not sixty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from taskd.models import iso
from taskd.schedule import Schedule

MAX_DAYS = 31
MAX_FIRES = 2_000_000
"""Fires counted at most in one forecast: past it the forecast says it is cut short."""
MAX_FIRES_PER_TASK = 50_000
"""A task firing more often than this in the forecast's span counts for its first fires only."""
NAMED = 20
"""Tasks named per crowded minute; the rest are counted."""


@dataclass(frozen=True)
class Crowded:
    """A minute when more tasks are due than there are slots."""

    minute: float
    tasks: tuple[str, ...]

    def to_json(self, slots: int) -> dict[str, Any]:
        return {
            "minute": iso(self.minute),
            "tasks_due": len(self.tasks),
            "over_by": len(self.tasks) - slots,
            "tasks": list(self.tasks[:NAMED]),
        }


@dataclass(frozen=True)
class Forecast:
    start: float
    end: float
    slots: int
    hours: list[tuple[float, int, int]]
    """Each hour from the start: (its start, runs due, tasks due)."""
    crowded: list[Crowded] = field(default_factory=list)
    cut_short: list[str] = field(default_factory=list)
    """Why some fires were not counted (a task firing too often, too many fires in all)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "from": iso(self.start),
            "until": iso(self.end),
            "max_concurrent_tasks": self.slots,
            "hours": [{"hour": iso(at), "runs": runs, "tasks": tasks} for at, runs, tasks in self.hours],
            "crowded": [c.to_json(self.slots) for c in self.crowded],
            "cut_short": self.cut_short,
        }


def forecast(schedules: Iterable[tuple[str, Schedule]], start: datetime, days: int, slots: int) -> Forecast:
    """The fires of `schedules` (task id, schedule) from `start` (aware) for `days` days."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}")
    begin = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end = begin + timedelta(days=days)
    first, last = begin.timestamp(), end.timestamp()
    hours = int((last - first) // 3600)
    runs = [0] * hours
    tasks_in_hour: list[set[str]] = [set() for _ in range(hours)]
    by_minute: dict[int, list[str]] = {}
    cut_short: list[str] = []
    total = 0
    for task_id, schedule in sorted(schedules, key=lambda item: item[0]):
        fired = 0
        instant = schedule.next_after(begin - timedelta(microseconds=1))
        following = None if instant is None else schedule.next_after(instant)
        if instant is not None and following is not None and (following - instant).total_seconds() < 60:
            # Several fires a minute: counted a minute at a time (one next_after a minute, not one a fire).
            per_minute = max(1, round(60 / (following - instant).total_seconds()))
            total += _minutely(task_id, schedule, begin, end, per_minute, runs, tasks_in_hour, by_minute)
            continue
        seen_minute = -1
        while instant is not None and instant < end:
            if fired >= MAX_FIRES_PER_TASK or total >= MAX_FIRES:
                cut_short.append(f"{task_id}: only its first {fired} fires were counted")
                break
            at = instant.timestamp()
            hour = int((at - first) // 3600)
            runs[hour] += 1
            tasks_in_hour[hour].add(task_id)
            minute = int(at // 60)
            if minute != seen_minute:
                by_minute.setdefault(minute, []).append(task_id)
                seen_minute = minute
            fired += 1
            total += 1
            instant = schedule.next_after(instant)
    crowded = [Crowded(minute * 60.0, tuple(ids)) for minute, ids in sorted(by_minute.items()) if len(ids) > slots]
    table = [(first + 3600.0 * h, runs[h], len(tasks_in_hour[h])) for h in range(hours)]
    return Forecast(first, last, slots, table, crowded, cut_short)


def _minutely(
    task_id: str,
    schedule: Schedule,
    begin: datetime,
    end: datetime,
    per_minute: int,
    runs: list[int],
    tasks_in_hour: list[set[str]],
    by_minute: dict[int, list[str]],
) -> int:
    """Count a task that fires several times a minute in each minute it fires in; return its fires."""
    first = begin.timestamp()
    fired = 0
    minute = begin
    while minute < end:
        due = schedule.next_after(minute - timedelta(microseconds=1))
        if due is None or due >= end:
            break
        minute = due.astimezone(UTC).replace(second=0, microsecond=0)
        hour = int((minute.timestamp() - first) // 3600)
        runs[hour] += per_minute
        tasks_in_hour[hour].add(task_id)
        by_minute.setdefault(int(minute.timestamp() // 60), []).append(task_id)
        fired += per_minute
        minute += timedelta(minutes=1)
    return fired


def lines(plan: Forecast, zone: Any = UTC) -> list[str]:
    """The forecast as `taskd plan` prints it: the hours with runs, each crowded minute under its hour."""
    out = []
    crowded: dict[int, list[Crowded]] = {}
    for c in plan.crowded:
        crowded.setdefault(int((c.minute - plan.start) // 3600), []).append(c)
    for index, (at, runs, tasks) in enumerate(plan.hours):
        if not runs:
            continue
        hour = datetime.fromtimestamp(at, zone)
        flag = "  !" if index in crowded else ""
        out.append(f"{hour:%Y-%m-%d %H:%M %Z}  {runs:>6} run{'s' if runs != 1 else ' '} of {tasks} task(s){flag}")
        for c in crowded.get(index, []):
            names = ", ".join(c.tasks[:NAMED]) + (f" and {len(c.tasks) - NAMED} more" if len(c.tasks) > NAMED else "")
            minute = datetime.fromtimestamp(c.minute, zone)
            out.append(
                f"    ! {minute:%H:%M}  {len(c.tasks)} tasks due, {len(c.tasks) - plan.slots} more than"
                f" max_concurrent_tasks ({plan.slots}): {names}"
            )
    return out
