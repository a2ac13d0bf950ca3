"""The store contract: every store (the in-memory one, SQLite on a real file and PostgreSQL) must
pass these and answer alike. A test module imports these tests and provides a `backend` fixture:
an open store and a function that reopens it (`opened`)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from taskd.models import (
    AlertState,
    AttemptRecord,
    RunRecord,
    RunState,
    StepRecord,
    StepState,
    Trigger,
    UpstreamRun,
    new_run_id,
)
from taskd.store import Fire, LogLine, MemoryStore, RunQuery, Store, StoreError, Transition
from taskd.store.base import EXACT_TEXT_UP_TO, EXACT_UP_TO, RUN_SORTS, AuditEntry, AuditQuery
from taskd.store.buffer import Batch, BufferedStore

Reopen = Callable[[], Awaitable[Store]]


def _record(
    task_id: str = "t",
    queued_at: float | None = None,
    state: RunState = RunState.QUEUED,
    trigger: Trigger = Trigger.MANUAL,
) -> RunRecord:
    at = queued_at if queued_at is not None else time.time()
    return RunRecord(id=new_run_id(at), task_id=task_id, trigger=trigger, queued_at=at, state=state)


async def opened(make: Callable[[], Store]) -> AsyncIterator[tuple[Store, Reopen]]:
    """A `backend` fixture's body: an open store from `make`, and a function that closes it and
    opens it again (a restart)."""
    current = make()
    await current.open()

    async def reopen() -> Store:
        nonlocal current
        await current.close()
        current = make()
        await current.open()
        return current

    yield current, reopen
    await current.close()


@pytest.fixture
def store(backend: tuple[Store, Reopen]) -> Store:
    return backend[0]


async def test_a_read_sees_every_write_staged_before_it(store: Store) -> None:
    run = _record()
    store.save_run(run)
    run.state = RunState.RUNNING
    store.save_run(run)
    stored = await store.get_run(run.id)
    assert stored is not None and stored.state is RunState.RUNNING
    assert store.pending_writes == 0


async def test_what_is_read_is_a_copy_not_the_live_record(store: Store) -> None:
    run = _record()
    store.save_run(run)
    stored = await store.get_run(run.id)
    assert stored is not None and stored is not run
    run.state = RunState.FAILED  # changed but not saved again
    again = await store.get_run(run.id)
    assert again is not None and again.state is RunState.QUEUED


async def test_thousands_of_writes_share_few_commits(store: Store) -> None:
    records = [_record(f"task{i % 10}") for i in range(5000)]
    for record in records:
        store.save_run(record)
        record.state = RunState.RUNNING
        store.save_run(record)
        store.save_attempt(AttemptRecord(record.id, 1, time.time()))
        store.append_log(LogLine(record.id, 1, time.time(), "stdout", "hello"))
        record.state = RunState.COMPLETED
        record.finished_at = time.time()
        store.save_run(record)
    assert store.pending_writes == 5000 * 3  # one row per run, attempt and log line
    await store.flush()
    assert getattr(store, "commits", 0) <= 3
    runs, total = await store.list_runs(RunQuery(limit=10))
    assert total == 5000 and all(r.state is RunState.COMPLETED for r in runs)
    assert len(await store.run_log(records[0].id)) == 1


async def test_list_runs_filters_pages_and_orders_newest_first(store: Store) -> None:
    base = 1_800_000_000.0
    made = []
    for i in range(6):
        run = _record(
            "a" if i % 2 else "b",
            queued_at=base + i,
            state=RunState.FAILED if i == 3 else RunState.COMPLETED,
            trigger=Trigger.SCHEDULE if i < 2 else Trigger.MANUAL,
        )
        made.append(run)
        store.save_run(run)
    runs, total = await store.list_runs(RunQuery(limit=2, offset=1))
    assert total == 6 and [r.id for r in runs] == [made[4].id, made[3].id]
    runs, total = await store.list_runs(RunQuery(task_ids=("a",)))
    assert total == 3 and [r.id for r in runs] == [made[5].id, made[3].id, made[1].id]
    assert [r.id for r in (await store.list_runs(RunQuery(states=("failed",))))[0]] == [made[3].id]
    assert (await store.list_runs(RunQuery(triggers=("schedule",))))[1] == 2
    runs, total = await store.list_runs(RunQuery(since=base + 2, until=base + 4))
    assert total == 2 and [r.id for r in runs] == [made[3].id, made[2].id]
    assert (await store.list_runs(RunQuery(task_ids=("nobody",))))[1] == 0


async def test_run_search_by_lists_text_and_every_sort_key(store: Store) -> None:
    base = 1_800_000_000.0
    rows = [
        # task, state, queued +s, started +s, finished +s, error, params
        ("nightly_backup", RunState.COMPLETED, 0, 1, 31, None, {"target": "/srv/data"}),
        ("nightly_backup", RunState.FAILED, 10, 11, 12, "copy: disk full on /srv", {}),
        ("report", RunState.COMPLETED, 20, 20.5, 21, None, {"who": "Alice 50%_off"}),
        ("report", RunState.RUNNING, 30, 30, None, None, {}),
        ("cleanup", RunState.QUEUED, 40, None, None, None, {}),
    ]
    made = []
    for task_id, state, queued, started, finished, error, params in rows:
        run = _record(task_id, queued_at=base + queued, state=state)
        run.started_at = None if started is None else base + started
        run.finished_at = None if finished is None else base + finished
        run.error, run.params = error, params
        made.append(run)
        store.save_run(run)

    async def ids(**query: object) -> list[int]:
        runs, total = await store.list_runs(RunQuery(**query))  # type: ignore[arg-type]
        if "limit" not in query and "offset" not in query:
            assert total == len(runs)
        else:
            assert total == 5
        return [made.index(next(m for m in made if m.id == r.id)) for r in runs]

    assert await ids(task_ids=("report", "cleanup")) == [4, 3, 2]
    assert await ids(states=("failed", "queued")) == [4, 1]
    assert await ids(states=("completed", "failed")) == [2, 1, 0]  # counted as all runs minus the others
    assert await ids(states=("completed",)) == [2, 0]
    assert await ids(states=("completed", "running", "queued", "failed")) == [4, 3, 2, 1, 0]
    runs, total = await store.list_runs(RunQuery(text="srv", offset=10))
    assert (runs, total) == ([], 2)  # a text search paged past its end still knows its total
    runs, total = await store.list_runs(RunQuery(text="srv", limit=1))
    assert [r.id for r in runs] == [made[1].id] and total == 2
    assert await ids(text="DISK FULL") == [1]  # error, any case
    assert await ids(text="srv") == [1, 0]  # error and params
    assert await ids(text="50%_") == [2]  # wildcards are literal
    assert await ids(text="%_") == [2]  # shorter than three characters too
    assert await ids(text='"who') == [2]  # a quote is a character like any other
    assert await ids(text="ALICE") == [2]  # any case, in params too
    assert await ids(text="backup") == []  # the task id is the API's business (text_task_ids)
    assert await ids(text="zzz", text_task_ids=("cleanup",)) == [4]  # a task whose name matched
    assert await ids(sort="queued_at", descending=False) == [0, 1, 2, 3, 4]
    assert await ids(sort="started_at", descending=False) == [4, 0, 1, 2, 3]  # missing values first
    assert await ids(sort="started_at") == [3, 2, 1, 0, 4]  # and last, descending
    # Ties (no value) are broken by the queued time, then the run id, in the same direction.
    assert await ids(sort="duration") == [0, 1, 2, 4, 3]  # 30 s, 1 s, 0.5 s, then the unfinished
    assert await ids(sort="finished_at", descending=False, limit=2) == [3, 4]
    assert await ids(sort="finished_at", descending=False, offset=2) == [1, 2, 0]
    assert await ids(sort="task_id", descending=False) == [4, 0, 1, 2, 3]
    assert await ids(sort="state", descending=False) == [0, 2, 1, 4, 3]
    with pytest.raises(ValueError, match="sort must be one of"):
        RunQuery(sort="color")


async def test_a_text_search_follows_a_run_through_its_saves(store: Store) -> None:
    """What `q` finds is what the run holds now: an error that a later attempt took away is no
    longer found, and a run saved many times is found once."""
    run = _record("flaky")
    run.params = {"target": "/srv/alpha"}
    plain = _record("plain")

    async def found(text: str) -> list[str]:
        runs, total = await store.list_runs(RunQuery(text=text))
        assert total == len(runs)
        return [r.id for r in runs]

    for record in (run, plain):
        store.save_run(record)
    assert await found("alpha") == [run.id]
    run.state, run.attempts, run.error = RunState.RETRYING, 1, "copy: disk full"
    plain.state, plain.attempts, plain.error = RunState.RETRYING, 1, "exit code 3"
    for record in (run, plain):
        store.save_run(record)
    assert await found("disk full") == [run.id]
    assert await found("exit code") == [plain.id]
    run.state, run.attempts, run.error = RunState.COMPLETED, 2, None
    plain.state, plain.attempts, plain.error = RunState.COMPLETED, 2, None
    for record in (run, plain):
        store.save_run(record)
    assert await found("disk full") == []
    assert await found("exit code") == []
    assert await found("alpha") == [run.id]  # params stay, once
    failed = _record("broken")
    store.save_run(failed)
    failed.state, failed.attempts, failed.error = RunState.FAILED, 1, "HTTP 503 from upstream"
    store.save_run(failed)
    assert await found("503") == [failed.id]


async def test_run_search_answers_as_the_reference_store_page_by_page(store: Store) -> None:
    """Every filter, sort key, direction and page against the in-memory store as the reference.
    SQLite reads a search through a filter's index (few matches) or in the sort's order (many),
    chosen by the count: both ways are exercised here."""
    rng = random.Random(11)
    runs = []
    for i in range(400):
        state = rng.choice([RunState.COMPLETED] * 8 + [RunState.FAILED, RunState.RUNNING, RunState.QUEUED])
        run = RunRecord(
            id=new_run_id(1000.0 + rng.random() * 400),  # ids out of queued order: ties show the rule
            task_id=rng.choice("abcde"),
            trigger=rng.choice([Trigger.SCHEDULE, Trigger.SCHEDULE, Trigger.MANUAL]),
            queued_at=1000.0 + i // 2,  # pairs queued at once: ties
            state=state,
            started_at=None if state is RunState.QUEUED else 1000.0 + i // 2 + rng.choice([0.0, 0.5]),
            finished_at=1001.0 + i // 2 + rng.randrange(5) if state in (RunState.COMPLETED, RunState.FAILED) else None,
            attempts=1,
            error="copy: Disk full on /srv" if state is RunState.FAILED else None,
            params={"target": f"/srv/{rng.choice(['alpha', 'beta'])}"} if rng.random() < 0.3 else {},
        )
        runs.append(run)
    reference = MemoryStore()
    await reference.open()
    try:
        for run in runs:
            store.save_run(run)
            reference.save_run(run)
        filters: list[dict[str, Any]] = [
            {},
            {"states": ("completed",)},
            {"states": ("failed", "running")},
            {"task_ids": ("a", "b")},
            {"task_ids": ("c",)},
            {"task_ids": ("d",), "states": ("failed", "running")},
            {"triggers": ("manual",)},
            {"triggers": ("schedule",), "states": ("completed",)},
            {"since": 1050.0, "until": 1150.0},
            {"text": "disk FULL"},
            {"text": "/srv"},
            {"text": "al", "text_task_ids": ("c",)},
            {"text": "beta", "states": ("completed", "failed")},
        ]
        for spec in filters:
            for sort in RUN_SORTS:
                for descending in (True, False):
                    for limit, offset in ((50, 0), (3, 0), (7, 21), (50, 390)):
                        query = RunQuery(**spec, sort=sort, descending=descending, limit=limit, offset=offset)
                        got, total = await store.list_runs(query)
                        want, expected = await reference.list_runs(query)
                        assert ([r.id for r in got], total) == ([r.id for r in want], expected), query
                        # What the API answers: the same page, and (this few runs) the exact total.
                        searched = await store.search_runs(query)
                        assert ([r.id for r in searched.runs], searched.total, searched.exact) == (
                            [r.id for r in want],
                            expected,
                            True,
                        ), query
                        # What a task's page asks: the page alone (a store may skip the count).
                        paged, _ = await store.list_runs(dataclasses.replace(query, fresh=False, counted=False))
                        assert [r.id for r in paged] == [r.id for r in want], query
    finally:
        await reference.close()


async def test_a_run_keeps_its_params_trigger_and_timings(store: Store) -> None:
    run = _record(trigger=Trigger.CATCH_UP)
    run.params = {"target": "/srv", "n": 3, "nested": {"a": [1, 2]}}
    run.scheduled_at, run.started_at, run.finished_at = 10.0, 11.0, 13.5
    run.priority, run.attempts, run.error = 7, 2, "boom"
    store.save_run(run)
    stored = await store.get_run(run.id)
    assert stored == run
    assert stored is not None and stored.duration == 2.5
    assert await store.get_run("no-such-run") is None


async def test_attempts_steps_logs_and_transitions_come_back_in_order(store: Store) -> None:
    run = _record()
    store.save_run(run)
    for number in (2, 1):
        store.save_attempt(AttemptRecord(run.id, number, 100.0 + number, StepState.FAILED, 101.0 + number, "x"))
    for attempt, index in ((2, 1), (1, 1), (2, 0), (1, 0)):
        store.save_step(StepRecord(run.id, attempt, index, "shell", 100.0 + attempt))
    for seq in (1, 2, 3):
        store.append_log(LogLine(run.id, seq, 100.0 + seq, "stdout", f"line {seq}"))
    store.append_log(LogLine(run.id, 2, 200.0, "stdout", "a repeat of seq 2 is ignored"))
    store.record_transition(Transition(run.id, 1, 100.0, "queued", "trigger manual"))
    store.record_transition(Transition(run.id, 2, 101.0, "running"))
    assert [a.number for a in await store.attempts(run.id)] == [1, 2]
    assert [(s.attempt, s.index) for s in await store.steps(run.id)] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert [line.line for line in await store.run_log(run.id)] == ["line 1", "line 2", "line 3"]
    assert [line.seq for line in await store.run_log(run.id, after_seq=2)] == [3]
    assert [(t.seq, t.state, t.detail) for t in await store.transitions(run.id)] == [
        (1, "queued", "trigger manual"),
        (2, "running", None),
    ]


async def test_last_runs_is_the_latest_queued_run_of_each_task(store: Store) -> None:
    first, second, other = _record("a", queued_at=10), _record("a", queued_at=20), _record("b", queued_at=5)
    for run in (second, first, other):
        store.save_run(run)
    last = await store.last_runs()
    assert {task: run.id for task, run in last.items()} == {"a": second.id, "b": other.id}


async def test_last_successes_are_the_latest_completed_run_of_each_task(store: Store) -> None:
    for task_id, state, finished in (
        ("a", RunState.COMPLETED, 10.0),
        ("a", RunState.COMPLETED, 30.0),
        ("a", RunState.FAILED, 40.0),
        ("b", RunState.FAILED, 50.0),
        ("c", RunState.COMPLETED, 5.0),
    ):
        run = _record(task_id, queued_at=finished - 1, state=state)
        run.started_at, run.finished_at = finished - 1, finished
        store.save_run(run)
    assert await store.last_successes() == {"a": 30.0, "c": 5.0}


async def test_recover_marks_active_runs_interrupted_after_a_restart(backend: tuple[Store, Reopen]) -> None:
    store, reopen = backend
    running, done = _record(state=RunState.RUNNING), _record(state=RunState.COMPLETED)
    running.started_at = time.time()
    store.save_run(running)
    store.save_run(done)
    store.record_transition(Transition(running.id, 1, 1.0, "queued"))
    store.record_transition(Transition(running.id, 2, 2.0, "running"))
    store.save_attempt(AttemptRecord(running.id, 1, time.time()))
    store.save_step(StepRecord(running.id, 1, 0, "shell", time.time()))
    reopened = await reopen()
    recovered = await reopened.recover_interrupted(50.0)
    assert [r.id for r in recovered] == [running.id]
    assert recovered[0].state is RunState.INTERRUPTED and recovered[0].finished_at == 50.0
    stored = await reopened.get_run(running.id)
    assert stored is not None and stored.state is RunState.INTERRUPTED and "taskd exited" in (stored.error or "")
    assert (await reopened.attempts(running.id))[0].state is StepState.INTERRUPTED
    assert (await reopened.steps(running.id))[0].state is StepState.INTERRUPTED
    assert [(t.seq, t.state) for t in await reopened.transitions(running.id)][-1] == (3, "interrupted")
    found, total = await reopened.list_runs(RunQuery(text="taskd exited"))  # the new error is searchable
    assert total == 1 and found[0].id == running.id
    unchanged = await reopened.get_run(done.id)
    assert unchanged is not None and unchanged.state is RunState.COMPLETED
    assert await reopened.recover_interrupted(60.0) == []  # nothing twice


async def test_tombstones_fires_and_last_fires_survive_a_restart(backend: tuple[Store, Reopen]) -> None:
    store, reopen = backend
    store.add_tombstone("a", "hash1", time.time())
    store.add_tombstone("b", "hash2", time.time())
    store.remove_tombstone("b")
    store.remove_tombstone("never-deleted")
    store.set_last_fire("a", 200.0)
    store.set_last_fire("a", 100.0)  # never moves backwards
    store.record_fire(Fire("a", 150.0, "skipped", "busy", time.time()))
    store.record_fire(Fire("a", 160.0, "missed", "down", time.time()))
    await store.flush()
    store = await reopen()
    store.set_last_fire("a", 120.0)  # not even across a restart
    assert await store.tombstones() == {"a": "hash1"}
    assert await store.last_fires() == {"a": 200.0}
    assert [f.reason for f in await store.fires("a")] == ["down", "busy"]
    assert [f.reason for f in await store.fires("a", limit=1)] == ["down"]
    assert await store.fires("b") == []


async def test_a_summary_of_refused_fires_is_one_row_updated_in_place(backend: tuple[Store, Reopen]) -> None:
    store, reopen = backend
    store.record_fire(Fire("a", 10.0, "skipped", "busy", 10.0, key="n|a|busy|10"))
    await store.flush()  # the summary's first write is committed on its own
    for second in range(11, 20):
        store.record_fire(
            Fire("a", 10.0, "skipped", f"busy {second}", second, second - 9, float(second), "n|a|busy|10")
        )
    store.record_fire(Fire("a", 30.0, "skipped", "busy again", 30.0, key="n|a|busy|30"))
    await store.flush()
    store = await reopen()
    later, first = await store.fires("a")
    assert (first.instant, first.last_instant, first.count, first.reason) == (10.0, 19.0, 10, "busy 19")
    assert (later.instant, later.count, later.last_instant) == (30.0, 1, None)


async def test_retention_by_age_and_by_count(store: Store) -> None:
    now = time.time()
    old = _record("a", queued_at=now - 40 * 86400, state=RunState.COMPLETED)
    old.finished_at = now - 40 * 86400
    store.save_run(old)
    store.append_log(LogLine(old.id, 1, now, "log", "x"))
    store.save_attempt(AttemptRecord(old.id, 1, now))
    store.record_transition(Transition(old.id, 1, now, "queued"))
    store.record_fire(Fire("a", now - 40 * 86400, "skipped", "ancient", now - 40 * 86400))
    store.record_fire(Fire("a", now, "skipped", "fresh", now))
    for i in range(5):
        run = _record("b", queued_at=now - 100 + i, state=RunState.FAILED)
        run.finished_at = now - 50 + i
        store.save_run(run)
    active = _record("b", queued_at=now - 1000, state=RunState.RUNNING)
    store.save_run(active)
    removed = await store.prune(now, days=30, max_runs_per_task=3)
    assert removed == 3  # the 40-day-old run, and b's two oldest finished runs
    runs, total = await store.list_runs(RunQuery(task_ids=("b",)))
    assert total == 4 and active.id in {r.id for r in runs}
    assert await store.get_run(old.id) is None and await store.run_log(old.id) == []
    assert await store.attempts(old.id) == [] and await store.transitions(old.id) == []
    assert [f.reason for f in await store.fires("a")] == ["fresh"]
    assert await store.prune(now, days=0, max_runs_per_task=0) == 0  # 0 keeps everything


async def test_stats(store: Store) -> None:
    for i, state in enumerate([RunState.COMPLETED] * 3 + [RunState.FAILED]):
        run = _record("a", queued_at=1000 + i, state=state)
        run.started_at, run.finished_at = 1000.0 + i, 1000.0 + i + (i + 1)
        store.save_run(run)
    store.save_run(_record("a", queued_at=2000, state=RunState.RUNNING))
    await store.flush()  # stats may lag the last batch of writes
    stats = await store.task_stats("a")
    assert stats["runs"] == 5 and stats["finished_considered"] == 4 and stats["success_rate"] == 0.75
    assert stats["mean_duration"] == 2.5 and stats["p95_duration"] == 4 and stats["p50_duration"] == 2
    empty = await store.task_stats("nobody")
    assert empty["runs"] == 0 and empty["success_rate"] is None and empty["p95_duration"] is None


async def test_a_search_total_is_exact_up_to_its_limit_and_a_fair_estimate_past_it(store: Store) -> None:
    for i in range(EXACT_UP_TO + 2000):
        run = _record("many" if i % 10 else "few", queued_at=10_000.0 + i, state=RunState.COMPLETED)
        run.started_at, run.finished_at = run.queued_at, run.queued_at + 1
        run.params = {"target": "/srv/disk"} if i % 10 else {}
        store.save_run(run)
    await store.flush()
    everything = await store.search_runs(RunQuery(limit=5))
    assert len(everything.runs) == 5 and everything.total > EXACT_UP_TO
    if not everything.exact:  # a database's estimate: labelled, and near the truth
        assert abs(everything.total - (EXACT_UP_TO + 2000)) <= 0.2 * (EXACT_UP_TO + 2000)
    few = await store.search_runs(RunQuery(task_ids=("few",), limit=5))
    assert few.exact and few.total == (EXACT_UP_TO + 2000 + 9) // 10
    # A task's stats count its runs exactly, below and past the count a quick read stops at.
    assert (await store.task_stats("few"))["runs"] == few.total
    assert (await store.task_stats("many"))["runs"] == EXACT_UP_TO + 2000 - few.total > EXACT_UP_TO
    assert (await store.list_runs(RunQuery(limit=1)))[1] == EXACT_UP_TO + 2000  # list_runs counts exactly
    text = await store.search_runs(RunQuery(text="srv/disk", limit=5))
    assert len(text.runs) == 5 and (text.exact or text.total > EXACT_TEXT_UP_TO)
    if text.exact:
        assert text.total == (EXACT_UP_TO + 2000) * 9 // 10


async def test_runs_are_counted_by_the_minute_they_finished_and_their_state(store: Store) -> None:
    ends = [(6000.0, RunState.COMPLETED), (6059.9, RunState.COMPLETED), (6060.0, RunState.FAILED), (5999.0, None)]
    for i, (end, state) in enumerate(ends):
        run = _record("a", queued_at=5000 + i, state=state or RunState.STOPPED)
        run.started_at, run.finished_at = 5000.0 + i, end
        store.save_run(run)
    store.save_run(_record("a", queued_at=6001, state=RunState.RUNNING))
    await store.flush()
    counted = sorted(await store.run_counts(6000.0, 60))
    assert counted == [(100, "completed", 2), (101, "failed", 1)]  # the one before `since` is left out
    assert await store.run_counts(7000.0, 60) == []


async def test_the_audit_trail_pages_newest_first_filters_and_ages_out(backend: tuple[Store, Reopen]) -> None:
    store, reopen = backend
    now = time.time()
    old = AuditEntry(now - 40 * 86400, "delete", "carol", "admin", "10.0.0.9", "gone", 200, None)
    store.record_audit(old)
    for i, (action, actor) in enumerate([("start", "bob"), ("forbidden", "alice"), ("stop", "bob")]):
        store.record_audit(AuditEntry(now + i, action, actor, "operator", "127.0.0.1", "t", 202, f"detail {i}"))
    store.record_audit(AuditEntry(now + 2, "sign_in_failed", None, None, "::1", None, 401, "wrong bearer token"))
    entries, total = await store.audit(AuditQuery())
    assert (
        total == 5 and entries[0].action == "sign_in_failed" and entries[1].action == "stop"
    )  # same instant: last first
    assert entries[-1] == old
    store = await reopen()  # it survives a restart
    bobs, total = await store.audit(AuditQuery(actor="bob", limit=1))
    assert total == 2 and [e.detail for e in bobs] == ["detail 2"]
    picked, total = await store.audit(AuditQuery(actions=("start", "delete"), since=now - 86400))
    assert total == 1 and picked[0].action == "start"
    window, total = await store.audit(AuditQuery(until=now + 1, offset=1))
    assert total == 2 and [e.action for e in window] == ["delete"]
    await store.prune(now, days=30, max_runs_per_task=0)
    assert (await store.audit(AuditQuery()))[1] == 4  # kept as long as runs are


async def test_a_closed_store_refuses_reads_and_answers_ping_false(backend: tuple[Store, Reopen]) -> None:
    store, _ = backend
    assert await store.ping()
    assert store.writer is not None and not store.writer.done()
    await store.close()
    assert store.writer is None
    assert not await store.ping()
    with pytest.raises(StoreError, match="not open"):
        await store.get_run("x")
    await store.close()  # closing twice is harmless
    await store.open()  # and the fixture closes it again


async def test_text_that_cannot_be_encoded_is_kept_mended_and_costs_no_other_row(store: Store) -> None:
    """A lone surrogate (JSON's "\\ud800" decodes to one) or a NUL in a param or a log line: the
    run and the rest of its batch are stored; the bad characters become U+FFFD where the database
    cannot hold them."""
    runs = [_record() for _ in range(20)]
    runs[7].params = {"note": "bad \ud800 half", "emoji": "\U0001f600"}
    runs[12].params = {"nul": "a\x00b"}
    for run in runs:
        store.save_run(run)
        store.append_log(LogLine(run.id, 1, time.time(), "log", "fine"))
    store.append_log(LogLine(runs[7].id, 2, time.time(), "stdout", "x\ud800y"))
    store.append_log(LogLine(runs[12].id, 2, time.time(), "stdout", "x\x00y"))
    await store.flush()
    for run in runs:
        stored = await store.get_run(run.id)
        assert stored is not None, f"run {run.id} lost with its batch"
        assert (await store.run_log(run.id))[0].line == "fine"
    mended = await store.get_run(runs[7].id)
    assert mended is not None and mended.params["note"] in ("bad \ud800 half", "bad \ufffd half")
    assert mended.params["emoji"] == "\U0001f600"  # a valid pair is not a lone surrogate
    assert (await store.run_log(runs[7].id))[1].line in ("x\ud800y", "x\ufffdy")
    nul = await store.get_run(runs[12].id)
    assert nul is not None and nul.params["nul"] in ("a\x00b", "a\ufffdb")
    assert (await store.run_log(runs[12].id))[1].line in ("x\x00y", "x\ufffdy")


async def test_durable_returns_once_committed_through_failed_commits(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(store, BufferedStore)
    failures = 2
    commit = type(store)._commit

    async def flaky(self: Any, batch: Batch) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError(28, "No space left on device")
        await commit(self, batch)

    monkeypatch.setattr(type(store), "_commit", flaky)
    run = _record()
    store.save_run(run)
    await asyncio.wait_for(store.durable(), timeout=30)
    assert failures == 0 and store.pending_writes == 0 and not store.failing
    monkeypatch.undo()
    assert await store.get_run(run.id) is not None


async def test_durable_asked_while_a_commit_is_under_way_returns_when_it_is_done(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing more staged: the commit under way holds everything, and the next (empty) round of
    the writer must still release the waiter."""
    assert isinstance(store, BufferedStore)
    entered, release = asyncio.Event(), asyncio.Event()
    commit = type(store)._commit

    async def slow(self: Any, batch: Batch) -> None:
        entered.set()
        await release.wait()
        await commit(self, batch)

    monkeypatch.setattr(type(store), "_commit", slow)
    store.save_run(_record())
    flushing = asyncio.create_task(store.flush())
    await asyncio.wait_for(entered.wait(), timeout=10)
    waiting = asyncio.create_task(store.durable())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    release.set()
    await asyncio.wait_for(asyncio.gather(flushing, waiting), timeout=10)


async def test_durable_to_a_mark_waits_for_the_writes_before_it_only(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's first step waits for the commit of its own start: one whose start went out in an
    earlier commit does not wait for the commit under way, one whose start is in it does, and one
    staged since waits for the next."""
    assert isinstance(store, BufferedStore)
    entered, release = asyncio.Event(), asyncio.Event()
    commit = type(store)._commit

    async def slow(self: Any, batch: Batch) -> None:
        if any(run.task_id == "slow" for run in batch.runs.values()):
            entered.set()
            await release.wait()
        await commit(self, batch)

    monkeypatch.setattr(type(store), "_commit", slow)
    store.save_run(_record())
    committed = store.mark()
    await asyncio.wait_for(store.durable(committed), timeout=10)
    store.save_run(_record("slow"))
    in_flight = store.mark()
    assert in_flight > committed
    flushing = asyncio.create_task(store.flush())
    await asyncio.wait_for(entered.wait(), timeout=10)
    store.save_run(_record())
    staged = store.mark()
    assert staged > in_flight
    await asyncio.wait_for(store.durable(committed), timeout=1)  # at once, the commit is still under way
    waiting = [asyncio.create_task(store.durable(in_flight)), asyncio.create_task(store.durable(staged))]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in waiting)
    release.set()
    await asyncio.wait_for(asyncio.gather(flushing, *waiting), timeout=10)
    assert store.pending_writes == 0


async def test_an_alert_state_is_stored_over_the_version_it_was_decided_from(
    backend: tuple[Store, Reopen],
) -> None:
    store = backend[0]
    first = AlertState("t", "ok", since=10.0, first_seen=10.0, version=1)
    assert await store.swap_alert_state(first, 0)
    assert not await store.swap_alert_state(dataclasses.replace(first, since=11.0), 0)  # a row is there
    failing = AlertState("t", "failing", 20.0, 10.0, failures=1, unreported=0, notified_at=20.0, version=2)
    ok_again = dataclasses.replace(first, since=21.0, version=2)
    # Two nodes decide from version 1 at once: one wins, the other is told to read again.
    results = await asyncio.gather(store.swap_alert_state(failing, 1), store.swap_alert_state(ok_again, 1))
    assert sorted(results) == [False, True]
    winner = failing if results[0] else ok_again
    assert await store.alert_state("t") == winner
    assert await store.alert_state("nothing") is None
    overdue = dataclasses.replace(winner, overdue_at=30.0, version=3)
    assert await store.swap_alert_state(overdue, 2)
    store = await backend[1]()  # a restart keeps it
    assert await store.alert_states() == {"t": overdue}


async def test_an_upstream_run_is_pending_until_one_run_takes_it_and_a_run_that_never_began_gives_it_back(
    backend: tuple[Store, Reopen],
) -> None:
    store, reopen = backend
    upstream = _record("extract", state=RunState.COMPLETED)
    upstream.finished_at = upstream.queued_at + 1
    store.save_run(upstream)
    staged = UpstreamRun("load", upstream.id, "extract", "completed", upstream.finished_at, {"rows": 3, "x": [1]})
    store.save_upstream(staged)
    store.save_upstream(dataclasses.replace(staged, context={"rows": 4}))  # staged twice: the first stays
    assert await store.pending_upstreams() == [staged]

    first, second = _record("load", trigger=Trigger.DEPENDENCY), _record("load", trigger=Trigger.DEPENDENCY)
    outcomes = await asyncio.gather(store.take_upstreams(first, [staged]), store.take_upstreams(second, [staged]))
    assert sorted(outcomes) == [False, True]  # taken once, whoever asks at the same time
    taker = first if outcomes[0] else second
    loser = second if outcomes[0] else first
    assert await store.pending_upstreams() == []
    assert (await store.get_run(taker.id)) is not None and await store.get_run(loser.id) is None
    linked, _ = await store.run_links(taker.id)
    assert linked == [dataclasses.replace(staged, run_id=taker.id)]
    _, triggered = await store.run_links(upstream.id)
    assert [(d.task_id, d.run_id) for d in triggered] == [("load", taker.id)]

    store = await reopen()  # a crash before the taker began: recovery gives the upstream run back
    (recovered,) = await store.recover_interrupted(time.time())
    assert recovered.id == taker.id and recovered.state == RunState.INTERRUPTED
    assert await store.pending_upstreams() == [staged]
    assert (await store.run_links(taker.id))[0] == []
    again = _record("load", trigger=Trigger.DEPENDENCY)
    assert await store.take_upstreams(again, [staged])
    store.give_back(again.id)  # stopped by a shutdown before it began: pending again, with its end's commit
    assert await store.pending_upstreams() == [staged]
    assert await store.take_upstreams(again, [staged])

    # a run that began keeps what it took, interrupted or not
    started = _record("load", trigger=Trigger.DEPENDENCY)
    other = UpstreamRun("load", "0" * 20, "extract", "completed", time.time())
    store.save_upstream(other)
    assert await store.take_upstreams(started, [other])
    started.state, started.started_at, started.attempts = RunState.RUNNING, time.time(), 1
    store.save_run(started)
    store = await reopen()
    await store.recover_interrupted(time.time())
    assert await store.pending_upstreams() == [staged]  # `again` never began; `started` did
