"""Records as database rows and back, shared by the SQL stores (SQLite and PostgreSQL): the same
columns in the same order, params kept as JSON text."""

from __future__ import annotations

import json
from typing import Any, Protocol

from taskd.models import (
    AlertState,
    AttemptRecord,
    RunRecord,
    RunState,
    StepRecord,
    StepState,
    Trigger,
    UpstreamRun,
    Usage,
)
from taskd.store.base import AuditEntry, Fire, LogLine, Transition

PARTIAL_STATE_INDEXES = (
    (frozenset({"failed", "stopped", "interrupted"}), "state IN ('failed', 'stopped', 'interrupted')"),
    (frozenset({"queued", "running", "retrying"}), "state IN ('queued', 'running', 'retrying')"),
)
"""The conditions of the partial indexes by state, word for word: a database uses a partial index
only for a query that contains its condition. Runs in every other state (completed) are counted
as all runs less these."""


def run_params(run: RunRecord) -> tuple[Any, ...]:
    return (
        run.id,
        run.task_id,
        str(run.trigger),
        str(run.state),
        run.scheduled_at,
        run.queued_at,
        run.started_at,
        run.finished_at,
        run.attempts,
        run.error,
        json.dumps(run.params, default=str) if run.params else "{}",
        run.priority,
        run.node,
        *usage_params(run.usage),
    )


def usage_params(usage: Usage | None) -> tuple[Any, ...]:
    if usage is None:
        return (None, None, None, None, None, None)
    unknown = json.dumps(usage.unknown) if usage.unknown else None
    return (
        usage.cpu_s,
        usage.peak_memory_bytes,
        usage.processes,
        usage.source,
        unknown,
        usage.peak_memory_at_most,
    )


def attempt_params(a: AttemptRecord) -> tuple[Any, ...]:
    return (a.run_id, a.number, str(a.state), a.started_at, a.finished_at, a.error)


def step_params(s: StepRecord) -> tuple[Any, ...]:
    return (s.run_id, s.attempt, s.index, s.type, str(s.state), s.started_at, s.finished_at, s.error)


class Row(Protocol):
    """A database row read by column name (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: str | int, /) -> Any: ...


def run_from_row(row: Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        task_id=row["task_id"],
        trigger=Trigger(row["trigger"]),
        queued_at=row["queued_at"],
        state=RunState(row["state"]),
        scheduled_at=row["scheduled_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
        error=row["error"],
        params=json.loads(row["params"] or "{}"),
        priority=row["priority"],
        node=row["node"],
        usage=_usage_from_row(row),
    )


def _usage_from_row(row: Row) -> Usage | None:
    source = row["usage_source"]
    if source is None:
        return None
    unknown = row["usage_unknown"]
    return Usage(
        cpu_s=row["cpu_s"],
        peak_known=row["peak_memory_bytes"],
        processes=row["processes"] or 0,
        source=source,
        unknown=json.loads(unknown) if unknown else [],
        peak_bound=row["peak_memory_at_most"],
    )


def attempt_from_row(r: Row) -> AttemptRecord:
    return AttemptRecord(r["run_id"], r["number"], r["started_at"], StepState(r["state"]), r["finished_at"], r["error"])


def step_from_row(r: Row) -> StepRecord:
    return StepRecord(
        r["run_id"],
        r["attempt"],
        r["idx"],
        r["type"],
        r["started_at"],
        StepState(r["state"]),
        r["finished_at"],
        r["error"],
    )


def log_from_row(r: Row) -> LogLine:
    return LogLine(r["run_id"], r["seq"], r["ts"], r["stream"], r["line"])


def transition_from_row(r: Row) -> Transition:
    return Transition(r["run_id"], r["seq"], r["at"], r["state"], r["detail"])


def audit_from_row(r: Row) -> AuditEntry:
    return AuditEntry(r["at"], r["action"], r["actor"], r["role"], r["remote"], r["target"], r["status"], r["detail"])


def fire_from_row(r: Row) -> Fire:
    return Fire(
        r["task_id"],
        r["instant"],
        r["kind"],
        r["reason"],
        r["recorded_at"],
        r["refusals"],
        r["last_instant"],
        r["summary_key"],
    )


def alert_state_from_row(r: Row) -> AlertState:
    return AlertState(
        task_id=r["task_id"],
        status=r["status"],
        since=r["since"],
        first_seen=r["first_seen"],
        failures=r["failures"],
        unreported=r["unreported"],
        notified_at=r["notified_at"],
        overdue_at=r["overdue_at"],
        version=r["version"],
    )


def upstream_params(u: UpstreamRun) -> tuple[Any, ...]:
    context = json.dumps(u.context, default=str)
    return (u.task_id, u.upstream_run_id, u.upstream_task_id, u.state, u.finished_at, context, u.run_id)


def upstream_from_row(row: Row) -> UpstreamRun:
    return UpstreamRun(
        task_id=row["task_id"],
        upstream_run_id=row["upstream_run_id"],
        upstream_task_id=row["upstream_task_id"],
        state=row["upstream_state"],
        finished_at=row["finished_at"],
        context=json.loads(row["context"]),
        run_id=row["run_id"],
    )
