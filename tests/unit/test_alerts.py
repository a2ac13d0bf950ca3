"""Alerts on change: the pure decisions, then the engine's alerter on a fake clock with the memory
store, delivering to a real webhook receiver and a real SMTP server on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import socket
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from pydantic import Field
from support.receivers import Webhook, smtp_server, webhook

from taskd.alerter import DELIVERY_TRIES
from taskd.alerts import (
    FAILING,
    OVERDUE,
    RECOVERED,
    REMINDER,
    Notice,
    RunFacts,
    after_check,
    after_run,
    first_state,
    is_overdue,
    message,
    slack,
)
from taskd.clock import FakeClock
from taskd.cluster import Hub, LocalCoordinator
from taskd.config import Config, load_config
from taskd.engine import Engine
from taskd.engine.timer import ManualTimer
from taskd.metrics import Metrics
from taskd.models import RunState, Trigger
from taskd.processor import Context, ProcessorOptions, ProcessorType, StepFailed
from taskd.processors import registry
from taskd.store import MemoryStore

T0 = 1_800_000_000.0
HOUR = 3600.0


# -- the decisions --------------------------------------------------------------------------------
def test_failing_once_then_quiet_until_the_repeat_interval_then_a_reminder_that_counts() -> None:
    state = first_state("t", T0)
    events = []
    for i in range(10):  # ten failures within the hour
        state, event = after_run(state, False, T0 + i * 60, HOUR)
        events.append(event)
    assert events == [FAILING] + [None] * 9
    assert (state.status, state.failures, state.unreported, state.since) == ("failing", 10, 9, T0)
    state, event = after_run(state, False, T0 + HOUR, HOUR)
    assert event == REMINDER and state.unreported == 0 and state.failures == 11
    state, event = after_run(state, False, T0 + HOUR + 60, HOUR)
    assert event is None


def test_a_recovery_is_told_once_and_success_after_success_says_nothing() -> None:
    state, _ = after_run(first_state("t", T0), False, T0 + 10, HOUR)
    recovered, event = after_run(state, True, T0 + 100, HOUR)
    assert event == RECOVERED and recovered.status == "ok" and recovered.since == T0 + 100
    again, event = after_run(recovered, True, T0 + 200, HOUR)
    assert event is None and again == recovered


def test_overdue_counts_from_the_last_success_or_from_first_sight_and_repeats_on_the_interval() -> None:
    state = first_state("t", T0)
    assert not is_overdue(state, None, 100, T0 + 99)
    assert is_overdue(state, None, 100, T0 + 100)
    assert not is_overdue(state, T0 + 50, 100, T0 + 120)
    state, event = after_check(state, None, 100, T0 + 100, HOUR)
    assert event == OVERDUE and state.overdue_at == T0 + 100
    state, event = after_check(state, None, 100, T0 + 200, HOUR)
    assert event is None
    state, event = after_check(state, None, 100, T0 + 100 + HOUR, HOUR)
    assert event == OVERDUE
    state, event = after_run(state, True, T0 + 2 * HOUR, HOUR)
    assert event == RECOVERED and state.overdue_at is None


def test_the_message_carries_what_on_call_needs_and_slack_reads_as_text() -> None:
    before, _ = after_run(first_state("t", T0), False, T0 + 10, HOUR)
    before = dataclasses.replace(before, failures=4)
    after, event = after_run(before, True, T0 + 1000, HOUR)
    assert event == RECOVERED
    facts = RunFacts("r1", "schedule", 2, "completed", None, [f"[log] line {i}" for i in range(30)])
    body = message(
        Notice(RECOVERED, "t", "Nightly", before, after, T0 + 1000, "n1", "h1", facts, public_url="https://td.example")
    )
    assert body["event"] == "recovered" and body["task"] == {"id": "t", "name": "Nightly"}
    assert (body["node"], body["host"], body["run_id"], body["trigger"], body["attempts"]) == (
        "n1",
        "h1",
        "r1",
        "schedule",
        2,
    )
    assert body["run_url"] == "https://td.example/#/run/r1"
    assert body["failing_for_s"] == 990 and body["failures"] == 4
    assert len(body["log_tail"]) == 20 and body["log_tail"][-1] == "[log] line 29"
    assert "recovered on n1 after failing for 16m30s (4 failure(s))" in body["text"]
    text = slack(body)["text"]
    assert "<https://td.example/#/run/r1|r1>" in text and "recovered" in text


# -- the alerter in the engine --------------------------------------------------------------------
class SwitchOptions(ProcessorOptions):
    name: str = Field("s")


class Switches:
    """A step that fails while the test says so (in-process: no child process)."""

    def __init__(self) -> None:
        self.failing: dict[str, str] = {}
        self.tries = 0

    def kind(self) -> ProcessorType:
        switches = self

        class Switch:
            def __init__(self, options: SwitchOptions) -> None:
                self.options = options

            async def run(self, ctx: Context) -> Mapping[str, Any] | None:
                switches.tries += 1
                ctx.info(f"switch {self.options.name} try {switches.tries}")
                why = switches.failing.get(self.options.name)
                if why == "permanent":
                    raise StepFailed("source ./data does not exist", permanent=True)
                if why:
                    raise StepFailed(why)
                return None

        return ProcessorType("switch", SwitchOptions, "fail on demand", Switch)


class Harness:
    def __init__(self, tmp_path: Path, hook: Webhook) -> None:
        self.tmp_path = tmp_path
        self.hook = hook
        self.clock = FakeClock(T0)
        self.store = MemoryStore(clock=self.clock)
        self.switches = Switches()
        self.kinds = {**registry().types, "switch": self.switches.kind()}
        self.metrics = Metrics("test")
        self.engines: list[Engine] = []
        self.hub: Hub | None = None
        self.pipelines = ""

    def write(self, body: str, name: str = "taskd.yml", node: str = "n1") -> Path:
        path = self.tmp_path / node / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            f"store: {{path: ':memory:'}}\nnode: {{name: {node}}}\napi: {{public_url: 'https://taskd.example'}}\n"
            + body
            + "\npipelines:\n  - {name: p, processors: [{switch: {name: s}}]}\n"
            + self.pipelines
        )
        return path

    def config(self, body: str, node: str = "n1", env: Mapping[str, str] | None = None) -> Config:
        return load_config(self.write(body, node=node), dict(env or {}), kinds=self.kinds)

    async def start(self, body: str, node: str = "n1", env: Mapping[str, str] | None = None) -> Engine:
        if not self.store.writer:
            await self.store.open()
        config = self.config(body, node, env)

        def timer(callback: Any) -> ManualTimer:
            return ManualTimer(callback, self.clock)

        coordinator = LocalCoordinator(self.store, node, {}, self.clock, self.hub) if self.hub else None
        engine = Engine(
            config, self.store, self.kinds, self.clock, timer, metrics=self.metrics, coordinator=coordinator
        )
        await engine.start()
        self.engines.append(engine)
        return engine

    async def stop(self, engine: Engine) -> None:
        await engine.shutdown(1)
        self.engines.remove(engine)

    async def run(self, engine: Engine, task_id: str = "t") -> Any:
        run = engine.start_run(task_id, Trigger.MANUAL)
        async with asyncio.timeout(10):
            while not run.finished or engine.alerter.pending:
                await asyncio.sleep(0.005)  # polled with a deadline: the run ends by itself
                if engine.alerter.pending:
                    self.clock.advance(0.25)  # a delivery retry waits on the clock
        return run

    async def ended(self, run: Any) -> None:
        async with asyncio.timeout(5):
            while not run.finished:  # noqa: ASYNC110  # polled with a deadline
                await asyncio.sleep(0.005)

    async def quiet(self) -> None:
        async with asyncio.timeout(10):
            while any(engine.alerter.pending for engine in self.engines):
                await asyncio.sleep(0.005)
                self.clock.advance(0.25)

    def log(self, engine: Engine, run: Any) -> list[str]:
        return run.recorder.recent_lines()  # type: ignore[no-any-return]

    def sent(self, channel: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "taskd_alerts_sent_total", {"channel": channel, "outcome": outcome}
        )
        return value or 0.0


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with webhook() as hook:
        made = Harness(tmp_path, hook)
        yield made
        for engine in list(made.engines):
            await made.stop(engine)
        await made.store.close()


def route(hook: Webhook, repeat: str = "1h", fmt: str = "json") -> str:
    return f"alerts:\n  repeat_interval: {repeat}\n  channels:\n    - webhook: {{url: '{hook.url}', format: {fmt}}}\n"


async def test_ten_failures_in_a_row_send_one_alert_a_reminder_per_interval_and_one_recovery(
    harness: Harness,
) -> None:
    engine = await harness.start(route(harness.hook) + "tasks:\n  - {id: t, name: Nightly, pipeline: p}")
    harness.switches.failing["s"] = "disk full"
    first = None
    for _ in range(10):
        run = await harness.run(engine)
        first = first or run
        harness.clock.advance(60)
    assert harness.hook.events() == ["failing"]
    body = harness.hook.received[0]
    assert body["task"] == {"id": "t", "name": "Nightly"} and body["node"] == "n1" and body["host"]
    assert body["run_id"] == first.id and body["run_url"] == f"https://taskd.example/#/run/{first.id}"
    assert body["error"] == "step 1 (switch): disk full" and body["attempts"] == 1 and body["trigger"] == "manual"
    assert any("switch s try 1" in line for line in body["log_tail"])
    assert body["failing_since"] is not None
    assert engine.alerter.state("t").failures == 10  # type: ignore[union-attr]

    harness.clock.advance(HOUR)
    await harness.run(engine)
    await harness.run(engine)
    assert harness.hook.events() == ["failing", "reminder"]
    assert harness.hook.received[1]["failures"] == 10  # the nine quiet ones and this one

    harness.switches.failing.clear()
    run = await harness.run(engine)
    await harness.run(engine)
    assert harness.hook.events() == ["failing", "reminder", "recovered"]
    recovered = harness.hook.received[2]
    assert recovered["run_id"] == run.id and recovered["failures"] == 12
    assert recovered["failing_for_s"] == pytest.approx(10 * 60 + HOUR, abs=30)  # the runs move the clock a little
    assert any(line.startswith("[log] alert recovered sent: webhook") for line in harness.log(engine, run))
    assert harness.sent("webhook", "sent") == 3


async def test_the_state_survives_a_restart(harness: Harness) -> None:
    body = route(harness.hook) + "tasks:\n  - {id: t, pipeline: p}"
    engine = await harness.start(body)
    harness.switches.failing["s"] = "down"
    await harness.run(engine)
    await harness.stop(engine)
    again = await harness.start(body)  # the memory store keeps its rows across a restart
    await harness.run(again)
    assert harness.hook.events() == ["failing"]
    harness.switches.failing.clear()
    await harness.run(again)
    assert harness.hook.events() == ["failing", "recovered"]


async def test_two_nodes_on_one_store_send_each_alert_once(harness: Harness) -> None:
    harness.hub = Hub()
    body = route(harness.hook) + "tasks:\n  - {id: t, pipeline: p, concurrency: allow}"
    a = await harness.start(body, node="a")
    b = await harness.start(body, node="b")
    harness.switches.failing["s"] = "down"
    for _ in range(5):  # both nodes fail the task at the same instant, five times
        runs = [a.start_run("t", Trigger.MANUAL), b.start_run("t", Trigger.MANUAL)]
        async with asyncio.timeout(10):
            while not all(run.finished for run in runs):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        await harness.quiet()
    harness.switches.failing.clear()
    runs = [a.start_run("t", Trigger.MANUAL), b.start_run("t", Trigger.MANUAL)]
    async with asyncio.timeout(10):
        while not all(run.finished for run in runs):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    await harness.quiet()
    assert harness.hook.events() == ["failing", "recovered"]
    assert harness.hook.received[1]["failures"] == 10


async def test_alerts_false_and_a_task_route_of_its_own(harness: Harness) -> None:
    async with webhook() as own:
        engine = await harness.start(
            route(harness.hook)
            + "tasks:\n  - {id: t, pipeline: p, alerts: false}\n"
            + "  - id: mine\n    pipeline: p\n"
            + f"    alerts: {{channels: [{{webhook: '{own.url}'}}], repeat_interval: 5m}}\n"
            + "  - {id: plain, pipeline: p}\n"
        )
        harness.switches.failing["s"] = "down"
        await harness.run(engine, "t")
        await harness.run(engine, "mine")
        await harness.run(engine, "plain")
        harness.clock.advance(301)
        await harness.run(engine, "mine")  # its own repeat interval: 5 minutes
        assert harness.hook.events() == ["failing"] and harness.hook.received[0]["task"]["id"] == "plain"
        assert own.events() == ["failing", "reminder"]


async def test_a_failed_delivery_is_retried_with_backoff_and_then_recorded(harness: Harness) -> None:
    engine = await harness.start(route(harness.hook) + "tasks:\n  - {id: t, pipeline: p}")
    harness.hook.answers = [500, 503]  # then 200
    harness.switches.failing["s"] = "down"
    run = await harness.run(engine)
    assert run.state is RunState.FAILED
    assert harness.hook.tries == 3 and harness.hook.events() == ["failing"]
    assert harness.sent("webhook", "sent") == 1

    harness.switches.failing.clear()
    harness.hook.answers = [500] * DELIVERY_TRIES
    run = await harness.run(engine)
    assert run.state is RunState.COMPLETED  # a failed alert never fails the run
    assert harness.hook.tries == 3 + DELIVERY_TRIES
    assert harness.sent("webhook", "failed") == 1
    assert any(
        f"alert recovered not delivered to webhook {harness.hook.url} ({DELIVERY_TRIES} tries): " in line
        for line in harness.log(engine, run)
    )
    fault = engine.faults.get("alerts")  # /health lists it, taskd_fault{kind="alerts"} is 1
    assert (
        fault is not None and fault.reason.startswith(f"webhook {harness.hook.url}: ") and "status 500" in fault.reason
    )
    harness.switches.failing["s"] = "down again"
    await harness.run(engine)
    assert harness.hook.events() == ["failing", "failing"] and engine.faults.get("alerts") is None


async def test_a_refusal_for_good_is_not_retried(harness: Harness) -> None:
    engine = await harness.start(route(harness.hook) + "tasks:\n  - {id: t, pipeline: p}")
    harness.hook.answers = [404]
    harness.switches.failing["s"] = "down"
    run = await harness.run(engine)
    assert harness.hook.tries == 1 and harness.sent("webhook", "failed") == 1
    assert any("(1 try): webhook" in line and "status 404" in line for line in harness.log(engine, run))


async def test_an_alert_never_holds_the_run_back(harness: Harness) -> None:
    engine = await harness.start(route(harness.hook) + "tasks:\n  - {id: t, pipeline: p}")
    harness.hook.answers = [500] * DELIVERY_TRIES
    harness.switches.failing["s"] = "down"
    run = engine.start_run("t", Trigger.MANUAL)
    async with asyncio.timeout(5):
        while not run.finished:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    assert engine.alerter.pending  # the run has ended; its alert is still being tried
    await harness.quiet()


async def test_email_and_slack_channels(harness: Harness) -> None:
    with smtp_server() as box:
        engine = await harness.start(
            "alerts:\n  channels:\n"
            f"    - email: {{host: 127.0.0.1, port: {box.port}, to: [ops@example.org]}}\n"
            f"    - webhook: {{url: '{harness.hook.url}', format: slack}}\n"
            "tasks:\n  - {id: t, name: Nightly backup, pipeline: p}"
        )
        harness.switches.failing["s"] = "disk full"
        await harness.run(engine)
        async with asyncio.timeout(10):
            while not box.messages:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    (envelope,) = box.messages
    mail = email.message_from_bytes(envelope.content)
    assert mail["Subject"] == "[taskd] t failing" and mail["To"] == "ops@example.org"
    text = next(part for part in mail.walk() if part.get_content_type() == "text/plain").get_payload(decode=True)
    assert b"disk full" in text and b"link: https://taskd.example/#/run/" in text
    (posted,) = harness.hook.received
    assert set(posted) == {"text"}
    first_line = ":red_circle: *taskd: t (Nightly backup) is failing on n1: step 1 (switch): disk full"
    assert posted["text"].startswith(first_line)


async def test_an_overdue_task_alerts_once_then_on_the_interval_and_recovers(harness: Harness) -> None:
    engine = await harness.start(
        route(harness.hook, repeat="1h") + "tasks:\n  - {id: t, pipeline: p, expect: {success_within: 10m}}"
    )
    assert engine.status("t") == "manual"
    await harness.clock.run_for(599)
    assert harness.hook.events() == []
    await harness.clock.run_for(2)
    await harness.quiet()
    assert harness.hook.events() == ["overdue"] and engine.status("t") == "overdue"
    body = harness.hook.received[0]
    assert body["success_within_s"] == 600 and body["last_success"] is None and body["run_id"] is None
    assert "is overdue: expected a success within 10m" in body["text"]
    states = await engine.task_states([engine.entry("t")])
    assert states["t"].status == "overdue"
    await harness.clock.run_for(HOUR - 10)
    await harness.quiet()
    assert harness.hook.events() == ["overdue"]
    await harness.clock.run_for(20)
    await harness.quiet()
    assert harness.hook.events() == ["overdue", "overdue"]
    await harness.run(engine)
    assert harness.hook.events() == ["overdue", "overdue", "recovered"]
    assert engine.status("t") == "completed"


async def test_a_daemon_down_past_the_expectation_says_so_at_the_start(harness: Harness) -> None:
    body = route(harness.hook) + "tasks:\n  - {id: t, pipeline: p, expect: {success_within: 26h}}"
    engine = await harness.start(body)
    await harness.run(engine)  # a success
    await harness.stop(engine)
    harness.clock.advance(2 * 24 * HOUR)  # down for two days
    again = await harness.start(body)
    await harness.quiet()
    assert harness.hook.events() == ["overdue"] and again.status("t") == "overdue"
    assert harness.hook.received[0]["last_success"] is not None
    from taskd.http.views import NextFires, metrics_snapshot

    text = harness.metrics.exposition(metrics_snapshot(again, harness.store, NextFires())).decode()
    assert 'taskd_task_overdue{task="t"} 1.0' in text


async def test_a_disabled_task_goes_overdue_too(harness: Harness) -> None:
    engine = await harness.start(
        route(harness.hook) + "tasks:\n  - {id: t, pipeline: p, enabled: false, expect: {success_within: 1m}}"
    )
    assert engine.status("t") == "disabled"
    await harness.clock.run_for(61)
    await harness.quiet()
    assert harness.hook.events() == ["overdue"] and engine.status("t") == "overdue"


# -- permanent failures ---------------------------------------------------------------------------
async def test_a_permanent_failure_makes_one_attempt(harness: Harness) -> None:
    engine = await harness.start("tasks:\n  - {id: t, pipeline: p, retry: {count: 3, backoff: 1s}}")
    harness.switches.failing["s"] = "permanent"
    run = await harness.run(engine)
    assert run.state is RunState.FAILED and run.record.attempts == 1 and harness.switches.tries == 1
    assert run.record.error == "not retried: step 1 (switch): source ./data does not exist"


async def test_a_transient_failure_still_retries(harness: Harness) -> None:
    engine = await harness.start("tasks:\n  - {id: t, pipeline: p, retry: {count: 2, backoff: 1s}}")
    harness.switches.failing["s"] = "flaky"
    run = engine.start_run("t", Trigger.MANUAL)
    async with asyncio.timeout(10):
        while not run.finished:
            await asyncio.sleep(0.005)
            harness.clock.advance(1)
    assert run.record.attempts == 3 and run.record.error == "step 1 (switch): flaky"


@pytest.mark.parametrize(
    ("step", "attempts", "error"),
    [
        (
            "{copy: {source: ./data, destination: ./x}}",
            1,
            "not retried: step 1 (copy): source {dir}/data does not exist",
        ),
        ("{compress: {path: ./data}}", 1, "not retried: step 1 (compress): {dir}/data does not exist"),
        ("{log: {message: '{params.nothing}'}}", 1, "not retried: step 1 (log): option 'message': unknown field"),
        ("{copy: {source: ./data, destination: ./x, retry: {count: 3}}}", 1, "not retried: step 1 (copy): source"),
    ],
)
async def test_what_cannot_succeed_is_not_retried(harness: Harness, step: str, attempts: int, error: str) -> None:
    harness.pipelines = f"  - {{name: q, processors: [{step}]}}\n"
    engine = await harness.start(
        "tasks:\n  - {id: t, pipeline: q, retry: {count: 2, backoff: 1s, permanent_exit_codes: [2]}}"
    )
    run = engine.start_run("t", Trigger.MANUAL)
    async with asyncio.timeout(10):
        while not run.finished:
            await asyncio.sleep(0.005)
            harness.clock.advance(1)
    assert run.record.attempts == attempts
    assert run.record.error.startswith(error.format(dir=harness.tmp_path / "n1")), run.record.error


@pytest.mark.parametrize(("status", "attempts"), [(404, 1), (400, 1), (429, 3), (408, 3), (503, 3)])
async def test_an_http_step_refused_for_good_is_not_retried(harness: Harness, status: int, attempts: int) -> None:
    harness.hook.answers = [status] * 3
    harness.pipelines = f"  - {{name: q, processors: [{{http: {{url: '{harness.hook.url}', method: POST}}}}]}}\n"
    engine = await harness.start("tasks:\n  - {id: t, pipeline: q, retry: {count: 2, backoff: 1s}}")
    run = engine.start_run("t", Trigger.MANUAL)
    async with asyncio.timeout(10):
        while not run.finished:
            await asyncio.sleep(0.005)
            harness.clock.advance(1)
    assert run.record.attempts == attempts and harness.hook.tries == attempts
    assert run.record.error.startswith("not retried: " if attempts == 1 else "step 1"), run.record.error


async def test_a_step_retry_skips_a_permanent_failure_too(harness: Harness) -> None:
    harness.pipelines = "  - {name: q, processors: [{switch: {name: s, retry: {count: 3, backoff: 1s}}}]}\n"
    engine = await harness.start("tasks:\n  - {id: t, pipeline: q, retry: {count: 2}}")
    harness.switches.failing["s"] = "permanent"
    run = await harness.run(engine)
    assert harness.switches.tries == 1 and run.record.attempts == 1
    harness.switches.failing["s"] = "flaky"
    run = engine.start_run("t", Trigger.MANUAL)
    async with asyncio.timeout(10):
        while not run.finished:
            await asyncio.sleep(0.005)
            harness.clock.advance(1)
    assert harness.switches.tries == 1 + 3 * 4  # three attempts of four tries each


async def test_the_log_channel_writes_the_alert_to_the_daemon_log(harness: Harness) -> None:
    engine = await harness.start("alerts:\n  channels: [{log: {level: error}}]\ntasks:\n  - {id: t, pipeline: p}")
    harness.switches.failing["s"] = "down"
    with structlog.testing.capture_logs() as logged:
        run = await harness.run(engine)
    (alert,) = [entry for entry in logged if entry["event"] == "alert"]
    assert alert["log_level"] == "error" and alert["alert"] == "failing" and alert["run_id"] == run.id
    assert alert["summary"].startswith("taskd: t is failing on n1: step 1 (switch): down")
    assert harness.sent("log", "sent") == 1


# -- what an operator found -----------------------------------------------------------------------
async def test_a_mail_server_that_never_answers_holds_nothing_else_back(harness: Harness) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never says a word
    port = silent.getsockname()[1]
    tasks = "".join(f"  - {{id: f{i}, pipeline: p}}\n" for i in range(8))
    engine = await harness.start(
        f"alerts:\n  channels: [{{email: {{host: 127.0.0.1, port: {port}, to: [ops@example.org], timeout: 3s}}}}]\n"
        "tasks:\n" + tasks
    )
    harness.switches.failing["s"] = "down"
    for i in range(8):
        await harness.ended(engine.start_run(f"f{i}", Trigger.MANUAL))
    await asyncio.sleep(0.2)
    assert engine.alerter.pending == 8  # eight e-mails waiting on the silent server
    # The loop's own worker threads (a shell step's end, a metrics scrape) are all free.
    async with asyncio.timeout(1):
        await asyncio.gather(*(asyncio.to_thread(lambda: None) for _ in range(16)))
    began = time.monotonic()
    await engine.alerter.close(0.1)
    assert time.monotonic() - began < 1
    assert harness.sent("email", "failed") == 8  # cut short by the shutdown, and said so
    silent.close()


async def test_a_credential_in_a_webhook_url_stays_masked_in_health(harness: Harness, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hook").write_text(harness.hook.url + "?key=very-secret-key")
    engine = await harness.start(
        "alerts:\n  channels: [{webhook: '${credential:hook}'}]\ntasks:\n  - {id: t, pipeline: p}",
        env={"CREDENTIALS_DIRECTORY": str(creds)},
    )
    harness.hook.answers = [404]
    harness.switches.failing["s"] = "down"
    run = await harness.run(engine)
    fault = engine.faults.get("alerts")
    assert fault is not None and "very-secret-key" not in fault.reason and "***" in fault.reason
    assert fault.reason.count("webhook") == 1
    assert not any("very-secret-key" in line for line in harness.log(engine, run))


async def test_a_task_s_notices_reach_a_channel_in_the_order_they_happened(harness: Harness) -> None:
    engine = await harness.start(route(harness.hook) + "tasks:\n  - {id: t, pipeline: p}")
    harness.hook.answers = [500]  # the failing notice needs a second try
    harness.switches.failing["s"] = "down"
    await harness.ended(engine.start_run("t", Trigger.MANUAL))
    harness.switches.failing.clear()
    await harness.run(engine)  # the recovery comes while the failing notice waits for its retry
    assert harness.hook.events() == ["failing", "recovered"]


async def test_a_channel_removed_by_a_reload_is_no_fault_any_more(harness: Harness) -> None:
    body = "tasks:\n  - {id: t, pipeline: p}"
    engine = await harness.start(route(harness.hook) + body)
    harness.hook.answers = [404]
    harness.switches.failing["s"] = "down"
    await harness.run(engine)
    assert engine.faults.get("alerts") is not None
    engine.reload(harness.config("alerts: {channels: [{log: true}]}\n" + body))
    assert engine.faults.get("alerts") is None


async def test_alerts_switched_off_and_on_start_over(harness: Harness) -> None:
    body = "tasks:\n  - {id: t, pipeline: p}"
    engine = await harness.start(route(harness.hook) + body)
    harness.switches.failing["s"] = "down"
    await harness.run(engine)
    engine.reload(harness.config(route(harness.hook) + "tasks:\n  - {id: t, pipeline: p, alerts: false}"))
    await harness.quiet()
    harness.switches.failing.clear()
    await harness.run(engine)  # recovered while muted: nobody is told
    engine.reload(harness.config(route(harness.hook) + body))
    await harness.run(engine)
    assert harness.hook.events() == ["failing"]
    harness.switches.failing["s"] = "down"
    await harness.run(engine)
    assert harness.hook.events() == ["failing", "failing"]


async def test_the_last_success_is_known_after_a_restart(harness: Harness) -> None:
    body = route(harness.hook) + "tasks:\n  - {id: t, pipeline: p}"
    engine = await harness.start(body)
    run = await harness.run(engine)
    await harness.stop(engine)
    again = await harness.start(body)
    assert again.alerter.last_success("t") == run.record.finished_at


async def test_a_recovered_task_is_overdue_again_on_time(harness: Harness) -> None:
    engine = await harness.start(route(harness.hook) + "tasks:\n  - {id: t, pipeline: p, expect: {success_within: 5s}}")
    await harness.clock.run_for(5.5)
    await harness.quiet()
    await harness.run(engine)
    assert harness.hook.events() == ["overdue", "recovered"]
    await harness.clock.run_for(5.5)  # the checker counts from the success, not from its old plan
    await harness.quiet()
    assert harness.hook.events() == ["overdue", "recovered", "overdue"] and engine.status("t") == "overdue"


async def test_an_overdue_task_deleted_through_the_api_says_so(harness: Harness) -> None:
    engine = await harness.start(route(harness.hook) + "tasks:\n  - {id: t, pipeline: p, expect: {success_within: 1m}}")
    await engine.delete_task("t")
    await harness.clock.run_for(61)
    await harness.quiet()
    assert harness.hook.events() == ["overdue"]
    assert harness.hook.received[0]["text"].endswith("; the task was deleted through the API")


async def test_a_permanent_failure_says_not_retried_even_without_retries(harness: Harness) -> None:
    engine = await harness.start("tasks:\n  - {id: t, pipeline: p}")
    harness.switches.failing["s"] = "permanent"
    run = await harness.run(engine)
    assert run.record.error == "not retried: step 1 (switch): source ./data does not exist"
