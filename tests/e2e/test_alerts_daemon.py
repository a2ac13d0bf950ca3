"""Alerts from real daemons to a real webhook receiver: a failing task alerts once and recovers once,
two nodes on PostgreSQL send each alert once between them, an overdue task alerts right after a
restart, and a command that failed for good is not retried."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import POSTGRES_URL, Daemon, base_config, postgres_schema, wait_for
from support.cli import taskd
from support.receivers import Webhook, webhook_thread

PIPELINES = """
- {name: check, processors: [{shell: {command: 'test -e "${FLAG}"'}}]}
- {name: exits, processors: [{shell: {command: 'exit "$TASKD_PARAM_CODE"'}}]}
"""


def route(hook: Webhook, repeat: str = "1h") -> str:
    return (
        "alerts:\n"
        f"  repeat_interval: {repeat}\n"
        f"  channels: [{{webhook: '{hook.url}'}}]\n"
        "api: {listen: '127.0.0.1:{port}', public_url: 'http://127.0.0.1:{port}'}\n"
    )


def config(hook: Webhook, tasks: str, store: str | None = None) -> str:
    text = base_config(tasks, PIPELINES, extra=route(hook)).replace("api: {listen: '127.0.0.1:{port}'}\n", "", 1)
    return text.replace("store: {path: ./var/taskd.db}", store) if store else text


def test_a_task_failing_every_second_alerts_once_then_recovers_once(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    with webhook_thread() as hook:
        daemon = daemon_factory(
            config(hook, "- {id: probe, pipeline: check, schedule: '* * * * * *'}"), env={"FLAG": str(flag)}
        ).start()
        wait_for(lambda: len([r for r in daemon.runs("probe") if r["state"] == "failed"]) >= 10, timeout=20)
        assert hook.events() == ["failing"]
        body = hook.received[0]
        assert body["task"]["id"] == "probe" and body["node"] and body["host"]
        assert body["run_url"] == f"http://127.0.0.1:{daemon.port}/#/run/{body['run_id']}"
        page = daemon.request("GET", body["run_url"].split(str(daemon.port), 1)[1])  # the dashboard's page
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        assert body["error"].startswith("step 1 (shell): command failed: exit code 1")
        tasks = daemon.request("GET", "/task/probe").json()
        assert tasks["alert"]["status"] == "failing" and tasks["alert"]["failures"] >= 10
        flag.touch()
        wait_for(lambda: hook.events() == ["failing", "recovered"], timeout=10, what=f"a recovery: {hook.events()}")
        time.sleep(1.5)  # more successes: no more alerts
        assert hook.events() == ["failing", "recovered"]
        assert hook.received[1]["failures"] >= 10 and hook.received[1]["failing_for_s"] >= 9
        metrics = daemon.request("GET", "/metrics").text
        assert 'taskd_alerts_sent_total{channel="webhook",outcome="sent"} 2.0' in metrics
        run_log = daemon.request("GET", f"/run/{hook.received[1]['run_id']}/log").text
        assert "alert recovered sent: webhook" in run_log


def test_an_overdue_task_alerts_as_soon_as_the_daemon_is_back(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    flag.touch()
    with webhook_thread() as hook:
        daemon = daemon_factory(
            config(hook, "- {id: nightly, pipeline: check, expect: {success_within: 3s}}"), env={"FLAG": str(flag)}
        ).start()
        daemon.wait_run(daemon.start_task("nightly"))
        assert daemon.stop() == 0
        time.sleep(3.5)  # down for longer than the task may go without a success
        began = time.monotonic()
        daemon.start()
        wait_for(lambda: hook.events() == ["overdue"], timeout=10, what="an overdue alert")
        assert time.monotonic() - began < 8
        body = hook.received[0]
        assert body["success_within_s"] == 3 and body["last_success"] is not None and body["overdue_for_s"] > 0
        listed = daemon.request("GET", "/tasks").json()["tasks"]
        assert [t["status"] for t in listed] == ["overdue"]
        assert 'taskd_task_overdue{task="nightly"} 1.0' in daemon.request("GET", "/metrics").text
        shown = taskd("tasks", "--url", f"http://127.0.0.1:{daemon.port}")
        assert "overdue" in shown.stdout, shown.stdout + shown.stderr
        daemon.wait_run(daemon.start_task("nightly"))
        wait_for(lambda: hook.events() == ["overdue", "recovered"], timeout=10, what="a recovery")
        assert daemon.request("GET", "/tasks").json()["tasks"][0]["status"] == "completed"


@pytest.mark.parametrize(("code", "attempts"), [(2, 1), (3, 3)])
def test_an_exit_code_listed_as_permanent_is_not_retried(
    daemon_factory: Callable[..., Daemon], code: int, attempts: int
) -> None:
    with webhook_thread() as hook:
        daemon = daemon_factory(
            config(
                hook,
                "- {id: job, pipeline: exits, retry: {count: 2, backoff: 0.1s, permanent_exit_codes: [2]}}",
            ),
            env={"FLAG": "unused"},
        ).start()
        run = daemon.wait_run(daemon.start_task("job", {"code": str(code)}), states=("failed",))
        assert run["attempts"] == attempts
        assert run["error"].startswith("not retried: " if attempts == 1 else "step 1 (shell)"), run["error"]


@pytest.fixture
async def url(request: pytest.FixtureRequest) -> str:
    schema = await postgres_schema(request)
    return f"{POSTGRES_URL}?search_path={schema}"


def test_two_nodes_on_postgresql_send_each_alert_once(
    daemon_factory: Callable[..., Daemon], url: str, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    with webhook_thread() as hook:
        nodes = []
        for name in ("a", "b"):
            text = config(
                hook,
                "- {id: probe, pipeline: check, schedule: '* * * * * *', placement: all}",
                store=f"store: {{url: '{url}'}}\nnode: {{name: {name}}}",
            )
            nodes.append(daemon_factory(text, env={"FLAG": str(flag)}, subdir=name).start())
        wait_for(
            lambda: (
                {r["node"] for r in nodes[0].runs("probe") if r["state"] == "failed"} == {"a", "b"}
                and len(nodes[0].runs("probe", state="failed")) >= 10
            ),
            timeout=20,
            what="both nodes failing the task",
        )
        flag.touch()
        wait_for(lambda: "recovered" in hook.events(), timeout=10, what=f"a recovery: {hook.events()}")
        time.sleep(2)
        assert hook.events() == ["failing", "recovered"]
        assert {body["node"] for body in hook.received} <= {"a", "b"}
