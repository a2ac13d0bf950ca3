"""Task dependencies (`after:`), the pure part: the graph of tasks, which upstream outcomes count,
which pending upstream runs a downstream task takes now, and what its run gets from them.

A downstream task with `mode: any` runs once for each upstream run that ended the way `when` says;
with `mode: all`, once every listed task has such a run it has not taken yet (fan-in), taking all
of them. The store keeps each upstream run a downstream task waits for, keyed by (downstream task,
upstream run), until one run takes it: that key is what makes it happen once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskd.config import After, TaskConfig
from taskd.environment import env_name
from taskd.models import RunState, UpstreamRun

COUNTED = {
    "success": frozenset({RunState.COMPLETED}),
    "failure": frozenset({RunState.FAILED}),
    "always": frozenset({RunState.COMPLETED, RunState.FAILED}),
}
"""The upstream final states each `when` counts. A stopped or interrupted run counts for none: an
operator or a crash ended it, not its work."""

MAX_CONTEXT_BYTES = 64 * 1024
"""An upstream run's context passes to its downstream runs as params up to this size (as JSON)."""


@dataclass(frozen=True)
class Graph:
    """Who runs after whom: each task's upstream tasks and the tasks that run after it."""

    upstream: Mapping[str, tuple[str, ...]]
    downstream: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, tasks: Iterable[TaskConfig]) -> Graph:
        upstream: dict[str, tuple[str, ...]] = {}
        downstream: dict[str, list[str]] = {}
        for task in tasks:
            if task.after is None:
                continue
            upstream[task.id] = task.after.tasks
            for parent in task.after.tasks:
                downstream.setdefault(parent, []).append(task.id)
        return cls(upstream, {k: tuple(sorted(v)) for k, v in downstream.items()})

    def lines(self, tasks: Mapping[str, TaskConfig]) -> list[str]:
        """The graph in words, one line per downstream task: `load <- transform (success, all)`."""
        out = []
        for task_id in sorted(self.upstream):
            after = tasks[task_id].after
            assert after is not None
            out.append(f"{task_id} <- {', '.join(after.tasks)} ({after.when}, {after.mode})")
        return out


def counts(after: After, state: str) -> bool:
    """Whether an upstream run that ended in `state` counts for a task waiting `after`."""
    return state in COUNTED[after.when]


def takes(after: After, pending: Sequence[UpstreamRun]) -> list[list[UpstreamRun]]:
    """The runs the downstream task starts now, each as the pending upstream runs it takes,
    oldest first. `pending` are the task's own, oldest first."""
    rows = [u for u in pending if u.upstream_task_id in after.tasks and counts(after, u.state)]
    if after.mode == "any":
        return [[u] for u in rows]
    if {u.upstream_task_id for u in rows} >= set(after.tasks):
        return [rows]
    return []


def stale(after: After, pending: Sequence[UpstreamRun]) -> list[UpstreamRun]:
    """The pending upstream runs that no longer count for the task: their task is no longer in its
    `after:`, or their outcome no longer what it waits for (its `after:` changed since)."""
    return [u for u in pending if u.upstream_task_id not in after.tasks or not counts(after, u.state)]


def waiting_for(after: After, pending: Sequence[UpstreamRun]) -> list[str]:
    """With `mode: all`, the upstream tasks with no pending run yet (what the task waits for)."""
    if after.mode == "any":
        return []
    have = {u.upstream_task_id for u in pending}
    return [task_id for task_id in after.tasks if task_id not in have]


def latest_each(taken: Sequence[UpstreamRun]) -> list[UpstreamRun]:
    """The latest of the taken runs of each upstream task, in the order they ended."""
    latest: dict[str, UpstreamRun] = {}
    for upstream in sorted(taken, key=lambda u: (u.finished_at, u.upstream_run_id)):
        latest[upstream.upstream_task_id] = upstream
    return sorted(latest.values(), key=lambda u: (u.finished_at, u.upstream_run_id))


def params_from(taken: Sequence[UpstreamRun]) -> dict[str, Any]:
    """The downstream run's params from its upstream runs' contexts: the latest run of each
    upstream task, the later one winning a name both give."""
    params: dict[str, Any] = {}
    for upstream in latest_each(taken):
        params.update(upstream.context)
    return params


def environment(taken: Sequence[UpstreamRun]) -> dict[str, str]:
    """TASKD_UPSTREAM_RUN_ID, _TASK_ID and _STATE of the upstream run that ended last, and the same
    three for the latest run of each upstream task, named after it (TASKD_UPSTREAM_<ID>_RUN_ID)."""
    each = latest_each(taken)
    if not each:
        return {}
    last = each[-1]
    env = {
        "TASKD_UPSTREAM_RUN_ID": last.upstream_run_id,
        "TASKD_UPSTREAM_TASK_ID": last.upstream_task_id,
        "TASKD_UPSTREAM_STATE": last.state,
        "TASKD_UPSTREAM_RUN_IDS": " ".join(u.upstream_run_id for u in each),
    }
    for upstream in each:
        prefix = "TASKD_UPSTREAM_" + env_name(upstream.upstream_task_id)
        env[f"{prefix}_RUN_ID"] = upstream.upstream_run_id
        env[f"{prefix}_TASK_ID"] = upstream.upstream_task_id
        env[f"{prefix}_STATE"] = upstream.state
    return env


def passable(context: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """An upstream run's context as its downstream runs get it (JSON values), or nothing and why."""
    try:
        text = json.dumps(dict(context), default=str)
    except (TypeError, ValueError) as exc:
        return {}, f"its context cannot be passed on ({exc})"
    if len(text.encode()) > MAX_CONTEXT_BYTES:
        return {}, f"its context is larger than {MAX_CONTEXT_BYTES // 1024} KiB and is not passed on"
    value: dict[str, Any] = json.loads(text)
    return value, None
