"""What the API shows: tasks, runs and processors as JSON-ready dicts, and the caches that keep
the task list cheap with thousands of tasks. No HTTP here: the routes in `app` call these."""

from __future__ import annotations

import collections
import functools
from datetime import UTC, datetime
from typing import Any

from taskd import cgroups
from taskd.cluster import NodeInfo, alive, differs
from taskd.config import thaw
from taskd.engine import Engine, TaskEntry, TaskState
from taskd.metrics import Snapshot
from taskd.models import AttemptRecord, RunRecord, RunSummary, StepRecord, UpstreamRun, iso
from taskd.redact import masked_params
from taskd.schedule import Schedule, offset_of
from taskd.schedule_words import describe
from taskd.store.base import AuditEntry, Fire, Store, Transition

NEXT_RUNS = 10
"""The upcoming fires a task's detail lists."""


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def last_run_view(run: RunRecord | RunSummary | None, now: float) -> dict[str, Any] | None:
    if run is None:
        return None
    duration = run.elapsed(now) if isinstance(run, RunRecord) else run.duration
    return {
        "id": run.id,
        "state": str(run.state),
        "trigger": str(run.trigger),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration": _rounded(duration),
    }


@functools.lru_cache(maxsize=65536)
def _finished_view(summary: RunSummary) -> dict[str, Any] | None:
    """A finished run never changes: its view is built once (callers must not mutate it)."""
    return last_run_view(summary, 0.0)


class NextFires:
    """Next fire instants, shared by every task on the same parsed schedule: one answer serves a
    whole group while it holds (the next fire after `now` is the same for every `now` in
    [asked_at, answer)), and is formatted once."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[Schedule, datetime, datetime | None, str | None]] = {}

    def iso(self, schedule: Schedule, now: datetime) -> str | None:
        return self._lookup(schedule, now)[3]

    def epoch(self, schedule: Schedule, now: datetime) -> float | None:
        answer = self._lookup(schedule, now)[2]
        return None if answer is None else answer.timestamp()

    def _lookup(self, schedule: Schedule, now: datetime) -> tuple[Schedule, datetime, datetime | None, str | None]:
        cached = self._cache.get(id(schedule))
        if cached is not None and cached[0] is schedule and cached[1] <= now and (cached[2] is None or now < cached[2]):
            return cached
        answer = schedule.next_after(now)
        found = (schedule, now, answer, answer.isoformat() if answer is not None else None)
        self._cache[id(schedule)] = found
        return found


class TaskViews:
    """The task list's rows; the part only a config change can change is built once per entry."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._static: dict[str, tuple[TaskEntry, dict[str, Any]]] = {}
        self.next_fires = NextFires()

    def _static_view(self, entry: TaskEntry) -> dict[str, Any]:
        cached = self._static.get(entry.id)
        if cached is not None and cached[0] is entry:
            return cached[1]
        view = {
            "id": entry.id,
            "name": entry.config.display_name,
            "enabled": entry.config.enabled,
            "schedule": entry.config.schedule,
            "schedule_text": None if entry.schedule is None else describe(entry.schedule, entry.time_zone),
            "time_zone": entry.time_zone,
            "pipeline": entry.pipeline.name,
            "priority": entry.config.priority,
            "concurrency": entry.config.concurrency,
            "params": masked_params(entry.params, entry.config.secret_params, self._engine.redactor_for(entry)),
            "after": list(entry.config.after.tasks) if entry.config.after is not None else [],
        }
        self._static[entry.id] = (entry, view)
        return view

    def next_run(self, entry: TaskEntry, now: datetime) -> str | None:
        if entry.schedule is None or not entry.config.enabled:
            return None
        return self.next_fires.iso(entry.schedule, now)

    def row(self, entry: TaskEntry, state: TaskState, now: datetime) -> dict[str, Any]:
        last = state.last_run
        epoch = now.timestamp()
        last_view = _finished_view(last) if isinstance(last, RunSummary) else last_run_view(last, epoch)
        return {
            **self._static_view(entry),
            "status": state.status,
            "last_run": last_view,
            "next_run": self.next_run(entry, now),
            "duration": None if last_view is None else last_view["duration"],
            "waiting_on": self._engine.downstream.waiting_on(entry.id),
        }

    def detail(self, entry: TaskEntry, state: TaskState, now: datetime) -> dict[str, Any]:
        """The row plus the definition as written, upcoming fires and active runs."""
        view = self.row(entry, state, now)
        task = entry.config
        # The definition as written, with the task's secrets (its secret params' defaults, the
        # config's credentials) masked wherever they appear in it.
        view["definition"] = self._engine.redactor_for(entry).data(
            {
                **thaw(task.model_dump(mode="json")),
                "params": view["params"],
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
        )
        view["next_runs"] = (
            [t.isoformat() for t in entry.schedule.next_n(now, NEXT_RUNS)] if entry.schedule and task.enabled else []
        )
        epoch = now.timestamp()
        view["active_runs"] = [run.record.to_json(epoch) for run in self._engine.active_runs(entry.id)]
        view["alert"] = self.alert_view(entry)
        downstream = self._engine.downstream
        view["upstream"] = None if task.after is None else task.after.model_dump(mode="json")
        view["downstream"] = list(downstream.graph.downstream.get(entry.id, ()))
        view["waiting_for"] = downstream.waiting_for(entry.id)
        spread = self._engine.config.spread_for(task)
        view["spread"] = (
            None
            if spread is None or entry.schedule is None
            else {"spread_s": spread, "offset_s": offset_of(entry.schedule)}
        )
        return view

    def alert_view(self, entry: TaskEntry) -> dict[str, Any] | None:
        """The task's alert state: ok or failing since when, overdue, its last success."""
        alerter = self._engine.alerter
        state = alerter.state(entry.id)
        expect = entry.config.expect
        if state is None and expect is None:
            return None
        return {
            "status": state.status if state else "ok",
            "since": iso(state.since) if state else None,
            "failures": state.failures if state else 0,
            "notified_at": iso(state.notified_at) if state else None,
            "overdue": alerter.overdue(entry.id),
            "last_success": iso(alerter.last_success(entry.id)),
            "success_within_s": expect.success_within if expect else None,
        }


def metrics_snapshot(engine: Engine, store: Store, next_fires: NextFires) -> Snapshot:
    """What GET /metrics reads of the daemon's state."""
    now = datetime.fromtimestamp(engine.clock.time(), UTC)
    load = engine.load()
    upcoming: dict[str, float] = {}
    for entry in engine.entries():
        if entry.schedule is not None and entry.config.enabled:
            when = next_fires.epoch(entry.schedule, now)
            if when is not None:
                upcoming[entry.id] = when
    return Snapshot(
        active=collections.Counter(load.active),
        slots=load.slots,
        slots_in_use=load.slots_in_use,
        pending_writes=store.pending_writes,
        overloaded=load.overloaded is not None,
        next_fires=upcoming,
        faults=frozenset(fault.kind for fault in engine.faults.current()),
        faults_raised=dict(engine.faults.raised),
        overdue=engine.alerter.overdue_tasks(),
        nodes_alive=engine.nodes_alive,
    )


def node_views(nodes: list[NodeInfo], this: str, now: float) -> list[dict[str, Any]]:
    """The nodes sharing the store, each flagged when its tasks and pipelines differ from most."""
    differing = set(differs(nodes, now))
    return [
        {
            "name": node.name,
            "this": node.name == this,
            "labels": dict(node.labels),
            "version": node.version,
            "config_digest": node.config_digest,
            "config_differs": node.name in differing,
            "alive": alive(node, now),
            "started_at": iso(node.started_at),
            "last_heartbeat": iso(node.heartbeat_at),
            "dead_at": iso(node.dead_at),
            "slots": node.slots,
            "slots_in_use": node.slots_in_use,
            "capacity": dict(node.capacity),
            "draining": node.draining,
        }
        for node in nodes
    ]


def history_point(run: RunRecord) -> dict[str, Any]:
    """A finished run as the task page's chart plots it."""
    return {
        "id": run.id,
        "state": str(run.state),
        "finished_at": iso(run.finished_at),
        "duration": _rounded(run.duration),
    }


def audit_view(entry: AuditEntry) -> dict[str, Any]:
    return {**entry._asdict(), "at": iso(entry.at)}


def fire_view(fire: Fire) -> dict[str, Any]:
    return {
        "instant": iso(fire.instant),
        "kind": fire.kind,
        "reason": fire.reason,
        "recorded_at": iso(fire.recorded_at),
        "count": fire.count,
        "last_instant": iso(fire.last_instant) if fire.last_instant is not None else None,
    }


def _step_view(step: StepRecord) -> dict[str, Any]:
    return {
        "index": step.index,
        "type": step.type,
        "state": str(step.state),
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
        "duration": None if step.finished_at is None else round(step.finished_at - step.started_at, 3),
        "error": step.error,
    }


def run_detail(
    run: RunRecord,
    attempts: list[AttemptRecord],
    steps: list[StepRecord],
    transitions: list[Transition],
    now: float,
    links: tuple[list[UpstreamRun], list[UpstreamRun]] = ([], []),
) -> dict[str, Any]:
    """One run with its attempts, each with its steps, its state transitions, the upstream runs
    that triggered it and the downstream runs it triggered."""
    view = run.to_json(now)
    upstream, downstream = links
    view["upstream_runs"] = [
        {
            "run_id": u.upstream_run_id,
            "task_id": u.upstream_task_id,
            "state": u.state,
            "finished_at": iso(u.finished_at),
        }
        for u in upstream
    ]
    view["downstream_runs"] = [{"task_id": d.task_id, "run_id": d.run_id} for d in downstream]
    view["attempt_list"] = [
        {
            "number": a.number,
            "state": str(a.state),
            "started_at": iso(a.started_at),
            "finished_at": iso(a.finished_at),
            "duration": None if a.finished_at is None else round(a.finished_at - a.started_at, 3),
            "error": a.error,
            "steps": [_step_view(s) for s in steps if s.attempt == a.number],
        }
        for a in attempts
    ]
    view["transitions"] = [{"state": t.state, "at": iso(t.at), "detail": t.detail} for t in transitions]
    return view


def resources_view(engine: Engine) -> dict[str, Any]:
    """This node's capacity for requests (reserved and free) and each pool's holders and waiters."""
    capacity = engine.capacity
    pools = []
    node: dict[str, Any] = {"node": engine.node_name}
    for holding in engine.resources.holdings():
        figures = {"size": holding.size, "held": holding.held, "free": holding.free}
        if holding.name.startswith("pool "):
            name = holding.name[5:]
            shown = "cluster slots (this node's count)" if name.startswith("*") else name
            pools.append({"name": shown, **figures, "holders": holding.holders, "waiting": holding.waiting})
        else:
            source = capacity.memory_from if holding.name == "memory" else capacity.cpu_from
            node[holding.name] = {**figures, "waiting": holding.waiting, "from": source}
    return {"capacity": node, "pools": pools, "cgroups": cgroups.current().version}
