"""On a cluster, a fire claimed by a node that dies before starting it is run by a survivor: two
engines on one hub, store and fake clock; node `a` wins the fire's claim and dies before its run
exists; once `b` finds a's lease expired, `b` runs the fire, for its instant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from taskd.clock import FakeClock
from taskd.cluster import HEARTBEAT_S, LEASE_S, Hub, LocalCoordinator
from taskd.config import load_config
from taskd.engine import Engine
from taskd.engine.timer import ManualTimer
from taskd.store import MemoryStore, RunQuery

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, on a minute


async def test_a_fire_claimed_by_a_node_that_died_before_starting_it_is_run_by_a_survivor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(T0 + 1)
    store = MemoryStore(clock=clock)
    clock.waits_for(store.settled)
    await store.open()
    hub = Hub()
    engines: dict[str, Engine] = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "taskd.yml").write_text(
            f"store: {{path: ':memory:'}}\nnode: {{name: {name}}}\n"
            "tasks:\n  - {id: tick, pipeline: p, schedule: '* * * * *'}\n"
            "pipelines:\n  - {name: p, processors: [{sleep: {duration: 0}}]}\n"
        )
        config = load_config(tmp_path / name / "taskd.yml", {})
        coordinator = LocalCoordinator(store, name, {}, clock, hub)

        def timer(callback: Any) -> ManualTimer:
            return ManualTimer(callback, clock)

        engines[name] = Engine(config, store, clock=clock, timer=timer, coordinator=coordinator)
        await engines[name].start()
    a, b = engines["a"], engines["b"]
    # `a` claims the fire and dies before its run exists (kill -9 right after the claim).
    monkeypatch.setattr(a.firing, "_fire_won", lambda *args: None)
    clock.set(T0 + 60)
    a_timer = a.firing.timer
    assert isinstance(a_timer, ManualTimer)
    assert a_timer.fire_due() == 1
    await clock.run_for(0)
    assert hub.claims.get(("tick", T0 + 60), ("", 0.0))[0] == "a"
    assert a.coordinator.task is not None
    a.coordinator.task.cancel()  # no more heartbeats from `a`
    runs, _ = await store.list_runs(RunQuery(task_ids=("tick",)))
    assert runs == []
    await clock.run_for(LEASE_S + 2 * HEARTBEAT_S)  # `b` beats and finds a's lease expired
    runs, _ = await store.list_runs(RunQuery(task_ids=("tick",)))
    assert [(r.scheduled_at, r.node, str(r.trigger)) for r in runs] == [(T0 + 60, "b", "schedule")]
    await b.shutdown(1)
    await store.close()
