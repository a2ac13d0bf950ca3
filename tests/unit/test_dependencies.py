"""Task dependencies (`after:`) and staggered schedules (`spread:`): the configuration's checks,
the pure decisions, and the engine on a fake clock with the memory store: chains, fan-in, each
upstream run taken once (restarts, a crash before the downstream run began), and waiting on a
deleted or disabled upstream task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fake_steps
import pytest
from conftest import Api, base_config
from support.cli import taskd
from support.engine import Gates, Harness

from taskd.clock import utc
from taskd.config import After, load_config
from taskd.dependencies import environment, params_from, takes
from taskd.durations import format_duration
from taskd.errors import ConfigError
from taskd.forecast import forecast, lines
from taskd.models import RunState, Trigger, UpstreamRun
from taskd.processors import registry
from taskd.schedule import parse, shifted, spread_offset

STEP = "{python: {function: 'fake_steps:report', kwargs: {rows: %d}}}"
PIPELINES = "".join(
    f"  - {{name: {name}, processors: [{STEP % rows}]}}\n" for name, rows in (("extract", 10), ("transform", 20))
) + ("  - {name: broken, processors: [{python: {function: 'fake_steps:fail'}}]}\n")


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    made = Harness(tmp_path, Gates())
    yield made
    await made.stop()


async def drain(h: Harness) -> None:
    """Until no run is active and no downstream run is due."""
    assert h.engine is not None
    for _ in range(50):
        await h.settle()
        if await h.engine.downstream.process() == 0 and not len(h.engine.runs):
            return
    raise AssertionError("dependency runs kept starting")


def write(tmp_path: Path, tasks: str) -> Path:
    path = tmp_path / "taskd.yml"
    path.write_text(
        "tasks:\n" + tasks + "pipelines:\n  - {name: p, processors: [{log: {message: hi}}]}\n",
    )
    return path


# -- the configuration --------------------------------------------------------------------------


def test_a_cycle_is_refused_with_its_file_line_and_the_cycle_spelled_out(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  - {id: a, pipeline: p, after: {tasks: [c]}}\n"
        "  - {id: b, pipeline: p, after: a}\n"
        "  - {id: c, pipeline: p, after: [b]}\n"
        "  - {id: d, pipeline: p}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert list(caught.value.problems) == [f"{path}:2: tasks[0].after: dependency cycle: a -> b -> c -> a"]


def test_unknown_self_and_repeated_upstreams_and_on_are_refused_by_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  - {id: a, pipeline: p, after: [extract]}\n"
        "  - {id: b, pipeline: p, after: {tasks: [b]}}\n"
        "  - {id: c, pipeline: p, after: {tasks: [a, a]}}\n"
        "  - {id: d, pipeline: p, after: {tasks: [a], on: success}}\n"
        "  - {id: e, pipeline: p, after: {tasks: [a], mode: every}}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    text = "\n".join(caught.value.problems)
    assert f"{path}:2: tasks[0].after.tasks[0]: unknown upstream task 'extract'" in text
    assert f"{path}:3: tasks[1].after.tasks[0]: task 'b' cannot run after itself" in text
    assert "tasks[2].after.tasks: " in text and "names a more than once" in text
    assert f"{path}:5: tasks[3].after: key 'on' must be a string (YAML 1.1 reads on as True" in text
    assert "tasks[4].after.mode" in text


def test_a_long_chain_is_checked_without_recursion(tmp_path: Path) -> None:
    chain = "".join(f"  - {{id: t{i}, pipeline: p, after: t{i - 1}}}\n" for i in range(1, 3000))
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "  - {id: t0, pipeline: p, after: t2999}\n" + chain), {})
    (problem,) = caught.value.problems
    assert "dependency cycle: t0 -> t1 -> t2 -> " in problem and problem.endswith("-> t2999 -> t0")


# -- the pure decisions ---------------------------------------------------------------------------


def pending(task: str, upstream: str, run: str, state: str = "completed", at: float = 0.0) -> UpstreamRun:
    return UpstreamRun(task, run, upstream, state, at, {"from": upstream, "n": at})


def test_all_waits_for_every_upstream_task_and_takes_every_pending_run_of_them() -> None:
    after = After(tasks=("a", "b"))
    assert takes(after, [pending("d", "a", "a1", at=1), pending("d", "a", "a2", at=2)]) == []
    rows = [pending("d", "a", "a1", at=1), pending("d", "a", "a2", at=2), pending("d", "b", "b1", at=3)]
    (taken,) = takes(after, rows)
    assert [u.upstream_run_id for u in taken] == ["a1", "a2", "b1"]
    assert params_from(taken) == {"from": "b", "n": 3}  # the later run wins a name both give
    env = environment(taken)
    assert (env["TASKD_UPSTREAM_RUN_ID"], env["TASKD_UPSTREAM_TASK_ID"], env["TASKD_UPSTREAM_STATE"]) == (
        "b1",
        "b",
        "completed",
    )
    assert env["TASKD_UPSTREAM_A_RUN_ID"] == "a2" and env["TASKD_UPSTREAM_B_RUN_ID"] == "b1"
    assert env["TASKD_UPSTREAM_RUN_IDS"] == "a2 b1"


def test_any_runs_once_per_counted_run_and_when_picks_the_outcomes() -> None:
    rows = [pending("d", "a", "a1", at=1), pending("d", "a", "a2", "failed", at=2), pending("d", "b", "b1", at=3)]
    assert [[u.upstream_run_id for u in t] for t in takes(After(tasks=("a", "b"), mode="any"), rows)] == [
        ["a1"],
        ["b1"],
    ]
    failures = takes(After(tasks=("a", "b"), mode="any", when="failure"), rows)
    assert [[u.upstream_run_id for u in t] for t in failures] == [["a2"]]
    assert len(takes(After(tasks=("a", "b"), mode="any", when="always"), rows)) == 3


def test_spread_shifts_every_instant_by_an_offset_stable_for_the_task_id() -> None:
    base = parse("0 * * * *", "Europe/Berlin")
    offset = spread_offset("nightly-backup", 600)
    assert 0 <= offset < 600 and offset == spread_offset("nightly-backup", 600)
    assert len({spread_offset(f"t{i}", 600) for i in range(100)}) > 50  # spread out, not bunched
    moved = shifted(base, offset)
    start = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # across Berlin's switch to summer time
    for plain, shifted_instant in zip(base.next_n(start, 5), moved.next_n(start, 5), strict=True):
        assert shifted_instant - plain == timedelta(seconds=offset)
    # strictly after: an instant exactly at a shifted fire asks for the next one
    first = moved.next_after(start)
    assert first is not None and moved.next_after(first) == first + timedelta(hours=1)


# -- the engine ------------------------------------------------------------------------------------


CHAIN = """\
  - {id: extract, pipeline: extract}
  - {id: transform, pipeline: transform, after: extract}
  - {id: report, pipeline: extract}
  - {id: load, pipeline: extract, after: {tasks: [transform, report], mode: all}}
"""


async def test_a_three_task_chain_with_fan_in_runs_each_downstream_task_once_per_upstream_outcome(
    harness: Harness,
) -> None:
    engine = await harness.start(CHAIN, PIPELINES)
    extract = engine.start_run("extract", Trigger.MANUAL)
    await drain(harness)
    (transform,) = await harness.runs("transform")
    assert transform.trigger == Trigger.DEPENDENCY and transform.state == RunState.COMPLETED
    seen = fake_steps.SEEN[transform.id]
    assert seen["params"] == {"rows": 10, "made_by": "extract"}  # what extract's steps put in the context
    assert seen["env"]["TASKD_UPSTREAM_RUN_ID"] == extract.id
    assert seen["env"]["TASKD_UPSTREAM_TASK_ID"] == "extract"
    assert seen["env"]["TASKD_UPSTREAM_STATE"] == "completed"
    assert await harness.runs("load") == []  # report has not run yet: load waits
    assert engine.downstream.waiting_for("load") == ["report"]

    report = engine.start_run("report", Trigger.MANUAL)
    await drain(harness)
    (load,) = await harness.runs("load")
    env = fake_steps.SEEN[load.id]["env"]
    assert env["TASKD_UPSTREAM_TRANSFORM_RUN_ID"] == transform.id and env["TASKD_UPSTREAM_REPORT_RUN_ID"] == report.id
    upstream, _ = await harness.store.run_links(load.id)
    assert sorted(u.upstream_run_id for u in upstream) == sorted([transform.id, report.id])
    _, downstream = await harness.store.run_links(extract.id)
    assert [(d.task_id, d.run_id) for d in downstream] == [("transform", transform.id)]

    # extract again: transform again, but load waits for a new report run too
    engine.start_run("extract", Trigger.MANUAL)
    await drain(harness)
    assert len(await harness.runs("transform")) == 2 and len(await harness.runs("load")) == 1
    engine.start_run("report", Trigger.MANUAL)
    await drain(harness)
    assert len(await harness.runs("load")) == 2


async def test_a_failed_upstream_run_does_not_count_for_success_but_does_for_failure(harness: Harness) -> None:
    engine = await harness.start(
        "  - {id: flaky, pipeline: broken}\n"
        "  - {id: cleanup, pipeline: extract, after: {tasks: [flaky], when: failure}}\n"
        "  - {id: next, pipeline: extract, after: flaky}\n",
        PIPELINES,
    )
    engine.start_run("flaky", Trigger.MANUAL)
    await drain(harness)
    (cleanup,) = await harness.runs("cleanup")
    assert fake_steps.SEEN[cleanup.id]["env"]["TASKD_UPSTREAM_STATE"] == "failed"
    assert await harness.runs("next") == []
    assert await harness.store.pending_upstreams() == []  # a failure is not kept for `next`


async def test_a_reload_or_a_restart_never_runs_a_downstream_task_twice_for_one_upstream_run(
    harness: Harness,
) -> None:
    engine = await harness.start(CHAIN, PIPELINES)
    engine.start_run("extract", Trigger.MANUAL)
    await drain(harness)
    engine.reload(harness.config(CHAIN.replace("after: extract", "after: {tasks: [extract], mode: any}"), PIPELINES))
    await drain(harness)
    for _ in range(2):
        engine = await harness.start(CHAIN, PIPELINES)  # the same store, a new engine
        await drain(harness)
    assert len(await harness.runs("transform")) == 1


async def test_a_crash_before_the_downstream_run_began_gives_its_upstream_runs_back(harness: Harness) -> None:
    """The only slot is held by a gated run, so the dependency run stays queued; the process dies
    (nothing is finished); recovery gives the upstream run back and the next process runs it."""
    tasks = CHAIN + "  - {id: hog, pipeline: gated}\n"
    engine = await harness.start(tasks, PIPELINES)
    engine.slots.set_limit(1)
    engine.start_run("hog", Trigger.MANUAL)
    upstream = UpstreamRun("transform", "0000000000aa00000001", "extract", "completed", harness.clock.time())
    harness.store.save_upstream(upstream)
    await engine.downstream.process()  # or the engine's own look got there first
    (queued,) = await harness.runs("transform")
    assert queued.state == RunState.QUEUED and queued.started_at is None
    assert await harness.store.pending_upstreams() == []
    assert not await harness.store.take_upstreams(queued, [upstream])  # taken: once only

    harness.engine = None  # kill -9: this process is gone to the store, which the next one recovers
    recovered = await harness.store.recover_interrupted(harness.clock.time())
    assert queued.id in {r.id for r in recovered}
    assert await harness.store.pending_upstreams() == [upstream]
    harness.gates.gate("g").set()
    await harness.start(tasks, PIPELINES)
    await drain(harness)
    await engine.shutdown(1)  # the dead process's engine, whose writes the store no longer takes
    (again,) = [r for r in await harness.runs("transform") if r.id != queued.id]
    assert again.state == RunState.COMPLETED
    assert (await harness.store.get_run(queued.id)).state == RunState.INTERRUPTED  # type: ignore[union-attr]
    linked, _ = await harness.store.run_links(again.id)
    assert [u.upstream_run_id for u in linked] == [upstream.upstream_run_id]
    assert (await harness.store.run_links(queued.id))[0] == []


async def test_deleting_or_disabling_an_upstream_task_leaves_the_downstream_waiting(harness: Harness) -> None:
    engine = await harness.start(CHAIN, PIPELINES)
    assert engine.status("load") == "scheduled"
    await engine.delete_task("report")
    assert engine.status("load") == "waiting" and engine.downstream.waiting_on("load") == ["report"]
    engine = await harness.start(
        CHAIN.replace("{id: extract, pipeline: extract}", "{id: extract, pipeline: extract, enabled: false}"), PIPELINES
    )
    assert engine.status("transform") == "waiting" and engine.downstream.waiting_on("transform") == ["extract"]


async def test_spread_moves_the_fires_and_catch_up_uses_the_moved_instants(harness: Harness) -> None:
    task = "  - {id: spread-me, schedule: '*/10 * * * *', spread: 5m, misfire: run_once, pipeline: note}\n"
    engine = await harness.start(task)
    offset = spread_offset("spread-me", 300)
    schedule = engine.tasks["spread-me"].schedule
    assert schedule is not None
    start = utc(harness.clock)
    due = schedule.next_after(start)
    shift = timedelta(seconds=offset)
    assert due == parse("*/10 * * * *").next_after(start - shift) + shift  # type: ignore[operator]
    await harness.advance((due - start).total_seconds() - 0.5)
    assert await harness.runs("spread-me") == []
    await harness.advance(0.5)
    await harness.settle()
    (run,) = await harness.runs("spread-me")
    assert run.scheduled_at == due.timestamp()

    await harness.stop()  # down for 25 minutes: two shifted fires missed, one catch-up run for the last
    harness.clock.advance(25 * 60)
    await harness.start(task)
    await harness.settle()
    caught = [r for r in await harness.runs("spread-me") if r.trigger == Trigger.CATCH_UP]
    assert [r.scheduled_at for r in caught] == [(due + timedelta(minutes=20)).timestamp()]


def test_the_task_section_spreads_every_task_and_changes_their_definition(tmp_path: Path) -> None:
    tasks = (
        "  - {id: a, schedule: '0 3 * * *', pipeline: p}\n  - {id: b, schedule: '0 3 * * *', pipeline: p, spread: 1m}\n"
    )
    plain = load_config(write(tmp_path, tasks), {}, kinds=registry().types)
    (tmp_path / "taskd.yml").write_text("task: {spread: 30m}\n" + (tmp_path / "taskd.yml").read_text())
    spread = load_config(tmp_path / "taskd.yml", {}, kinds=registry().types)
    a, b = spread.tasks
    assert spread.spread_for(a) == 1800 and spread.spread_for(b) == 60
    assert plain.definition_hash(plain.tasks[0]) != spread.definition_hash(a)
    assert plain.definition_hash(plain.tasks[1]) == spread.definition_hash(b)


# -- what the API and the command line show ---------------------------------------------------------


API_TASKS = """
- {id: extract, pipeline: ok}
- {id: transform, pipeline: ok, after: extract}
- {id: late, pipeline: ok, schedule: '0 3 * * *', spread: 10m}
- {id: n1, pipeline: ok, schedule: '0 4 * * *'}
- {id: n2, pipeline: ok, schedule: '0 4 * * *'}
- {id: n3, pipeline: ok, schedule: '0 4 * * *'}
"""
API_PIPELINES = "- {name: ok, processors: [{log: {message: fine}}]}\n"


async def test_the_api_shows_both_directions_the_links_the_spread_and_the_plan(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    api = await api_factory(base_config(API_TASKS, API_PIPELINES, slots=2))
    upstream = await api.wait_run(await api.start_task("extract"))
    async with asyncio.timeout(10):
        while not (runs := (await api.request("GET", "/task/transform/runs")).json()["runs"]):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    downstream = await api.wait_run(runs[0]["id"])
    assert downstream["trigger"] == "dependency"
    detail = (await api.request("GET", f"/run/{downstream['id']}")).json()
    assert [(u["run_id"], u["task_id"]) for u in detail["upstream_runs"]] == [(upstream["id"], "extract")]
    assert (await api.request("GET", f"/run/{upstream['id']}")).json()["downstream_runs"] == [
        {"task_id": "transform", "run_id": downstream["id"]}
    ]
    transform = (await api.request("GET", "/task/transform")).json()
    assert transform["upstream"] == {"tasks": ["extract"], "when": "success", "mode": "all"}
    assert transform["downstream"] == [] and transform["waiting_on"] == [] and transform["spread"] is None
    assert (await api.request("GET", "/task/extract")).json()["downstream"] == ["transform"]
    late = (await api.request("GET", "/task/late")).json()
    offset = spread_offset("late", 600)
    assert late["spread"] == {"spread_s": 600, "offset_s": offset}
    assert all(t.startswith(f"{t[:10]}T03:{offset // 60:02d}:{offset % 60:02d}") for t in late["next_runs"])

    plan = (await api.request("GET", "/plan?days=2")).json()
    assert len(plan["hours"]) == 48 and plan["max_concurrent_tasks"] == 2
    assert sum(h["runs"] for h in plan["hours"]) == 8  # late, n1, n2, n3 on each of two days
    assert [c["tasks"] for c in plan["crowded"]] == [["n1", "n2", "n3"]] * len(plan["crowded"])
    assert all(c["minute"].endswith("T04:00:00.000Z") and c["over_by"] == 1 for c in plan["crowded"])
    assert (await api.request("GET", "/plan?days=40")).status == 400


def test_plan_next_and_check_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "taskd.yml").write_text(
        "task: {max_concurrent_tasks: 2}\ntasks:\n"
        + "".join(f"  - {{id: n{i}, pipeline: p, schedule: '0 4 * * *'}}\n" for i in range(3))
        + "  - {id: later, pipeline: p, schedule: '0 4 * * *', spread: 10m}\n"
        + "  - {id: after-all, pipeline: p, after: {tasks: [n0, n1], mode: all}}\n"
        + "pipelines: [{name: p, processors: [{log: {message: hi}}]}]\n"
    )
    out = taskd("plan", "-c", "taskd.yml", "--days", "3", cwd=tmp_path).stdout
    assert out.startswith("4 scheduled task(s), 12 run(s) in the next 3 day(s); 3 minute(s) with more tasks")
    assert out.count("! 04:00  3 tasks due, 1 more than max_concurrent_tasks (2): n0, n1, n2") == 3
    assert "UTC" in out and "later" not in out.split("! 04:00")[1].splitlines()[0]
    assert taskd("plan", "-c", "taskd.yml", "--days", "99", cwd=tmp_path).returncode == 2

    offset = spread_offset("later", 600)
    shown = taskd("next", "0 4 * * *", "--after", "2026-01-01T00:00:00+00:00", "--spread", "10m", "--task", "later")
    first = datetime(2026, 1, 1, 4, tzinfo=UTC) + timedelta(seconds=offset)
    assert shown.stdout.splitlines()[0] == first.isoformat()
    alone = taskd("next", "0 4 * * *", "--spread", "10m")
    assert alone.returncode == 2 and "--spread and --task go together" in alone.stderr
    checked = taskd("check", "-c", "taskd.yml", cwd=tmp_path).stdout
    assert "dependencies (task <- the tasks it runs after):\n  after-all <- n0, n1 (success, all)" in checked
    assert f"spread:    10m: fires {format_duration(offset)} late" in checked
    assert "after:     n0, n1 (when: success, mode: all)" in checked


async def test_a_shutdown_gives_back_the_upstream_runs_of_a_dependency_run_that_had_not_begun(
    harness: Harness,
) -> None:
    tasks = CHAIN + "  - {id: hog, pipeline: gated}\n"
    engine = await harness.start(tasks, PIPELINES)
    engine.slots.set_limit(1)
    engine.start_run("hog", Trigger.MANUAL)
    upstream = UpstreamRun("transform", "0000000000aa00000002", "extract", "completed", harness.clock.time())
    harness.store.save_upstream(upstream)
    await engine.downstream.process()
    (queued,) = await harness.runs("transform")
    await engine.shutdown(0)  # the gate stays shut: the hog and the queued run are stopped
    harness.engine = None
    stopped = await harness.store.get_run(queued.id)
    assert stopped is not None and stopped.state == RunState.STOPPED
    assert "its upstream runs were given back" in (stopped.error or "")
    assert await harness.store.pending_upstreams() == [upstream]
    harness.gates.gate("g").set()
    await harness.start(tasks, PIPELINES)
    await drain(harness)
    assert [r.state for r in await harness.runs("transform") if r.id != queued.id] == [RunState.COMPLETED]


async def test_an_upstream_run_reaches_its_downstream_run_with_its_secrets_masked(harness: Harness) -> None:
    engine = await harness.start(
        "  - {id: extract, pipeline: extract, params: {password: hunter2hunter2}, secret_params: [password]}\n"
        "  - {id: transform, pipeline: transform, after: extract}\n",
        PIPELINES.replace("kwargs: {rows: 10}", "kwargs: {rows: 10, echo: password}"),
    )
    engine.start_run("extract", Trigger.MANUAL)
    await drain(harness)
    (transform,) = await harness.runs("transform")
    assert "hunter2hunter2" not in str(transform.params) and "***" in str(transform.params)
    assert "hunter2hunter2" not in str(fake_steps.SEEN[transform.id]["params"])


def test_ids_that_would_share_their_variables_a_spread_without_a_schedule_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  - {id: my.task-1, pipeline: p}\n  - {id: my_task.1, pipeline: p}\n"
        "  - {id: both, pipeline: p, after: [my.task-1, my_task.1]}\n"
        "  - {id: lonely, pipeline: p, after: both, spread: 5m}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    text = "\n".join(caught.value.problems)
    assert "tasks[2].after.tasks[1]: upstream tasks 'my.task-1' and 'my_task.1' would both be" in text
    assert "TASKD_UPSTREAM_MY_TASK_1_*" in text
    assert "spread shifts the fires of a schedule, and this task has no schedule to shift" in text


def test_spread_0_opts_a_task_out_of_the_sections_spread(tmp_path: Path) -> None:
    path = tmp_path / "taskd.yml"
    path.write_text(
        "task: {spread: 10m}\ntasks:\n  - {id: exact, pipeline: p, schedule: '0 3 * * *', spread: 0}\n"
        "  - {id: spread, pipeline: p, schedule: '0 3 * * *'}\n"
        "pipelines: [{name: p, processors: [{log: {message: hi}}]}]\n"
    )
    config = load_config(path, {})
    exact, spread = (config.schedule_for(t) for t in config.tasks)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert exact is not None and exact.next_after(start) == datetime(2026, 1, 1, 3, tzinfo=UTC)
    offset = spread_offset("spread", 600)
    assert spread is not None and spread.next_after(start) == datetime(2026, 1, 1, 3, tzinfo=UTC) + timedelta(
        seconds=offset
    )


async def test_with_mode_any_one_deleted_upstream_task_does_not_hold_the_task(harness: Harness) -> None:
    tasks = (
        "  - {id: a, pipeline: extract}\n  - {id: b, pipeline: extract}\n"
        "  - {id: either, pipeline: extract, after: {tasks: [a, b], mode: any}}\n"
    )
    engine = await harness.start(tasks, PIPELINES)
    await engine.delete_task("a")
    assert engine.status("either") == "scheduled" and engine.downstream.waiting_on("either") == []
    await engine.delete_task("b")
    assert engine.status("either") == "waiting" and engine.downstream.waiting_on("either") == ["a", "b"]


async def test_pending_upstream_runs_an_after_no_longer_counts_are_forgotten(harness: Harness) -> None:
    fan = "  - {id: up, pipeline: extract}\n  - {id: up2, pipeline: extract}\n  - {id: fan, pipeline: extract, %s}\n"
    engine = await harness.start(fan % "after: [up, up2]", PIPELINES)
    engine.start_run("up", Trigger.MANUAL)
    await drain(harness)
    assert [u.upstream_task_id for u in await harness.store.pending_upstreams()] == ["up"]
    engine.reload(harness.config(fan % "after: [up2]", PIPELINES))  # `up` counts no more: forgotten
    await drain(harness)
    assert await harness.store.pending_upstreams() == []
    engine.reload(harness.config(fan % "after: [up, up2]", PIPELINES))
    engine.start_run("up2", Trigger.MANUAL)
    await drain(harness)
    assert await harness.runs("fan") == []  # the old `up` run is not taken: fan waits for a new one


def test_the_forecast_counts_only_fires_to_come_and_works_out_a_shared_schedule_once() -> None:
    start = datetime(2026, 1, 5, 13, 30, tzinfo=UTC)
    every_minute = parse("* * * * *")
    seconds = parse("*/2 * * * * *")
    tasks = [(f"m{i}", shifted(every_minute, spread_offset(f"m{i}", 30))) for i in range(3)]
    plan = forecast([*tasks, ("fast", seconds), ("daily", parse("0 3 * * *"))], start, 1, 3)
    assert plan.hours[0][0] == datetime(2026, 1, 5, 13, tzinfo=UTC).timestamp() and len(plan.hours) == 24
    # The half hour to come: each m task's fires from 13:30 (its offset later) or 13:31, fast's 30 a minute.
    minutely = sum(30 if spread_offset(f"m{i}", 30) else 29 for i in range(3))
    assert plan.hours[0][1:] == (minutely + 30 * 30, 4)
    assert sum(runs for _, runs, _ in plan.hours[1:]) == 23 * 60 * (3 + 30) + 1  # and daily's one
    # Four tasks are due in every minute from 13:31 on (fast counts once a minute): over three slots.
    assert plan.crowded[0].tasks == ("fast", "m0", "m1", "m2") and plan.crowded[1].minute - plan.crowded[0].minute == 60
    assert plan.crowded_minutes >= 60 * 24 - 30 - 1
    assert plan.cut_short == []
    text = lines(plan)
    assert text[1].startswith(f"    ! {datetime.fromtimestamp(plan.crowded[0].minute, UTC):%H:%M}  4 tasks due, 1 more")
    assert text[4].startswith("    ! and ") and text[4].endswith(" more crowded minute(s) in this hour")
