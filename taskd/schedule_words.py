"""A schedule in words, for people: "at 01:30 on Monday to Friday, Asia/Tokyo".

Pure: it reads the fields a parsed schedule holds, never the clock. The wording follows what the
schedule does (after parsing, so `@daily` and `0 0 * * *` read the same), and falls back to
listing the values when a field has no shorter description.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable

from taskd.durations import format_duration
from taskd.schedule import CronSchedule, IntervalSchedule, Schedule, ShiftedSchedule

_WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_WEEK_ORDER = (1, 2, 3, 4, 5, 6, 0)  # Monday first, as people read a week
_UNITS = (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1))


def describe(schedule: Schedule, zone: str) -> str:
    """The schedule in English, ending with its time zone (and the shift of a spread schedule)."""
    if isinstance(schedule, ShiftedSchedule):
        return f"{describe(schedule.base, zone)}, shifted {format_duration(schedule.offset_s)} later (spread)"
    if isinstance(schedule, IntervalSchedule):
        return f"{_every(schedule.interval_s)}, {zone}"
    if isinstance(schedule, CronSchedule):
        when = _time_of_day(schedule)
        days = _days(schedule) or ("every day" if _clock_times(schedule) else "")
        return f"{when}{' ' + days if days else ''}, {zone}"
    return f"{schedule.expression}, {zone}"


def _every(seconds: int) -> str:
    for unit, size in _UNITS:
        if seconds % size == 0:
            count = seconds // size
            return f"every {unit}" if count == 1 else f"every {count} {unit}s"
    return f"every {seconds} seconds"  # unreachable: seconds divide everything


def _step(values: tuple[int, ...], low: int, high: int) -> int | None:
    """The step when `values` are every k-th value of the field from its start (k >= 2)."""
    if len(values) < 2 or values[0] != low:
        return None
    step = values[1] - values[0]
    if step < 2 or tuple(range(low, high + 1, step)) != values:
        return None
    return step


def _time_of_day(s: CronSchedule) -> str:
    seconds, minutes, hours = s.seconds, s.minutes, s.hours
    all_seconds, all_minutes, all_hours = len(seconds) == 60, len(minutes) == 60, len(hours) == 24
    hour_part = "" if all_hours else f" {_hours(hours)}"
    if all_seconds and all_minutes:
        return f"every second{hour_part}"
    if all_seconds:
        return f"every second of minute {_list(minutes)}{hour_part}"
    second_step = _step(seconds, 0, 59)
    if second_step is not None and all_minutes:
        return f"every {second_step} seconds{hour_part}"
    if seconds != (0,) and not _clock_times(s):
        at = f"at second {_list(seconds)} of "
        if all_minutes:
            return f"{at}every minute{hour_part}"
        return f"{at}minute {_list(minutes)}{hour_part or ' of every hour'}"
    if all_minutes:
        return f"every minute{hour_part}"
    minute_step = _step(minutes, 0, 59)
    if minute_step is not None:
        return f"every {minute_step} minutes{hour_part}"
    if _clock_times(s):
        second = f":{seconds[0]:02d}" if seconds != (0,) else ""
        return "at " + _and([f"{h:02d}:{minutes[0]:02d}{second}" for h in hours])
    if len(minutes) == 1:
        hour_step = _step(hours, 0, 23)
        if all_hours:
            return f"every hour at minute {minutes[0]}"
        if hour_step is not None:
            return f"every {hour_step} hours at minute {minutes[0]}"
        return f"every hour at minute {minutes[0]}{hour_part}"
    return f"at minute {_list(minutes)}{hour_part or ' of every hour'}"


def _clock_times(s: CronSchedule) -> bool:
    """Whether the schedule fires at a few times of day, each worth writing as HH:MM."""
    return len(s.seconds) == 1 and len(s.minutes) == 1 and len(s.hours) <= 6


def _hours(hours: tuple[int, ...]) -> str:
    step = _step(hours, 0, 23)
    if step is not None:
        return f"of every {step} hours"
    ranges = _ranges(hours)
    if len(ranges) == 1 and ranges[0][0] != ranges[0][1]:
        first, last = ranges[0]
        return f"from {first:02d}:00 to {last:02d}:59"
    return "during hour " + _and([f"{h:02d}" for h in hours])


def _days(s: CronSchedule) -> str:
    parts = []
    dom = None if s.dom_star else _days_of_month(s.days_of_month)
    dow = None if s.dow_star else _weekdays(s.days_of_week)
    if dom and dow:
        parts.append(f"on {dom} or on {dow}")  # crontab(5): either day matches
    elif dom:
        parts.append(f"on {dom}")
    elif dow:
        parts.append(f"on {dow}")
    if len(s.months) < 12:
        parts.append("in " + _spans(s.months, lambda m: calendar.month_name[m]))
    return " ".join(parts)


def _days_of_month(days: frozenset[int]) -> str:
    ordered = sorted(days)
    return f"day {_list(tuple(ordered))} of the month"


def _weekdays(days: frozenset[int]) -> str:
    ordered = [d for d in _WEEK_ORDER if d in days]
    positions = [_WEEK_ORDER.index(d) for d in ordered]
    if len(ordered) >= 3 and positions == list(range(positions[0], positions[0] + len(positions))):
        return f"{_WEEKDAYS[ordered[0]]} to {_WEEKDAYS[ordered[-1]]}"
    return _and([_WEEKDAYS[d] for d in ordered])


def _ranges(values: tuple[int, ...]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted `values` as (first, last)."""
    out: list[tuple[int, int]] = []
    for value in values:
        if out and value == out[-1][1] + 1:
            out[-1] = (out[-1][0], value)
        else:
            out.append((value, value))
    return out


def _spans(values: tuple[int, ...], label: Callable[[int], str]) -> str:
    words = [
        label(a) if a == b else f"{label(a)} to {label(b)}" if b > a + 1 else f"{label(a)} and {label(b)}"
        for a, b in _ranges(values)
    ]
    return _and(words)


def _list(values: tuple[int, ...]) -> str:
    return _spans(values, str)


def _and(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]
