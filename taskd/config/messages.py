"""Turning validation errors into operator sentences: what is wrong, and what is allowed."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel

from taskd.yamldoc import KeyPath


def describe_error(error: Mapping[str, Any], model: type[BaseModel], loc: KeyPath) -> str:
    """A pydantic error as an operator-facing sentence: what is wrong and what is allowed."""
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    got = describe_value(value)
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        return with_suggestion(f"unknown key {loc[-1]!r}", str(loc[-1]), allowed) + (
            f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        )
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {got}"
    if kind in ("string_type",):
        hint = (
            " (YAML reads unquoted yes/no/on/off/true/false as booleans: quote it)" if isinstance(value, bool) else ""
        )
        return f"expected a string, got {got}{hint}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {got}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping (key: value), got {got}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        limit = next(iter(ctx.values()), "?")
        return f"must be {bound} {limit}, got {got}"
    if kind == "string_pattern_mismatch":
        return f"{got} is not a valid identifier: use letters, digits, '_', '.', '-' (starting with a letter or digit)"
    if kind in ("too_short", "string_too_short"):
        return f"must not be empty, got {got}"
    return f"{error['msg']} (got {got})"


def describe_value(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return repr(value)
    return f"{type(value).__name__} {value!r}"


def _allowed_keys(model: type[BaseModel], path: KeyPath) -> list[str]:
    current: Any = model
    for part in path:
        current = _inner_model(current, part)
        if current is None:
            return []
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    return [info.alias or name for name, info in current.model_fields.items()]


def _inner_model(current: Any, part: str | int) -> Any:
    if isinstance(part, str):
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        return _unwrap(info.annotation)
    return _unwrap(current)


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated/list/tuple down to a model class, if there is one."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (list, tuple, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg)
            if isinstance(found, type) and issubclass(found, BaseModel):
                return found
        return None
    return annotation


def with_suggestion(message: str, word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"{message} (did you mean {close[0]!r}?)" if close else message


_ZONES: list[str] = []


def all_zones() -> list[str]:
    if not _ZONES:
        import zoneinfo

        _ZONES.extend(sorted(zoneinfo.available_timezones()))
    return _ZONES
