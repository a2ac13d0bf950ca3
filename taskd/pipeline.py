"""Processor types: what a pipeline step is called, which options it takes, and the registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from taskd.durations import parse_duration


def _duration(value: object) -> float:
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]
"""Seconds, accepting `90`, `"90s"`, `"5m"`, `"1h30m"` in YAML."""


class ProcessorOptions(BaseModel):
    """Base of every processor's options: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ProcessorType:
    """A registered processor type: its name, its options model and a one-line summary."""

    name: str
    options: type[ProcessorOptions]
    summary: str


def builtin_types() -> Mapping[str, ProcessorType]:
    """The processor types that ship with taskd, by name."""
    from taskd.processors import BUILTINS

    return BUILTINS


def describe_options(kind: ProcessorType) -> list[dict[str, Any]]:
    """Each option of `kind` as {name, type, default, required, description}."""
    out = []
    for name, info in kind.options.model_fields.items():
        out.append(
            {
                "name": name,
                "type": _type_name(info.annotation),
                "required": info.is_required(),
                "default": None if info.is_required() else info.get_default(call_default_factory=True),
                "description": info.description or "",
            }
        )
    return out


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    return text or str(annotation).replace("typing.", "")
