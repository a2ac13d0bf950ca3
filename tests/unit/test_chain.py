"""Templates, alert options and the processor registry; alerts that do not fire, through the
real runner and a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import free_port

from taskd.config import Config, load_config
from taskd.engine import Engine
from taskd.models import RunState
from taskd.processor import Context, StepFailed
from taskd.processors import registry
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


def _ctx(now: datetime, zone: str = "Asia/Tokyo") -> Context:
    return Context(
        task_id="t", task_name="T", run_id="r", attempt=2, trigger="manual", params={"a": {"b": 1}},
        log=type("L", (), {"write": lambda *a: None})(), base_dir=Path("/"), time_zone=zone, now=lambda: now,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{now:%Y%m%d-%H%M%S}", "20261124-083000"),  # 23:30 UTC is 08:30 next day in Tokyo
        ("{params.a.b}", "1"),
        ("{{literal}} {attempt}", "{literal} 2"),
        ("no fields", "no fields"),
        ("{task.id}-{now:%H}", "t-08"),
    ],
)
def test_template_fields(template: str, expected: str) -> None:
    assert _ctx(datetime(2026, 11, 23, 23, 30, tzinfo=UTC)).format(template, "x") == expected


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{params.missing}", "option 'dest': unknown field {params.missing}"),
        ("{now.__class__}", "unknown field"),
        ("{params.__class__.__mro__}", "unknown field"),
        ("{task[id]}", "item access is not allowed"),
        ("{0}", "unknown field"),
        ("{", "bad template"),
        ("{now:%Y", "bad template"),
    ],
)
def test_template_errors_name_the_option(template: str, fragment: str) -> None:
    with pytest.raises(StepFailed) as info:
        _ctx(datetime(2026, 1, 1, tzinfo=UTC)).format(template, "dest")
    assert fragment in str(info.value)


# -- alerts --------------------------------------------------------------------------------------


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


async def test_no_alert_on_success_and_alert_failures_keep_the_outcome(harness: Any, receiver: dict[str, Any]) -> None:
    closed = f"http://127.0.0.1:{free_port()}/hook"
    h = await harness(
        f"""
  - name: p
    processors:
      - log: {{message: fine}}
      - send_alert: {{webhook: "{receiver["url"]}"}}
      - send_alert: {{webhook: "{closed}", when: success}}
      - send_alert: {{webhook: "{receiver["url"]}?status=500", condition: always}}
"""
    )
    result = await h.run("t")
    assert result["record"].state is RunState.COMPLETED and result["record"].error is None
    states = [s.state.value for s in result["steps"]]
    assert states == ["completed", "skipped", "failed", "failed"]
    assert "ClientConnectorError" in result["steps"][2].error and "status 500" in result["steps"][3].error
    assert len(receiver["got"]) == 1  # only the `always` one reached the receiver (and it answered 500)
    assert any("the run's outcome stands" in line for line in result["log"])


def test_alert_options_are_checked_at_load_time(tmp_path: Path) -> None:
    from taskd.errors import ConfigError

    (tmp_path / "taskd.yml").write_text(
        "tasks: [{id: t, pipeline: p}]\npipelines:\n  - name: p\n    processors:\n"
        "      - send_alert: {condition: sometimes, log: true}\n"
        "      - send_alert: {webhook: 'http://x', when: success, condition: failure}\n"
        "      - copy: {source: a, destination: b, bogus: 1}\n"
        "      - send_alert: {condition: failure}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "taskd.yml", {})
    text = "\n".join(info.value.problems)
    assert "processors[0].send_alert.condition: must be one of" in text and "got string 'sometimes'" in text
    assert "processors[3]" not in text  # no channel is allowed: it alerts to the daemon log
    assert "processors[1].send_alert.when: when (success) and condition (failure) disagree" in text
    assert "processors[2].copy.bogus: unknown key 'bogus'" in text and "every processor also takes" in text


def test_every_builtin_type_is_registered() -> None:
    assert set(registry().types) >= {
        "shell", "http", "sleep", "log", "python", "copy", "compress", "rotate", "upload",
        "check_disk_space", "check_memory", "check_http", "send_alert",
    }  # fmt: skip
