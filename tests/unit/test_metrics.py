"""GET /metrics: the Prometheus exposition, its names and labels (the contract operators alert on),
read back with the Prometheus client's own parser; and the example alert rules use only those."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Api, base_config, until
from support.metrics import PIPELINES, TASKS, parse, value

from taskd import __version__
from taskd.metrics import CONTENT_TYPE, Metrics, Snapshot
from taskd.models import Trigger

ROOT = Path(__file__).resolve().parents[2]
ApiFactory = Callable[..., Awaitable[Api]]


async def scrape(api: Api) -> dict[str, list[tuple[dict[str, str], float]]]:
    resp = await api.request("GET", "/metrics")
    assert resp.status == 200, resp.text
    assert resp.headers["Content-Type"] == CONTENT_TYPE
    return parse(resp.text)


async def test_runs_durations_lateness_slots_and_timestamps(api_factory: ApiFactory) -> None:
    api = await api_factory(base_config(TASKS, PIPELINES, slots=3))
    for task_id in ("ok", "ok", "bad"):
        await api.wait_run(await api.start_task(task_id))
    # A scheduled run 0.25 s late: its lateness is counted from the instant to its first step.
    late = api.engine.start_run("ok", Trigger.SCHEDULE, scheduled_at=api.engine.clock.time() - 0.25)
    await asyncio.wait_for(late.done.wait(), 10)
    slow = await api.start_task("slow")
    await until(lambda: api.engine.load().slots_in_use == 1)

    samples = await scrape(api)
    assert value(samples, "taskd_runs_total", task="ok", state="completed") == 3
    assert value(samples, "taskd_runs_total", task="bad", state="failed") == 1
    assert value(samples, "taskd_run_duration_seconds_count", task="ok") == 3
    assert value(samples, "taskd_schedule_lateness_seconds_count") == 1
    assert 0.25 <= value(samples, "taskd_schedule_lateness_seconds_sum") < 5
    assert value(samples, "taskd_schedule_lateness_seconds_bucket", le="0.1") == 0
    assert value(samples, "taskd_runs_active", state="running") == 1
    assert value(samples, "taskd_runs_active", state="queued") == 0
    assert value(samples, "taskd_slots") == 3 and value(samples, "taskd_slots_in_use") == 1
    assert value(samples, "taskd_store_pending_writes") >= 0
    assert value(samples, "taskd_store_commit_seconds_count") >= 1
    last_ok = value(samples, "taskd_task_last_success_timestamp_seconds", task="ok")
    assert last_ok == pytest.approx(api.engine.clock.time(), abs=30)
    assert "bad" not in {labels.get("task") for labels, _ in samples["taskd_task_last_success_timestamp_seconds"]}
    entry = api.engine.entry("ok")
    assert entry.schedule is not None
    next_fire = value(samples, "taskd_task_next_fire_timestamp_seconds", task="ok")
    assert next_fire > api.engine.clock.time() and next_fire % 86400 == 3 * 3600  # 03:00 UTC
    assert {labels["task"] for labels, _ in samples["taskd_task_next_fire_timestamp_seconds"]} == {"ok"}
    assert value(samples, "taskd_build_info", version=__version__) == 1
    assert value(samples, "process_cpu_seconds_total") > 0  # the client's default process metrics
    assert (await api.request("POST", "/task/slow/_stop")).status == 200
    assert (await api.wait_run(slow))["state"] == "stopped"
    assert value(await scrape(api), "taskd_runs_total", task="slow", state="stopped") == 1


async def test_skipped_fires_are_counted_by_task_and_reason(api_factory: ApiFactory) -> None:
    api = await api_factory(base_config("- {id: slow, pipeline: slow, schedule: '* * * * *'}", PIPELINES))
    group = api.engine.entry("slow").group
    assert group is not None
    base = datetime(2030, 1, 1, tzinfo=UTC)
    api.engine.firing.on_group_fire(group, [base, base + timedelta(minutes=1)])  # the loop was late: one coalesced
    api.engine.firing.on_group_fire(group, [base + timedelta(minutes=2)])  # the run is still active: forbid
    async with asyncio.timeout(10):  # on a shared (PostgreSQL) store, a fire is claimed first
        while (  # noqa: ASYNC110  # polled with a deadline
            "taskd_fires_skipped_total" not in (samples := await scrape(api))
            or len(samples["taskd_fires_skipped_total"]) < 2
        ):
            await asyncio.sleep(0.02)
    assert value(samples, "taskd_fires_skipped_total", task="slow", reason="coalesced") == 1
    assert value(samples, "taskd_fires_skipped_total", task="slow", reason="concurrency") == 1
    for run in api.engine.active_runs("slow"):
        run.stop("test over")


async def test_the_token_protects_metrics(api_factory: ApiFactory) -> None:
    config = base_config(TASKS, PIPELINES).replace("'127.0.0.1:{port}'}", "'127.0.0.1:{port}', token: t0ken}")
    api = await api_factory(config)
    assert (await api.request("GET", "/metrics")).status == 401
    api.token = "t0ken"
    assert (await api.request("GET", "/metrics")).status == 200


async def test_per_task_false_keeps_one_series_for_all_tasks(api_factory: ApiFactory) -> None:
    api = await api_factory(base_config(TASKS, PIPELINES, extra="metrics: {per_task: false}\n"))
    for task_id in ("ok", "bad", "ok"):
        await api.wait_run(await api.start_task(task_id))
    samples = await scrape(api)
    assert value(samples, "taskd_runs_total", task="", state="completed") == 2
    assert value(samples, "taskd_runs_total", task="", state="failed") == 1
    assert {labels["task"] for labels, _ in samples["taskd_runs_total"]} == {""}
    assert {labels["task"] for labels, _ in samples["taskd_task_last_success_timestamp_seconds"]} == {""}
    assert {labels["task"] for labels, _ in samples["taskd_task_next_fire_timestamp_seconds"]} == {""}


def test_a_deleted_task_loses_its_series() -> None:
    metrics = Metrics("x")
    metrics.run_finished("gone", "completed", 1.0, 100.0)
    text = metrics.exposition(Snapshot(next_fires={"kept": 200.0})).decode()
    assert 'taskd_task_last_success_timestamp_seconds{task="gone"} 100.0' in text
    metrics.forget_task("gone")
    assert 'last_success_timestamp_seconds{task="gone"}' not in metrics.exposition().decode()


def test_the_example_alert_rules_use_only_metrics_taskd_exposes() -> None:
    rules: dict[str, Any] = yaml.safe_load((ROOT / "config" / "taskd-alerts.yml").read_text())
    metrics = Metrics("x")
    metrics.run_finished("t", "completed", 1.0, 1.0)
    metrics.fire_skipped("t", "concurrency")
    metrics.alert_delivered("webhook", "failed")
    exposed = set(parse(metrics.exposition(Snapshot(next_fires={"t": 1.0}, overdue={"t": True})).decode()))
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in alerts} >= {"TaskdBackupStale", "TaskdTaskFailing", "TaskdSlotsSaturated"}
    for rule in alerts:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}
        used = set(re.findall(r"\btaskd_[a-z_]+\b", rule["expr"]))
        assert used and used <= exposed, (rule["alert"], used - exposed)
