"""An engine on a config written to a temp dir, with its SQLite store, that runs tasks to their end;
and a webhook receiver on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from taskd.config import Config, load_config
from taskd.engine import Engine
from taskd.store.sqlite import SQLiteStore


class Harness:
    """An engine on a config written to a temp dir, with its store; runs tasks to the end."""

    def __init__(self, engine: Engine, store: SQLiteStore) -> None:
        self.engine = engine
        self.store = store

    async def run(self, task_id: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        from taskd.models import Trigger

        run = self.engine.start_run(task_id, Trigger.MANUAL, params=params)
        await asyncio.wait_for(run.done.wait(), 20)
        steps = await self.store.steps(run.id)
        log = [line.line for line in await self.store.run_log(run.id)]
        return {"record": run.record, "steps": steps, "log": log}


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[tuple[Engine, SQLiteStore]] = []

    async def make(pipelines: str, tasks: str = "", task: str = "{id: t, pipeline: p}") -> Harness:
        text = (
            "task: {max_concurrent_tasks: 4}\nstore: {path: ./t.db}\n"
            + f"tasks:\n  - {task}\n"
            + tasks
            + "pipelines:\n"
            + pipelines
        )
        (tmp_path / "taskd.yml").write_text(text)
        config: Config = load_config(tmp_path / "taskd.yml", {})
        store = SQLiteStore(Path(config.store_location))
        await store.open()
        engine = Engine(config, store)
        await engine.start()
        made.append((engine, store))
        return Harness(engine, store)

    yield make
    for engine, store in made:
        await engine.shutdown(1)
        await store.close()


@pytest.fixture
async def receiver() -> AsyncIterator[dict[str, Any]]:
    got: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(status=int(request.query.get("status", "200")))

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield {"url": f"http://127.0.0.1:{runner.addresses[0][1]}/hook", "got": got}
    await runner.cleanup()
