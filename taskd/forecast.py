"""The forecast of fires (`taskd plan`, `GET /plan`): how many runs each hour brings, and the
minutes when more tasks are due at once than `max_concurrent_tasks` lets run, with their names;
and each task's next fires in a window (`GET /upcoming`). Pure: the schedules and the start are
passed in.

A task counts once in a minute however often it fires in it: a task's own runs do not run side by
side (unless its concurrency allows), so one firing every second is one slot, not sixty.

Tasks on the same schedule in the same zone share its instants, which are worked out once: a
spread task's are the same instants moved by its offset. A schedule that fires several times a
minute is worked out a minute at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from taskd.models import iso
from taskd.schedule import Schedule, ShiftedSchedule

MAX_DAYS = 31
MAX_INSTANTS = 600_000
"""Instants worked out at most in one forecast, over every distinct schedule: past it the
forecast leaves the rest out and says so (`cut_short`)."""
NAMED = 20
"""Tasks named per crowded minute; the rest are counted."""
MAX_CROWDED = 2000
"""Crowded minutes listed at most; the rest are counted."""


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
    """Each hour from the start's: (its start, runs due, tasks due). Only fires after the start count."""
    crowded: list[Crowded] = field(default_factory=list)
    crowded_minutes: int = 0
    """Every crowded minute, `crowded` listing the first MAX_CROWDED of them."""
    cut_short: list[str] = field(default_factory=list)
    """What was left out, and why."""

    def to_json(self) -> dict[str, Any]:
        return {
            "from": iso(self.start),
            "until": iso(self.end),
            "max_concurrent_tasks": self.slots,
            "hours": [{"hour": iso(at), "runs": runs, "tasks": tasks} for at, runs, tasks in self.hours],
            "crowded": [c.to_json(self.slots) for c in self.crowded],
            "crowded_minutes": self.crowded_minutes,
            "cut_short": self.cut_short,
        }


@dataclass
class _Fires:
    """A base schedule's instants in the forecast's span: epoch seconds, each with how many fires
    it stands for (more than one for a minute of a schedule that fires several times a minute)."""

    instants: list[float]
    weight: list[int]
    complete: bool = True


def forecast(schedules: Iterable[tuple[str, Schedule]], start: datetime, days: int, slots: int) -> Forecast:
    """The fires of `schedules` (task id, schedule) after `start` (aware), hour by hour for `days`
    days from the start of its hour."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}")
    now = start.timestamp()
    begin = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first, last = begin.timestamp(), (begin + timedelta(days=days)).timestamp()
    by_base: dict[int, tuple[Schedule, list[tuple[str, int]]]] = {}
    for task_id, schedule in schedules:
        base, offset = (schedule.base, schedule.offset_s) if isinstance(schedule, ShiftedSchedule) else (schedule, 0)
        by_base.setdefault(id(base), (base, []))[1].append((task_id, offset))
    hours = int((last - first) // 3600)
    runs = [0] * hours
    tasks_in_hour: list[set[str]] = [set() for _ in range(hours)]
    by_minute: dict[int, list[str]] = {}
    cut_short: list[str] = []
    budget = MAX_INSTANTS
    for base, tasks in sorted(by_base.values(), key=lambda item: (item[0].expression, str(item[0].tz))):
        latest = max(offset for _, offset in tasks)
        fires = _fires(base, now - latest, last, budget)
        budget -= len(fires.instants)
        if not fires.complete:
            ids = ", ".join(sorted(task_id for task_id, _ in tasks)[:5])
            cut_short.append(f"{base.expression} ({len(tasks)} task(s): {ids}...): counted until the forecast's limit")
        for task_id, offset in tasks:
            seen_minute = -1
            for instant, weight in zip(fires.instants, fires.weight, strict=True):
                at = instant + offset
                # A minute standing for several fires counts while some of it is still to come.
                if at + (60.0 if weight > 1 else 0.0) <= now or at >= last:
                    continue
                hour = int((at - first) // 3600)
                runs[hour] += weight
                tasks_in_hour[hour].add(task_id)
                minute = int(at // 60)
                if minute != seen_minute:
                    by_minute.setdefault(minute, []).append(task_id)
                    seen_minute = minute
    crowded = [Crowded(m * 60.0, tuple(sorted(ids))) for m, ids in sorted(by_minute.items()) if len(ids) > slots]
    if len(crowded) > MAX_CROWDED:
        cut_short.append(f"{len(crowded)} crowded minutes: the first {MAX_CROWDED} are listed")
    table = [(first + 3600.0 * h, runs[h], len(tasks_in_hour[h])) for h in range(hours)]
    return Forecast(now, last, slots, table, crowded[:MAX_CROWDED], len(crowded), cut_short)


def _fires(schedule: Schedule, after: float, before: float, budget: int) -> _Fires:
    """`schedule`'s instants in (after, before), within `budget` of them."""
    fires = _Fires([], [])
    instant = schedule.next_after(datetime.fromtimestamp(after, UTC))
    following = None if instant is None else schedule.next_after(instant)
    if instant is not None and following is not None and (following - instant).total_seconds() < 60:
        # Several fires a minute: a minute at a time, each minute standing for its fires.
        per_minute = max(1, round(60 / (following - instant).total_seconds()))
        while instant is not None and instant.timestamp() < before:
            if len(fires.instants) >= budget:
                fires.complete = False
                break
            minute = instant.astimezone(UTC).replace(second=0, microsecond=0)
            fires.instants.append(minute.timestamp())
            fires.weight.append(per_minute)
            instant = schedule.next_after(minute + timedelta(seconds=59, microseconds=999_999))
        return fires
    while instant is not None and instant.timestamp() < before:
        if len(fires.instants) >= budget:
            fires.complete = False
            break
        fires.instants.append(instant.timestamp())
        fires.weight.append(1)
        instant = schedule.next_after(instant)
    return fires


CROWDED_SHOWN = 3
"""Crowded minutes `taskd plan` prints under an hour; the rest are counted."""


def lines(plan: Forecast, zone: Any = UTC) -> list[str]:
    """The forecast as `taskd plan` prints it: the hours with runs, under each its first crowded
    minutes (and how many more)."""
    out = []
    crowded: dict[int, list[Crowded]] = {}
    first = plan.hours[0][0] if plan.hours else plan.start
    for c in plan.crowded:
        crowded.setdefault(int((c.minute - first) // 3600), []).append(c)
    for index, (at, runs, tasks) in enumerate(plan.hours):
        if not runs:
            continue
        hour = datetime.fromtimestamp(at, zone)
        flag = "  !" if index in crowded else ""
        out.append(f"{hour:%Y-%m-%d %H:%M %Z}  {runs:>6} run{'s' if runs != 1 else ' '} of {tasks} task(s){flag}")
        minutes = crowded.get(index, [])
        for c in minutes[:CROWDED_SHOWN]:
            names = ", ".join(c.tasks[:NAMED]) + (f" and {len(c.tasks) - NAMED} more" if len(c.tasks) > NAMED else "")
            minute = datetime.fromtimestamp(c.minute, zone)
            out.append(
                f"    ! {minute:%H:%M}  {len(c.tasks)} tasks due, {len(c.tasks) - plan.slots} more than"
                f" max_concurrent_tasks ({plan.slots}): {names}"
            )
        if len(minutes) > CROWDED_SHOWN:
            out.append(f"    ! and {len(minutes) - CROWDED_SHOWN} more crowded minute(s) in this hour")
    return out


@dataclass(frozen=True)
class Upcoming:
    """A task's fires in a window: the first `per_task` of them, and whether it has more."""

    task_id: str
    fires: list[datetime]
    more: bool


def upcoming(schedules: Iterable[tuple[str, Schedule]], start: datetime, hours: int, per_task: int) -> list[Upcoming]:
    """Each task's fires in the next `hours` after `start`, the tasks that fire soonest first
    (ties by id); tasks that do not fire in the window are left out. Tasks sharing a schedule
    share its instants, worked out once."""
    until = start + timedelta(hours=hours)
    found: list[Upcoming] = []
    worked_out: dict[int, tuple[Schedule, list[datetime]]] = {}
    for task_id, schedule in schedules:
        known = worked_out.get(id(schedule))
        if known is None or known[0] is not schedule:
            known = (schedule, _instants(schedule, start, until, per_task + 1))
            worked_out[id(schedule)] = known
        fires = known[1]
        if fires:
            found.append(Upcoming(task_id, fires[:per_task], len(fires) > per_task))
    found.sort(key=lambda item: (item.fires[0], item.task_id))
    return found


def _instants(schedule: Schedule, start: datetime, until: datetime, most: int) -> list[datetime]:
    """The schedule's first `most` instants after `start`, up to `until`."""
    fires: list[datetime] = []
    current: datetime | None = start
    while len(fires) < most:
        current = schedule.next_after(current) if current is not None else None
        if current is None or current > until:
            break
        fires.append(current)
    return fires
