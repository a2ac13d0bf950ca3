"""Durations as operators write them: `90`, `"90s"`, `"5m"`, `"1h30m"`, `"250ms"`."""

from __future__ import annotations

import math
import re

from taskd.errors import DurationError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_ALLOWED = 'a number of seconds (90) or a string such as "90s", "5m", "1h30m", "250ms", "2d"'


def parse_duration(value: object) -> float:
    """Return `value` as seconds; raise DurationError naming what is allowed."""
    if isinstance(value, bool):
        raise DurationError(f"expected a duration, got {value!r}; use {_ALLOWED}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise DurationError(f"expected a duration, got {type(value).__name__}; use {_ALLOWED}")
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise DurationError(f"duration must be a finite number >= 0, got {value!r}")
    return seconds


def _parse_text(text: str) -> float:
    compact = text.strip().replace(" ", "")
    if not compact:
        raise DurationError(f"empty duration; use {_ALLOWED}")
    try:
        return float(compact)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for match in _PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(compact) or pos == 0:
        raise DurationError(f"invalid duration {text!r}; use {_ALLOWED}")
    return total


AGO = r"([0-9]{1,9}(\.[0-9]{1,6})?(ms|s|m|h|d|w)){1,6}"
"""A duration with units (`2h`, `1h30m`, `90s`): where an instant is asked for, that long ago."""
_AGO = re.compile(AGO)


def parse_ago(text: str) -> float | None:
    """Seconds for a relative time such as `1h` or `1h30m` (units required: a bare number is an
    epoch instant where instants are asked for); None when `text` is not one."""
    return _parse_text(text) if _AGO.fullmatch(text) else None


def format_duration(seconds: float) -> str:
    """Render seconds compactly (`1h30m`, `90ms`), the inverse of parse_duration for display."""
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    rest = seconds - int(seconds) + whole
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(value: object) -> int:
    """Bytes from `1024`, `"512M"`, `"2G"`, `"1.5GiB"`, `"64KB"`: K, M, G and T count in 1024s, as
    systemd's MemoryMax= does."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 512M or 2G, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    found = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"expected a size such as 512M, 2G or 1.5GiB (bytes without a unit), got {value!r}")
    return int(float(found.group(1)) * _SIZE_UNITS[found.group(2).upper()])


def format_size(size: int) -> str:
    """`536870912` -> `512 MiB`; `1610612736` -> `1.5 GiB`."""
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            return f"{size / factor:.4g} {unit}"
    return f"{size} B"
