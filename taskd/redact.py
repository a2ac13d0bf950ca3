"""Secret values shown as `***`: in run params, errors, log lines, alerts and the daemon's log. Pure.

A secret is a value, not a name: once a run's `secret_params` (or the API token, or a
`${credential:NAME}`) is known, every text taskd shows is searched for it, so a password templated
into a URL or quoted in an error message is masked too, in its URL-encoded forms as well.
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


class Redactor:
    """Masks a fixed set of secret values in text and in JSON-like data."""

    __slots__ = ("_pattern", "values")

    def __init__(self, values: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for value in values:
            if len(value) >= MIN_SECRET_CHARS:
                forms.update((value, quote(value, safe=""), quote(value), quote_plus(value)))
        self.values = frozenset(forms)
        # Longest first, so that a secret containing another is masked whole.
        ordered = sorted(self.values, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def extended(self, values: Iterable[str]) -> Redactor:
        """This redactor with more secret values."""
        more = frozenset(values)
        return self if not more else Redactor(self.values | more)

    def text(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def optional(self, text: str | None) -> str | None:
        return None if text is None else self.text(text)

    def data(self, value: Any) -> Any:
        """`value` with every string in it (keys of mappings excepted) masked."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


NONE = Redactor()


def secret_values(params: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """The values of the params named `names`, as text: a string as it is, anything else as the
    JSON a shell step sees, plus every string inside it."""
    found: list[str] = []
    for name in names:
        if name not in params:
            continue
        value = params[name]
        if isinstance(value, str):
            found.append(value)
            continue
        found.append(json.dumps(value, default=list))
        found.extend(_strings(value))
    return found


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def masked_params(params: Mapping[str, Any], names: Iterable[str], redactor: Redactor = NONE) -> dict[str, Any]:
    """`params` as shown: the secret ones replaced by `***`, secret values inside the others masked."""
    secret = frozenset(names)
    return {k: MASK if k in secret else redactor.data(v) for k, v in params.items()}
