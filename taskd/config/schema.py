"""The configuration's schema: one pydantic model per section, validated item by item.

Models here are frozen; task params are frozen mappings (see `thaw` for the JSON-ready form).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import types
from collections.abc import Mapping
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
    field_serializer,
    field_validator,
    model_validator,
)

from taskd import schedule as schedules
from taskd.channels import ChannelEntry
from taskd.config.messages import all_zones, with_suggestion
from taskd.durations import parse_size
from taskd.errors import ScheduleError
from taskd.processor import Duration

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


@functools.lru_cache(maxsize=4096)
def cached_schedule(expression: str, zone: str) -> schedules.Schedule:
    """Schedules are immutable: tasks with the same expression and zone share one."""
    return schedules.parse(expression, zone)


def _zone_name(value: str) -> str:
    try:
        schedules.load_zone(value)
    except ScheduleError as exc:
        raise ValueError(with_suggestion(str(exc), value, all_zones())) from None
    return value


AT_START = "@reboot"
"""The schedule of a task that runs once each time the daemon starts (crontab's @reboot)."""


def _cron(value: str) -> str:
    if value == AT_START:
        return value
    try:
        cached_schedule(value, "UTC")
    except ScheduleError as exc:
        raise ValueError(str(exc)) from None
    return value


def _empty_is_none(value: object) -> object:
    return None if value == "" else value


def _token_text(value: object) -> object:
    """A token is text; a number (an environment variable of digits, unquoted) is taken as its
    digits. Any other value is refused without being quoted: it may be the secret."""
    if value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is not None and not isinstance(value, str):
        raise ValueError("a token must be text: quote it")
    return value


Token = Annotated[StrictStr | None, BeforeValidator(_token_text)]


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


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _size(value: object) -> int:
    return parse_size(value)


Size = Annotated[int, BeforeValidator(_size)]
"""Bytes, accepting `1024`, `"512M"`, `"2G"`, `"1.5GiB"` in YAML (K, M, G, T count in 1024s)."""


class Limits(Section):
    """What a run's step processes may not pass: with cgroups, memory.max, cpu.max and pids.max on
    each step's cgroup; without, the closest rlimits (see the README)."""

    memory: Size | None = Field(None, gt=0, description="bytes: 512M, 2G; past it the step fails")
    cpu: float | None = Field(None, gt=0, le=10_000, description="cores: 1.5 (throttled, never killed)")
    processes: StrictInt | None = Field(None, ge=1, le=4_194_304, description="processes at once")


class TaskSection(Section):
    """The seed-compatible `task:` section: defaults for every task and the global slot limit."""

    time_zone: ZoneName = Field("UTC", description="IANA time zone used by every schedule by default")
    max_concurrent_tasks: StrictInt = Field(100, ge=1, le=100_000, description="runs allowed in `running` at once")
    max_waiting_runs: StrictInt = Field(
        50_000,
        ge=1,
        le=1_000_000,
        description="runs waiting for a slot or a retry, at most; past it taskd is overloaded: fires"
        " are skipped and manual starts refused (503) until half of them have gone",
    )
    shutdown_timeout: Duration = Field(30.0, description="on SIGTERM, how long running runs may finish")
    debug: StrictBool = Field(False, description="log the task machinery (fires, attempts, output) at debug level")
    spread: Duration | None = Field(
        None,
        gt=0,
        description="shift every task's fires by a fixed offset in [0, spread) derived from its id (a task's"
        " own spread wins)",
    )
    limits: Limits = Field(
        default_factory=Limits, description="default limits of every task's runs (a task's own win, key by key)"
    )
    cgroups: StrictBool = Field(
        True,
        description="give each shell step a cgroup where the system lets taskd (v2 delegated, else v1): its"
        " limits and figures; false: rlimits and rusage only",
    )
    log_task_execution: StrictBool | Literal["failures"] = Field(
        "failures",
        description="log one line (run_finished) per run that ends: true for every run, 'failures' (the"
        " default) for the runs that did not complete, false for none",
    )


ROLES = ("viewer", "operator", "admin")
"""What a token may do, each role everything the one before may: viewers read; operators also
start, stop and re-run; admins also delete tasks and reload the configuration."""
Role = Literal["viewer", "operator", "admin"]


class TokenEntry(Section):
    """A named bearer token and its role."""

    name: Identifier = Field(description="who holds it: the audit trail and the dashboard say this name")
    token: Token = Field(None, description="the token itself")
    token_file: Annotated[StrictStr | None, BeforeValidator(_empty_is_none)] = Field(
        None, description="file holding the token (relative to the config file)"
    )
    role: Role = Field(
        description="viewer (reads), operator (also starts, stops, re-runs), admin (also deletes, reloads)"
    )

    @model_validator(mode="after")
    def _one_token(self) -> TokenEntry:
        if (self.token is None) == (self.token_file is None):
            raise ValueError(f"token {self.name!r}: give token or token_file, one of them")
        if self.token is not None and any(c.isspace() for c in self.token):
            raise ValueError(f"token {self.name!r} holds whitespace; a bearer token cannot")
        return self


class ApiSection(Section):
    """The REST API listener and its protection."""

    listen: StrictStr = Field("127.0.0.1:8080", description="host:port, [v6]:port or unix:/path")
    token: Token = Field(None, description="bearer token required on every request when set")
    token_file: Annotated[StrictStr | None, BeforeValidator(_empty_is_none)] = Field(
        None,
        description="file holding the bearer token (relative to the config file); by default the"
        " systemd credential api-token ($CREDENTIALS_DIRECTORY/api-token) when there is one",
    )
    tokens: tuple[TokenEntry, ...] = Field(
        (),
        description="named tokens, each with a role (viewer, operator, admin); api.token, when given, is one"
        " more, named admin, with the admin role",
    )
    insecure: StrictBool = Field(False, description="allow a non-loopback listen address without a token")
    public_url: Annotated[StrictStr | None, BeforeValidator(_empty_is_none)] = Field(
        None,
        description="the address people reach the API at (https://taskd.example:8080): alerts link to the run's page",
    )
    max_body_bytes: StrictInt = Field(1_048_576, ge=1024, le=64 * 1_048_576, description="request body cap")
    header_timeout: Duration = Field(
        10.0, gt=0, description="a new connection's first request must arrive within this, or it is closed"
    )
    idle_timeout: Duration = Field(60.0, gt=0, description="a connection with no request for this long is closed")
    max_connections: StrictInt = Field(
        1024,
        ge=8,
        le=1_000_000,
        description="open API connections at most; past it the oldest one with no request in progress is closed",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"public_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _safe_listen(self) -> ApiSection:
        """A non-loopback TCP address without a token is refused unless `insecure: true`."""
        if self.token and self.token_file:
            raise ValueError("give api.token or api.token_file, not both")
        names = [entry.name for entry in self.tokens] + (["admin"] if self.token or self.token_file else [])
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(
                f"token name {twice[0]!r} is given twice (api.token, when set, is named admin)"
                if twice[0] == "admin"
                else f"token name {twice[0]!r} is given twice"
            )
        target = parse_listen(self.listen)
        guarded = self.token or self.token_file or self.tokens
        if isinstance(target, str) or guarded or self.insecure or _is_loopback(target[0]):
            return self
        raise ValueError(
            f"refusing to listen on {self.listen} without api.token: anyone who can reach it could "
            "start, stop and delete tasks. Set api.token (e.g. token: ${TASKD_TOKEN}), listen on 127.0.0.1, "
            "or set api.insecure: true if the network is trusted"
        )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


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


class Retention(Section):
    """How much history the store keeps."""

    days: StrictInt = Field(30, ge=0, description="delete runs older than this many days (0 keeps all)")
    max_runs_per_task: StrictInt = Field(1000, ge=0, description="keep at most this many runs per task (0: no cap)")


class StoreSection(Section):
    """Where run history lives."""

    path: StrictStr = Field(
        "./var/taskd.db",
        min_length=1,
        description="SQLite file, relative to the config file; :memory: keeps nothing on disk",
    )
    url: Annotated[StrictStr | None, BeforeValidator(_empty_is_none)] = Field(
        None, description="postgresql://user@host:5432/db selects PostgreSQL instead of the SQLite file"
    )
    retention: Retention = Retention()
    max_pending: StrictInt = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="writes staged for the store and not yet committed, at most; past it taskd is"
        " overloaded: fires are skipped and manual starts refused (503) until half of them are written",
    )
    max_outage: Duration = Field(
        600.0,
        description="how long the store may stay unwritable or unreachable before taskd exits 1 to be"
        " restarted (writes are kept and retried until then; /health says degraded)",
    )

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"store.url must be a postgresql:// URL, got {value.split('://')[0]!r}://...")
        return value

    @model_validator(mode="after")
    def _one_store(self) -> StoreSection:
        if self.url and "path" in self.model_fields_set:
            raise ValueError("give store.path (SQLite) or store.url (PostgreSQL), not both")
        return self


class LogSection(Section):
    """Daemon log output."""

    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"
    format: Annotated[Literal["auto", "json", "console"], BeforeValidator(_lower)] = Field(
        "auto", description="auto: console on a TTY, JSON lines otherwise"
    )
    access: StrictBool = Field(False, description="log every API request (aiohttp's access log)")


class RetryPolicy(Section):
    """Attempt-level retries: wait `backoff * 2**k`, capped at `max_backoff`, optionally jittered."""

    count: StrictInt = Field(0, ge=0, le=1000, description="retries after the first attempt")
    backoff: Duration = Field(10.0, description="wait before the first retry")
    max_backoff: Duration = Field(600.0, description="longest wait between attempts")
    jitter: StrictBool = Field(False, description="full jitter: wait a random time up to the computed backoff")
    permanent_exit_codes: tuple[Annotated[StrictInt, Field(ge=1, le=255)], ...] = Field(
        (), description="exit codes of a shell step that mean retrying cannot help: the run fails at once"
    )
    on_limit: StrictBool = Field(False, description="retry an attempt that went past its memory limit")


REPEAT_INTERVAL_S = 4 * 3600.0


class AlertsSection(Section):
    """The default alert route (cron's MAILTO): where every task's failures, recoveries and overdue
    notices go, unless a task says `alerts: false` or gives its own."""

    channels: tuple[ChannelEntry, ...] = Field((), description="a list of {webhook|email|log: ...}")
    repeat_interval: Duration = Field(
        REPEAT_INTERVAL_S, gt=0, description="while a task keeps failing (or stays overdue), remind this often"
    )


class TaskAlerts(Section):
    """A task's own alert route: its channels and reminder interval, each the default's when omitted.
    `alerts: false` in YAML is `enabled: false`; `alerts: true`, the default route."""

    enabled: StrictBool = Field(True, description="false: this task sends no alerts")

    channels: tuple[ChannelEntry, ...] | None = Field(None, description="instead of the default route's channels")
    repeat_interval: Duration | None = Field(None, gt=0, description="instead of the default route's")


def _alerts_switch(value: Any) -> Any:
    """`alerts: false` and `alerts: true` are the route switched off and the default route."""
    if isinstance(value, bool):
        return {"enabled": value}
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"alerts must be false, true or {{channels: [...], repeat_interval: 1h}}; got {value!r}")
    return value


class Expectation(Section):
    """What must keep happening: a dead man's switch."""

    success_within: Duration = Field(
        gt=0, description="the task is overdue (and an alert goes out) when its last success is older than this"
    )


class After(Section):
    """Run after other tasks: once their runs have ended the way `when` says."""

    tasks: tuple[Identifier, ...] = Field(min_length=1, description="the upstream task ids")
    when: Literal["success", "failure", "always"] = Field(
        "success", description="which of their outcomes count: success, failure or always"
    )
    mode: Literal["all", "any"] = Field(
        "all",
        description="all: once every listed task has such a run since this task's last dependency run"
        " (fan-in); any: after each such run",
    )

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, tasks: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({t for t in tasks if tasks.count(t) > 1})
        if repeated:
            raise ValueError(f"after.tasks names {', '.join(repeated)} more than once")
        return tasks


def _after_shape(value: Any) -> Any:
    """`after: extract` and `after: [a, b]` are short for `after: {tasks: [...]}`; `on:` is refused
    with the reason (YAML 1.1 reads it as true)."""
    if isinstance(value, str):
        return {"tasks": [value]}
    if isinstance(value, list):
        return {"tasks": value}
    if isinstance(value, dict) and (True in value or "on" in value):
        raise ValueError("use when: (success, failure or always), not on: (YAML 1.1 reads on as true)")
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"after must be a task id, a list of them or {{tasks: [...], when, mode}}; got {value!r}")
    return value


class Requests(Section):
    """What a run of the task needs of its node's capacity while it runs."""

    memory: Size | None = Field(None, gt=0, description="bytes: 512M, 2G")
    cpu: float | None = Field(None, gt=0, le=10_000, description="cores: 0.5, 2")


class Capacity(Section):
    """What this node offers the runs' requests (default: detected: its cgroup's limits, else the host)."""

    memory: Size | None = Field(None, gt=0, description="bytes: 16G")
    cpu: float | None = Field(None, gt=0, le=10_000, description="cores: 8")


def _pool_list(value: Any) -> Any:
    """`pools: [db]` is `pools: {db: 1}`."""
    if isinstance(value, list):
        if not all(isinstance(name, str) for name in value):
            raise ValueError(f"pools must be a list of pool names or {{name: units}}; got {value!r}")
        return dict.fromkeys(value, 1)
    return value


PoolUnits = Annotated[StrictInt, Field(ge=1, le=1_000_000)]


class PlacementNodes(Section):
    """Run on these nodes only (node.name)."""

    nodes: tuple[StrictStr, ...] = Field(min_length=1)


class PlacementLabels(Section):
    """Run on the nodes whose labels include all of these."""

    labels: dict[StrictStr, StrictStr] = Field(min_length=1)


def _placement(value: Any) -> Any:
    """One clear message for a placement of the wrong shape (instead of one per union member)."""
    shape = "placement must be any, all, {nodes: [name, ...]} or {labels: {key: value, ...}}"
    if isinstance(value, str):
        if value not in ("any", "all"):
            raise ValueError(f"{shape}; got {value!r}")
        return value
    if not isinstance(value, dict) or len(value) != 1 or not ({"nodes", "labels"} & set(value)):
        raise ValueError(f"{shape}; got {value!r}")
    if "nodes" in value:
        nodes = value["nodes"]
        if not isinstance(nodes, list) or not nodes or not all(isinstance(n, str) and n for n in nodes):
            raise ValueError(f"placement.nodes must be a non-empty list of node names; got {nodes!r}")
        return PlacementNodes(nodes=tuple(nodes))
    labels = value["labels"]
    if not isinstance(labels, dict) or not labels or not all(isinstance(v, str) for v in labels.values()):
        raise ValueError(f"placement.labels must map label names to strings; got {labels!r}")
    return PlacementLabels(labels=labels)


Placement = Annotated[Literal["any", "all"] | PlacementNodes | PlacementLabels, BeforeValidator(_placement)]


class TaskConfig(Section):
    """One task as defined in YAML."""

    id: Identifier
    name: StrictStr | None = None
    enabled: StrictBool = True
    schedule: Annotated[StrictStr, AfterValidator(_cron)] | None = Field(
        None,
        description="cron expression, macro or @every; @reboot: once each time taskd starts; omit for a"
        " manual-only task",
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
    secret_params: tuple[StrictStr, ...] = Field(
        (), description="params whose values are shown as *** in every answer, log, alert and page"
    )
    env: dict[StrictStr, StrictStr] = Field(
        default_factory=dict, description="environment variables for the task's processes"
    )
    pass_env: tuple[Annotated[StrictStr, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], ...] = Field(
        (),
        description="names of the daemon's environment variables its processes also get (they get only"
        " PATH, HOME, LANG, LC_*, TZ otherwise)",
    )
    alerts: Annotated[TaskAlerts | None, BeforeValidator(_alerts_switch)] = Field(
        None, description="false: no alerts for this task; {channels, repeat_interval}: its own route"
    )
    expect: Expectation | None = Field(None, description="{success_within: 26h}: alert when successes stop")
    placement: Placement = Field(
        "any",
        description="with several nodes on one store: any (one node, the least busy first), all (every "
        "live node), {nodes: [names]} or {labels: {key: value}}",
    )
    pools: Annotated[dict[Identifier, PoolUnits], BeforeValidator(_pool_list)] = Field(
        default_factory=dict, description="[db] or {db: 2}: units of the top-level pools each run holds while it runs"
    )
    requests: Requests | None = Field(
        None, description="{memory: 2G, cpu: 2}: what a run needs of its node's capacity; it waits until that is free"
    )
    limits: Limits | None = Field(
        None, description="{memory: 512M, cpu: 1.5, processes: 200}: what its step processes may not pass"
    )
    after: Annotated[After | None, BeforeValidator(_after_shape)] = Field(
        None, description="{tasks: [ids], when: success|failure|always, mode: all|any}: run after these tasks"
    )
    spread: Duration | None = Field(
        None,
        ge=0,
        description="shift the fires by a fixed offset in [0, spread) derived from the task id; 0: none,"
        " whatever task: says",
    )

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

    @model_validator(mode="after")
    def _spread_needs_a_schedule(self) -> TaskConfig:
        if self.spread and (self.schedule is None or self.at_start):
            raise ValueError("spread shifts the fires of a schedule, and this task has no schedule to shift")
        return _compact(self)

    @field_serializer("params")
    def _plain_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return thaw(params)  # type: ignore[no-any-return]

    @property
    def display_name(self) -> str:
        return self.name or self.id

    @property
    def at_start(self) -> bool:
        """Whether the task runs once at each start of the daemon (`schedule: "@reboot"`)."""
        return self.schedule == AT_START


class _Fields:
    """An object whose attributes are a task's fields: CPython keeps the names once for every
    instance of the class (a key-sharing dict), and each instance's dict holds only the values."""

    params: Mapping[str, Any]


_EMPTY_PARAMS: Mapping[str, Any] = types.MappingProxyType({})
_FIELDS_SET: dict[frozenset[str], set[str]] = {}


def _compact(task: TaskConfig) -> TaskConfig:
    """`task` taking a third of the memory, the same to every reader: a daemon keeps one per task
    for as long as it runs. Its fields' dict shares its keys with every other task's (a plain dict
    of 24 fields takes 830 bytes; a key-sharing one, 260), tasks with the same fields set share one
    set of their names, and tasks without params share one empty mapping (read-only, as given
    params are)."""
    values = _Fields()
    for name, value in task.__dict__.items():
        setattr(values, name, value)
    if not task.params:
        values.params = _EMPTY_PARAMS
    fields_set = task.__pydantic_fields_set__
    object.__setattr__(task, "__dict__", vars(values))
    object.__setattr__(task, "__pydantic_fields_set__", _FIELDS_SET.setdefault(frozenset(fields_set), fields_set))
    return task


class PipelineSpec(Section):
    """A pipeline as written: a name and a list of `{type: options}` single-key maps."""

    name: Identifier
    description: StrictStr | None = None
    processors: list[Any] = Field(min_length=1)


class ClusterSection(Section):
    """What holds for every node sharing the store together."""

    max_concurrent_tasks: StrictInt | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="runs running at once across every node (claimed in the store); none when omitted",
    )


class MetricsSection(Section):
    """What GET /metrics exposes."""

    per_task: StrictBool = Field(
        True, description="series per task (runs, durations, last success, next fire); false: one for all tasks"
    )


def _host_name() -> str:
    return socket.gethostname() or "taskd"


class NodeSection(Section):
    """This process as one node of several sharing a PostgreSQL store."""

    name: StrictStr = Field(
        default_factory=_host_name,
        min_length=1,
        max_length=200,
        description="the node's name, unique among the nodes sharing a store (default: the host name)",
    )
    labels: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="free key: value pairs")
    capacity: Capacity = Field(
        default_factory=Capacity,
        description="{memory: 16G, cpu: 8}: what runs' requests may use here (default: detected)",
    )


class MainFile(Section):
    # tasks and pipelines are validated item by item (see build_config), so that one bad item
    # does not hide the problems of the others.
    task: TaskSection = TaskSection()
    api: ApiSection = ApiSection()
    store: StoreSection = StoreSection()
    log: LogSection = LogSection()
    metrics: MetricsSection = MetricsSection()
    node: NodeSection = Field(default_factory=NodeSection)
    alerts: AlertsSection = AlertsSection()
    pools: dict[Identifier, PoolUnits] = Field(
        default_factory=dict, description="{db: 1, gpu: 2}: named pools of units; a pool of 1 is a mutex"
    )
    cluster: ClusterSection = ClusterSection()
    include: list[StrictStr] = Field(default_factory=list)
    tasks: list[Any] = Field(default_factory=list)
    pipelines: list[Any] = Field(default_factory=list)


class IncludedFile(Section):
    tasks: list[Any] = Field(default_factory=list)
    pipelines: list[Any] = Field(default_factory=list)
