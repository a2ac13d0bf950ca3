"""The REST API: aiohttp routes between HTTP and the engine/store, with JSON errors and auth."""

from __future__ import annotations

import functools
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from taskd import __version__
from taskd.config import thaw
from taskd.engine import Conflict, Engine, TaskEntry, UnknownTask
from taskd.models import RunRecord, RunState, RunSummary, Trigger, iso
from taskd.pipeline import COMMON_OPTIONS, describe_options
from taskd.store import RunQuery, Store

log = structlog.get_logger("taskd.api")

ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
STORE: web.AppKey[Store] = web.AppKey("store", Store)
TOKEN: web.AppKey[str | None] = web.AppKey("token", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_LIMIT = 1000


class ApiError(web.HTTPException):
    """An error answered as JSON `{"error": {"code", "message"}}`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        super().__init__(
            text=json.dumps({"error": {"code": code, "message": message}}),
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
    except Exception:
        log.exception("api_handler_failed", method=request.method, path=request.path)
        raise ApiError(500, "internal", "internal error; see the daemon log") from None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[TOKEN]
    if token:
        header = request.headers.get("Authorization", "")
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(supplied.strip().encode(), token.encode()):
            raise ApiError(
                401, "unauthorized", "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="taskd"'}
            )
    return await handler(request)


def create_app(engine: Engine, store: Store, token: str | None, max_body_bytes: int) -> web.Application:
    """The HTTP application; the daemon owns its lifecycle through web.AppRunner."""
    app = web.Application(middlewares=[errors_middleware, auth_middleware], client_max_size=max_body_bytes)
    app[ENGINE] = engine
    app[STORE] = store
    app[TOKEN] = token
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
    return app


# -- helpers -------------------------------------------------------------------------------------


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, default=str))


def _int_arg(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"query parameter {name!r} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_request", f"query parameter {name!r} must be between {low} and {high}, got {value}")
    return value


def _time_arg(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "bad_request", f"query parameter {name!r} must be an ISO-8601 instant") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _entry(request: web.Request) -> TaskEntry:
    try:
        return request.app[ENGINE].entry(request.match_info["id"])
    except UnknownTask as exc:
        raise ApiError(404, "not_found", str(exc)) from None


def _last_run_view(run: RunRecord | RunSummary | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": run.id,
        "state": str(run.state),
        "trigger": str(run.trigger),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration": None if run.duration is None else round(run.duration, 3),
    }


@functools.lru_cache(maxsize=65536)
def _finished_view(summary: RunSummary) -> dict[str, Any] | None:
    """A finished run never changes: its view is built once (callers must not mutate it)."""
    return _last_run_view(summary)


def _task_view(engine: Engine, entry: TaskEntry, now: datetime) -> dict[str, Any]:
    last = engine.last_runs.get(entry.id)
    last_view = _finished_view(last) if isinstance(last, RunSummary) else _last_run_view(last)
    return {
        **entry.static_view,
        "status": engine.status(entry.id),
        "last_run": last_view,
        "next_run": engine.next_fire_iso(entry.id, now),
        "duration": None if last is None or last.duration is None else round(last.duration, 3),
    }


# -- handlers ------------------------------------------------------------------------------------

SORT_KEYS = {"id", "name", "status", "next_run", "priority"}


async def list_tasks(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    limit = _int_arg(request, "limit", 100, 1, MAX_LIMIT)
    offset = _int_arg(request, "offset", 0, 0, 10**9)
    status = request.query.get("status") or None
    needle = (request.query.get("q") or "").lower()
    sort = request.query.get("sort") or "id"
    descending = sort.startswith("-")
    if sort.lstrip("-") not in SORT_KEYS:
        raise ApiError(400, "bad_request", f"sort must be one of {', '.join(sorted(SORT_KEYS))} (prefix - to reverse)")
    entries = engine.sorted_entries()
    if needle or status is not None:
        entries = [
            e
            for e in entries
            if (not needle or needle in e.id.lower() or needle in e.config.display_name.lower())
            and (status is None or engine.status(e.id) == status)
        ]
    else:
        entries = list(entries)
    now = datetime.now(UTC)
    key = sort.lstrip("-")
    if key == "id":
        if descending:
            entries.reverse()
        views = [_task_view(engine, e, now) for e in entries[offset : offset + limit]]
    elif key in ("name", "priority"):
        attribute = {
            "id": lambda e: e.id,
            "name": lambda e: e.config.display_name,
            "priority": lambda e: e.config.priority,
        }
        entries.sort(key=attribute[key], reverse=descending)
        views = [_task_view(engine, e, now) for e in entries[offset : offset + limit]]
    else:
        all_views = [_task_view(engine, e, now) for e in entries]
        all_views.sort(key=lambda v: (v[key] is None, v[key] or ""), reverse=descending)
        views = all_views[offset : offset + limit]
    return _json({"tasks": views, "total": len(entries), "limit": limit, "offset": offset})


async def get_task(request: web.Request) -> web.Response:
    engine, store = request.app[ENGINE], request.app[STORE]
    entry = _entry(request)
    now = datetime.now(UTC)
    view = _task_view(engine, entry, now)
    task = entry.config
    view["definition"] = {
        **thaw(task.model_dump(mode="json")),
        "pipeline": {
            "name": entry.pipeline.name,
            "description": entry.pipeline.description,
            "processors": [
                {p.type: p.options.model_dump(mode="json", by_alias=True, exclude_defaults=True)}
                for p in entry.pipeline.processors
            ],
        },
        "source": str(entry.source) if entry.source else None,
    }
    view["next_runs"] = (
        [t.isoformat() for t in entry.schedule.next_n(now, 5)] if entry.schedule and task.enabled else []
    )
    view["active_runs"] = [run.record.to_json() for run in engine.active_runs(entry.id)]
    view["stats"] = await store.task_stats(entry.id)
    recent, _ = await store.list_runs(RunQuery(task_id=entry.id, limit=10, fresh=False))
    view["recent_runs"] = [run.to_json() for run in recent]
    view["skipped_fires"] = [
        {"instant": iso(f.instant), "kind": f.kind, "reason": f.reason, "recorded_at": iso(f.recorded_at)}
        for f in await store.fires(entry.id, limit=10)
    ]
    return _json(view)


async def _read_start_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()  # raises 413 beyond client_max_size
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_request", f"request body is not valid JSON: {exc}") from None
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
        run = engine.start_run(entry.id, Trigger.MANUAL, params=params)
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return _json({"run_id": run.id, "task_id": entry.id, "state": str(run.state)}, status=202)


async def stop_task(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    entry = _entry(request)
    try:
        stopped = await engine.stop_task(entry.id, "stopped through the API")
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return _json({"task_id": entry.id, "stopped": stopped})


async def delete_task(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    entry = _entry(request)
    stopped = await engine.delete_task(entry.id)
    return _json({"deleted": entry.id, "stopped": stopped})


def _run_query(request: web.Request, task_id: str | None) -> RunQuery:
    state = request.query.get("state") or None
    if state is not None and state not in {s.value for s in RunState}:
        raise ApiError(400, "bad_request", f"state must be one of {', '.join(s.value for s in RunState)}")
    trigger = request.query.get("trigger") or None
    if trigger is not None and trigger not in {t.value for t in Trigger}:
        raise ApiError(400, "bad_request", f"trigger must be one of {', '.join(t.value for t in Trigger)}")
    return RunQuery(
        task_id=task_id,
        state=state,
        trigger=trigger,
        since=_time_arg(request, "since"),
        until=_time_arg(request, "until"),
        limit=_int_arg(request, "limit", 50, 1, MAX_LIMIT),
        offset=_int_arg(request, "offset", 0, 0, 10**9),
    )


async def task_runs(request: web.Request) -> web.Response:
    engine, store = request.app[ENGINE], request.app[STORE]
    task_id = request.match_info["id"]
    query = _run_query(request, task_id)
    runs, total = await store.list_runs(query)
    if total == 0 and task_id not in engine.tasks and task_id not in engine.held_back:
        raise ApiError(404, "not_found", f"task {task_id!r} does not exist")
    return _json({"runs": [r.to_json() for r in runs], "total": total})


async def all_runs(request: web.Request) -> web.Response:
    runs, total = await request.app[STORE].list_runs(_run_query(request, request.query.get("task_id") or None))
    return _json({"runs": [r.to_json() for r in runs], "total": total})


async def _run_or_404(request: web.Request) -> RunRecord:
    run_id = request.match_info["run_id"]
    live = request.app[ENGINE].runs.get(run_id)
    if live is not None:
        return live.record
    run = await request.app[STORE].get_run(run_id)
    if run is None:
        raise ApiError(404, "not_found", f"run {run_id!r} does not exist")
    return run


async def get_run(request: web.Request) -> web.Response:
    store = request.app[STORE]
    run = await _run_or_404(request)
    view = run.to_json()
    steps = await store.steps(run.id)
    view["attempt_list"] = [
        {
            "number": a.number,
            "state": str(a.state),
            "started_at": iso(a.started_at),
            "finished_at": iso(a.finished_at),
            "duration": None if a.finished_at is None else round(a.finished_at - a.started_at, 3),
            "error": a.error,
            "steps": [
                {
                    "index": s.index,
                    "type": s.type,
                    "state": str(s.state),
                    "started_at": iso(s.started_at),
                    "finished_at": iso(s.finished_at),
                    "duration": None if s.finished_at is None else round(s.finished_at - s.started_at, 3),
                    "error": s.error,
                }
                for s in steps
                if s.attempt == a.number
            ],
        }
        for a in await store.attempts(run.id)
    ]
    view["transitions"] = [
        {"state": t.state, "at": iso(t.at), "detail": t.detail} for t in await store.transitions(run.id)
    ]
    return _json(view)


async def run_log(request: web.Request) -> web.Response:
    store = request.app[STORE]
    run = await _run_or_404(request)
    lines = await store.run_log(run.id)
    text = "".join(f"{iso(x.ts)} [{x.stream}] {x.line}\n" for x in lines)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def health(request: web.Request) -> web.Response:
    engine, store = request.app[ENGINE], request.app[STORE]
    store_ok = await store.ping()
    scheduler_ok = engine.scheduler_running
    body = {
        "status": "ok" if store_ok and scheduler_ok else "unavailable",
        "store": "ok" if store_ok else "unreachable",
        "scheduler": "running" if scheduler_ok else "stopped",
        "version": __version__,
        "uptime_s": round(time.time() - engine.started_at, 3),
        "tasks": len(engine.tasks),
        "active_runs": len(engine.runs),
        "slots": {"limit": engine.slots.limit, "held": engine.slots.held, "waiting": engine.slots.waiting},
    }
    return _json(body, status=200 if body["status"] == "ok" else 503)


async def processors(request: web.Request) -> web.Response:
    kinds = request.app[ENGINE].kinds
    return _json(
        {
            "processors": [
                {"type": name, "summary": kind.summary, "options": describe_options(kind)}
                for name, kind in sorted(kinds.items())
            ],
            "common_options": sorted(COMMON_OPTIONS),
        }
    )
