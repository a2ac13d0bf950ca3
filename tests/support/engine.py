"""The engine on a fake clock with the in-memory store and a timer tests move by hand, and steps
that block until the test opens their gate (the unit tests of firing, dependencies and stops)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from taskd.clock import FakeClock
from taskd.config import Config, load_config
from taskd.engine import Engine
from taskd.engine.timer import ManualTimer
from taskd.processor import Context, ProcessorOptions, ProcessorType
from taskd.processors import registry
from taskd.store import MemoryStore, RunQuery

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


class GateOptions(ProcessorOptions):
    name: str = Field("g")


class Gates:
    """Steps that block until the test opens their gate, so runs stay active as long as needed."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.entered: list[str] = []

    def gate(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())

    def kind(self) -> ProcessorType:
        gates = self

        class Gate:
            def __init__(self, options: GateOptions) -> None:
                self.options = options

            async def run(self, ctx: Context) -> Mapping[str, Any] | None:
                gates.entered.append(ctx.run_id)
                await gates.gate(self.options.name).wait()
                return None

        return ProcessorType("gate", GateOptions, "wait for the test", Gate)


class Harness:
    def __init__(self, tmp_path: Path, gates: Gates) -> None:
        self.tmp_path = tmp_path
        self.gates = gates
        self.clock = FakeClock(T0)
        self.store = MemoryStore()
        self.kinds = {**registry().types, "gate": gates.kind()}
        self.engine: Engine | None = None
        self.timer: ManualTimer | None = None
        self.header = ""
        """More top-level sections of the configuration (pools:, node:)."""

    def config(self, tasks: str, pipelines: str = "") -> Config:
        (self.tmp_path / "taskd.yml").write_text(
            "task: {max_concurrent_tasks: 10}\nstore: {path: ':memory:'}\n" + self.header + "\n"
            f"tasks:\n{tasks}\npipelines:\n"
            "  - {name: note, processors: [{log: {message: 'at {now:%H:%M:%S}'}}]}\n"
            "  - {name: gated, processors: [{gate: {name: g}}]}\n" + pipelines
        )
        return load_config(self.tmp_path / "taskd.yml", {}, kinds=self.kinds)

    async def start(self, tasks: str, pipelines: str = "") -> Engine:
        if self.engine is not None:
            await self.stop()
        if not self.store.writer:
            await self.store.open()

        def make_timer(callback: Any) -> ManualTimer:
            self.timer = ManualTimer(callback, self.clock)
            return self.timer

        self.engine = Engine(self.config(tasks, pipelines), self.store, self.kinds, self.clock, make_timer)
        await self.engine.start()
        return self.engine

    async def stop(self) -> None:
        if self.engine is not None:
            for event in self.gates.events.values():
                event.set()
            await self.engine.shutdown(1)
            self.engine = None
        await self.store.close()

    async def advance(self, seconds: float) -> int:
        """Move the clock, fire what is due, and let the runs that fired get going."""
        self.clock.advance(seconds)
        assert self.timer is not None
        fired = self.timer.fire_due()
        await asyncio.sleep(0)
        return fired

    async def settle(self) -> None:
        """Wait until no run is active (each must end on its own, within a deadline)."""
        assert self.engine is not None
        async with asyncio.timeout(5):
            while len(self.engine.runs):  # noqa: ASYNC110  # polled with a deadline: runs end on their own
                await asyncio.sleep(0.001)

    async def runs(self, task_id: str, **filters: Any) -> list[Any]:
        runs, _ = await self.store.list_runs(RunQuery(task_ids=(task_id,), limit=1000, **filters))
        return sorted(runs, key=lambda r: r.queued_at)
