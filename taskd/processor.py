"""The plugin API: what a processor type declares and what it receives when it runs.

Built-in processors (taskd.processors) and third-party ones (the `taskd.processors` entry point
group) import only this module, the durations and the errors. Nothing here does I/O.
"""

from __future__ import annotations

import os
import string
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from taskd.durations import parse_duration
from taskd.environment import task_environment
from taskd.errors import TaskdError
from taskd.models import RunLimits, Usage
from taskd.redact import NONE, Redactor


def _duration(value: object) -> float:
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]
"""Seconds, accepting `90`, `"90s"`, `"5m"`, `"1h30m"` in YAML."""


class ProcessorOptions(BaseModel):
    """Base of every processor's options: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def notes(self) -> list[str]:
        """What an operator should know about these options that is not an error (`taskd check`
        prints them), e.g. a default that takes effect."""
        return []

    def warnings(self, base_dir: Path) -> list[str]:
        """What looks wrong on this machine now, though it may be right when the step runs (a
        source path that does not exist yet); `taskd check` prints them. Paths resolve against
        `base_dir`."""
        return []


OptionsT = TypeVar("OptionsT", bound=ProcessorOptions)


class StepRetry(ProcessorOptions):
    """Retries of one step inside an attempt (on top of the task's attempt-level retries)."""

    count: int = Field(0, ge=0, le=100, description="retries of this step before it fails")
    backoff: Duration = Field(1.0, description="wait before the first retry, doubling after each")
    max_backoff: Duration = Field(600.0, description="longest wait between two tries")


class StepPolicy(ProcessorOptions):
    """Options every processor accepts beside its own."""

    when: Literal["success", "failure", "always"] | None = Field(
        None, description="run in the final phase, after the chain, on this outcome"
    )
    on_error: Literal["fail", "continue"] = Field("fail", description="continue: a failure does not end the chain")
    timeout: Duration | None = Field(None, description="limit for this step (each try)")
    retry: StepRetry = StepRetry()


COMMON_OPTIONS = frozenset(StepPolicy.model_fields)


class StepFailed(TaskdError):
    """A processor's expected failure: the message is the step's error, no traceback needed.

    `permanent`: trying again cannot help (a missing source, a 4xx answer, a bad option, an exit
    code the task lists in `retry.permanent_exit_codes`), so neither the step nor the run retries."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def is_permanent(exc: BaseException) -> bool:
    """Whether `exc` is a failure that retrying cannot mend."""
    return isinstance(exc, StepFailed) and exc.permanent


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
    environment: Mapping[str, str] = field(default_factory=lambda: task_environment(os.environ))
    """The variables the task's processes start with: never the daemon's own environment."""
    scheduled_at: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    make_logger: Callable[[], Any] = lambda: None
    outcome: dict[str, Any] | None = None
    """In the final phase: {state, error, attempts, duration} of the run."""
    recent_log: Callable[[], list[str]] = lambda: []
    """The run's last log lines (for alerts)."""
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    redactor: Redactor = NONE
    """The run's secrets: what a processor sends elsewhere (an alert) passes through it."""
    permanent_exit_codes: frozenset[int] = frozenset()
    """Exit codes that mean a command failed for good (the task's `retry.permanent_exit_codes`)."""
    usage: Usage = field(default_factory=Usage)
    """What the run's step processes used so far: a processor that starts processes adds theirs."""
    limits: RunLimits = field(default_factory=RunLimits)
    """What the task's processes may not pass (a processor that starts processes applies them)."""
    retry_on_limit: bool = False
    """Whether an attempt that went past its memory limit is retried (`retry.on_limit`)."""

    @property
    def logger(self) -> Any:
        """A structlog logger bound to task_id, run_id and attempt, for the daemon's own log."""
        return self.make_logger()

    def info(self, message: str) -> None:
        self.log.write("log", message)

    def resolve(self, path: str) -> Path:
        """A path option made absolute against the directory of the config file."""
        return (self.base_dir / Path(path).expanduser()).resolve()

    def format(self, template: str, option: str) -> str:
        """Fill `{params.x}`, `{data.x}`, `{task.id}`, `{run.id}`, `{attempt}`, `{now:%Y%m%d}` fields."""
        if "{" not in template and "}" not in template:
            return template
        return SafeFormatter(self).format_option(template, option)

    def render(self, options: OptionsT, exempt: frozenset[str] = frozenset()) -> OptionsT:
        """A copy of `options` with every string option (and strings in lists and string maps)
        filled in by `format`; options named in `exempt` are left as written."""
        updates: dict[str, Any] = {}
        for name, info in type(options).model_fields.items():
            if name in exempt:
                continue
            label = info.alias or name
            value = getattr(options, name)
            if isinstance(value, str):
                updates[name] = self.format(value, label)
            elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
                updates[name] = tuple(self.format(v, label) for v in value)
            elif isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
                updates[name] = {k: self.format(v, f"{label}.{k}") for k, v in value.items()}
        changed = {k: v for k, v in updates.items() if v != getattr(options, k)}
        return options.model_copy(update=changed) if changed else options

    def input_path(self, explicit: str | None, option: str) -> Path:
        """The path a file processor works on: its own option, else what the step before produced."""
        if explicit:
            return self.resolve(explicit)
        produced = self.data.get("output")
        if not produced:
            raise StepFailed(f"no {option!r} given and no earlier step produced an output path", permanent=True)
        return Path(str(produced))


class Processor(Protocol):
    """One built step: called once per attempt, returns data for the steps after it.

    A processor that needs time to stop (a child process given a grace period) may carry a
    `stop_grace_s` attribute: how long taskd waits for it after cancelling it on shutdown.
    """

    async def run(self, ctx: Context) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class ProcessorType:
    """A registered processor type: its name, its options model, a summary and a factory.

    `when_option` names an option of the type that doubles as `when` (send_alert's `condition`);
    `default_when` puts the type in the final phase unless the config says otherwise.
    """

    name: str
    options: type[ProcessorOptions]
    summary: str
    build: Callable[[Any], Processor]
    when_option: str | None = None
    default_when: str | None = None


def describe_types(kinds: Mapping[str, ProcessorType]) -> list[dict[str, Any]]:
    """Every processor type with its summary and options, by name (`GET /processors`, `taskd processors`)."""
    return [
        {"type": name, "summary": kind.summary, "options": describe_options(kind)}
        for name, kind in sorted(kinds.items())
    ]


def describe_options(kind: ProcessorType) -> list[dict[str, Any]]:
    """Each option of `kind` as {name, type, default, required, description}."""
    out = []
    for name, info in kind.options.model_fields.items():
        required = info.is_required()
        out.append(
            {
                "name": info.alias or name,
                "type": _shown_type(info),
                "required": required,
                "default": None if required else info.get_default(call_default_factory=True),
                "description": info.description or "",
            }
        )
    return out


TYPE_NAME = "taskd_type"
"""A field's `json_schema_extra` key naming its type in an operator's words, where the annotation
says less (a URL given as a string or a mapping is validated as a mapping)."""


def _shown_type(info: Any) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get(TYPE_NAME), str):
        return str(extra[TYPE_NAME])
    return "duration" if _is_duration(info.metadata) else _type_name(info.annotation)


_SIMPLE_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _type_name(annotation: Any) -> str:
    """An option's type in an operator's words: `list of strings`, `one of gzip|bzip2|xz`, ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        base = args[0]
        return "duration" if base is float and _is_duration(args[1:]) else _type_name(base)
    if annotation in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[annotation]
    if origin is Literal:
        return "one of " + "|".join(str(value) for value in args)
    if origin in (typing.Union, types.UnionType):
        kinds = [_type_name(arg) for arg in args if arg is not type(None)]
        return " or ".join(kinds) + (" (optional)" if type(None) in args else "")
    if origin in (list, tuple):
        items = [arg for arg in args if arg is not Ellipsis]
        return "list of " + (_plural(_type_name(items[0])) if items else "values")
    if origin is dict:
        return "map of " + (_plural(_type_name(args[1])) if len(args) == 2 else "values")
    if annotation is Any:
        return "any value"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _is_duration(metadata: Sequence[Any]) -> bool:
    return any(getattr(meta, "func", None) is _duration for meta in metadata)


def _plural(name: str) -> str:
    return name if name.endswith(("s", ")")) or " " in name else name + "s"


class SafeFormatter(string.Formatter):
    """str.format restricted to a few names, with no attribute access beyond them."""

    def __init__(self, ctx: Context) -> None:
        self._values: dict[str, Any] = {
            "params": dict(ctx.params),
            "data": ctx.data,
            "task": {"id": ctx.task_id, "name": ctx.task_name},
            "run": {"id": ctx.run_id, "trigger": ctx.trigger},
            "attempt": ctx.attempt,
            "now": _local_now(ctx),
        }
        if ctx.outcome is not None:
            self._values["outcome"] = ctx.outcome

    def format_option(self, template: str, option: str) -> str:
        try:
            return self.format(template)
        except StepFailed as exc:
            raise StepFailed(f"option {option!r}: {exc}", permanent=True) from None
        except (ValueError, IndexError) as exc:
            raise StepFailed(f"option {option!r}: bad template {template!r}: {exc}", permanent=True) from None

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if "[" in field_name:
            raise StepFailed(f"field {{{field_name}}}: item access is not allowed; use {{params.name}}")
        head, *rest = field_name.split(".")
        if head not in self._values:
            known = ", ".join(f"{name}.*" if isinstance(v, Mapping) else name for name, v in self._values.items())
            raise StepFailed(f"unknown field {{{field_name}}}; known fields: {known}")
        value = self._values[head]
        for part in rest:
            if not isinstance(value, Mapping) or part not in value:
                raise StepFailed(f"unknown field {{{field_name}}}")
            value = value[part]
        return value, head


def _local_now(ctx: Context) -> datetime:
    moment = ctx.now()
    try:
        return moment.astimezone(ZoneInfo(ctx.time_zone))
    except (ZoneInfoNotFoundError, ValueError):
        return moment


def describe(exc: BaseException) -> str:
    """An exception as a step error: StepFailed's message, else `Type: message`."""
    if isinstance(exc, StepFailed):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
