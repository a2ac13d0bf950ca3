"""Schedule expressions -> fire instants, with crontab(5) (Vixie cron) semantics.

Pure: nothing here reads the clock or does I/O. Callers pass `after` and get the next fire
instants strictly after it, as aware datetimes carrying the fixed UTC offset that the schedule's
zone has at that instant (e.g. ``-04:00``). A fixed offset, not the ZoneInfo itself, because Python
compares two datetimes sharing one tzinfo by wall time, ignoring ``fold``, which would misorder
the two passes through a repeated fall-back hour.

Accepted expressions:

* 5 fields ``minute hour day-of-month month day-of-week`` and 6 fields with a leading
  ``second`` field. Lists (``1,15``), ranges (``1-5``), steps on ``*`` or a range (``*/15``,
  ``1-10/3``), month and weekday names (``jan``, ``mon-fri``), Sunday as 0 or 7.
* When day-of-month and day-of-week are both restricted, a day matches when *either* matches.
  As in Vixie cron, a field is "unrestricted" when it starts with ``*`` (so ``*/2`` counts as
  unrestricted for that rule).
* ``@yearly @annually @monthly @weekly @daily @midnight @hourly`` and ``@every <duration>``.
  ``@every`` fires at whole multiples of the interval since 1970-01-01T00:00Z, so its instants do
  not depend on when the daemon started.

Daylight-saving time, as Vixie cron handles it: a schedule is *fixed-time* when neither its
minute nor its hour field starts with ``*``, and *wildcard* otherwise.

* Spring forward: wall times in the gap do not exist. A fixed-time schedule fires once, at the
  first instant after the gap; a wildcard schedule simply has no fires in the gap.
* Fall back: wall times in the repeated hour occur twice. A fixed-time schedule fires once, on
  the first occurrence; a wildcard schedule fires on both.
"""

from __future__ import annotations

import bisect
import calendar
import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from taskd.durations import parse_duration
from taskd.errors import DurationError, ScheduleError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_NAMES = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_SECOND = timedelta(seconds=1)
# No schedule that passed parsing needs more than 28 years to recur (the calendar's full
# cycle); the guard only stops a search that could otherwise not end.
_SEARCH_YEARS = 30


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] = field(default_factory=dict)


_SECOND_F = _Field("second", 0, 59)
_MINUTE_F = _Field("minute", 0, 59)
_HOUR_F = _Field("hour", 0, 23)
_DOM_F = _Field("day-of-month", 1, 31)
_MONTH_F = _Field("month", 1, 12, _MONTH_NAMES)
_DOW_F = _Field("day-of-week", 0, 7, _DAY_NAMES)

_UNSUPPORTED = {
    "#": "'#' (nth weekday of the month) is not part of crontab(5)",
    "L": "'L' (last day) is not part of crontab(5)",
    "W": "'W' (nearest weekday) is not part of crontab(5)",
    "?": "'?' is not part of crontab(5); use '*'",
    "H": "'H' (hashed value) is not part of crontab(5)",
}


def load_zone(name: str) -> ZoneInfo:
    """Return the IANA time zone `name`, or raise ScheduleError saying it is unknown."""
    if not name or name != name.strip() or name.startswith(("/", ".")):
        raise ScheduleError(f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin") from None


class Schedule(ABC):
    """A parsed schedule: answers "when next, strictly after this instant?"."""

    expression: str
    tz: tzinfo

    @abstractmethod
    def next_after(self, after: datetime) -> datetime | None:
        """The first fire instant strictly after `after` (aware), or None if there is none."""

    def next_n(self, after: datetime, count: int) -> list[datetime]:
        """The next `count` fire instants strictly after `after`."""
        out: list[datetime] = []
        current: datetime | None = after
        while len(out) < count and current is not None:
            current = self.next_after(current)
            if current is not None:
                out.append(current)
        return out


@dataclass(frozen=True, eq=False)
class ShiftedSchedule(Schedule):
    """Another schedule's instants, each moved later by a fixed offset (a task's `spread`)."""

    base: Schedule
    offset_s: int

    @property
    def expression(self) -> str:  # type: ignore[override]  # a view of the base's
        return self.base.expression

    @property
    def tz(self) -> tzinfo:  # type: ignore[override]
        return self.base.tz

    def next_after(self, after: datetime) -> datetime | None:
        _require_aware(after)
        shift = timedelta(seconds=self.offset_s)
        base = self.base.next_after(after - shift)
        return None if base is None else _fixed_offset((base + shift).astimezone(self.tz))


def spread_offset(task_id: str, spread_s: float) -> int:
    """A task's offset in whole seconds in [0, spread_s): a digest of its id, so the same on every
    node and after every restart (Jenkins' `H`)."""
    span = int(spread_s)
    if span <= 0:
        return 0
    return int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "big") % span


def shifted(schedule: Schedule, offset_s: int) -> Schedule:
    """`schedule` moved later by `offset_s` seconds (itself when the offset is 0)."""
    return ShiftedSchedule(schedule, offset_s) if offset_s else schedule


def offset_of(schedule: Schedule) -> int:
    """How many seconds `schedule`'s instants are shifted by (0 for most)."""
    return schedule.offset_s if isinstance(schedule, ShiftedSchedule) else 0


@dataclass(frozen=True, eq=False)
class IntervalSchedule(Schedule):
    """`@every <duration>`: instants that are whole multiples of the interval since the epoch."""

    expression: str
    interval_s: int
    tz: tzinfo = UTC

    def next_after(self, after: datetime) -> datetime | None:
        _require_aware(after)
        ts = after.timestamp()
        step = self.interval_s
        nxt = (int(ts // step) + 1) * step
        return _fixed_offset(datetime.fromtimestamp(nxt, tz=self.tz))


@dataclass(frozen=True, eq=False)
class CronSchedule(Schedule):
    """A cron expression evaluated on the wall clock of `tz`."""

    expression: str
    tz: tzinfo
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int]
    months: tuple[int, ...]
    days_of_week: frozenset[int]
    dom_star: bool
    dow_star: bool
    fixed_time: bool

    def next_after(self, after: datetime) -> datetime | None:
        _require_aware(after)
        local = after.astimezone(self.tz)
        n0 = local.replace(tzinfo=None, microsecond=0)
        start = n0 + _SECOND
        before, later = self._offsets(n0)
        if before <= later:
            return self._scan(start)
        # `after` lies in a repeated (fall-back) hour: [repeat_start, repeat_end) on the wall
        # clock happens twice, first with offset `before`, then with offset `later`.
        first_of_n0 = n0 - before
        transition = self._transition(first_of_n0, first_of_n0 + (before - later), later)
        repeat_end = transition + before
        repeat_start = transition + later
        candidate = self._match_from(start)
        if candidate is None:
            return None
        if local.fold == 0:
            if candidate < repeat_end:
                return self._instant(candidate - before)
            if not self.fixed_time:
                again = self._match_from(repeat_start)
                if again is not None and again < repeat_end:
                    return self._instant(again - later)
            return self._scan(candidate)
        if candidate < repeat_end:
            if not self.fixed_time:
                return self._instant(candidate - later)
            # A fixed-time schedule already fired on the first pass through this hour.
            return self._scan(repeat_end)
        return self._scan(candidate)

    def _scan(self, start: datetime) -> datetime | None:
        """First fire at or after wall time `start`, where `start` is not in a repeated hour
        that has already begun."""
        candidate = self._match_from(start)
        while candidate is not None:
            before, later = self._offsets(candidate)
            if before >= later:
                # Regular time, or the first occurrence of a repeated wall time.
                return self._instant(candidate - before)
            # A wall time skipped by spring-forward.
            transition = self._transition(candidate - before - (later - before), candidate - before, later)
            if self.fixed_time:
                return self._instant(transition)
            candidate = self._match_from(transition + later)
        return None

    def _offsets(self, wall: datetime) -> tuple[timedelta, timedelta]:
        first = wall.replace(tzinfo=self.tz, fold=0).utcoffset()
        second = wall.replace(tzinfo=self.tz, fold=1).utcoffset()
        assert first is not None and second is not None
        return first, second

    def _transition(self, low: datetime, high: datetime, new_offset: timedelta) -> datetime:
        """The first instant in (low, high] (naive UTC) whose UTC offset is `new_offset`."""
        lo = int(low.replace(tzinfo=UTC).timestamp())
        hi = int(high.replace(tzinfo=UTC).timestamp())
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, tz=self.tz).utcoffset() == new_offset:
                hi = mid
            else:
                lo = mid
        return datetime.fromtimestamp(hi, tz=UTC).replace(tzinfo=None)

    def _instant(self, naive_utc: datetime) -> datetime:
        return _fixed_offset(naive_utc.replace(tzinfo=UTC).astimezone(self.tz))

    def _day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days_of_month
        dow = (t.weekday() + 1) % 7 in self.days_of_week
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow

    def _match_from(self, t: datetime) -> datetime | None:
        """The first wall time >= `t` (naive, whole seconds) matching every field."""
        limit = t.year + _SEARCH_YEARS
        months, hours, minutes, seconds = self.months, self.hours, self.minutes, self.seconds
        while t.year <= limit:
            if t.month not in months:
                i = bisect.bisect_left(months, t.month)
                t = datetime(t.year + 1, months[0], 1) if i == len(months) else datetime(t.year, months[i], 1)
                continue
            if not self._day_matches(t):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                continue
            if t.hour not in hours:
                i = bisect.bisect_left(hours, t.hour)
                if i == len(hours):
                    t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                else:
                    t = datetime(t.year, t.month, t.day, hours[i])
                continue
            if t.minute not in minutes:
                i = bisect.bisect_left(minutes, t.minute)
                if i == len(minutes):
                    t = datetime(t.year, t.month, t.day, t.hour) + timedelta(hours=1)
                else:
                    t = datetime(t.year, t.month, t.day, t.hour, minutes[i])
                continue
            if t.second not in seconds:
                i = bisect.bisect_left(seconds, t.second)
                if i == len(seconds):
                    t = datetime(t.year, t.month, t.day, t.hour, t.minute) + timedelta(minutes=1)
                else:
                    t = t.replace(second=seconds[i])
                continue
            return t
        return None


_OFFSETS: dict[timedelta, timezone] = {}


def _fixed_offset(moment: datetime) -> datetime:
    """`moment` re-labelled with a fixed-offset tzinfo (see the module docstring for why)."""
    offset = moment.utcoffset()
    assert offset is not None
    zone = _OFFSETS.get(offset)
    if zone is None:
        zone = _OFFSETS[offset] = UTC if not offset else timezone(offset)
    return moment.replace(tzinfo=zone, fold=0)


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("schedule instants must be timezone-aware datetimes")


def parse(expression: str, tz: tzinfo | str = "UTC") -> Schedule:
    """Parse a schedule expression for time zone `tz` (a tzinfo or an IANA name)."""
    zone = load_zone(tz) if isinstance(tz, str) else tz
    if not isinstance(expression, str):
        raise ScheduleError(f"a schedule must be a string, got {type(expression).__name__}")
    text = " ".join(expression.split())
    if not text:
        raise ScheduleError("empty schedule expression")
    if text.startswith("@"):
        return _parse_macro(expression, text, zone)
    fields = text.split(" ")
    if len(fields) == 5:
        fields.insert(0, "0")
    elif len(fields) != 6:
        raise ScheduleError(
            f"invalid cron expression {expression!r}: expected 5 fields (minute hour day-of-month "
            f"month day-of-week) or 6 with a leading second field, got {len(fields)}"
        )
    try:
        return _build(expression, zone, fields)
    except ScheduleError as exc:
        raise ScheduleError(f"invalid cron expression {expression!r}: {exc}") from None


def _parse_macro(expression: str, text: str, zone: tzinfo) -> Schedule:
    word, _, rest = text.partition(" ")
    word = word.lower()
    if word == "@every":
        if not rest:
            raise ScheduleError(f"invalid schedule {expression!r}: @every needs a duration, e.g. '@every 5m'")
        try:
            seconds = parse_duration(rest)
        except DurationError as exc:
            raise ScheduleError(f"invalid schedule {expression!r}: {exc}") from None
        if seconds < 1 or seconds != int(seconds):
            raise ScheduleError(f"invalid schedule {expression!r}: @every needs a whole number of seconds >= 1s")
        return IntervalSchedule(expression, int(seconds), zone)
    if word in MACROS and not rest:
        return _build(expression, zone, ["0", *MACROS[word].split(" ")])
    allowed = " ".join([*MACROS, "@every <duration>"])
    raise ScheduleError(f"invalid schedule {expression!r}: unknown macro; allowed: {allowed}")


def _build(expression: str, zone: tzinfo, fields: list[str]) -> CronSchedule:
    seconds, _ = _parse_field(fields[0], _SECOND_F)
    minutes, minute_star = _parse_field(fields[1], _MINUTE_F)
    hours, hour_star = _parse_field(fields[2], _HOUR_F)
    doms, dom_star = _parse_field(fields[3], _DOM_F)
    months, _ = _parse_field(fields[4], _MONTH_F)
    dows, dow_star = _parse_field(fields[5], _DOW_F)
    dows = {0 if d == 7 else d for d in dows}
    if dow_star and not dom_star:
        longest = max(calendar.monthrange(2000, m)[1] for m in months)  # 2000: a leap year
        if min(doms) > longest:
            names = ",".join(calendar.month_abbr[m].lower() for m in sorted(months))
            raise ScheduleError(f"day-of-month {fields[3]} never occurs in month {names}; it would never fire")
    return CronSchedule(
        expression=expression,
        tz=zone,
        seconds=tuple(sorted(seconds)),
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days_of_month=frozenset(doms),
        months=tuple(sorted(months)),
        days_of_week=frozenset(dows),
        dom_star=dom_star,
        dow_star=dow_star,
        fixed_time=not (minute_star or hour_star),
    )


_NUMBER = re.compile(r"\d+")


def _parse_field(text: str, spec: _Field) -> tuple[set[int], bool]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ScheduleError(f"{spec.name} field {text!r} has an empty list item")
        values.update(_parse_item(item, spec))
    return values, text.startswith("*")


def _parse_item(item: str, spec: _Field) -> range:
    for marker, why in _UNSUPPORTED.items():
        if marker in item.upper() and not (marker in "LWH" and _has_name(item, spec)):
            raise ScheduleError(f"{spec.name} value {item!r}: {why}")
    base, slash, step_text = item.partition("/")
    if base == "*":
        low, high = spec.low, spec.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(first, spec), _value(last, spec)
        if low > high:
            raise ScheduleError(f"{spec.name} range {base!r} runs backwards ({low} > {high})")
    else:
        low = high = _value(base, spec)
        if slash:
            raise ScheduleError(
                f"{spec.name} value {item!r}: a step needs '*' or a range, e.g. '*/{step_text}' "
                f"or '{base}-{spec.high}/{step_text}'"
            )
    step = 1
    if slash:
        if not _NUMBER.fullmatch(step_text):
            raise ScheduleError(f"{spec.name} step {step_text!r} in {item!r} is not a whole number")
        step = int(step_text)
        if step == 0:
            raise ScheduleError(f"{spec.name} step in {item!r} must be at least 1")
        if step > spec.high - spec.low + 1:
            raise ScheduleError(
                f"{spec.name} step {step} in {item!r} is larger than the field's range {spec.low}-{spec.high}"
            )
    return range(low, high + 1, step)


def _has_name(item: str, spec: _Field) -> bool:
    words = re.findall(r"[a-zA-Z]+", item)
    return bool(words) and all(w.lower() in spec.names for w in words)


def _value(text: str, spec: _Field) -> int:
    if _NUMBER.fullmatch(text):
        number = int(text)
        if not spec.low <= number <= spec.high:
            raise ScheduleError(f"{spec.name} {number} out of range {spec.low}-{spec.high}")
        return number
    if text.lower() in spec.names:
        return spec.names[text.lower()]
    if spec.names:
        allowed = ", ".join(spec.names)
        raise ScheduleError(f"{spec.name} value {text!r} is not a number or a name ({allowed})")
    raise ScheduleError(f"{spec.name} value {text!r} is not a number in {spec.low}-{spec.high}")
