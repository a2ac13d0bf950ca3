"""Processors and pipelines: the options models, the registry, the run context and chain execution.

Pure: nothing here does I/O. Processors (in taskd.processors) do their I/O when the runner calls
them; the chain reports each step through callbacks so the runner can record it.
"""

from __future__ import annotations

import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict

from taskd.durations import parse_duration
from taskd.errors import TaskdError


def _duration(value: object) -> float:
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]
"""Seconds, accepting `90`, `"90s"`, `"5m"`, `"1h30m"` in YAML."""


class ProcessorOptions(BaseModel):
    """Base of every processor's options: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StepFailed(TaskdError):
    """A processor's expected failure: the message is the step's error, no traceback needed."""


class RunLog(Protocol):
    """Where a run's log lines go."""

    def write(self, stream: str, text: str) -> None: ...


@dataclass
class Context:
    """What a processor gets: who is running, with which params, and what earlier steps returned."""

    task_id: str
    task_name: str
    run_id: str
    attempt: int
    trigger: str
    params: Mapping[str, Any]
    log: RunLog
    base_dir: Path
    time_zone: str
    scheduled_at: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    logger: Any = None
    """A structlog logger bound to task_id, run_id and attempt, for the daemon's own log."""

    def info(self, message: str) -> None:
        self.log.write("log", message)

    def resolve(self, path: str) -> Path:
        """A path option made absolute against the directory of the config file."""
        return (self.base_dir / Path(path).expanduser()).resolve()

    def format(self, template: str, option: str) -> str:
        """Fill `{params.x}`, `{data.x}`, `{task.id}`, `{run.id}`, `{attempt}` fields of a template."""
        return SafeFormatter(self).format_option(template, option)


class Processor(Protocol):
    """One built step: called once per attempt, returns data for the steps after it."""

    async def run(self, ctx: Context) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class ProcessorType:
    """A registered processor type: its name, its options model, a summary and a factory."""

    name: str
    options: type[ProcessorOptions]
    summary: str
    build: Callable[[Any], Processor]


def builtin_types() -> Mapping[str, ProcessorType]:
    """The processor types that ship with taskd, by name."""
    from taskd.processors import BUILTINS

    return BUILTINS


def describe_options(kind: ProcessorType) -> list[dict[str, Any]]:
    """Each option of `kind` as {name, type, default, required, description}."""
    out = []
    for name, info in kind.options.model_fields.items():
        required = info.is_required()
        out.append(
            {
                "name": info.alias or name,
                "type": _type_name(info.annotation),
                "required": required,
                "default": None if required else info.get_default(call_default_factory=True),
                "description": info.description or "",
            }
        )
    return out


def _type_name(annotation: Any) -> str:
    if getattr(annotation, "__args__", None) is None and hasattr(annotation, "__name__"):
        return str(annotation.__name__)
    return str(annotation).replace("typing.", "").replace("taskd.pipeline.", "")


class SafeFormatter(string.Formatter):
    """str.format restricted to a few names, with no attribute access beyond them."""

    def __init__(self, ctx: Context) -> None:
        self._values: dict[str, Any] = {
            "params": dict(ctx.params),
            "data": ctx.data,
            "task": {"id": ctx.task_id, "name": ctx.task_name},
            "run": {"id": ctx.run_id, "trigger": ctx.trigger},
            "attempt": ctx.attempt,
        }

    def format_option(self, template: str, option: str) -> str:
        try:
            return self.format(template)
        except StepFailed as exc:
            raise StepFailed(f"option {option!r}: {exc}") from None
        except (ValueError, IndexError) as exc:
            raise StepFailed(f"option {option!r}: bad template {template!r}: {exc}") from None

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if "[" in field_name:
            raise StepFailed(f"field {{{field_name}}}: item access is not allowed; use {{params.name}}")
        head, *rest = field_name.split(".")
        if head not in self._values:
            raise StepFailed(f"unknown field {{{field_name}}}; use params.*, data.*, task.id, run.id or attempt")
        value = self._values[head]
        for part in rest:
            if not isinstance(value, Mapping) or part not in value:
                raise StepFailed(f"unknown field {{{field_name}}}")
            value = value[part]
        return value, head


StepHook = Callable[[int, str], None]
StepEndHook = Callable[[int, str, BaseException | None], None]


async def run_chain(
    steps: Sequence[tuple[str, Processor]],
    ctx: Context,
    on_start: StepHook,
    on_end: StepEndHook,
) -> None:
    """Run processors in order; each returned mapping is merged into ctx.data for the next.

    The first exception ends the chain and propagates (cancellation included), after on_end
    has recorded it.
    """
    for index, (name, processor) in enumerate(steps):
        on_start(index, name)
        try:
            result: Awaitable[Mapping[str, Any] | None] = processor.run(ctx)
            produced = await result
        except BaseException as exc:
            on_end(index, name, exc)
            raise
        if produced:
            ctx.data.update(produced)
        on_end(index, name, None)
