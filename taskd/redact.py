"""Secret values shown as `***`: in run params, errors, log lines, alerts and the daemon's log. Pure.

A secret is a value, not a name: once a run's `secret_params` (or the API token, or a
`${credential:NAME}`) is known, every text taskd shows is searched for it, so a password templated
into a URL or quoted in an error message is masked too: as written, URL-encoded (as a query or a
path quotes it), JSON-escaped (once or twice) and as Python prints it, and each line of a secret of
several lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

import ahocorasick

MASK = "***"
MIN_SECRET_CHARS = 3
"""Shorter values are masked where they are a secret param's value, but not searched for in text:
masking every `a` or `1` would make every message unreadable."""
MAX_SECRET_CHARS = 256 * 1024
"""Characters of secret text (each form counted) one redactor searches for, at most: the first
values given win (the configuration's, then a task's secret params', then a start's). A secret list
of thousands is still shown as *** as a param; its items past the budget are not searched for."""
_PATH_SAFE = "/:@!$&'()*+,;="  # what a URL path leaves as it is (RFC 3986 pchar)


def _forms(value: str) -> set[str]:
    """The ways `value` may be written into a text by a step, a URL or an error message."""
    escaped = json.dumps(value)[1:-1]
    forms = {value, escaped, json.dumps(escaped)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1]}
    for safe in ("", "/", _PATH_SAFE):
        forms.add(quote(value, safe=safe, errors="surrogatepass"))
    forms.add(quote_plus(value, errors="surrogatepass"))
    if "\n" in value:
        forms.update(line.strip() for line in value.splitlines())
    return {form for form in forms if len(form) >= MIN_SECRET_CHARS}


class Redactor:
    """Masks a fixed set of secret values in text and in JSON-like data.

    The search is an Aho-Corasick automaton: one pass over the text whatever the number and the
    length of the secrets (a regular expression of alternatives costs their length at every
    position, which secrets sharing long runs turn into minutes)."""

    __slots__ = ("_automaton", "longest", "values")

    def __init__(self, values: Iterable[str] = ()) -> None:
        forms: dict[str, None] = {}
        budget = MAX_SECRET_CHARS
        for value in dict.fromkeys(values):
            if len(value) < MIN_SECRET_CHARS:
                continue
            new = [form for form in _forms(value) if form not in forms]
            cost = sum(map(len, new))
            if cost > budget:
                break
            budget -= cost
            forms.update(dict.fromkeys(new))
        self.values = frozenset(forms)
        self.longest = max(map(len, forms), default=0)
        """The longest form, in characters: text cut into pieces must keep this much together."""
        self._automaton: Any = None
        if forms:
            automaton = ahocorasick.Automaton()
            for form in forms:
                automaton.add_word(form, len(form))
            automaton.make_automaton()
            self._automaton = automaton

    def __bool__(self) -> bool:
        return self._automaton is not None

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where secrets are in `text`: (start, end) pairs, overlapping ones merged, in order."""
        if self._automaton is None or not text:
            return []
        found = sorted((end + 1 - length, end + 1) for end, length in self._automaton.iter(text))
        merged: list[tuple[int, int]] = []
        for start, end in found:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged

    def text(self, text: str) -> str:
        spans = self.spans(text)
        if not spans:
            return text
        out, at = [], 0
        for start, end in spans:
            out.append(text[at:start])
            out.append(MASK)
            at = end
        out.append(text[at:])
        return "".join(out)

    def safe_cut(self, text: str) -> int:
        """Where `text`, the start of a longer text, may be cut so that no secret is cut in two:
        before the last `longest - 1` characters (a secret may begin there and go on in what
        follows), and never inside a secret found."""
        cut = max(0, len(text) - max(self.longest - 1, 0))
        for start, end in self.spans(text):
            if start < cut < end:
                return start
        return cut

    def data(self, value: Any) -> Any:
        """`value` with every string in it (keys of mappings excepted), and every number written
        as a secret, masked."""
        if self._automaton is None:
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
