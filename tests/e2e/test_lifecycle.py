"""End to end: timeouts and stops kill whole process groups, deletion survives restarts, crashes
leave runs `interrupted`, SIGHUP reloads, SIGTERM drains, and systemd is notified."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Daemon, base_config, kill_matching, processes_matching, wait_for


@pytest.fixture
def marker(request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique `sleep` duration, so the test can find (and finally kill) its own processes."""
    value = f"{900 + (os.getpid() % 50)}.{abs(hash(request.node.name)) % 10**6:06d}"
    yield value
    kill_matching(f"sleep {value}")


def test_timeout_kills_the_whole_process_group(daemon_factory: Callable[..., Daemon], marker: str) -> None:
    daemon = daemon_factory(
        base_config(
            "- {id: hang, pipeline: p, timeout: 1s}",
            f"- {{name: p, processors: [{{shell: {{command: 'sleep {marker} & sleep {marker}', kill_grace: 2s}}}}]}}",
        )
    ).start()
    run_id = daemon.start_task("hang")
    wait_for(lambda: len(processes_matching(f"sleep {marker}")) >= 2, what="both sleeps to start")
    run = daemon.wait_run(run_id, timeout=10)
    assert run["state"] == "failed" and "timed out after 1s" in run["error"]
    assert run["attempt_list"][0]["state"] == "timed_out"
    assert run["attempt_list"][0]["steps"][0]["state"] == "timed_out"
    wait_for(lambda: not processes_matching(f"sleep {marker}"), timeout=5, what="no sleep left behind")


def test_a_command_ignoring_sigterm_is_killed_after_the_grace(
    daemon_factory: Callable[..., Daemon], marker: str
) -> None:
    daemon = daemon_factory(
        base_config(
            "- {id: stubborn, pipeline: p, timeout: 0.5s}",
            f"""- {{name: p, processors: [{{shell: {{command: "trap '' TERM; sleep {marker}",
                                                kill_grace: 0.5s}}}}]}}""",
        )
    ).start()
    run = daemon.wait_run(daemon.start_task("stubborn"), timeout=10)
    assert run["state"] == "failed"
    wait_for(lambda: not processes_matching(f"sleep {marker}"), timeout=5, what="SIGKILL after the grace")


def test_stop_during_a_run_takes_effect_within_a_second(daemon_factory: Callable[..., Daemon], marker: str) -> None:
    daemon = daemon_factory(
        base_config(
            "- {id: long, pipeline: p}", f"- {{name: p, processors: [{{shell: {{command: 'sleep {marker}'}}}}]}}"
        )
    ).start()
    run_id = daemon.start_task("long")
    wait_for(lambda: processes_matching(f"sleep {marker}"), what="the child to start")
    began = time.monotonic()
    resp = daemon.request("POST", "/task/long/_stop")
    elapsed = time.monotonic() - began
    assert resp.status == 200 and resp.json() == {"task_id": "long", "stopped": [run_id], "stopping": []}
    assert elapsed < 1.0, elapsed
    run = daemon.run(run_id)
    assert run["state"] == "stopped" and "stopped through the API" in run["error"]
    assert not processes_matching(f"sleep {marker}")
    again = daemon.request("POST", "/task/long/_stop")
    assert again.status == 409 and again.json()["error"]["code"] == "conflict"


def test_stop_during_backoff(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(
        base_config(
            "- {id: flaky, pipeline: p, retry: {count: 5, backoff: 60s}}",
            "- {name: p, processors: [{shell: {command: 'exit 1'}}]}",
        )
    ).start()
    run_id = daemon.start_task("flaky")
    wait_for(lambda: daemon.run(run_id)["state"] == "retrying", what="backoff")
    resp = daemon.request("POST", "/task/flaky/_stop")
    assert resp.status == 200
    run = daemon.run(run_id)
    assert run["state"] == "stopped" and run["attempts"] == 1


def test_stop_while_queued(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(
        base_config(
            "- {id: blocker, pipeline: p}\n- {id: waiter, pipeline: p}",
            "- {name: p, processors: [{sleep: {duration: 30s}}]}",
            slots=1,
        )
    ).start()
    daemon.start_task("blocker")
    waiter = daemon.start_task("waiter")
    assert daemon.run(waiter)["state"] == "queued"
    assert daemon.request("POST", "/task/waiter/_stop").status == 200
    run = daemon.run(waiter)
    assert run["state"] == "stopped" and run["started_at"] is None
    assert daemon.request("POST", "/task/blocker/_stop").status == 200


def test_deleted_tasks_stay_deleted_until_their_yaml_changes(
    daemon_factory: Callable[..., Daemon], marker: str
) -> None:
    config = base_config(
        "- {id: keep, pipeline: p}\n- {id: doomed, name: Doomed, pipeline: p}",
        f"- {{name: p, processors: [{{shell: {{command: 'sleep {marker}'}}}}]}}",
    )
    daemon = daemon_factory(config).start()
    run_id = daemon.start_task("doomed")
    wait_for(lambda: processes_matching(f"sleep {marker}"), what="the child to start")
    resp = daemon.request("DELETE", "/task/doomed")
    assert resp.status == 200 and resp.json() == {"deleted": "doomed", "stopped": [run_id]}
    assert daemon.run(run_id)["state"] == "stopped"
    assert not processes_matching(f"sleep {marker}")
    assert daemon.request("GET", "/task/doomed").status == 404
    assert daemon.request("DELETE", "/task/doomed").status == 404
    assert [t["id"] for t in daemon.request("GET", "/tasks").json()["tasks"]] == ["keep"]
    # History is kept.
    assert [r["id"] for r in daemon.runs("doomed")] == [run_id]

    assert daemon.stop() == 0
    daemon.start()
    assert daemon.request("GET", "/task/doomed").status == 404
    ready = [e for e in daemon.events() if e.get("event") == "taskd_ready"][-1]
    assert ready["held_back"] == ["doomed"]
    held = [e for e in daemon.events() if e.get("event") == "tasks_held_back"]
    assert held and held[-1]["task_ids"] == ["doomed"]

    daemon.send(signal.SIGHUP)  # an unchanged definition stays deleted on reload too
    wait_for(lambda: any(e.get("event") == "config_reloaded" for e in daemon.events()), what="reload")
    assert daemon.request("GET", "/task/doomed").status == 404

    daemon.write_config(config.replace("name: Doomed", "name: Doomed again"))
    daemon.send(signal.SIGHUP)
    wait_for(lambda: daemon.request("GET", "/task/doomed").status == 200, what="the edited task to come back")
    assert daemon.stop() == 0
    daemon.start()
    assert daemon.request("GET", "/task/doomed").json()["name"] == "Doomed again"


def test_kill_9_mid_run_leaves_the_run_interrupted_after_restart(
    daemon_factory: Callable[..., Daemon], marker: str
) -> None:
    daemon = daemon_factory(
        base_config(
            "- {id: long, pipeline: p}", f"- {{name: p, processors: [{{shell: {{command: 'sleep {marker}'}}}}]}}"
        )
    ).start()
    run_id = daemon.start_task("long")
    wait_for(lambda: daemon.run(run_id)["state"] == "running", what="running")
    time.sleep(0.2)  # let the writer commit the running state
    daemon.stop(signal.SIGKILL)
    assert processes_matching(f"sleep {marker}"), "the child outlives a SIGKILLed daemon..."
    daemon.start()
    assert not processes_matching(f"sleep {marker}"), "...until the next start kills it"
    killed = [e for e in daemon.events() if e.get("event") == "orphans_killed"]
    assert killed and len(killed[-1]["process_groups"]) == 1
    run = daemon.run(run_id)
    assert run["state"] == "interrupted"
    assert "taskd exited while this run was running" in run["error"]
    assert run["finished_at"] is not None
    assert run["attempt_list"][0]["state"] == "interrupted"
    assert [t["state"] for t in run["transitions"]] == ["queued", "running", "interrupted"]
    warnings = [e for e in daemon.events() if e.get("event") == "run_interrupted"]
    assert warnings and warnings[-1]["run_id"] == run_id
    assert daemon.request("GET", "/task/long").json()["status"] == "interrupted"


def test_sighup_applies_a_valid_config_without_disturbing_runs(daemon_factory: Callable[..., Daemon]) -> None:
    before = base_config(
        "- {id: old, pipeline: p}\n- {id: gone, pipeline: p}",
        "- {name: p, processors: [{sleep: {duration: 1.5s}}, {log: {message: 'version one'}}]}",
    )
    daemon = daemon_factory(before).start()
    run_id = daemon.start_task("old")
    wait_for(lambda: daemon.run(run_id)["state"] == "running")
    after = base_config(
        "- {id: old, pipeline: p}\n- {id: new, pipeline: p, schedule: '@daily'}",
        "- {name: p, processors: [{sleep: {duration: 0.1s}}, {log: {message: 'version two'}}]}",
        slots=3,
    )
    daemon.write_config(after)
    daemon.send(signal.SIGHUP)
    wait_for(lambda: daemon.request("GET", "/task/new").status == 200, what="the added task")
    assert daemon.request("GET", "/task/gone").status == 404
    assert daemon.request("GET", "/health").json()["slots"]["limit"] == 3
    run = daemon.wait_run(run_id)
    assert run["state"] == "completed"
    assert "version one" in daemon.request("GET", f"/run/{run_id}/log").text  # the definition it started with
    second = daemon.wait_run(daemon.start_task("old"))
    assert "version two" in daemon.request("GET", f"/run/{second['id']}/log").text
    reloaded = [e for e in daemon.events() if e.get("event") == "config_reloaded"][-1]
    assert reloaded["added"] == ["new"] and reloaded["removed"] == ["gone"] and reloaded["changed"] == ["old"]


def test_sighup_with_a_broken_config_keeps_the_old_one(daemon_factory: Callable[..., Daemon]) -> None:
    good = base_config("- {id: a, pipeline: p}", "- {name: p, processors: [{log: {message: hi}}]}")
    daemon = daemon_factory(good).start()
    daemon.write_config(good.replace("pipeline: p}", "pipeline: missing, schedule: '61 * * * *'}"))
    daemon.send(signal.SIGHUP)
    failed = wait_for(
        lambda: [e for e in daemon.events() if e.get("event") == "config_reload_failed"], what="the reload error"
    )
    errors = "\n".join(failed[-1]["errors"])
    assert "tasks[0].schedule: invalid cron expression" in errors and "unknown pipeline 'missing'" in errors
    assert daemon.request("GET", "/health").status == 200
    assert daemon.wait_run(daemon.start_task("a"))["state"] == "completed"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_let_running_runs_finish(daemon_factory: Callable[..., Daemon], sig: signal.Signals) -> None:
    daemon = daemon_factory(
        base_config("- {id: short, pipeline: p}", "- {name: p, processors: [{sleep: {duration: 1s}}]}")
    ).start()
    run_id = daemon.start_task("short")
    wait_for(lambda: daemon.run(run_id)["state"] == "running")
    assert daemon.stop(sig) == 0
    daemon.start()
    assert daemon.run(run_id)["state"] == "completed"


def test_sigterm_stops_runs_past_the_shutdown_timeout(daemon_factory: Callable[..., Daemon], marker: str) -> None:
    config = base_config(
        "- {id: long, pipeline: p}", f"- {{name: p, processors: [{{shell: {{command: 'sleep {marker}'}}}}]}}"
    )
    daemon = daemon_factory(config.replace("shutdown_timeout: 5s", "shutdown_timeout: 0.5s")).start()
    run_id = daemon.start_task("long")
    wait_for(lambda: processes_matching(f"sleep {marker}"))
    began = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - began < 5
    assert not processes_matching(f"sleep {marker}")
    daemon.start()
    run = daemon.run(run_id)
    assert run["state"] == "stopped" and "daemon shutdown" in run["error"]


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_while_draining_stops_the_runs_at_once(
    daemon_factory: Callable[..., Daemon], marker: str, second: signal.Signals
) -> None:
    config = base_config(
        "- {id: long, pipeline: p}", f"- {{name: p, processors: [{{shell: {{command: 'sleep {marker}'}}}}]}}"
    )
    daemon = daemon_factory(config.replace("shutdown_timeout: 5s", "shutdown_timeout: 60s")).start()
    run_id = daemon.start_task("long")
    wait_for(lambda: processes_matching(f"sleep {marker}"))
    daemon.send(signal.SIGTERM)
    wait_for(lambda: any(e.get("event") == "draining_runs" for e in daemon.events()), what="the drain")
    began = time.monotonic()
    assert daemon.stop(second) == 0
    assert time.monotonic() - began < 5  # not the 60 s grace
    assert not processes_matching(f"sleep {marker}")
    assert any(e.get("event") == "stop_hurried" for e in daemon.events())
    daemon.start()
    run = daemon.run(run_id)
    assert run["state"] == "stopped" and "asked again while draining" in run["error"]


def test_systemd_notifications(daemon_factory: Callable[..., Daemon], tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(10)
    received: list[str] = []

    def expect(text: str) -> None:
        while not any(text in m for m in received):
            received.append(sock.recv(4096).decode())

    try:
        daemon = daemon_factory(
            base_config("- {id: a, pipeline: p}", "- {name: p, processors: [{log: {message: hi}}]}")
        )
        daemon.start(extra_env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})
        expect("READY=1")
        expect("WATCHDOG=1")
        daemon.send(signal.SIGHUP)
        expect("RELOADING=1")
        received.clear()
        expect("READY=1")
        daemon.send(signal.SIGTERM)
        expect("STOPPING=1")
        assert daemon.proc is not None and daemon.proc.wait(10) == 0
    finally:
        sock.close()


def test_non_loopback_listen_without_token_is_refused(daemon_factory: Callable[..., Daemon]) -> None:
    config = base_config("- {id: a, pipeline: p}", "- {name: p, processors: [{log: {message: hi}}]}")
    daemon = daemon_factory(config.replace("'127.0.0.1:{port}'", "'0.0.0.0:{port}'"))
    daemon.start(ready=False)
    assert daemon.proc is not None and daemon.proc.wait(20) == 2  # a configuration error
    assert "api: refusing to listen on 0.0.0.0" in daemon.output()


def test_a_taken_port_is_a_clear_start_up_error(daemon_factory: Callable[..., Daemon]) -> None:
    config = base_config("- {id: a, pipeline: p}", "- {name: p, processors: [{log: {message: hi}}]}")
    first = daemon_factory(config, subdir="one").start()
    second = daemon_factory(config, subdir="two")
    second.port = first.port
    second.write_config(config)
    second.start(ready=False)
    assert second.proc is not None and second.proc.wait(20) == 1
    assert f"cannot listen on 127.0.0.1:{first.port}" in second.output()
