"""Schedules follow crontab(5) as Vixie cron reads it, in the schedule's time zone."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from taskd.errors import ScheduleError
from taskd.schedule import CronSchedule, IntervalSchedule, parse

# (expression, time zone, after, expected next instants) — instants are strictly after `after`.
CASES = [
    # Monday is 1, as in crontab(5) (APScheduler 3 would read 1 as Tuesday).
    ("0 9 * * 1", "UTC", "2026-11-23T08:59:59+00:00", ["2026-11-23T09:00:00+00:00", "2026-11-30T09:00:00+00:00"]),
    ("0 9 * * 1", "UTC", "2026-11-23T09:00:00+00:00", ["2026-11-30T09:00:00+00:00", "2026-12-07T09:00:00+00:00"]),
    ("0 9 * * mon", "UTC", "2026-11-23T09:00:00+00:00", ["2026-11-30T09:00:00+00:00"]),
    # Both day fields restricted: the 1st, the 15th, or any Friday.
    (
        "0 0 1,15 * 5",
        "UTC",
        "2026-11-01T00:00:00+00:00",
        [
            "2026-11-06T00:00:00+00:00",
            "2026-11-13T00:00:00+00:00",
            "2026-11-15T00:00:00+00:00",
            "2026-11-20T00:00:00+00:00",
            "2026-11-27T00:00:00+00:00",
            "2026-12-01T00:00:00+00:00",
        ],
    ),
    # Sunday is 0 and 7.
    ("0 0 * * 7", "UTC", "2026-11-23T00:00:00+00:00", ["2026-11-29T00:00:00+00:00", "2026-12-06T00:00:00+00:00"]),
    ("0 0 * * 0", "UTC", "2026-11-23T00:00:00+00:00", ["2026-11-29T00:00:00+00:00", "2026-12-06T00:00:00+00:00"]),
    ("0 0 * * SUN", "UTC", "2026-11-23T00:00:00+00:00", ["2026-11-29T00:00:00+00:00"]),
    (
        "0 0 * * 5-7",
        "UTC",
        "2026-11-23T00:00:00+00:00",
        [
            "2026-11-27T00:00:00+00:00",
            "2026-11-28T00:00:00+00:00",
            "2026-11-29T00:00:00+00:00",
            "2026-12-04T00:00:00+00:00",
        ],
    ),
    # Steps on * and on ranges.
    (
        "*/15 * * * *",
        "UTC",
        "2026-11-23T10:07:00+00:00",
        [
            "2026-11-23T10:15:00+00:00",
            "2026-11-23T10:30:00+00:00",
            "2026-11-23T10:45:00+00:00",
            "2026-11-23T11:00:00+00:00",
        ],
    ),
    (
        "1-10/3 * * * *",
        "UTC",
        "2026-11-23T10:00:00+00:00",
        [
            "2026-11-23T10:01:00+00:00",
            "2026-11-23T10:04:00+00:00",
            "2026-11-23T10:07:00+00:00",
            "2026-11-23T10:10:00+00:00",
            "2026-11-23T11:01:00+00:00",
        ],
    ),
    # Steps on a name range: Monday, Wednesday, Friday.
    (
        "0 0 * * mon-fri/2",
        "UTC",
        "2026-11-23T00:00:00+00:00",
        ["2026-11-25T00:00:00+00:00", "2026-11-27T00:00:00+00:00", "2026-11-30T00:00:00+00:00"],
    ),
    (
        "0 0 1 jan-mar/2 *",
        "UTC",
        "2026-11-23T00:00:00+00:00",
        ["2027-01-01T00:00:00+00:00", "2027-03-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"],
    ),
    # A day-of-month field starting with '*' counts as unrestricted (Vixie): AND with the weekday.
    ("0 0 */10 * 1", "UTC", "2026-11-23T00:00:00+00:00", ["2026-12-21T00:00:00+00:00", "2027-01-11T00:00:00+00:00"]),
    # Feb 29 only in leap years.
    ("0 0 29 2 *", "UTC", "2026-11-23T00:00:00+00:00", ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]),
    # Six fields: a leading seconds field; sub-second `after` is handled.
    (
        "*/20 * * * * *",
        "UTC",
        "2026-11-23T00:00:00.500000+00:00",
        ["2026-11-23T00:00:20+00:00", "2026-11-23T00:00:40+00:00", "2026-11-23T00:01:00+00:00"],
    ),
    ("30 0 12 * * *", "UTC", "2026-11-23T12:00:30+00:00", ["2026-11-24T12:00:30+00:00"]),
    ("* * * * * *", "UTC", "2026-11-23T00:00:00+00:00", ["2026-11-23T00:00:01+00:00", "2026-11-23T00:00:02+00:00"]),
    # Macros.
    ("@hourly", "UTC", "2026-11-23T10:30:00+00:00", ["2026-11-23T11:00:00+00:00", "2026-11-23T12:00:00+00:00"]),
    ("@daily", "UTC", "2026-11-23T10:30:00+00:00", ["2026-11-24T00:00:00+00:00"]),
    ("@midnight", "Europe/Berlin", "2026-11-23T10:30:00+00:00", ["2026-11-24T00:00:00+01:00"]),
    ("@weekly", "UTC", "2026-11-23T10:30:00+00:00", ["2026-11-29T00:00:00+00:00"]),
    ("@monthly", "UTC", "2026-11-23T10:30:00+00:00", ["2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"]),
    ("@yearly", "UTC", "2026-11-23T10:30:00+00:00", ["2027-01-01T00:00:00+00:00"]),
    ("@annually", "UTC", "2026-11-23T10:30:00+00:00", ["2027-01-01T00:00:00+00:00"]),
    # @every: whole multiples of the interval since the epoch.
    ("@every 90s", "UTC", "2026-11-23T00:00:00+00:00", ["2026-11-23T00:01:30+00:00", "2026-11-23T00:03:00+00:00"]),
    ("@every 1h30m", "UTC", "2026-11-23T00:00:00+00:00", ["2026-11-23T01:30:00+00:00", "2026-11-23T03:00:00+00:00"]),
    ("@every 5", "UTC", "2026-11-23T00:00:03+00:00", ["2026-11-23T00:00:05+00:00", "2026-11-23T00:00:10+00:00"]),
    # America/New_York spring forward, 2026-03-08 02:00 EST -> 03:00 EDT.
    (
        "30 2 * * *",
        "America/New_York",
        "2026-03-07T12:00:00-05:00",
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
    ),
    (
        "0 2 * * *",
        "America/New_York",
        "2026-03-07T12:00:00-05:00",
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"],
    ),
    # Two skipped fixed times still fire once, at the first instant after the gap.
    (
        "0,30 2 * * *",
        "America/New_York",
        "2026-03-07T12:00:00-05:00",
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"],
    ),
    (
        "*/30 * * * *",
        "America/New_York",
        "2026-03-08T01:00:00-05:00",
        ["2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"],
    ),
    # America/New_York fall back, 2026-11-01 02:00 EDT -> 01:00 EST: fixed times fire once...
    (
        "30 1 * * *",
        "America/New_York",
        "2026-10-31T12:00:00-04:00",
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
    ),
    ("30 1 * * *", "America/New_York", "2026-11-01T01:45:00-04:00", ["2026-11-02T01:30:00-05:00"]),
    ("30 1 * * *", "America/New_York", "2026-11-01T01:15:00-05:00", ["2026-11-02T01:30:00-05:00"]),
    # ...wildcard-hour schedules fire in both repeated hours.
    (
        "*/30 * * * *",
        "America/New_York",
        "2026-11-01T00:30:00-04:00",
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T02:00:00-05:00",
        ],
    ),
    (
        "0 * * * *",
        "America/New_York",
        "2026-11-01T00:30:00-04:00",
        ["2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"],
    ),
    ("*/30 * * * *", "America/New_York", "2026-11-01T01:45:00-04:00", ["2026-11-01T01:00:00-05:00"]),
    (
        "*/30 * * * *",
        "America/New_York",
        "2026-11-01T01:15:00-05:00",
        ["2026-11-01T01:30:00-05:00", "2026-11-01T02:00:00-05:00"],
    ),
    # Europe/Berlin spring forward, 2026-03-29 02:00 CET -> 03:00 CEST.
    (
        "0 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00+01:00",
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"],
    ),
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00+01:00",
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
    ),
    ("15 * * * *", "Europe/Berlin", "2026-03-29T01:30:00+01:00", ["2026-03-29T03:15:00+02:00"]),
    # Europe/Berlin fall back, 2026-10-25 03:00 CEST -> 02:00 CET.
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T12:00:00+02:00",
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
    ),
    (
        "15 * * * *",
        "Europe/Berlin",
        "2026-10-25T01:30:00+02:00",
        ["2026-10-25T02:15:00+02:00", "2026-10-25T02:15:00+01:00", "2026-10-25T03:15:00+01:00"],
    ),
    # A wildcard minute with a fixed hour is a wildcard job in Vixie cron: both passes.
    (
        "*/30 2 * * *",
        "Europe/Berlin",
        "2026-10-25T00:00:00+02:00",
        [
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-26T02:00:00+01:00",
        ],
    ),
]


@pytest.mark.parametrize(("expression", "zone", "after", "expected"), CASES)
def test_next_fire_instants(expression: str, zone: str, after: str, expected: list[str]) -> None:
    """Each expression yields exactly the listed instants, strictly after `after`."""
    schedule = parse(expression, zone)
    got = schedule.next_n(datetime.fromisoformat(after), len(expected))
    assert [g.isoformat() for g in got] == expected


def test_instants_are_in_the_schedule_zone_and_ordered() -> None:
    """Results carry the zone's offset at each instant and compare in true time order across a
    whole DST year, including the two passes through the repeated hour."""
    zone = ZoneInfo("Europe/Berlin")
    schedule = parse("*/7 * * * *", zone)
    fires = schedule.next_n(datetime(2026, 1, 1, tzinfo=UTC), 80_000)
    assert fires[-1] > datetime(2026, 12, 1, tzinfo=UTC)
    assert all(b > a for a, b in itertools.pairwise(fires))
    assert all(f.utcoffset() == f.astimezone(zone).utcoffset() for f in fires)
    assert {f.utcoffset() for f in fires} == {timedelta(hours=1), timedelta(hours=2)}


def test_every_is_independent_of_time_zone() -> None:
    """@every fires on the same instants whatever the zone."""
    after = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    utc = parse("@every 45m", "UTC").next_n(after, 5)
    berlin = parse("@every 45m", "Europe/Berlin").next_n(after, 5)
    assert [u.timestamp() for u in utc] == [b.timestamp() for b in berlin]
    assert isinstance(parse("@every 45m"), IntervalSchedule)


def test_macros_equal_their_expansion() -> None:
    after = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)
    for macro, expansion in [("@weekly", "0 0 * * 0"), ("@hourly", "0 * * * *"), ("@yearly", "0 0 1 1 *")]:
        assert parse(macro).next_n(after, 5) == parse(expansion).next_n(after, 5)


def test_naive_after_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse("* * * * *").next_after(datetime(2026, 1, 1))


def test_fixed_and_wildcard_are_told_apart() -> None:
    fixed = parse("30 2 * * *")
    wildcard = parse("30 * * * *")
    assert isinstance(fixed, CronSchedule) and fixed.fixed_time
    assert isinstance(wildcard, CronSchedule) and not wildcard.fixed_time


BAD = [
    ("61 * * * *", "minute 61 out of range 0-59"),
    ("* 24 * * *", "hour 24 out of range 0-23"),
    ("* * 0 * *", "day-of-month 0 out of range 1-31"),
    ("* * * 13 *", "month 13 out of range 1-12"),
    ("* * * * 8", "day-of-week 8 out of range 0-7"),
    ("60 * * * * *", "second 60 out of range 0-59"),
    ("* * * *", "expected 5 fields"),
    ("* * * * * * *", "got 7"),
    ("", "empty schedule"),
    ("0 0 * * fri#2", "'#' (nth weekday of the month) is not part of crontab(5)"),
    ("0 0 L * *", "'L' (last day)"),
    ("0 0 15W * *", "'W' (nearest weekday)"),
    ("0 0 ? * *", "'?' is not part of crontab(5)"),
    ("5/10 * * * *", "a step needs '*' or a range"),
    ("*/0 * * * *", "step in '*/0' must be at least 1"),
    ("*/61 * * * *", "larger than the field's range"),
    ("10-5 * * * *", "runs backwards"),
    ("1,,2 * * * *", "empty list item"),
    ("0 0 * foo *", "month value 'foo' is not a number or a name"),
    ("0 0 * * funday", "day-of-week value 'funday'"),
    ("abc * * * *", "minute value 'abc' is not a number in 0-59"),
    ("0 0 30 2 *", "never occurs"),
    ("0 0 31 4,6 *", "never occurs"),
    ("@reboot", "unknown macro"),
    ("@daily extra", "unknown macro"),
    ("@every", "@every needs a duration"),
    ("@every 0s", "whole number of seconds >= 1s"),
    ("@every 1.5s", "whole number of seconds"),
    ("@every soon", "invalid duration"),
]


@pytest.mark.parametrize(("expression", "fragment"), BAD)
def test_invalid_expressions_are_rejected_with_the_reason(expression: str, fragment: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse(expression)
    assert fragment in str(info.value)
    if expression and not expression.startswith("@") and "fields" not in fragment:
        assert repr(expression) in str(info.value)


def test_unknown_time_zone_is_rejected() -> None:
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        parse("* * * * *", "Mars/Olympus")


def test_ten_thousand_next_fires_are_quick() -> None:
    """A sanity bound only; bench/ measures the real figure (well under a second)."""
    schedules = [parse(f"{i % 60} */2 * * 1-5", "America/New_York") for i in range(10_000)]
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    started = time.perf_counter()
    for schedule in schedules:
        schedule.next_after(now)
    assert time.perf_counter() - started < 5
