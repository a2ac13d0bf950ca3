"""The REST API: aiohttp routes between HTTP and the engine/store, with JSON errors and auth.
What each answer holds is built in `views`."""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from taskd import __version__
from taskd.durations import parse_ago
from taskd.engine import TASK_STATUSES, Engine, TaskEntry, config_digest
from taskd.errors import Conflict, Overloaded, UnknownRun, UnknownTask
from taskd.faults import STORE_KINDS
from taskd.forecast import MAX_DAYS, forecast, upcoming
from taskd.http import dashboard, events, openapi
from taskd.http.access import AUDIT_ACTIONS, NOBODY, Access, Caller, Throttle, action_of
from taskd.http.selection import TASK_SORTS, TaskQuery, select_tasks
from taskd.http.server import error_body
from taskd.http.views import (
    TaskViews,
    audit_view,
    fire_view,
    history_point,
    metrics_snapshot,
    node_views,
    resources_view,
    run_detail,
)
from taskd.metrics import CONTENT_TYPE, Metrics
from taskd.models import FINAL_STATES, ReloadOutcome, RunRecord, RunState, Trigger, iso
from taskd.processor import COMMON_OPTIONS, describe_types
from taskd.recorder import MAX_LOG_LINES, escape_line
from taskd.store.base import RUN_SORTS, AuditEntry, AuditQuery, RunPage, RunQuery, Store

log = structlog.get_logger("taskd.api")

ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
STORE: web.AppKey[Store] = web.AppKey("store", Store)
ACCESS: web.AppKey[Access] = web.AppKey("access", Access)
THROTTLE: web.AppKey[Throttle] = web.AppKey("throttle", Throttle)
VIEWS: web.AppKey[TaskViews] = web.AppKey("views", TaskViews)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
RELOAD: web.AppKey[Callable[[], Awaitable[ReloadOutcome]]] = web.AppKey("reload")


class PlanCache:
    """One forecast (or list of upcoming fires) worked out at a time (seconds of CPU for thousands
    of tasks), and kept for the rest of its minute for the same configuration and span: a
    dashboard opened by ten people costs one."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.kept: tuple[tuple[str, int, int], dict[str, Any]] | None = None


PLANS: web.AppKey[PlanCache] = web.AppKey("plans", PlanCache)
UPCOMING: web.AppKey[PlanCache] = web.AppKey("upcoming", PlanCache)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_LIMIT = 1000
MAX_OFFSET = 10**9
MAX_LOG_SEQ = MAX_LOG_LINES + 1
"""A run's log holds this many lines at most (the last says it was truncated)."""


class ApiError(web.HTTPException):
    """An error answered as JSON `{"error": {"code", "message"}}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.status_code = status
        super().__init__(
            text=error_body(code, message, extra),
            content_type="application/json",
            headers=headers,
        )


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON with the right status; nothing a client sends crashes the daemon."""
    try:
        return await handler(request)
    except ApiError:
        raise
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES.get(exc.status, "error")
        message = exc.reason
        if exc.status == 404:
            message = f"no route for {request.method} {request.path}"
        elif exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        elif exc.status == 413:
            message = f"request body too large: {exc.text}"
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        raise ApiError(exc.status, code, message, headers) from None
    except Exception as exc:
        store = request.app[STORE]
        if store.owns(exc):  # the store failed the request, not the request itself
            reason = str(store.explain(exc) or f"{type(exc).__name__}: {exc}")
            log.warning("api_store_unavailable", method=request.method, path=request.path, error=reason)
            raise ApiError(503, "store_unavailable", f"the store cannot answer now: {reason}") from None
        log.exception("api_handler_failed", method=request.method, path=request.path)
        raise ApiError(500, "internal", "internal error; see the daemon log") from None


PUBLIC_PATHS = frozenset({"/health", "/openapi.json"})
"""Answered without the token: a bare health status, and the API's description (it holds no data)."""

CALLER: web.RequestKey[Caller] = web.RequestKey("caller", Caller)
"""Where a request keeps who sent it."""
AUDITED: web.RequestKey[str] = web.RequestKey("audited", str)
"""What a handler adds to its audit entry: the run it started, the runs it stopped."""


def caller_of(request: web.Request) -> Caller | None:
    """Who sent the request: the token's name and role, or None when it names no token."""
    if CALLER in request:
        return request[CALLER]
    return request.app[ACCESS].caller(request.headers.get("Authorization", ""))


def _route(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


def _audit(request: web.Request, action: str, caller: Caller | None, status: int, detail: str | None) -> None:
    found = request.match_info
    target = found.get("id") or found.get("run_id") or found.get("name")
    # What a client sent is written escaped and cut: an entry stays one line in `taskd audit`
    # and in the log, and cannot forge another or drive a terminal.
    entry = AuditEntry(
        at=request.app[ENGINE].clock.time(),
        action=action,
        actor=None if caller is None else caller.name,
        role=None if caller is None else caller.role,
        remote=request.remote,
        target=None if target is None else escape_line(target)[:MAX_TARGET],
        status=status,
        detail=None if detail is None else escape_line(detail)[:MAX_DETAIL],
    )
    request.app[STORE].record_audit(entry)
    log.info("api_audit", **entry._asdict())


MAX_TARGET = 200
MAX_DETAIL = 1000


def _refuse_sign_in(request: web.Request) -> ApiError:
    """A 401, recorded in the audit trail (once a minute per address; the rest counted)."""
    given = request.headers.get("Authorization", "")
    why = "wrong bearer token" if given else "no bearer token"
    folded = request.app[THROTTLE].admit(request.remote or "", request.app[ENGINE].clock.time())
    if folded is not None:
        more = f"; {folded} more refused from this address in the minute before" if folded else ""
        _audit(request, "sign_in_failed", None, 401, f"{why} for {request.method} {request.path[:200]}{more}")
    return ApiError(401, "unauthorized", "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="taskd"'})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is asking (401 when the token is missing or wrong), whether their role may do what
    they ask (403 naming the role needed), and the audit trail of every action and refusal."""
    # GET /health answers without a token (a bare liveness status; the details need the token),
    # so load balancers, monitors and the bundled health pipelines can reach it.
    # A method no route takes is a 405 for everyone: it reveals nothing the OpenAPI document does not.
    unmatched = request.match_info.http_exception
    if unmatched is not None and unmatched.status == 405:
        return await handler(request)
    public = request.path in PUBLIC_PATHS or dashboard.is_public(request.path)
    if public and request.method in ("GET", "HEAD"):
        return await handler(request)
    caller = caller_of(request)
    if caller is None:
        raise _refuse_sign_in(request)
    request[CALLER] = caller
    action = None if unmatched is not None else action_of(request.method, _route(request))
    if action is None:
        return await handler(request)
    if not caller.may(action.role):
        # Recorded once a minute per token, address and action; the refusals between are counted.
        key = f"{caller.name}\0{request.remote}\0{action.name}"
        folded = request.app[THROTTLE].admit(key, request.app[ENGINE].clock.time())
        if folded is not None:
            more = f"; {folded} more refused in the minute before" if folded else ""
            _audit(request, "forbidden", caller, 403, f"{action.name}: needs the {action.role} role{more}")
        raise ApiError(
            403,
            "forbidden",
            f"{action.what} needs the {action.role} role; token {caller.name!r} has the {caller.role} role",
            extra={"required_role": action.role},
        )
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        _audit(request, action.name, caller, status, request.get(AUDITED))


def create_app(
    engine: Engine,
    store: Store,
    access: Access,
    max_body_bytes: int,
    metrics: Metrics | None = None,
    heartbeat_s: float = events.HEARTBEAT_S,
    reload: Callable[[], Awaitable[ReloadOutcome]] | None = None,
) -> web.Application:
    """The HTTP application; the daemon owns its lifecycle through web.AppRunner. With `reload`,
    `POST /_reload` re-reads the configuration and answers what happened."""
    app = web.Application(middlewares=[errors_middleware, auth_middleware], client_max_size=max_body_bytes)
    app[ENGINE] = engine
    app[STORE] = store
    app[ACCESS] = access
    app[THROTTLE] = Throttle()
    app[VIEWS] = TaskViews(engine)
    app[PLANS] = PlanCache()
    app[UPCOMING] = PlanCache()
    events.setup(app, heartbeat_s)
    dashboard.setup(app)
    app.router.add_get("/events", run_events)
    app.router.add_get("/openapi.json", openapi_document)
    if metrics is not None:
        app[METRICS] = metrics
        app.router.add_get("/metrics", metrics_endpoint)
    if reload is not None:
        app[RELOAD] = reload
        app.router.add_post("/_reload", reload_config)
    app.router.add_get("/tasks", list_tasks)
    app.router.add_get("/tasks/", list_tasks)
    app.router.add_get("/task/{id}", get_task)
    app.router.add_post("/task/{id}/_start", start_task)
    app.router.add_post("/task/{id}/_stop", stop_task)
    app.router.add_delete("/task/{id}", delete_task)
    app.router.add_get("/task/{id}/runs", task_runs)
    app.router.add_get("/runs", all_runs)
    app.router.add_get("/run/{run_id}", get_run)
    app.router.add_get("/run/{run_id}/log", run_log)
    app.router.add_get("/health", health)
    app.router.add_get("/processors", processors)
    app.router.add_get("/nodes", list_nodes)
    app.router.add_get("/plan", plan)
    app.router.add_get("/upcoming", upcoming_fires)
    app.router.add_get("/stats/runs", runs_per_minute)
    app.router.add_post("/run/{run_id}/_stop", stop_run)
    app.router.add_post("/run/{run_id}/_rerun", rerun)
    app.router.add_get("/audit", audit_trail)
    app.router.add_get("/whoami", whoami)
    app.router.add_post("/nodes/{name}/_drain", drain_node)
    return app


# -- helpers -------------------------------------------------------------------------------------


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, default=str))


_WHOLE = re.compile(r"-?[0-9]{1,18}")
_EPOCH = re.compile(r"-?[0-9]{1,11}(\.[0-9]{1,6})?")


def _given(request: web.Request, name: str) -> str | None:
    """A query parameter's value; None when absent. Given empty (`limit=`) it is a 400: it is
    neither the default nor a value."""
    raw = request.query.get(name)
    if raw == "":
        raise ApiError(400, "bad_request", f"query parameter {name!r} is empty; give a value or leave it out")
    return raw


def _int_arg(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = _given(request, name)
    if raw is None:
        return default
    if not _WHOLE.fullmatch(raw):  # int() would also take "1_0", " 1" and other scripts' digits
        raise ApiError(400, "bad_request", f"query parameter {name!r} must be a whole number, got {raw[:40]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(400, "bad_request", f"query parameter {name!r} must be between {low} and {high}, got {value}")
    return value


def _time_arg(request: web.Request, name: str) -> float | None:
    """An instant given as ISO-8601 (UTC when it has no offset), as epoch seconds, or as a time
    ago (`2h`, `30m`, `1h30m`: that long before now on the daemon's clock)."""
    raw = _given(request, name)
    if raw is None:
        return None
    if _EPOCH.fullmatch(raw):  # float() would also take "1_0", "inf" and other scripts' digits
        return float(raw)
    ago = parse_ago(raw)
    if ago is not None:
        return request.app[ENGINE].clock.time() - ago
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ApiError(
            400,
            "bad_request",
            f"query parameter {name!r} must be an ISO-8601 instant, epoch seconds or a time ago such as 2h or 30m",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _entry(request: web.Request) -> TaskEntry:
    try:
        return request.app[ENGINE].entry(request.match_info["id"])
    except UnknownTask as exc:
        raise ApiError(404, "not_found", str(exc)) from None


# -- handlers ------------------------------------------------------------------------------------


def _task_query(request: web.Request) -> TaskQuery:
    status = _given(request, "status")
    if status is not None and status not in TASK_STATUSES:
        raise ApiError(400, "bad_request", f"status must be one of {', '.join(TASK_STATUSES)}")
    sort = _given(request, "sort") or "id"
    if sort.lstrip("-") not in TASK_SORTS:
        raise ApiError(400, "bad_request", f"sort must be one of {', '.join(sorted(TASK_SORTS))} (prefix - to reverse)")
    return TaskQuery(
        text=request.query.get("q") or "",
        status=status,
        sort=sort.lstrip("-"),
        descending=sort.startswith("-"),
        limit=_int_arg(request, "limit", 100, 1, MAX_LIMIT),
        offset=_int_arg(request, "offset", 0, 0, MAX_OFFSET),
    )


async def list_tasks(request: web.Request) -> web.Response:
    engine, views = request.app[ENGINE], request.app[VIEWS]
    query = _task_query(request)
    entries = engine.entries()
    now = _now(engine)
    # Statuses come from every node: asked for all tasks when the page depends on them, else for the page.
    states = await engine.task_states(entries) if query.needs_status else {}

    def value(entry: TaskEntry, field: str) -> Any:
        if field == "status":
            return states[entry.id].status
        if field == "next_run":
            return views.next_run(entry, now)
        return {"id": entry.id, "name": entry.config.display_name, "priority": entry.config.priority}[field]

    page, total = select_tasks(entries, query, value)
    if not query.needs_status:
        states = await engine.task_states(page)
    rows = [views.row(entry, states[entry.id], now) for entry in page]
    return _json({"tasks": rows, "total": total, "limit": query.limit, "offset": query.offset})


async def get_task(request: web.Request) -> web.Response:
    engine, store = request.app[ENGINE], request.app[STORE]
    entry = _entry(request)
    states = await engine.task_states([entry])
    view = request.app[VIEWS].detail(entry, states[entry.id], _now(engine))
    # Asked together: the store answers them in turn, but the loop waits once, not three times.
    finished = RunQuery(task_ids=(entry.id,), states=FINAL_STATES, limit=HISTORY, fresh=False, counted=False)
    stats, (recent, _), (history, _), fires = await asyncio.gather(
        store.task_stats(entry.id),
        store.list_runs(RunQuery(task_ids=(entry.id,), limit=10, fresh=False, counted=False)),
        store.list_runs(finished),
        store.fires(entry.id, limit=10),
    )
    # Read without waiting for the writer, which may lag the last ~25 ms of writes (longer on a
    # loaded machine): a run this node has finished is shown as it ended, from what is staged.
    recent = [(_ended_here(engine, store, run) or run) for run in recent]
    now = engine.clock.time()
    view["stats"] = stats
    view["recent_runs"] = [run.to_json(now) for run in recent]
    view["history"] = [history_point(run) for run in reversed(history)]
    view["skipped_fires"] = [fire_view(f) for f in fires]
    return _json(view)


HISTORY = 200
"""The latest finished runs a task's page charts."""


def _ended_here(engine: Engine, store: Store, run: RunRecord) -> RunRecord | None:
    """The run's staged end, when the store has `run` still active but this node has finished it."""
    if run.state in FINAL_STATES or run.node != engine.node_name or engine.live_run(run.id) is not None:
        return None
    return store.staged_run(run.id)


MAX_BODY_DEPTH = 32
"""How deep a request body's objects and arrays may nest."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


def _depth(value: Any) -> int:
    """How deep `value` nests (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level <= MAX_BODY_DEPTH:
            children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
            stack.extend((child, level + 1) for child in children)
    return deepest


async def _read_start_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()  # raises 413 beyond client_max_size
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ApiError(400, "bad_request", f"request body nests deeper than {MAX_BODY_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_request", f"request body is not valid JSON: {exc}") from None
    if _depth(body) > MAX_BODY_DEPTH:
        raise ApiError(400, "bad_request", f"request body nests deeper than {MAX_BODY_DEPTH} levels")
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", 'request body must be a JSON object such as {"params": {...}}')
    unknown = sorted(set(body) - {"params"})
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: params")
    params = body.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ApiError(400, "bad_request", '"params" must be a JSON object')
    return params


async def start_task(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    entry = _entry(request)
    params = await _read_start_body(request)
    try:
        run_id, state = await engine.start_manual(entry.id, params)
    except Overloaded as exc:
        raise ApiError(503, "overloaded", str(exc), {"Retry-After": str(exc.retry_after_s)}) from None
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    request[AUDITED] = f"run {run_id}"
    return _json({"run_id": run_id, "task_id": entry.id, "state": state}, status=202)


async def stop_task(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    entry = _entry(request)
    try:
        outcome = await engine.stop_task(entry.id, "stopped through the API")
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    request[AUDITED] = _runs_named(outcome.stopped, outcome.stopping)
    # 200 only when every run it stopped has ended; 202 while some are still stopping.
    return _json(
        {"task_id": entry.id, "stopped": outcome.stopped, "stopping": outcome.stopping},
        status=202 if outcome.stopping else 200,
    )


async def delete_task(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    entry = _entry(request)
    stopped = await engine.delete_task(entry.id)
    if stopped:
        request[AUDITED] = f"stopped {', '.join(stopped)}"
    return _json({"deleted": entry.id, "stopped": stopped})


def _runs_named(stopped: list[str], stopping: list[str]) -> str:
    told = [f"stopped {', '.join(stopped)}"] if stopped else []
    return "; ".join(told + ([f"still stopping {', '.join(stopping)}"] if stopping else []))


async def stop_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    try:
        outcome = await request.app[ENGINE].stop_run(run_id, "stopped through the API")
    except UnknownRun as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    request[AUDITED] = _runs_named(outcome.stopped, outcome.stopping)
    return _json(
        {"run_id": run_id, "stopped": bool(outcome.stopped), "stopping": bool(outcome.stopping)},
        status=202 if outcome.stopping else 200,
    )


async def rerun(request: web.Request) -> web.Response:
    """Start the run's task again with the params the run was given (secret ones excepted: they
    are never stored, and take the task's defaults)."""
    run_id = request.match_info["run_id"]
    try:
        started, state, dropped = await request.app[ENGINE].rerun(run_id)
    except (UnknownRun, UnknownTask) as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except Overloaded as exc:
        raise ApiError(503, "overloaded", str(exc), {"Retry-After": str(exc.retry_after_s)}) from None
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    run = request.app[ENGINE].live_run(started)
    task_id = run.record.task_id if run is not None else None
    request[AUDITED] = f"run {started}" + (f"; params not repeated: {', '.join(dropped)}" if dropped else "")
    return _json(
        {"run_id": started, "task_id": task_id, "state": state, "rerun_of": run_id, "params_not_repeated": dropped},
        status=202,
    )


async def whoami(request: web.Request) -> web.Response:
    """Who the token names and its role, for the dashboard to offer only what the role may do."""
    caller = caller_of(request) or NOBODY
    return _json({"name": caller.name, "role": caller.role, "auth": request.app[ACCESS].enabled})


RUN_FILTERS = ("state", "task_id", "trigger", "since", "until", "q", "sort", "limit", "offset")


def _choices(request: web.Request, name: str, allowed: Iterable[str]) -> tuple[str, ...]:
    """A comma list of values, each one of `allowed`."""
    raw = _given(request, name) or ""
    values = tuple(dict.fromkeys(raw.split(","))) if raw else ()
    if "" in values:
        raise ApiError(400, "bad_request", f"{name} {raw!r} has an empty item; write a comma list such as a,b")
    known = tuple(allowed)
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ApiError(
            400, "bad_request", f"{name} {unknown[0]!r} is not one of {', '.join(known)} (a comma list is allowed)"
        )
    return values


def _run_query(request: web.Request, task_ids: tuple[str, ...]) -> RunQuery:
    unknown = sorted(set(request.query) - set(RUN_FILTERS) - ({"task_id"} if task_ids else set()))
    if unknown:
        raise ApiError(400, "bad_request", f"unknown query parameter {unknown[0]!r}; allowed: {', '.join(RUN_FILTERS)}")
    sort = _given(request, "sort") or "-queued_at"
    if sort.lstrip("-") not in RUN_SORTS:
        raise ApiError(400, "bad_request", f"sort must be one of {', '.join(RUN_SORTS)} (prefix - to reverse)")
    text = (request.query.get("q") or "").strip() or None
    engine = request.app[ENGINE]
    return RunQuery(
        task_ids=task_ids,
        states=_choices(request, "state", (str(state) for state in RunState)),
        triggers=_choices(request, "trigger", (str(trigger) for trigger in Trigger)),
        since=_time_arg(request, "since"),
        until=_time_arg(request, "until"),
        text=text,
        text_task_ids=_tasks_matching(engine, text) if text else (),
        sort=sort.lstrip("-"),
        descending=sort.startswith("-"),
        limit=_int_arg(request, "limit", 50, 1, MAX_LIMIT),
        offset=_int_arg(request, "offset", 0, 0, MAX_OFFSET),
    )


def _tasks_matching(engine: Engine, text: str) -> tuple[str, ...]:
    """The tasks whose id or name holds `text` (any case), deleted ones held back included."""
    needle = text.lower()
    found = [e.id for e in engine.entries() if needle in e.id.lower() or needle in e.config.display_name.lower()]
    found += [task_id for task_id in engine.held_back if needle in task_id.lower()]
    return tuple(found)


async def _runs_answer(request: web.Request, task_ids: tuple[str, ...]) -> web.Response:
    engine = request.app[ENGINE]
    query = _run_query(request, task_ids)
    if any(_unstorable(text) for text in (*task_ids, query.text or "")):
        page = RunPage([], 0, True)  # no stored text holds a NUL (PostgreSQL refuses one in a query)
    else:
        page = await request.app[STORE].search_runs(query)
    runs, total = page.runs, page.total
    if total == 0 and task_ids and not any(engine.knows(task_id) for task_id in task_ids):
        raise ApiError(404, "not_found", f"task {task_ids[0]!r} does not exist")
    now = engine.clock.time()
    return _json({"runs": [r.to_json(now) for r in runs], "total": total, "total_exact": page.exact})


async def task_runs(request: web.Request) -> web.Response:
    return await _runs_answer(request, (request.match_info["id"],))


async def all_runs(request: web.Request) -> web.Response:
    raw = _given(request, "task_id") or ""
    task_ids = tuple(dict.fromkeys(raw.split(",")))
    if raw and "" in task_ids:
        raise ApiError(400, "bad_request", "task_id has an empty item; write a comma list such as a,b")
    return await _runs_answer(request, task_ids if raw else ())


def _unstorable(text: str) -> bool:
    """Text no store holds: a NUL (written text has them replaced; PostgreSQL refuses them)."""
    return "\x00" in text


async def _run_or_404(request: web.Request) -> RunRecord:
    """The run as it is now. A live run's record is copied: it changes while the handler awaits
    the store, and what the handler then reads must not be older than what it shows of the run."""
    run_id = request.match_info["run_id"]
    live = request.app[ENGINE].live_run(run_id)
    if live is not None:
        return copy.copy(live.record)
    run = None if _unstorable(run_id) else await request.app[STORE].get_run(run_id)
    if run is None:
        raise ApiError(404, "not_found", f"run {run_id!r} does not exist")
    return run


async def plan(request: web.Request) -> web.Response:
    """The forecast of the enabled tasks' fires: runs per hour, and the crowded minutes."""
    engine, plans = request.app[ENGINE], request.app[PLANS]
    days = _int_arg(request, "days", 7, 1, MAX_DAYS)
    async with plans.lock:
        key = (config_digest(engine.config), days, int(engine.clock.time() // 60))
        if plans.kept is None or plans.kept[0] != key:
            scheduled = [(e.id, e.schedule) for e in engine.entries() if e.schedule is not None and e.config.enabled]
            now = datetime.fromtimestamp(engine.clock.time(), UTC)
            slots = engine.config.task.max_concurrent_tasks
            # Seconds of work for a large configuration: in a thread, so the API keeps answering meanwhile.
            made = await asyncio.to_thread(forecast, scheduled, now, days, slots)
            plans.kept = (key, made.to_json())
        return _json(plans.kept[1])


MAX_UPCOMING_HOURS = 7 * 24
UPCOMING_PER_TASK = 100


async def upcoming_fires(request: web.Request) -> web.Response:
    """Each enabled task's fires in the next `hours` (24 by default), soonest first. Worked out
    one request at a time, and kept for the rest of the minute (as the forecast is)."""
    _only(request, ("hours", "limit"))
    engine, kept = request.app[ENGINE], request.app[UPCOMING]
    hours = _int_arg(request, "hours", 24, 1, MAX_UPCOMING_HOURS)
    limit = _int_arg(request, "limit", 500, 1, 10_000)
    async with kept.lock:
        minute = int(engine.clock.time() // 60)
        key = (config_digest(engine.config), hours * 100_000 + limit, minute)
        if kept.kept is None or kept.kept[0] != key:
            now = _now(engine)
            entries = {e.id: e for e in engine.entries() if e.schedule is not None and e.config.enabled}
            scheduled = [(task_id, e.schedule) for task_id, e in entries.items() if e.schedule is not None]
            # Thousands of tasks take a while: in a thread, so the API keeps answering meanwhile.
            found = await asyncio.to_thread(upcoming, scheduled, now, hours, UPCOMING_PER_TASK)
            tasks = [
                {
                    "task_id": item.task_id,
                    "time_zone": entries[item.task_id].time_zone,
                    "fires": [t.isoformat() for t in item.fires],
                    "more": item.more,
                }
                for item in found[:limit]
            ]
            window = {"from": iso(now.timestamp()), "until": iso(now.timestamp() + hours * 3600)}
            kept.kept = (key, {**window, "tasks": tasks, "truncated": len(found) > limit})
        return _json(kept.kept[1])


def _only(request: web.Request, allowed: tuple[str, ...]) -> None:
    """A 400 for a query parameter the endpoint does not take."""
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise ApiError(400, "bad_request", f"unknown query parameter {unknown[0]!r}; allowed: {', '.join(allowed)}")


MAX_STATS_MINUTES = 24 * 60


async def runs_per_minute(request: web.Request) -> web.Response:
    """Runs that finished in each of the last `minutes` minutes (60 by default), by final state."""
    _only(request, ("minutes",))
    engine = request.app[ENGINE]
    minutes = _int_arg(request, "minutes", 60, 1, MAX_STATS_MINUTES)
    now = engine.clock.time()
    last = int(now // 60)
    first = last - minutes + 1
    counts = await request.app[STORE].run_counts(first * 60.0, 60)
    buckets = {minute: dict.fromkeys(map(str, FINAL_STATES), 0) for minute in range(first, last + 1)}
    for minute, state, count in counts:
        if minute in buckets and state in buckets[minute]:
            buckets[minute][state] += count
    return _json(
        {
            "from": iso(first * 60.0),
            "until": iso(now),
            "bucket_s": 60,
            "buckets": [{"at": iso(minute * 60.0), **counted} for minute, counted in buckets.items()],
        }
    )


AUDIT_FILTERS = ("action", "actor", "since", "until", "limit", "offset")


async def audit_trail(request: web.Request) -> web.Response:
    """The audit trail, newest first: every start, stop, re-run, delete and reload, and every
    refused sign-in or action, with who, from where and the answer's status."""
    unknown = sorted(set(request.query) - set(AUDIT_FILTERS))
    if unknown:
        raise ApiError(
            400, "bad_request", f"unknown query parameter {unknown[0]!r}; allowed: {', '.join(AUDIT_FILTERS)}"
        )
    query = AuditQuery(
        actions=_choices(request, "action", AUDIT_ACTIONS),
        actor=_given(request, "actor"),
        since=_time_arg(request, "since"),
        until=_time_arg(request, "until"),
        limit=_int_arg(request, "limit", 50, 1, MAX_LIMIT),
        offset=_int_arg(request, "offset", 0, 0, MAX_OFFSET),
    )
    if query.actor is not None and _unstorable(query.actor):
        return _json({"entries": [], "total": 0})
    entries, total = await request.app[STORE].audit(query)
    return _json({"entries": [audit_view(entry) for entry in entries], "total": total})


async def get_run(request: web.Request) -> web.Response:
    store = request.app[STORE]
    run = await _run_or_404(request)
    attempts = await store.attempts(run.id)
    steps = await store.steps(run.id)
    transitions = await store.transitions(run.id)
    links = await store.run_links(run.id)
    engine = request.app[ENGINE]
    view = run_detail(run, attempts, steps, transitions, engine.clock.time(), links)
    live = engine.live_run(run.id)
    view["waiting_for"] = live.waiting_for if live is not None else []
    return _json(view)


async def run_log(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    # Lines are numbered from 1 without gaps: skipping `offset` lines is starting after line `offset`
    # (counted from `after` when both are given).
    start = _int_arg(request, "after", 0, 0, MAX_LOG_SEQ) + _int_arg(request, "offset", 0, 0, MAX_LOG_SEQ)
    limit = _int_arg(request, "limit", 0, 1, MAX_LOG_SEQ) or None
    run = await _run_or_404(request)
    if events.wants_stream(request):
        # A follower that reconnects says where it was; else it starts where after/offset say.
        raw = request.headers.get("Last-Event-ID", str(start)) or "0"
        if not raw.isdigit() or len(raw) > 18:
            raise ApiError(400, "bad_request", f"Last-Event-ID must be a log line's sequence number, got {raw[:40]!r}")
        return await events.follow_log(request, request.app[ENGINE], store, run.id, int(raw))
    pages = store.log_pages(run.id, start, limit)
    first = await anext(pages, None)  # a store that cannot answer is a JSON 503, before any byte
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    page = first
    while page is not None:
        await response.write("".join(f"{iso(x.ts)} [{x.stream}] {x.line}\n" for x in page).encode())
        page = await anext(pages, None)
    await response.write_eof()
    return response


async def reload_config(request: web.Request) -> web.Response:
    """Re-read the configuration file: 200 with what changed, or 422 with the errors that kept
    the running configuration (each naming file, line and key)."""
    outcome = await request.app[RELOAD]()
    body = outcome.to_json()
    if outcome.applied:
        return _json({"reload": body})
    message = "the new configuration was refused; the previous one runs:\n" + "\n".join(outcome.errors)
    return _json({"error": {"code": "config_refused", "message": message}, "reload": body}, status=422)


async def health(request: web.Request) -> web.Response:
    """`ok` (200); `degraded` (503) while the store has a fault or the scheduler is stopped. Faults
    that leave the daemon serving (a refused reload, a failed prune) are listed with status `ok`."""
    engine, store = request.app[ENGINE], request.app[STORE]
    faults = engine.faults
    await engine.check_store()  # now: the daemon's watch may not have seen it yet
    scheduler_ok = engine.scheduler_running
    healthy = faults.healthy and scheduler_ok
    status = "ok" if healthy else "degraded"
    code = 200 if healthy else 503
    current = faults.current()
    if caller_of(request) is None:
        return _json({"status": status, "faults": [fault.kind for fault in current]}, status=code)
    load = engine.load()
    store_fault = next((fault for fault in current if fault.kind in STORE_KINDS), None)
    body = {
        "status": status,
        "faults": [{"kind": f.kind, "reason": f.reason, "since": iso(f.since)} for f in current],
        "store": "ok" if store_fault is None else store_fault.kind,
        "scheduler": ("draining" if engine.draining else "running") if scheduler_ok else "stopped",
        "draining": engine.draining,
        "version": __version__,
        "uptime_s": round(engine.clock.time() - engine.started_at, 3),
        "tasks": engine.task_count,
        "active_runs": load.active_runs,
        "slots": {"limit": load.slots, "held": load.slots_in_use, "waiting": load.slots_waiting},
        "pending_writes": store.pending_writes,
        "overloaded": load.overloaded,
        "reload": engine.last_reload.to_json() if engine.last_reload else None,
        "resources": resources_view(engine),
    }
    return _json(body, status=code)


@functools.cache
def _openapi_body(secured: bool) -> bytes:
    return json.dumps(openapi.document(secured)).encode()


async def openapi_document(request: web.Request) -> web.Response:
    """The document as this daemon answers: with a token configured, every operation but the
    public ones requires it."""
    return web.Response(body=_openapi_body(request.app[ACCESS].enabled), content_type="application/json")


async def run_events(request: web.Request) -> web.StreamResponse:
    return await events.follow_states(request, request.app[ENGINE])


async def metrics_endpoint(request: web.Request) -> web.Response:
    """The Prometheus text exposition (same token as the rest of the API). The state is read on the
    loop; the text, which with thousands of tasks takes a while, is written in a thread."""
    snapshot = metrics_snapshot(request.app[ENGINE], request.app[STORE], request.app[VIEWS].next_fires)
    body = await asyncio.to_thread(request.app[METRICS].exposition, snapshot)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def list_nodes(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    nodes = await engine.nodes()
    return _json({"nodes": node_views(nodes, engine.node_name, engine.clock.time())})


async def drain_node(request: web.Request) -> web.Response:
    """Drain a node (this one or another live one): it fires nothing more, finishes its runs and
    exits 0; `GET /nodes` shows it draining meanwhile."""
    engine = request.app[ENGINE]
    name = request.match_info["name"]
    _only(request, ("wait",))
    wait = _given(request, "wait")
    if wait not in (None, "0", "1"):
        raise ApiError(400, "bad_request", "wait must be 0 or 1")
    if not await engine.drain_node(name):
        raise ApiError(404, "not_found", f"no live node named {name!r}")
    if wait != "1" or name != engine.node_name or engine.drain_outcome is None:
        return _json({"node": name, "draining": True}, status=202)
    # Answered when the drain ends: it has drained (the daemon then exits 0), or was cut short.
    outcome = await asyncio.shield(engine.drain_outcome)
    if outcome != "drained":
        raise ApiError(409, "conflict", f"node {name} did not drain: {outcome}")
    return _json({"node": name, "drained": True})


async def processors(request: web.Request) -> web.Response:
    return _json({"processors": describe_types(request.app[ENGINE].kinds), "common_options": sorted(COMMON_OPTIONS)})


def _now(engine: Engine) -> datetime:
    return datetime.fromtimestamp(engine.clock.time(), UTC)
