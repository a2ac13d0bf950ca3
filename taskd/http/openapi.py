"""The OpenAPI 3.1 description of the API (`GET /openapi.json`). A test keeps it in step with the
routes, and schemathesis checks the daemon's answers against it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from taskd import __version__
from taskd.alerts import EVENTS, LOG_TAIL
from taskd.config.schema import ROLES
from taskd.durations import AGO
from taskd.engine import STOP_WAIT_S, TASK_STATUSES
from taskd.faults import KINDS as FAULT_KINDS
from taskd.forecast import MAX_DAYS, NAMED
from taskd.http.access import AUDIT_ACTIONS
from taskd.http.selection import TASK_SORTS
from taskd.models import FINAL_STATES, USAGE_SOURCES, RunState, Trigger
from taskd.recorder import MAX_LOG_LINES
from taskd.store.base import EXACT_TEXT_UP_TO, EXACT_UP_TO, RUN_SORTS


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, links: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if links:
        answer["links"] = links
    return answer


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _object(required: list[str], properties: dict[str, Any], extra: bool = False) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": extra}


INSTANT = {"type": "string", "format": "date-time"}
_FAULT_KIND = {"type": "string", "enum": list(FAULT_KINDS)}
_FAULTS = {
    "type": "array",
    "description": "kinds only without the token; with it, each fault's kind, reason and start",
    "items": {
        "oneOf": [
            _FAULT_KIND,
            _object(["kind", "reason", "since"], {"kind": _FAULT_KIND, "reason": {"type": "string"}, "since": INSTANT}),
        ]
    },
}
RUN_STOP_ANSWER = _object(
    ["run_id", "stopped", "stopping"],
    {"run_id": {"type": "string"}, "stopped": {"type": "boolean"}, "stopping": {"type": "boolean"}},
)
ERRORS = {
    "400": _error("malformed input"),
    "401": _error("missing or wrong bearer token"),
    "403": _error("the token's role may not do this (the error's required_role names the role that may)"),
    "503": _error("the store cannot answer now (code store_unavailable; the reason is in the message)"),
}
RUN_PROPERTIES = {
    "id": {"type": "string"},
    "task_id": {"type": "string"},
    "trigger": {"type": "string", "enum": [str(t) for t in Trigger]},
    "state": {"type": "string", "enum": [str(s) for s in RunState]},
    "scheduled_at": _nullable("string", format="date-time"),
    "queued_at": INSTANT,
    "started_at": _nullable("string", format="date-time"),
    "finished_at": _nullable("string", format="date-time"),
    "duration": _nullable("number"),
    "attempts": {"type": "integer"},
    "error": _nullable("string"),
    "params": {"type": "object"},
    "priority": {"type": "integer"},
    "node": _nullable("string", description="the node that ran it"),
    "usage": {
        "oneOf": [
            _object(
                ["cpu_s", "peak_memory_bytes", "processes", "source", "unknown", "peak_memory_at_most"],
                {
                    "cpu_s": _nullable("number", description="CPU seconds, user + system, of its step processes"),
                    "peak_memory_bytes": _nullable(
                        "integer", description="the largest resident set among its step processes"
                    ),
                    "processes": {"type": "integer", "description": "step processes it started"},
                    "source": {"type": "string", "enum": list(USAGE_SOURCES)},
                    "unknown": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "steps whose use cannot be told (a python step runs inside taskd)",
                    },
                    "peak_memory_at_most": _nullable(
                        "integer",
                        description="when the peak is unknown (rusage of a process at or under taskd's own"
                        " peak, which it starts from): how large it could have been",
                    ),
                },
            ),
            {"type": "null"},
        ],
        "description": "what its steps used (null before its first attempt)",
    },
}
TASK_PROPERTIES = {
    "id": {"type": "string"},
    "name": {"type": "string"},
    "enabled": {"type": "boolean"},
    "status": {"type": "string", "enum": list(TASK_STATUSES)},
    "schedule": _nullable("string"),
    "schedule_text": _nullable("string", description="the schedule in words, with its time zone"),
    "time_zone": {"type": "string"},
    "pipeline": {"type": "string"},
    "priority": {"type": "integer"},
    "concurrency": {"type": "string", "enum": ["forbid", "allow", "replace", "queue"]},
    "params": {"type": "object", "description": "the task's default params"},
    "last_run": {"oneOf": [_ref("LastRun"), {"type": "null"}]},
    "next_run": _nullable("string", format="date-time"),
    "duration": _nullable("number"),
    "after": {
        "type": "array",
        "items": {"type": "string"},
        "description": "the tasks it runs after (after:), none for most",
    },
    "waiting_on": {
        "type": "array",
        "items": {"type": "string"},
        "description": "upstream tasks (after:) that were deleted or disabled: the task waits on them",
    },
}
ALERT_FIELDS: dict[str, Any] = {
    "event": {
        "type": "string",
        "enum": list(EVENTS),
        "description": "failing: the first failure after success; reminder: still failing after repeat_interval;"
        " recovered: the first success after failing or overdue; overdue: no success within expect.success_within",
    },
    "text": {"type": "string", "description": "one line that says it all"},
    "task": _object(["id", "name"], {"id": {"type": "string"}, "name": {"type": "string"}}),
    "node": {"type": "string", "description": "node.name of the taskd that sent it"},
    "host": {"type": "string", "description": "the host name of the machine that sent it"},
    "at": {**INSTANT, "description": "when the change happened"},
    "run_id": _nullable("string", description="the run that caused it (null for overdue)"),
    "run_url": _nullable("string", description="the run's page, when api.public_url is set"),
    "trigger": _nullable("string", enum=[*(str(t) for t in Trigger), None]),
    "state": _nullable("string", description="the run's final state"),
    "attempts": _nullable("integer", description="attempts the run made"),
    "error": _nullable("string", description="the run's error (secrets masked)"),
    "log_tail": {
        "type": "array",
        "items": {"type": "string"},
        "maxItems": LOG_TAIL,
        "description": f"the run's last {LOG_TAIL} log lines, each as [stream] text",
    },
    "failing_since": _nullable("string", format="date-time", description="when the task began failing"),
    "failures": {
        "type": "integer",
        "description": "failing: 1; reminder: failures since the last alert; recovered: failures in all; overdue: 0",
    },
    "failing_for_s": _nullable("number", description="recovered: how long it was failing, in seconds"),
    "last_success": _nullable("string", format="date-time", description="the task's last successful run"),
    "success_within_s": _nullable("number", description="the task's expect.success_within, in seconds"),
    "overdue_for_s": _nullable("number", description="overdue: seconds past the expected success"),
}
SCHEMAS: dict[str, Any] = {
    "Error": _object(
        ["error"],
        {
            "error": _object(
                ["code", "message"],
                {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "required_role": {"type": "string", "enum": list(ROLES), "description": "403: the role needed"},
                },
            )
        },
    ),
    "AuditEntry": _object(
        ["at", "action", "actor", "role", "remote", "target", "status", "detail"],
        {
            "at": INSTANT,
            "action": {"type": "string", "enum": list(AUDIT_ACTIONS)},
            "actor": _nullable("string", description="the token's name (null: no tokens, or none matched)"),
            "role": _nullable("string"),
            "remote": _nullable("string", description="the client's address"),
            "target": _nullable("string", description="the task or run acted on"),
            "status": {"type": "integer", "description": "the answer's HTTP status"},
            "detail": _nullable("string"),
        },
    ),
    "LastRun": _object(
        ["id", "state", "trigger", "started_at", "finished_at", "duration"],
        {key: RUN_PROPERTIES[key] for key in ("id", "state", "trigger", "started_at", "finished_at", "duration")},
    ),
    "Task": _object(list(TASK_PROPERTIES), TASK_PROPERTIES),
    "TaskDetail": _object(
        [
            *TASK_PROPERTIES,
            "definition",
            "next_runs",
            "active_runs",
            "stats",
            "recent_runs",
            "skipped_fires",
            "history",
            "alert",
            "upstream",
            "downstream",
            "waiting_for",
            "spread",
        ],
        {
            **TASK_PROPERTIES,
            "upstream": {
                "oneOf": [
                    _object(
                        ["tasks", "when", "mode"],
                        {
                            "tasks": {"type": "array", "items": {"type": "string"}},
                            "when": {"type": "string", "enum": ["success", "failure", "always"]},
                            "mode": {"type": "string", "enum": ["all", "any"]},
                        },
                    ),
                    {"type": "null"},
                ],
                "description": "its after: the tasks it runs after (null: none)",
            },
            "downstream": {
                "type": "array",
                "items": {"type": "string"},
                "description": "the tasks that run after it",
            },
            "waiting_for": {
                "type": "array",
                "items": {"type": "string"},
                "description": "with mode: all, the upstream tasks with no run it has not taken yet",
            },
            "spread": {
                "oneOf": [
                    _object(
                        ["spread_s", "offset_s"], {"spread_s": {"type": "number"}, "offset_s": {"type": "integer"}}
                    ),
                    {"type": "null"},
                ],
                "description": "its spread, and the offset its fires are shifted by",
            },
            "alert": {"oneOf": [_ref("TaskAlertState"), {"type": "null"}]},
            "definition": {"type": "object"},
            "next_runs": {"type": "array", "items": INSTANT},
            "active_runs": {"type": "array", "items": _ref("Run")},
            "stats": {"type": "object"},
            "recent_runs": {"type": "array", "items": _ref("Run")},
            "skipped_fires": {"type": "array", "items": _ref("SkippedFire")},
            "history": {
                "type": "array",
                "description": "the latest finished runs (200 at most), oldest first, as its chart plots them",
                "items": _object(
                    ["id", "state", "finished_at", "duration"],
                    {
                        "id": {"type": "string"},
                        "state": RUN_PROPERTIES["state"],
                        "finished_at": _nullable("string", format="date-time"),
                        "duration": _nullable("number"),
                    },
                ),
            },
        },
    ),
    "SkippedFire": _object(
        ["instant", "kind", "reason", "recorded_at", "count", "last_instant"],
        {
            "instant": {**INSTANT, "description": "the first fire refused"},
            "kind": {"type": "string", "enum": ["skipped", "missed"]},
            "reason": {"type": "string", "description": "why the latest one was refused"},
            "recorded_at": INSTANT,
            "count": {
                "type": "integer",
                "minimum": 1,
                "description": "fires refused for this reason until a run began",
            },
            "last_instant": _nullable("string", format="date-time", description="the last one, when count > 1"),
        },
    ),
    "TaskAlertState": _object(
        ["status", "since", "failures", "notified_at", "overdue", "last_success", "success_within_s"],
        {
            "status": {"type": "string", "enum": ["ok", "failing"]},
            "since": _nullable("string", format="date-time", description="failing since, or ok since"),
            "failures": {"type": "integer", "description": "failed runs since it began failing"},
            "notified_at": _nullable("string", format="date-time", description="the last failing alert or reminder"),
            "overdue": {"type": "boolean", "description": "its last success is older than expect.success_within"},
            "last_success": _nullable("string", format="date-time"),
            "success_within_s": _nullable("number"),
        },
    ),
    "Alert": {
        **_object(list(ALERT_FIELDS), ALERT_FIELDS),
        "description": "What an alerts: route sends: the body of a json webhook, the alert.json of an e-mail."
        " A slack webhook gets {text} made of the same facts.",
    },
    "ReloadOutcome": _object(
        ["at", "outcome", "errors", "changes"],
        {
            "at": INSTANT,
            "outcome": {"type": "string", "enum": ["applied", "refused"]},
            "errors": {"type": "array", "items": {"type": "string"}, "description": "file:line: key: what is wrong"},
            "changes": {
                "type": "object",
                "description": "task ids by change: added, changed, removed, held_back (deleted through the API)",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
        },
    ),
    "Plan": _object(
        ["from", "until", "max_concurrent_tasks", "hours", "crowded", "crowded_minutes", "cut_short"],
        {
            "from": INSTANT,
            "until": INSTANT,
            "max_concurrent_tasks": {"type": "integer"},
            "hours": {
                "type": "array",
                "items": _object(
                    ["hour", "runs", "tasks"],
                    {"hour": INSTANT, "runs": {"type": "integer"}, "tasks": {"type": "integer"}},
                ),
            },
            "crowded": {
                "type": "array",
                "description": "minutes when more tasks are due than max_concurrent_tasks (a task counts once)",
                "items": _object(
                    ["minute", "tasks_due", "over_by", "tasks"],
                    {
                        "minute": INSTANT,
                        "tasks_due": {"type": "integer"},
                        "over_by": {"type": "integer"},
                        "tasks": {"type": "array", "items": {"type": "string"}, "maxItems": NAMED},
                    },
                ),
            },
            "crowded_minutes": {"type": "integer", "description": "every crowded minute (crowded lists 2,000 at most)"},
            "cut_short": {"type": "array", "items": {"type": "string"}, "description": "what was left out, and why"},
        },
    ),
    "Run": _object(list(RUN_PROPERTIES), RUN_PROPERTIES),
    "RunDetail": _object(
        [*RUN_PROPERTIES, "attempt_list", "transitions", "upstream_runs", "downstream_runs", "waiting_for"],
        {
            **RUN_PROPERTIES,
            "waiting_for": {
                "type": "array",
                "items": {"type": "string"},
                "description": "what a queued run waits for: pool <name>, memory, cpu, slot (empty otherwise)",
            },
            "upstream_runs": {
                "type": "array",
                "description": "the upstream runs that triggered it (trigger dependency)",
                "items": _object(
                    ["run_id", "task_id", "state", "finished_at"],
                    {
                        "run_id": {"type": "string"},
                        "task_id": {"type": "string"},
                        "state": {"type": "string"},
                        "finished_at": INSTANT,
                    },
                ),
            },
            "downstream_runs": {
                "type": "array",
                "description": "the downstream tasks it triggered, with their run (null while it waits)",
                "items": _object(["task_id", "run_id"], {"task_id": {"type": "string"}, "run_id": _nullable("string")}),
            },
            "attempt_list": {"type": "array", "items": {"type": "object"}},
            "transitions": {"type": "array", "items": {"type": "object"}},
        },
    ),
}


def _task_id() -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _run_id() -> dict[str, Any]:
    return {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


MAX_OFFSET = 10**9
MAX_LOG_SEQ = MAX_LOG_LINES + 1
PAGING = [
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
    _query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}, "rows to skip"),
]


def _comma_list(values: list[str]) -> dict[str, Any]:
    one = "|".join(values)
    return {"type": "string", "pattern": f"^({one})(,({one}))*$"}


def _sorts(keys: Iterable[str]) -> dict[str, Any]:
    return {"type": "string", "enum": [prefix + key for key in keys for prefix in ("", "-")]}


_ISO_OR_EPOCH = {
    "anyOf": [
        INSTANT,
        {"type": "string", "pattern": r"^-?[0-9]{1,11}(\.[0-9]{1,6})?$"},
        {"type": "string", "pattern": f"^{AGO}$", "description": "that long ago: 2h, 30m, 1h30m, 90s, 2d"},
    ]
}
RUN_FILTERS = [
    _query("state", _comma_list([str(s) for s in RunState]), "comma list of run states"),
    _query("trigger", _comma_list([str(t) for t in Trigger]), "comma list of triggers"),
    _query("since", _ISO_OR_EPOCH, "queued at or after: ISO-8601, epoch seconds, or a time ago (2h)"),
    _query("until", _ISO_OR_EPOCH, "queued before: ISO-8601, epoch seconds, or a time ago (30m)"),
    _query("q", {"type": "string"}, "text in the error or params, or in the task's id or name"),
    _query("sort", _sorts(RUN_SORTS), "a sort key; prefix - for descending"),
    *PAGING,
]
RUN_LIST = _json(
    _object(
        ["runs", "total", "total_exact"],
        {
            "runs": {"type": "array", "items": _ref("Run")},
            "total": {"type": "integer"},
            "total_exact": {
                "type": "boolean",
                "description": f"false: more than {EXACT_UP_TO:,} runs match ({EXACT_TEXT_UP_TO:,} for a text"
                " search), and total is the database's estimate",
            },
        },
    ),
    "runs, newest first unless sorted otherwise",
)


_RUN_IDS = {"type": "array", "items": {"type": "string"}}
STOP_ANSWER = _object(
    ["task_id", "stopped", "stopping"],
    {
        "task_id": {"type": "string"},
        "stopped": {**_RUN_IDS, "description": "the runs stopped that have ended"},
        "stopping": {**_RUN_IDS, "description": "the runs told to stop that have not ended yet"},
    },
)


def document(secured: bool = True) -> dict[str, Any]:
    """The whole OpenAPI document; `secured`: a token is configured, and required."""
    paths: dict[str, Any] = {
        "/tasks": {
            "get": {
                "operationId": "listTasks",
                "summary": "List tasks",
                "parameters": [
                    _query("status", {"type": "string", "enum": list(TASK_STATUSES)}, "only tasks in this status"),
                    _query("q", {"type": "string"}, "text in the task's id or name"),
                    _query("sort", _sorts(TASK_SORTS), "id, name, status, next_run or priority; - reverses"),
                    *PAGING,
                ],
                "responses": {
                    "200": _json(
                        _object(
                            ["tasks", "total", "limit", "offset"],
                            {
                                "tasks": {"type": "array", "items": _ref("Task")},
                                "total": {"type": "integer"},
                                "limit": {"type": "integer"},
                                "offset": {"type": "integer"},
                            },
                        ),
                        "the tasks",
                        links={
                            "GetTask": {"operationId": "getTask", "parameters": {"id": "$response.body#/tasks/0/id"}}
                        },
                    ),
                    **ERRORS,
                },
            }
        },
        "/task/{id}": {
            "get": {
                "operationId": "getTask",
                "summary": "One task",
                "parameters": [_task_id()],
                "responses": {"200": _json(_ref("TaskDetail"), "the task"), **ERRORS, "404": _error("no such task")},
            },
            "delete": {
                "operationId": "deleteTask",
                "summary": "Stop the task's runs and delete it",
                "parameters": [_task_id()],
                "responses": {
                    "200": _json(
                        _object(
                            ["deleted", "stopped"],
                            {"deleted": {"type": "string"}, "stopped": {"type": "array", "items": {"type": "string"}}},
                        ),
                        "deleted",
                    ),
                    **ERRORS,
                    "404": _error("no such task"),
                },
            },
        },
        "/task/{id}/_start": {
            "post": {
                "operationId": "startTask",
                "summary": "Start a run now",
                "parameters": [_task_id()],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": _object(
                                [],
                                {
                                    "params": {
                                        "type": ["object", "null"],
                                        "description": "overrides of the task's params (null: none); plain JSON,"
                                        " nested 32 levels at most",
                                    }
                                },
                            )
                        }
                    },
                },
                "responses": {
                    "202": _json(
                        _object(
                            ["run_id", "task_id", "state"],
                            {"run_id": {"type": "string"}, "task_id": {"type": "string"}, "state": {"type": "string"}},
                        ),
                        "the run was created",
                        links={
                            "GetRun": {"operationId": "getRun", "parameters": {"run_id": "$response.body#/run_id"}},
                            "GetRunLog": {
                                "operationId": "getRunLog",
                                "parameters": {"run_id": "$response.body#/run_id"},
                            },
                            "StopTask": {"operationId": "stopTask", "parameters": {"id": "$request.path.id"}},
                        },
                    ),
                    **ERRORS,
                    "404": _error("no such task"),
                    "409": _error("the task's concurrency policy refuses another run"),
                    "413": _error("the body is larger than api.max_body_bytes"),
                    "503": {
                        **_error(
                            "taskd is overloaded (store.max_pending, task.max_waiting_runs; try again later), "
                            "or the store cannot answer now"
                        ),
                        "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
                    },
                },
            }
        },
        "/_reload": {
            "post": {
                "operationId": "reloadConfig",
                "summary": "Re-read the configuration file (what SIGHUP and `taskd reload` do)",
                "description": "200 once the new configuration runs, with the task ids it added, changed and "
                "removed; 422 when it was refused (its errors name file, line and key) and the previous one "
                "runs. /health shows the last reload either way.",
                "responses": {
                    "200": _json(_object(["reload"], {"reload": _ref("ReloadOutcome")}), "the new configuration runs"),
                    "422": _json(
                        _object(
                            ["error", "reload"],
                            {"error": SCHEMAS["Error"]["properties"]["error"], "reload": _ref("ReloadOutcome")},
                        ),
                        "refused: the previous configuration runs (code config_refused)",
                    ),
                    **ERRORS,
                },
            }
        },
        "/task/{id}/_stop": {
            "post": {
                "operationId": "stopTask",
                "summary": "Stop the task's active runs",
                "description": f"Stops the runs here and on the other nodes, and waits ({STOP_WAIT_S:g} s at most) "
                "until they have ended: 200 when every one has, 202 with those still stopping when some have not. "
                "GET /run/{run_id} tells when a run still stopping has ended.",
                "parameters": [_task_id()],
                "responses": {
                    "200": _json(STOP_ANSWER, "every run stopped has ended (`stopping` is empty)"),
                    "202": _json(STOP_ANSWER, "some runs told to stop have not ended yet: they are in `stopping`"),
                    **ERRORS,
                    "404": _error("no such task"),
                    "409": _error("nothing to stop"),
                },
            }
        },
        "/task/{id}/runs": {
            "get": {
                "operationId": "listTaskRuns",
                "summary": "A task's run history",
                "parameters": [_task_id(), *RUN_FILTERS],
                "responses": {"200": RUN_LIST, **ERRORS, "404": _error("no such task")},
            }
        },
        "/runs": {
            "get": {
                "operationId": "listRuns",
                "summary": "Run history",
                "parameters": [
                    _query("task_id", {"type": "string", "pattern": "^[^,]+(,[^,]+)*$"}, "comma list of task ids"),
                    *RUN_FILTERS,
                ],
                "responses": {"200": RUN_LIST, **ERRORS, "404": _error("no such task")},
            }
        },
        "/run/{run_id}": {
            "get": {
                "operationId": "getRun",
                "summary": "One run, with its attempts and steps",
                "parameters": [_run_id()],
                "responses": {"200": _json(_ref("RunDetail"), "the run"), **ERRORS, "404": _error("no such run")},
            }
        },
        "/run/{run_id}/log": {
            "get": {
                "operationId": "getRunLog",
                "summary": "A run's log; with follow=1, server-sent events until the run ends",
                "description": "One line per log line: `time [stream] text`, control characters in the text"
                " escaped. Lines are numbered from 1; `after` (or `offset`) skips that many, `limit` caps the page:"
                " a page shorter than `limit` is the last.",
                "parameters": [
                    _run_id(),
                    _query("follow", {"type": "string", "enum": ["0", "1"]}, "1: stream the log as it is written"),
                    _query("after", {"type": "integer", "minimum": 0, "maximum": MAX_LOG_SEQ}, "lines to skip"),
                    _query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_LOG_SEQ}, "more lines to skip"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LOG_SEQ}, "lines at most"),
                ],
                "responses": {
                    "200": {
                        "description": "the log",
                        "content": {"text/plain": {"schema": {"type": "string"}}, "text/event-stream": {}},
                    },
                    **ERRORS,
                    "404": _error("no such run"),
                },
            }
        },
        "/": {
            "get": {
                "summary": "The web dashboard (a page that holds no data: no token needed)",
                "security": [{}],
                "responses": {
                    "200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}},
                    "304": {"description": "not modified since the ETag sent in If-None-Match"},
                },
            }
        },
        "/ui/{name}": {
            "get": {
                "summary": "A dashboard file: app.js, the modules it imports, style.css, favicon.svg (no token)",
                "security": [{}],
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {
                            media: {"schema": {"type": "string"}}
                            for media in ("text/javascript", "text/css", "image/svg+xml")
                        },
                    },
                    "304": {"description": "not modified since the ETag sent in If-None-Match"},
                    "404": _error("no such file"),
                },
            }
        },
        "/events": {
            "get": {
                "summary": "Every run's state changes, as server-sent events",
                "responses": {"200": {"description": "a stream", "content": {"text/event-stream": {}}}, **ERRORS},
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness and readiness, with the current faults (their reasons with the token)",
                "security": [{}, {"bearer": []}] if secured else [{}],
                "responses": {
                    "200": _json(
                        _object(["status", "faults"], {"status": {"const": "ok"}, "faults": _FAULTS}, extra=True),
                        "serving (a refused reload or a failed prune is listed in faults)",
                    ),
                    "503": _json(
                        _object(["status", "faults"], {"status": {"const": "degraded"}, "faults": _FAULTS}, extra=True),
                        "the store has a fault (commits fail, its file is gone, it is unreachable) or the "
                        "scheduler is stopped",
                    ),
                },
            }
        },
        "/plan": {
            "get": {
                "operationId": "plan",
                "summary": "The forecast: runs due each hour, and the minutes with more tasks due than slots",
                "parameters": [
                    _query("days", {"type": "integer", "minimum": 1, "maximum": MAX_DAYS}, "how many days ahead (7)")
                ],
                "responses": {"200": _json(_ref("Plan"), "the forecast"), **ERRORS},
            }
        },
        "/nodes": {
            "get": {
                "summary": "The nodes sharing the store (this one alone with SQLite)",
                "responses": {
                    "200": _json(
                        _object(
                            ["nodes"],
                            {
                                "nodes": {
                                    "type": "array",
                                    "items": _object(
                                        [
                                            "name",
                                            "this",
                                            "labels",
                                            "version",
                                            "config_digest",
                                            "config_differs",
                                            "alive",
                                            "started_at",
                                            "last_heartbeat",
                                            "dead_at",
                                            "slots",
                                            "slots_in_use",
                                            "capacity",
                                            "draining",
                                        ],
                                        {
                                            "name": {"type": "string"},
                                            "this": {"type": "boolean"},
                                            "labels": {"type": "object"},
                                            "version": {"type": "string"},
                                            "config_digest": {"type": "string"},
                                            "config_differs": {"type": "boolean"},
                                            "alive": {"type": "boolean"},
                                            "started_at": INSTANT,
                                            "last_heartbeat": INSTANT,
                                            "dead_at": _nullable("string", format="date-time"),
                                            "slots": {"type": "integer"},
                                            "slots_in_use": {"type": "integer"},
                                            "capacity": {
                                                "type": "object",
                                                "description": "what it offers runs' requests: memory (bytes),"
                                                " cpu (millicores)",
                                                "additionalProperties": {"type": "integer"},
                                            },
                                            "draining": {
                                                "type": "boolean",
                                                "description": "shutting down: it takes no new runs and lets its"
                                                " runs finish",
                                            },
                                        },
                                    ),
                                }
                            },
                        ),
                        "every node, the dead ones too",
                    ),
                    **ERRORS,
                },
            }
        },
        "/processors": {
            "get": {
                "summary": "Processor types and their options",
                "responses": {
                    "200": _json(
                        _object(
                            ["processors", "common_options"],
                            {
                                "processors": {"type": "array", "items": {"type": "object"}},
                                "common_options": {"type": "array", "items": {"type": "string"}},
                            },
                        ),
                        "every type",
                    ),
                    **ERRORS,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition",
                "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}, **ERRORS},
            }
        },
        "/run/{run_id}/_stop": {
            "post": {
                "operationId": "stopRun",
                "summary": "Stop one active run (operator)",
                "description": f"Stops the run here or on the node holding it and waits ({STOP_WAIT_S:g} s at most):"
                " 200 once it has ended, 202 while it is still stopping.",
                "parameters": [_run_id()],
                "responses": {
                    "200": _json(RUN_STOP_ANSWER, "the run has ended"),
                    "202": _json(RUN_STOP_ANSWER, "the run was told to stop and has not ended yet"),
                    **ERRORS,
                    "404": _error("no such run"),
                    "409": _error("the run is not active"),
                },
            }
        },
        "/run/{run_id}/_rerun": {
            "post": {
                "operationId": "rerunRun",
                "summary": "Run the run's task again with the same params (operator)",
                "description": "Secret params are never stored: they take the task's defaults, and the answer"
                " names them in params_not_repeated.",
                "parameters": [_run_id()],
                "responses": {
                    "202": _json(
                        _object(
                            ["run_id", "task_id", "state", "rerun_of", "params_not_repeated"],
                            {
                                "run_id": {"type": "string"},
                                "task_id": _nullable("string"),
                                "state": {"type": "string"},
                                "rerun_of": {"type": "string"},
                                "params_not_repeated": {"type": "array", "items": {"type": "string"}},
                            },
                        ),
                        "the new run was created",
                        links={"GetRun": {"operationId": "getRun", "parameters": {"run_id": "$response.body#/run_id"}}},
                    ),
                    **ERRORS,
                    "404": _error("no such run, or its task is gone"),
                    "409": _error("the task's concurrency policy refuses another run"),
                },
            }
        },
        "/upcoming": {
            "get": {
                "operationId": "upcoming",
                "summary": "Each enabled task's fires in the next hours, soonest first",
                "parameters": [
                    _query("hours", {"type": "integer", "minimum": 1, "maximum": 168}, "how far ahead (24)"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "tasks at most (500)"),
                ],
                "responses": {
                    "200": _json(
                        _object(
                            ["from", "until", "tasks", "truncated"],
                            {
                                "from": INSTANT,
                                "until": INSTANT,
                                "tasks": {
                                    "type": "array",
                                    "items": _object(
                                        ["task_id", "time_zone", "fires", "more"],
                                        {
                                            "task_id": {"type": "string"},
                                            "time_zone": {"type": "string"},
                                            "fires": {"type": "array", "items": INSTANT, "maxItems": 100},
                                            "more": {"type": "boolean", "description": "it fires more than listed"},
                                        },
                                    ),
                                },
                                "truncated": {"type": "boolean", "description": "more tasks fire than listed"},
                            },
                        ),
                        "the fires",
                    ),
                    **ERRORS,
                },
            }
        },
        "/stats/runs": {
            "get": {
                "operationId": "runsPerMinute",
                "summary": "Runs finished in each of the last minutes, by final state",
                "parameters": [
                    _query("minutes", {"type": "integer", "minimum": 1, "maximum": 1440}, "how many minutes (60)")
                ],
                "responses": {
                    "200": _json(
                        _object(
                            ["from", "until", "bucket_s", "buckets"],
                            {
                                "from": INSTANT,
                                "until": INSTANT,
                                "bucket_s": {"type": "integer"},
                                "buckets": {
                                    "type": "array",
                                    "items": _object(
                                        ["at", *FINAL_STATES],
                                        {"at": INSTANT, **{state: {"type": "integer"} for state in FINAL_STATES}},
                                    ),
                                },
                            },
                        ),
                        "one bucket per minute, oldest first",
                    ),
                    **ERRORS,
                },
            }
        },
        "/audit": {
            "get": {
                "operationId": "audit",
                "summary": "The audit trail, newest first: actions and refusals, with who and from where",
                "parameters": [
                    _query("action", _comma_list(list(AUDIT_ACTIONS)), "comma list of actions"),
                    _query("actor", {"type": "string", "minLength": 1}, "the token's name"),
                    _query("since", _ISO_OR_EPOCH, "at or after: ISO-8601, epoch seconds, or a time ago (2h)"),
                    _query("until", _ISO_OR_EPOCH, "before: ISO-8601, epoch seconds, or a time ago (30m)"),
                    *PAGING,
                ],
                "responses": {
                    "200": _json(
                        _object(
                            ["entries", "total"],
                            {"entries": {"type": "array", "items": _ref("AuditEntry")}, "total": {"type": "integer"}},
                        ),
                        "a page of the audit trail",
                    ),
                    **ERRORS,
                },
            }
        },
        "/nodes/{name}/_drain": {
            "post": {
                "operationId": "drainNode",
                "summary": "Drain a node: it fires nothing more, finishes its runs and exits 0 (admin)",
                "description": "The other nodes claim the fires and take the manual starts meanwhile; GET /nodes shows"
                " the node draining until it has gone.",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    _query(
                        "wait",
                        {"type": "string", "enum": ["0", "1"]},
                        "1 (this node only): answer once the drain has ended",
                    ),
                ],
                "responses": {
                    "200": _json(
                        _object(["node", "drained"], {"node": {"type": "string"}, "drained": {"const": True}}),
                        "with wait=1: the node has drained, and exits 0",
                    ),
                    "202": _json(
                        _object(["node", "draining"], {"node": {"type": "string"}, "draining": {"const": True}}),
                        "the node drains",
                    ),
                    "409": _error("with wait=1: the daemon was stopped before the drain ended"),
                    **ERRORS,
                    "404": _error("no live node by that name"),
                },
            }
        },
        "/whoami": {
            "get": {
                "operationId": "whoami",
                "summary": "The token's name and role",
                "responses": {
                    "200": _json(
                        _object(
                            ["name", "role", "auth"],
                            {
                                "name": _nullable("string"),
                                "role": {"type": "string", "enum": list(ROLES)},
                                "auth": {"type": "boolean", "description": "tokens are configured"},
                            },
                        ),
                        "who",
                    ),
                    **ERRORS,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [{}],
                "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
            }
        },
    }
    paths["/tasks/"] = paths["/tasks"]
    return {
        "openapi": "3.1.0",
        "info": {"title": "taskd", "version": __version__, "description": "A task daemon's REST API."},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "api.token"}},
        },
        "security": [{"bearer": []}] if secured else [],
        "paths": paths,
    }
