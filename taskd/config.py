"""taskd.yml -> validated, immutable config objects, with errors that name file, line and key.

The pure part (`parse_document`, `build_config`) takes texts and an environment mapping;
`load_config` at the bottom is the thin edge that reads the main file and its includes.
"""

from __future__ import annotations

import difflib
import functools
import glob
import hashlib
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from taskd import schedule as schedules
from taskd.errors import ConfigError, ScheduleError
from taskd.pipeline import (
    COMMON_OPTIONS,
    Duration,
    ProcessorOptions,
    ProcessorType,
    StepPolicy,
    builtin_types,
    plugin_errors,
)
from taskd.yamldoc import Document, KeyPath, parse_document

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


@functools.lru_cache(maxsize=4096)
def _parse_schedule(expression: str, zone: str) -> schedules.Schedule:
    """Schedules are immutable: tasks with the same expression and zone share one."""
    return schedules.parse(expression, zone)


def _zone_name(value: str) -> str:
    try:
        schedules.load_zone(value)
    except ScheduleError as exc:
        raise ValueError(_with_suggestion(str(exc), value, _all_zones())) from None
    return value


def _cron(value: str) -> str:
    try:
        _parse_schedule(value, "UTC")
    except ScheduleError as exc:
        raise ValueError(str(exc)) from None
    return value


def _empty_is_none(value: object) -> object:
    return None if value == "" else value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Turn frozen params (mapping proxies, tuples) back into plain JSON-ready dicts and lists."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


ZoneName = Annotated[StrictStr, AfterValidator(_zone_name)]
Identifier = Annotated[StrictStr, Field(pattern=_ID)]
Params = Annotated[dict[StrictStr, Any], AfterValidator(_freeze)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSection(_Section):
    """The seed-compatible `task:` section: defaults for every task and the global slot limit."""

    time_zone: ZoneName = Field("UTC", description="IANA time zone used by every schedule by default")
    max_concurrent_tasks: StrictInt = Field(100, ge=1, le=100_000, description="runs allowed in `running` at once")
    shutdown_timeout: Duration = Field(30.0, description="on SIGTERM, how long running runs may finish")


class ApiSection(_Section):
    """The REST API listener and its protection."""

    listen: StrictStr = Field("127.0.0.1:8080", description="host:port, [v6]:port or unix:/path")
    token: Annotated[StrictStr | None, BeforeValidator(_empty_is_none)] = Field(
        None, description="bearer token required on every request when set"
    )
    insecure: StrictBool = Field(False, description="allow a non-loopback listen address without a token")
    max_body_bytes: StrictInt = Field(1_048_576, ge=1024, le=64 * 1_048_576, description="request body cap")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value


def parse_listen(value: str) -> tuple[str, int] | str:
    """`host:port` -> (host, port); `unix:/path` -> the path. Raises ValueError when malformed."""
    if value.startswith("unix:"):
        path = value[len("unix:") :]
        if not path:
            raise ValueError("unix: needs a socket path, e.g. unix:/run/taskd/api.sock")
        return path
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen must be host:port (port 0-65535) or unix:/path, got {value!r}")
    return host, int(port_text)


class Retention(_Section):
    """How much history the store keeps."""

    days: StrictInt = Field(30, ge=0, description="delete runs older than this many days (0 keeps all)")
    max_runs_per_task: StrictInt = Field(1000, ge=0, description="keep at most this many runs per task (0: no cap)")


class StoreSection(_Section):
    """Where run history lives."""

    path: StrictStr = Field("./var/taskd.db", min_length=1, description="SQLite file, relative to the config file")
    retention: Retention = Retention()


class LogSection(_Section):
    """Daemon log output."""

    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"
    format: Annotated[Literal["auto", "json", "console"], BeforeValidator(_lower)] = Field(
        "auto", description="auto: console on a TTY, JSON lines otherwise"
    )


class RetryPolicy(_Section):
    """Attempt-level retries: wait `backoff * 2**k`, capped at `max_backoff`, optionally jittered."""

    count: StrictInt = Field(0, ge=0, le=1000, description="retries after the first attempt")
    backoff: Duration = Field(10.0, description="wait before the first retry")
    max_backoff: Duration = Field(600.0, description="longest wait between attempts")
    jitter: StrictBool = Field(False, description="full jitter: wait a random time up to the computed backoff")


class TaskConfig(_Section):
    """One task as defined in YAML."""

    id: Identifier
    name: StrictStr | None = None
    enabled: StrictBool = True
    schedule: Annotated[StrictStr, AfterValidator(_cron)] | None = Field(
        None, description="cron expression, macro or @every; omit for a manual-only task"
    )
    pipeline: StrictStr
    timeout: Duration | None = Field(None, description="limit for each attempt; none when omitted")
    retry_count: StrictInt | None = Field(None, ge=0, le=1000, description="shorthand for retry: {count: N}")
    retry: RetryPolicy = RetryPolicy()
    concurrency: Literal["forbid", "allow", "replace", "queue"] = "forbid"
    misfire: Literal["skip", "run_once"] = "skip"
    priority: StrictInt = Field(0, ge=-1_000_000, le=1_000_000)
    time_zone: ZoneName | None = None
    params: Params = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _fold_retry_count(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("retry_count") is None:
            return data
        count = data["retry_count"]
        retry = data.get("retry")
        if isinstance(retry, dict) and "count" in retry and retry["count"] != count:
            raise ValueError(f"retry_count ({count}) and retry.count ({retry['count']}) disagree; give only one")
        if retry is None:
            return {**data, "retry": {"count": count}}
        if isinstance(retry, dict):
            return {**data, "retry": {**retry, "count": count}}
        return data

    @field_serializer("params")
    def _plain_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return thaw(params)  # type: ignore[no-any-return]

    @property
    def display_name(self) -> str:
        return self.name or self.id


class PipelineSpec(_Section):
    """A pipeline as written: a name and a list of `{type: options}` single-key maps."""

    name: Identifier
    description: StrictStr | None = None
    processors: list[Any] = Field(min_length=1)


class _MainFile(_Section):
    # tasks and pipelines are validated item by item (see build_config), so that one bad item
    # does not hide the problems of the others.
    task: TaskSection = TaskSection()
    api: ApiSection = ApiSection()
    store: StoreSection = StoreSection()
    log: LogSection = LogSection()
    include: list[StrictStr] = Field(default_factory=list)
    tasks: list[Any] = Field(default_factory=list)
    pipelines: list[Any] = Field(default_factory=list)


class _IncludedFile(_Section):
    tasks: list[Any] = Field(default_factory=list)
    pipelines: list[Any] = Field(default_factory=list)


@dataclass(frozen=True)
class Source:
    """Where something was defined: file and 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class ProcessorConfig:
    """One validated pipeline step: its type's options and the options every step has."""

    type: str
    options: ProcessorOptions
    source: Source
    policy: StepPolicy = field(default_factory=StepPolicy)


@dataclass(frozen=True)
class PipelineConfig:
    """A validated pipeline. Relative paths in its options resolve against `base_dir`, the
    directory of the file that defines it."""

    name: str
    processors: tuple[ProcessorConfig, ...]
    source: Source
    base_dir: Path
    description: str | None = None

    @functools.cached_property
    def digest(self) -> str:
        """A digest of the steps, part of every using task's definition hash."""
        steps = [
            {
                "type": p.type,
                "options": p.options.model_dump(mode="json", by_alias=True),
                "policy": p.policy.model_dump(mode="json"),
            }
            for p in self.processors
        ]
        return hashlib.sha256(json.dumps(steps, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration. Paths in it are resolved against the main file."""

    path: Path
    task: TaskSection
    api: ApiSection
    store: StoreSection
    log: LogSection
    tasks: tuple[TaskConfig, ...]
    pipelines: Mapping[str, PipelineConfig]
    task_sources: Mapping[str, Source] = field(default_factory=dict)
    files: tuple[Path, ...] = ()

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def store_path(self) -> Path:
        return self.resolve(self.store.path)

    def resolve(self, path: str) -> Path:
        """A config path made absolute against the directory of the main config file."""
        return (self.base_dir / Path(path).expanduser()).resolve()

    def find_task(self, task_id: str) -> TaskConfig | None:
        return next((t for t in self.tasks if t.id == task_id), None)

    def zone_for(self, task: TaskConfig) -> str:
        return task.time_zone or self.task.time_zone

    def schedule_for(self, task: TaskConfig) -> schedules.Schedule | None:
        """The parsed schedule of `task` in its effective time zone (None for manual-only tasks)."""
        if task.schedule is None:
            return None
        return _parse_schedule(task.schedule, self.zone_for(task))

    def definition_hash(self, task: TaskConfig) -> str:
        """A digest of the task's definition and its pipeline's, to tell when YAML changed."""
        digest = hashlib.sha256(task.model_dump_json().encode())  # fields in their declared order
        digest.update(self.pipelines[task.pipeline].digest.encode())
        digest.update(self.zone_for(task).encode())
        return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Validation


def _validate(doc: Document, model: type[BaseModel], data: Any, prefix: KeyPath = ()) -> Any:
    """`model` validated from `data`, or None with every error recorded on `doc` under `prefix`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            doc.problem((*prefix, *loc), describe_error(error, model, loc))
        return None


def describe_error(error: Mapping[str, Any], model: type[BaseModel], loc: KeyPath) -> str:
    """A pydantic error as an operator-facing sentence: what is wrong and what is allowed."""
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    got = _describe_value(value)
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        return _with_suggestion(f"unknown key {loc[-1]!r}", str(loc[-1]), allowed) + (
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


def _describe_value(value: Any) -> str:
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


def _with_suggestion(message: str, word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"{message} (did you mean {close[0]!r}?)" if close else message


_ZONES: list[str] = []


def _all_zones() -> list[str]:
    if not _ZONES:
        import zoneinfo

        _ZONES.extend(sorted(zoneinfo.available_timezones()))
    return _ZONES


def _build_pipeline(
    spec: PipelineSpec, index: int, doc: Document, kinds: Mapping[str, ProcessorType]
) -> PipelineConfig | None:
    """Validate each `{type: options}` step against its processor type's options model."""
    steps: list[ProcessorConfig] = []
    ok = True
    base: KeyPath = ("pipelines", index, "processors")
    for j, entry in enumerate(spec.processors):
        path = (*base, j)
        if not isinstance(entry, dict) or len(entry) != 1:
            doc.problem(path, "each processor is a single-key mapping such as '- shell: {command: ...}'")
            ok = False
            continue
        ((name, options),) = entry.items()
        kind = kinds.get(name)
        if kind is None:
            available = sorted(kinds)
            broken = plugin_errors().get(name)
            doc.problem(
                (*path, name),
                _with_suggestion(f"unknown processor type {name!r}", name, available)
                + f"; available: {', '.join(available)}"
                + (f" (the plugin {name!r} failed to load: {broken})" if broken else ""),
            )
            ok = False
            continue
        if options is None:
            options = {}
        if not isinstance(options, dict):
            doc.problem((*path, name), f"options of {name!r} must be a mapping, got {_describe_value(options)}")
            ok = False
            continue
        own = set(kind.options.model_fields) | {f.alias for f in kind.options.model_fields.values() if f.alias}
        common = {k: v for k, v in options.items() if k in COMMON_OPTIONS and k not in own}
        specific = {k: v for k, v in options.items() if k not in common}
        parsed = policy = None
        try:
            parsed = kind.options.model_validate(specific)
        except ValidationError as exc:
            for error in exc.errors():
                loc = (*path, name, *error["loc"])
                allowed_model = kind.options
                message = describe_error(error, allowed_model, tuple(error["loc"]))
                if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
                    message += f"; every processor also takes: {', '.join(sorted(COMMON_OPTIONS))}"
                doc.problem(loc, message)
        try:
            policy = StepPolicy.model_validate(common)
        except ValidationError as exc:
            for error in exc.errors():
                doc.problem((*path, name, *error["loc"]), describe_error(error, StepPolicy, tuple(error["loc"])))
        if parsed is None or policy is None:
            ok = False
            continue
        if kind.when_option is not None:
            alias = getattr(parsed, kind.when_option, None)
            if alias is not None and policy.when is not None and alias != policy.when:
                doc.problem(
                    (*path, name, "when"), f"when ({policy.when}) and {kind.when_option} ({alias}) disagree; give one"
                )
                ok = False
                continue
            when = policy.when or alias or kind.default_when
            policy = policy.model_copy(update={"when": when})
        elif policy.when is None and kind.default_when is not None:
            policy = policy.model_copy(update={"when": kind.default_when})
        steps.append(ProcessorConfig(name, parsed, Source(doc.file, doc.line_of(path)), policy))
    if not ok:
        return None
    return PipelineConfig(
        spec.name,
        tuple(steps),
        Source(doc.file, doc.line_of(base[:2])),
        Path(doc.file).absolute().parent,
        spec.description,
    )


def _items(doc: Document, key: str) -> list[Any]:
    data = doc.data
    if isinstance(data, dict) and isinstance(data.get(key), list):
        return data[key]
    return []


def _raw_str(item: Any, key: str) -> str | None:
    value = item.get(key) if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


def build_config(
    path: Path,
    main: Document,
    includes: Sequence[Document],
    kinds: Mapping[str, ProcessorType] | None = None,
) -> Config:
    """Validate parsed documents into a Config, or raise ConfigError listing every problem."""
    kinds = builtin_types() if kinds is None else kinds
    documents = [main, *includes]
    root = _validate(main, _MainFile, main.data) if main.data is not None else None
    for doc in includes:
        if doc.data is not None:
            _validate(doc, _IncludedFile, doc.data)

    pipelines: dict[str, PipelineConfig] = {}
    pipeline_sources: dict[str, Source] = {}
    for doc in documents:
        for i, raw in enumerate(_items(doc, "pipelines")):
            name = _raw_str(raw, "name")
            if name is not None and name in pipeline_sources:
                doc.problem(
                    ("pipelines", i, "name"), f"duplicate pipeline name {name!r} (also at {pipeline_sources[name]})"
                )
                continue
            if name is not None:
                pipeline_sources[name] = Source(doc.file, doc.line_of(("pipelines", i)))
            spec = _validate(doc, PipelineSpec, raw, ("pipelines", i))
            built = _build_pipeline(spec, i, doc, kinds) if spec is not None else None
            if built is not None:
                pipelines[built.name] = built

    tasks: list[TaskConfig] = []
    task_sources: dict[str, Source] = {}
    for doc in documents:
        for i, raw in enumerate(_items(doc, "tasks")):
            task_id = _raw_str(raw, "id")
            if task_id is not None and task_id in task_sources:
                doc.problem(("tasks", i, "id"), f"duplicate task id {task_id!r} (also at {task_sources[task_id]})")
                continue
            if task_id is not None:
                task_sources[task_id] = Source(doc.file, doc.line_of(("tasks", i)))
            task = _validate(doc, TaskConfig, raw, ("tasks", i))
            if task is not None:
                tasks.append(task)
            ref = _raw_str(raw, "pipeline")
            if ref is not None and ref not in pipeline_sources:
                known = sorted(pipeline_sources)
                doc.problem(
                    ("tasks", i, "pipeline"),
                    _with_suggestion(f"unknown pipeline {ref!r}", ref, known)
                    + (f"; defined pipelines: {', '.join(known)}" if known else "; no pipelines are defined"),
                )

    problems = [msg for doc in documents for msg in doc.messages()]
    if problems or not isinstance(root, _MainFile):
        raise ConfigError(problems or [f"{main.file}:1: invalid configuration"])
    return Config(
        path=path,
        task=root.task,
        api=root.api,
        store=root.store,
        log=root.log,
        tasks=tuple(tasks),
        pipelines=types.MappingProxyType(pipelines),
        task_sources=types.MappingProxyType(task_sources),
        files=(path, *(Path(d.file) for d in includes)),
    )


# ---------------------------------------------------------------------------------------------
# The edge: files and globs


def load_config(
    path: str | Path,
    env: Mapping[str, str],
    kinds: Mapping[str, ProcessorType] | None = None,
    read: Callable[[Path], str] = lambda p: p.read_text(encoding="utf-8"),
) -> Config:
    """Read `path` and the files its `include:` globs match, and validate them together."""
    main_path = Path(path)
    display = str(path)
    try:
        text = read(main_path)
    except FileNotFoundError:
        raise ConfigError([f"{display}: config file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{display}: cannot read config file: {exc}"]) from None
    main = parse_document(display, text, env)
    includes: list[Document] = []
    patterns = main.data.get("include") if isinstance(main.data, dict) else None
    seen: set[Path] = {main_path.resolve()}
    if isinstance(patterns, list):
        base = main_path.parent
        for i, pattern in enumerate(patterns):
            if not isinstance(pattern, str):
                continue  # reported by validation as a wrong type
            full = pattern if Path(pattern).is_absolute() else str(base / pattern)
            matches = sorted(glob.glob(full, recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                main.problem(("include", i), f"pattern {pattern!r} matches no file (looked in {base.resolve()})")
                continue
            for file in files:
                if file.resolve() in seen:
                    continue
                seen.add(file.resolve())
                try:
                    included_text = read(file)
                except (OSError, UnicodeDecodeError) as exc:
                    main.problem(("include", i), f"cannot read {file}: {exc}")
                    continue
                includes.append(parse_document(str(file), included_text, env))
    return build_config(main_path.absolute(), main, includes, kinds)
