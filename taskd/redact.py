"""Secret values shown as `***`: in run params, errors, log lines, alerts and the daemon's log. Pure.

A secret is a value, not a name: once a run's `secret_params` (or the API token, or a
`${credential:NAME}`) is known, every text taskd shows is searched for it, so a password templated
into a URL or quoted in an error message is masked too: as written, URL-encoded (as a query or a
path quotes it), JSON-escaped and as Python prints it, and each line of a secret of several lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_CHARS = 3
"""Shorter values are masked where they are a secret param's value, but not searched for in text:
masking every `a` or `1` would make every message unreadable."""
MAX_SECRET_VALUES = 64
"""Values searched for per run, at most: each one costs every line written. A secret param holding
more (a list of thousands) is still shown as *** as a param; its values past these are not searched."""
MAX_SECRET_CHARS = 4096
_PATH_SAFE = "/:@!$&'()*+,;="  # what a URL path leaves as it is (RFC 3986 pchar)


def _forms(value: str) -> set[str]:
    """The ways `value` may be written into a text by a step, a URL or an error message."""
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1]}
    for safe in ("", "/", _PATH_SAFE):
        forms.add(quote(value, safe=safe, errors="surrogatepass"))
    forms.add(quote_plus(value, errors="surrogatepass"))
    if "\n" in value:
        forms.update(line.strip() for line in value.splitlines())
    return {form for form in forms if len(form) >= MIN_SECRET_CHARS}


class Redactor:
    """Masks a fixed set of secret values in text and in JSON-like data."""

    __slots__ = ("_pattern", "longest", "values")

    def __init__(self, values: Iterable[str] = ()) -> None:
        # The first ones given win: the config's secrets, then each param's whole value.
        chosen = [v for v in dict.fromkeys(values) if MIN_SECRET_CHARS <= len(v) <= MAX_SECRET_CHARS]
        chosen = chosen[:MAX_SECRET_VALUES]
        self.values = frozenset(form for value in chosen for form in _forms(value))
        # Longest first, so that a secret containing another is masked whole; sorted, so that the
        # same secrets make the same pattern (and the re module's cache finds it compiled).
        ordered = sorted(self.values, key=lambda v: (-len(v), v))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self.longest = len(ordered[0].encode("utf-8", "surrogatepass")) if ordered else 0
        """The longest form, in UTF-8 bytes: text cut into pieces must keep this much together."""

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def optional(self, text: str | None) -> str | None:
        return None if text is None else self.text(text)

    def data(self, value: Any) -> Any:
        """`value` with every string in it (keys of mappings excepted), and every number written
        as a secret, masked."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        if isinstance(value, int | float) and not isinstance(value, bool) and str(value) in self.values:
            return MASK
        return value


NONE = Redactor()


def secret_values(params: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """The values of the params named `names`, as text: a string as it is, anything else as the
    JSON a shell step sees, plus every string and number inside it."""
    found: list[str] = []
    for name in names:
        if name not in params:
            continue
        value = params[name]
        if isinstance(value, str):
            found.append(value)
            continue
        found.append(json.dumps(value, default=list))
        found.extend(_scalars(value))
    return found


def _scalars(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _scalars(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _scalars(item)


def masked_params(params: Mapping[str, Any], names: Iterable[str], redactor: Redactor = NONE) -> dict[str, Any]:
    """`params` as shown: the secret ones replaced by `***`, secret values inside the others masked."""
    secret = frozenset(names)
    return {k: MASK if k in secret else redactor.data(v) for k, v in params.items()}
