"""The engine on a fake clock: firing, coalescing, concurrency, catch-up, reload and tombstones,
with the in-memory store and a timer the tests move by hand. No test here sleeps for a fire."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.engine import T0, Gates, Harness

from taskd.engine import FIRE_CHUNK
from taskd.engine.policy import (
    MAX_QUEUED_PER_TASK,
    Admission,
    CatchUp,
    FirePlan,
    admit,
    catch_up,
    plan_fire,
    task_status,
)
from taskd.engine.registry import StepBuilder, diff
from taskd.errors import Conflict, UnknownTask
from taskd.models import RunState, Trigger
from taskd.schedule import parse
from taskd.store import RunQuery


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    made = Harness(tmp_path, Gates())
    yield made
    await made.stop()


def epoch(moment: datetime) -> float:
    return moment.timestamp()


async def test_a_due_schedule_fires_a_run_for_its_instant_stamped_by_the_clock(harness: Harness) -> None:
    await harness.start("  - {id: tick, schedule: '*/10 * * * * *', pipeline: note}")
    assert await harness.advance(9) == 0  # not due yet
    assert await harness.advance(1) == 1
    await harness.settle()
    (run,) = await harness.runs("tick")
    assert run.trigger is Trigger.SCHEDULE and run.state is RunState.COMPLETED
    assert run.scheduled_at == epoch(T0) + 10
    assert run.queued_at == run.started_at == run.finished_at == epoch(T0) + 10  # the fake clock's time
    log = await harness.store.run_log(run.id)
    assert [line.line for line in log] == ["at 12:00:10"]  # templates read the same clock


async def test_fires_due_at_once_make_one_run_and_the_rest_are_recorded_skipped(harness: Harness) -> None:
    await harness.start("  - {id: tick, schedule: '* * * * * *', pipeline: note}")
    await harness.advance(3)  # the loop was 3 s late: instants +1, +2, +3 are all due
    await harness.settle()
    (run,) = await harness.runs("tick")
    assert run.scheduled_at == epoch(T0) + 3
    (fire,) = await harness.store.fires("tick")  # the two missed instants, summarised
    assert (fire.instant - epoch(T0), fire.last_instant - epoch(T0), fire.count) == (1.0, 2.0, 2)  # type: ignore[operator]
    assert fire.kind == "skipped" and "event loop was late" in fire.reason
    assert (await harness.store.last_fires())["tick"] == epoch(T0) + 3


async def test_fires_refused_one_after_the_other_are_one_summary_until_a_run_begins(harness: Harness) -> None:
    """A per-second task whose run takes 10 s: the nine refused fires are one record with their
    count and first and last instants, not nine rows; the next refusal after a run began is a new one."""
    await harness.start("  - {id: slow, schedule: '* * * * * *', pipeline: gated}")
    await harness.advance(1)
    for _ in range(9):
        await harness.advance(1)
    await harness.store.flush()
    (summary,) = await harness.store.fires("slow")
    assert summary.count == 9 and "already has an active run" in summary.reason
    assert (summary.instant - epoch(T0), summary.last_instant - epoch(T0)) == (2.0, 10.0)  # type: ignore[operator]
    gate = harness.gates.gate("g")
    gate.set()
    await harness.settle()
    gate.clear()
    await harness.advance(1)  # a run begins (and waits at the gate again)
    await harness.advance(1)  # refused: a new summary
    await harness.store.flush()
    newest, oldest = await harness.store.fires("slow")
    assert oldest.count == 9 and newest.count == 1 and newest.instant - epoch(T0) == 12.0
    harness.gates.gate("g").set()


async def test_forbid_skips_a_fire_while_a_run_is_active(harness: Harness) -> None:
    engine = await harness.start("  - {id: slow, schedule: '* * * * * *', pipeline: gated}")
    await harness.advance(1)
    await harness.advance(1)
    first = (await harness.runs("slow"))[0]
    assert first.state is RunState.RUNNING and engine.status("slow") == "running"
    fires = await harness.store.fires("slow")
    assert len(fires) == 1 and "already has an active run" in fires[0].reason
    with pytest.raises(Conflict):
        engine.start_run("slow", Trigger.MANUAL)
    harness.gates.gate("g").set()
    await harness.settle()
    assert engine.status("slow") == "completed"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("allow", ["running", "running"]),
        ("replace", ["stopped", "running"]),
        ("queue", ["running", "queued"]),
    ],
)
async def test_concurrency_policies(harness: Harness, policy: str, expected: list[str]) -> None:
    engine = await harness.start(f"  - {{id: job, pipeline: gated, concurrency: {policy}}}")
    first = engine.start_run("job", Trigger.MANUAL)
    await asyncio.sleep(0)
    second = engine.start_run("job", Trigger.MANUAL)
    await asyncio.sleep(0.01)
    assert [str(first.state), str(second.state)] == expected
    if policy == "replace":
        assert first.record.error == "stopped: replaced by a newer run"
    harness.gates.gate("g").set()
    await harness.settle()
    assert second.state is RunState.COMPLETED


async def test_higher_priority_tasks_of_one_schedule_fire_first(harness: Harness) -> None:
    await harness.start(
        "  - {id: low, schedule: '* * * * * *', pipeline: gated, priority: 1}\n"
        "  - {id: high, schedule: '* * * * * *', pipeline: gated, priority: 9}\n"
        "  - {id: mid, schedule: '* * * * * *', pipeline: gated, priority: 5}"
    )
    await harness.advance(1)
    await asyncio.sleep(0.01)
    harness.gates.gate("g").set()
    await harness.settle()
    runs, _ = await harness.store.list_runs(RunQuery(limit=10))
    task_of = {r.id: r.task_id for r in runs}
    assert [task_of[run_id] for run_id in harness.gates.entered] == ["high", "mid", "low"]


async def test_disabled_and_manual_only_tasks_never_fire(harness: Harness) -> None:
    engine = await harness.start(
        "  - {id: paused, enabled: false, schedule: '* * * * * *', pipeline: note}\n"
        "  - {id: manual, pipeline: note}\n"
        "  - {id: active, schedule: '* * * * * *', pipeline: note}"
    )
    await harness.advance(1)
    await harness.advance(1)
    await harness.settle()
    assert len(await harness.runs("active")) == 2
    assert await harness.runs("paused") == [] and await harness.runs("manual") == []
    assert engine.status("paused") == "disabled" and engine.status("manual") == "manual"
    assert engine.status("active") == "completed"


async def test_misfire_run_once_catches_up_with_one_run_and_skip_records_the_miss(harness: Harness) -> None:
    tasks = (
        "  - {id: eager, schedule: '*/5 * * * * *', pipeline: note, misfire: run_once}\n"
        "  - {id: lazy, schedule: '*/5 * * * * *', pipeline: note}\n"
        "  - {id: new, schedule: '*/5 * * * * *', pipeline: note, misfire: run_once}"
    )
    await harness.start(tasks)
    harness.store.set_last_fire("eager", epoch(T0))
    harness.store.set_last_fire("lazy", epoch(T0))
    await harness.stop()
    harness.clock.advance(3600 + 2)  # down for an hour: 720 fires of each missed
    await harness.start(tasks)
    await harness.settle()
    (caught,) = await harness.runs("eager")
    assert caught.trigger is Trigger.CATCH_UP and caught.scheduled_at == epoch(T0) + 3600
    assert caught.queued_at == epoch(T0) + 3602
    assert await harness.runs("lazy") == []
    (missed,) = await harness.store.fires("lazy")
    assert missed.kind == "missed" and missed.instant == epoch(T0) + 3600
    assert "720 fire(s)" in missed.reason and "misfire policy is skip" in missed.reason
    assert await harness.runs("new") == []  # never fired before: nothing was missed
    last = await harness.store.last_fires()
    assert last["eager"] == last["lazy"] == epoch(T0) + 3600
    await harness.advance(3)  # and firing goes on from the clock's time, not from the outage
    await harness.settle()
    assert [r.scheduled_at for r in await harness.runs("lazy")] == [epoch(T0) + 3605]


async def test_reload_moves_schedules_and_leaves_active_runs_alone(harness: Harness) -> None:
    engine = await harness.start(
        "  - {id: a, schedule: '* * * * * *', pipeline: gated}\n  - {id: b, schedule: '* * * * * *', pipeline: note}"
    )
    await harness.advance(1)
    active = engine.active_runs("a")
    changes = engine.reload(
        harness.config(
            "  - {id: a, schedule: '*/10 * * * * *', pipeline: gated}\n"
            "  - {id: c, schedule: '* * * * * *', pipeline: note}"
        )
    )
    assert changes == {"added": ["c"], "changed": ["a"], "removed": ["b"], "held_back": []}
    assert [run.id for run in engine.active_runs("a")] == [run.id for run in active]
    await harness.advance(1)
    with pytest.raises(UnknownTask):
        engine.entry("b")
    assert len(await harness.runs("b")) == 1  # fired once before the reload, never after
    assert len(await harness.runs("c")) == 1
    harness.gates.gate("g").set()
    await harness.settle()
    await harness.advance(8)  # a's new schedule: the next fire is at :10
    await harness.settle()
    assert [r.scheduled_at - epoch(T0) for r in await harness.runs("a")] == [1.0, 10.0]


async def test_a_deleted_task_stays_deleted_until_its_definition_changes(harness: Harness) -> None:
    tasks = "  - {id: keep, pipeline: note}\n  - {id: doomed, name: Doomed, schedule: '* * * * * *', pipeline: gated}"
    engine = await harness.start(tasks)
    await harness.advance(1)
    (run,) = engine.active_runs("doomed")
    assert await engine.delete_task("doomed") == [run.id]
    assert run.state is RunState.STOPPED and run.record.error == "stopped: task deleted"
    assert engine.knows("doomed") and list(engine.held_back) == ["doomed"]  # its history stays reachable
    await harness.advance(1)
    assert len(await harness.runs("doomed")) == 1  # no more fires
    with pytest.raises(UnknownTask):
        await engine.delete_task("doomed")

    engine = await harness.start(tasks)  # a restart: the tombstone holds
    assert [e.id for e in engine.entries()] == ["keep"] and list(engine.held_back) == ["doomed"]
    assert engine.reload(harness.config(tasks))["held_back"] == ["doomed"]

    edited = tasks.replace("name: Doomed", "name: Doomed again")
    assert engine.reload(harness.config(edited))["added"] == ["doomed"]
    assert await harness.store.tombstones() == {}
    engine = await harness.start(edited)
    assert engine.entry("doomed").config.name == "Doomed again"


async def test_shutdown_stops_runs_past_the_grace_and_refuses_new_ones(harness: Harness) -> None:
    engine = await harness.start("  - {id: slow, pipeline: gated}")
    run = engine.start_run("slow", Trigger.MANUAL)
    await asyncio.sleep(0)
    await engine.shutdown(0.05)
    assert run.state is RunState.STOPPED and "daemon shutdown after the 0.05s grace period" in (run.record.error or "")
    assert not engine.scheduler_running
    with pytest.raises(Conflict, match="shutting down"):
        engine.start_run("slow", Trigger.MANUAL)
    harness.engine = None


async def test_hurry_cuts_the_shutdown_grace_short(harness: Harness) -> None:
    engine = await harness.start("  - {id: slow, pipeline: gated}")
    run = engine.start_run("slow", Trigger.MANUAL)
    await asyncio.sleep(0)
    shutdown = asyncio.create_task(engine.shutdown(60))
    await asyncio.sleep(0.01)
    assert not shutdown.done() and run.state is RunState.RUNNING
    engine.hurry()
    await asyncio.wait_for(shutdown, 2)
    assert run.state is RunState.STOPPED and "asked again while draining" in (run.record.error or "")
    harness.engine = None


# -- the pure parts ------------------------------------------------------------------------------

Q, R, T = RunState.QUEUED, RunState.RUNNING, RunState.RETRYING


@pytest.mark.parametrize(
    ("concurrency", "active", "stop", "after"),
    [
        ("forbid", [], (), ()),
        ("allow", [("r1", R)], (), ()),
        ("replace", [("r1", R), ("r2", Q)], ("r1", "r2"), ("r1", "r2")),
        ("queue", [("r1", R)], (), ("r1",)),
    ],
)
def test_admit_applies_the_concurrency_policy(
    concurrency: str, active: list[tuple[str, RunState]], stop: tuple[str, ...], after: tuple[str, ...]
) -> None:
    assert admit("t", concurrency, active) == Admission(stop, after)


def test_admit_refuses_forbid_with_a_run_active_and_a_full_queue() -> None:
    with pytest.raises(Conflict, match=r"active run \(r1\); concurrency is forbid"):
        admit("t", "forbid", [("r1", T)])
    full = [("r0", R)] + [(f"q{i}", Q) for i in range(MAX_QUEUED_PER_TASK)]
    with pytest.raises(Conflict, match=f"already has {MAX_QUEUED_PER_TASK} queued runs"):
        admit("t", "queue", full)
    assert admit("t", "queue", full[:-1]).after[-1] == f"q{MAX_QUEUED_PER_TASK - 2}"


@pytest.mark.parametrize(
    ("enabled", "active", "last", "status"),
    [
        (False, [R], "completed", "disabled"),
        (True, [Q, T], "failed", "retrying"),
        (True, [Q, R, T], None, "running"),
        (True, [Q], None, "queued"),
        (True, [], "interrupted", "interrupted"),
        (True, [], "running", "scheduled"),  # an active last run that is not in the table
        (True, [], None, "scheduled"),
    ],
)
def test_task_status(enabled: bool, active: list[RunState], last: str | None, status: str) -> None:
    assert task_status(enabled, active, last) == status
    manual = "manual" if status == "scheduled" else status  # a task without a schedule
    assert task_status(enabled, active, last, scheduled=False) == manual


def test_plan_fire_keeps_the_latest_instant() -> None:
    assert plan_fire([1.0, 2.0, 3.0]) == FirePlan(3.0, (1.0, 2.0))
    assert plan_fire([5.0]) == FirePlan(5.0)
    with pytest.raises(ValueError):
        plan_fire([])


def test_catch_up_follows_the_misfire_policy() -> None:
    schedule = parse("0 * * * *")
    last, now = datetime(2026, 1, 1, 0, 0, tzinfo=UTC), datetime(2026, 1, 1, 3, 30, tzinfo=UTC)
    three = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    assert catch_up(schedule, "run_once", last, now) == CatchUp(three, 3, False, True)
    assert catch_up(schedule, "skip", last, now) == CatchUp(three, 3, False, False)
    assert catch_up(parse("* * * * * *"), "skip", last, now) == CatchUp(now, 1000, True, False)
    assert catch_up(schedule, "skip", None, now) is None  # never fired
    assert catch_up(None, "skip", last, now) is None  # manual only
    assert catch_up(schedule, "skip", now, now) is None  # nothing missed


def test_registry_diff_adds_changes_removes_holds_back_and_restores(harness: Harness) -> None:
    config = harness.config(
        "  - {id: a, pipeline: note}\n  - {id: b, pipeline: note}\n"
        "  - {id: c, pipeline: note}\n  - {id: d, pipeline: note}"
    )
    builder = StepBuilder()
    a, b, c, d = (builder.entry(config, task) for task in config.tasks)
    edited = harness.config(
        "  - {id: a, pipeline: note}\n  - {id: b, name: B, pipeline: note}\n  - {id: c, pipeline: note}\n"
        "  - {id: d, pipeline: note}\n  - {id: e, pipeline: note}"
    )
    a2, b2, c2, d2, e2 = (builder.entry(edited, task) for task in edited.tasks)
    current = {"a": a, "b": b, "c": c, "gone": d}
    change = diff(current, [a2, b2, c2, d2, e2], {"c": c.definition_hash, "d": "an older definition"})
    assert change.tasks["a"] is a  # unchanged: the running entry is kept
    assert change.changed == ("b",) and change.added == ("d", "e") and change.removed == ("c", "gone")
    assert dict(change.held_back) == {"c": c.definition_hash} and change.restored == ("d",)
    assert sorted(change.tasks) == ["a", "b", "d", "e"]
    assert a2.steps is a.steps  # steps are built once per pipeline definition


async def test_a_fire_of_many_tasks_starts_them_in_chunks_and_skips_those_removed_meanwhile(
    harness: Harness,
) -> None:
    """The loop gets a turn between chunks (the API is served, started runs begin); every task
    still defined gets its run, in priority order, and one deleted in between gets none."""
    count = FIRE_CHUNK * 2 + 10
    tasks = "\n".join(
        f"  - {{id: t{i:04d}, schedule: '*/10 * * * * *', pipeline: gated, priority: {1 if i == count - 1 else 0}}}"
        for i in range(count)
    )
    engine = await harness.start(tasks)
    harness.clock.advance(10)
    assert harness.timer is not None and harness.timer.fire_due() == 1
    assert len(engine.runs) == FIRE_CHUNK  # the first chunk at once
    assert engine.runs.active(f"t{count - 1:04d}")  # the higher priority goes first
    await engine.delete_task(f"t{count - 2:04d}")  # before the last chunk has fired
    async with asyncio.timeout(5):
        while len(engine.runs) < count - 1:  # noqa: ASYNC110
            await asyncio.sleep(0)
    assert not engine.runs.active(f"t{count - 2:04d}")
    harness.gates.gate("g").set()
    await harness.settle()
    assert (await harness.store.list_runs(RunQuery(limit=1)))[1] == count - 1


async def test_placement_alone_on_a_store_runs_what_this_node_may_and_records_the_rest(
    harness: Harness,
) -> None:
    name = socket.gethostname() or "taskd"
    engine = await harness.start(
        "  - {id: here, schedule: '*/10 * * * * *', pipeline: note, placement: all}\n"
        f"  - {{id: mine, schedule: '*/10 * * * * *', pipeline: note, placement: {{nodes: [{name}]}}}}\n"
        "  - {id: elsewhere, schedule: '*/10 * * * * *', pipeline: note, placement: {nodes: [other-node]}}\n"
        "  - {id: labelled, schedule: '*/10 * * * * *', pipeline: note, placement: {labels: {zone: eu}}}"
    )
    assert engine.node_name == name
    await harness.advance(10)
    await harness.settle()
    assert len(await harness.runs("here")) == 1 and len(await harness.runs("mine")) == 1
    assert await harness.runs("elsewhere") == [] and await harness.runs("labelled") == []
    await harness.store.flush()
    (skipped,) = await harness.store.fires("elsewhere")
    assert skipped.kind == "skipped" and skipped.reason.startswith("placement: this node")
    with pytest.raises(Conflict, match="may not run on this node"):
        engine.start_run("labelled", Trigger.MANUAL)
