"""The real daemon on PostgreSQL (`store.url`): runs, logs, search, retention of the schedule's state,
and a kill -9 whose runs are marked interrupted at the next start. The store contract suite
(tests/test_store_contract.py) checks the store itself against the same server."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
from conftest import POSTGRES_URL, Daemon, base_config, postgres_schema, wait_for

TASKS = """
- {id: hello, pipeline: talk, params: {who: world}}
- {id: slow, pipeline: wait}
- {id: tick, pipeline: talk, schedule: '* * * * * *'}
"""
PIPELINES = """
- {name: talk, processors: [{shell: {command: 'echo "hello $TASKD_PARAM_WHO"'}}]}
- {name: wait, processors: [{shell: {command: 'sleep 30'}}]}
"""


@pytest.fixture
async def url(request: pytest.FixtureRequest) -> str:
    schema = await postgres_schema(request)
    return f"{POSTGRES_URL}?search_path={schema}"


def config(url: str) -> str:
    return base_config(TASKS, PIPELINES).replace("store: {path: ./var/taskd.db}", f"store: {{url: '{url}'}}")


def test_the_daemon_keeps_its_history_in_postgresql(daemon_factory: Callable[..., Daemon], url: str) -> None:
    daemon = daemon_factory(config(url)).start()
    run = daemon.wait_run(daemon.start_task("hello", {"who": "postgres"}))
    assert run["state"] == "completed" and run["params"] == {"who": "postgres"}
    assert "hello postgres" in daemon.request("GET", f"/run/{run['id']}/log").text
    found = daemon.request("GET", "/runs?q=postgres&task_id=hello").json()
    assert found["total"] == 1 and found["runs"][0]["id"] == run["id"]
    wait_for(lambda: len(daemon.runs("tick")) >= 2, timeout=10, what="two scheduled runs")
    assert daemon.request("GET", "/health").json()["store"] == "ok"
    assert daemon.stop() == 0
    assert not (daemon.dir / "var" / "taskd.db").exists()  # no SQLite file beside it


def test_runs_cut_short_by_kill_9_are_interrupted_at_the_next_start(
    daemon_factory: Callable[..., Daemon], url: str
) -> None:
    daemon = daemon_factory(config(url)).start()
    run_id = daemon.start_task("slow")
    daemon.wait_run(run_id, states=("running",))
    daemon.stop(signal.SIGKILL)
    daemon.start()
    run = daemon.wait_run(run_id, states=("interrupted",))
    assert "marked interrupted at start-up" in run["error"]
    assert [t["state"] for t in run["transitions"]][-1] == "interrupted"
    assert daemon.stop() == 0


def test_a_store_url_that_cannot_be_reached_is_a_clear_start_up_error(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(config("postgresql://nobody:secret@127.0.0.1:1/none"))
    daemon.start(ready=False)
    assert daemon.proc is not None and daemon.proc.wait(timeout=30) != 0
    output = daemon.output()
    assert "cannot open the store at postgresql://nobody:***@127.0.0.1:1/none" in output
    assert "secret" not in output
