"""The command-line client against a real `taskd run`: it finds the daemon from the configuration
(TCP or unix socket, with its token) or from --url/TASKD_URL, prints tables or JSON, and exits with
the documented codes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ON_POSTGRES, Daemon, base_config, free_port, kill_matching, processes_matching, wait_for

from taskd.cli import main
from taskd.engine import STOP_WAIT_S

TASKS = """
- {id: hello, name: Say hello, pipeline: hello, params: {who: world}}
- {id: broken, pipeline: broken}
- {id: slow, pipeline: slow}
"""
PIPELINES = """
- {name: hello, processors: [{shell: {command: 'echo "hello $TASKD_PARAM_WHO"; sleep 0.2; echo bye'}}]}
- {name: broken, processors: [{shell: {command: 'echo no >&2; exit 5'}}]}
- {name: slow, processors: [{shell: {command: 'sleep 30'}}]}
"""


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


def client(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """`taskd ARGS` in this process, the daemon in its own."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("TASKD_URL", "TASKD_TOKEN", "TASKD_TOKEN_FILE", "CREDENTIALS_DIRECTORY"):
            patch.delenv(name, raising=False)
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        if cwd is not None:
            patch.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    config = base_config(TASKS, PIPELINES).replace(
        "api: {listen: '127.0.0.1:{port}'}", "api: {listen: '127.0.0.1:{port}', token: cli-secret}"
    )
    made = daemon_factory(config)
    made.token = "cli-secret"
    return made.start()


def test_start_follow_tasks_runs_show_and_logs(daemon: Daemon) -> None:
    c = str(daemon.config_path)  # the client finds the address and the token in it
    started = client("start", "hello", "-c", c, "-p", "who=operator", "--follow")
    assert started.code == 0, started.err
    assert started.out.splitlines() == ["hello operator", "bye"]
    assert "completed" in started.err

    tasks = client("tasks", "-c", c)
    assert tasks.code == 0
    header, *rows = tasks.out.splitlines()
    assert header.split() == ["ID", "STATUS", "SCHEDULE", "NEXT", "RUN", "LAST", "RUN", "DURATION"]
    column = header.index("STATUS")  # aligned: every row's status starts under the header's
    assert all(row[column - 2 : column] == "  " and row[column] != " " for row in rows), tasks.out
    by_id = {row.split()[0]: row.split() for row in rows}
    assert by_id["hello"][1:3] == ["completed", "manual"] and by_id["broken"][1] == "manual"
    as_json = client("tasks", "-c", c, "--json").json()
    assert {t["id"] for t in as_json["tasks"]} == {"hello", "broken", "slow"}  # type: ignore[index]

    failed = client("start", "broken", "-c", c, "--wait")
    assert failed.code == 1 and "failed: step 1 (shell): command failed: exit code 5" in failed.err

    runs = client("runs", "-c", c, "--state", "failed", "--task", "broken,hello")
    assert runs.code == 0 and len(runs.out.splitlines()) == 2 and "exit code 5" in runs.out
    run_id = runs.out.splitlines()[1].split()[0]
    shown = client("show", run_id, "-c", c)
    assert shown.code == 0 and f"id:           {run_id}" in shown.out
    assert "attempt 1: failed" in shown.out and "1. shell" in shown.out
    logs = client("logs", run_id, "-c", c)
    assert logs.code == 0 and "[stderr] no" in logs.out
    followed = client("logs", run_id, "-c", c, "-f")
    assert followed.code == 1 and "[stderr] no" in followed.out  # the run failed
    found = client("runs", "-c", c, "-q", "say hel", "--json").json()
    assert [r["task_id"] for r in found["runs"]] == ["hello"]  # type: ignore[index]
    recent = client("runs", "-c", c, "--since", "1h", "--until", "0s", "--json").json()
    older = client("runs", "-c", c, "--until", "1h", "--json").json()
    assert recent["total"] >= 2 and older["total"] == 0  # type: ignore[index]
    one = client("task", "hello", "-c", c)
    assert one.code == 0 and "name:       Say hello" in one.out and "success rate 1.0" in one.out
    status = client("status", "-c", c)
    assert status.code == 0 and "scheduler:   running" in status.out


def test_stop_delete_and_the_exit_codes(daemon: Daemon) -> None:
    env = {"TASKD_URL": f"http://127.0.0.1:{daemon.port}", "TASKD_TOKEN": "cli-secret"}
    assert client("stop", "slow", env=env).code == 1  # nothing to stop: the daemon says 409
    run_id = client("start", "slow", env=env).out.strip()
    assert len(run_id) == 20
    stopped = client("stop", "slow", env=env)
    assert stopped.code == 0 and run_id in stopped.out
    refused = client("delete", "slow", env=env)  # stdin is no terminal: no confirmation possible
    assert refused.code == 2 and "--yes" in refused.err
    deleted = client("delete", "slow", "--yes", env=env)
    assert deleted.code == 0 and "deleted slow" in deleted.out
    missing = client("task", "slow", env=env)
    assert missing.code == 3 and "task 'slow' does not exist" in missing.err
    assert client("show", "0" * 20, env=env).code == 3
    assert client("start", "hello", "-p", "nonsense", env=env).code == 2
    wrong = client("tasks", env={**env, "TASKD_TOKEN": "wrong"})
    assert wrong.code == 2 and "wrong bearer token" in wrong.err


def test_stop_waits_for_runs_still_stopping_and_fails_at_its_deadline(
    daemon_factory: Callable[..., Daemon], request: pytest.FixtureRequest
) -> None:
    """A shell step that ignores SIGTERM, with a `kill_grace` longer than the daemon waits: the
    daemon answers that the run is still stopping (202), `taskd stop` polls it and exits 1 at its
    deadline, naming it; asked again, the stop kills the group at once and `taskd stop` exits 0."""
    marker = f"{800 + (os.getpid() % 50)}.{abs(hash(request.node.name)) % 10**6:06d}"
    command = f"trap '' TERM; echo listening; sleep {marker}"
    daemon = daemon_factory(
        base_config(
            "- {id: deaf, pipeline: deaf}",
            f"- {{name: deaf, processors: [{{shell: {{command: {json.dumps(command)}, kill_grace: 60s}}}}]}}",
        )
    ).start()
    try:
        env = {"TASKD_URL": f"http://127.0.0.1:{daemon.port}"}
        run_id = daemon.start_task("deaf")
        # Its output read back: the step holds its process (a stop while the process is still
        # being started kills it at once, with no grace).
        wait_for(lambda: processes_matching(f"sleep {marker}"), what="the child to start")
        wait_for(lambda: "listening" in daemon.request("GET", f"/run/{run_id}/log").text, what="its first line")
        began = time.monotonic()
        first = client("stop", "deaf", "--timeout", "1", env=env)
        waited = time.monotonic() - began
        assert waited >= STOP_WAIT_S - 0.1, (first, waited)  # the daemon waited its bound, then said 202
        assert first.code == 1 and first.out == "", first.err
        assert f"still stopping: {run_id}" in first.err
        assert "not stopped 1s after the daemon answered" in first.err and f"s in all: {run_id} (running)" in first.err
        assert processes_matching(f"sleep {marker}") and daemon.run(run_id)["state"] == "running"
        again = client("stop", "deaf", env=env)  # cancels the stop's grace: SIGKILL now
        assert again.code == 0 and again.out.splitlines() == [f"stopped {run_id}"], again.err
        run = daemon.run(run_id)
        assert run["state"] == "stopped" and run["error"] == "stopped: stopped through the API"
        assert not processes_matching(f"sleep {marker}")
    finally:
        kill_matching(f"sleep {marker}")


def test_an_unreachable_daemon_is_exit_4_naming_the_address(tmp_path: Path) -> None:
    port = free_port()
    result = client("tasks", "--url", f"http://127.0.0.1:{port}")
    assert result.code == 4 and f"cannot reach the daemon at http://127.0.0.1:{port}" in result.err
    (tmp_path / "taskd.yml").write_text(f"api: {{listen: 'unix:{tmp_path}/none.sock'}}\n")
    result = client("status", cwd=tmp_path)
    assert result.code == 4 and f"unix:{tmp_path}/none.sock" in result.err


def test_the_client_reaches_a_daemon_on_a_unix_socket(daemon_factory: Callable[..., Daemon], tmp_path: Path) -> None:
    socket = tmp_path / "api.sock"
    daemon = daemon_factory(base_config(TASKS, PIPELINES).replace("'127.0.0.1:{port}'", f"'unix:{socket}'"))
    daemon.start(ready=False)
    for _ in range(200):
        if socket.exists() and client("status", "-c", str(daemon.config_path)).code == 0:
            break
        time.sleep(0.05)
    started = client("start", "hello", "-c", str(daemon.config_path), "--wait", "--json")
    assert started.code == 0, started.err
    assert started.json()["state"] == "completed"  # type: ignore[index]
    assert daemon.stop() == 0


def test_the_client_works_when_the_local_configuration_does_not(daemon: Daemon, tmp_path: Path) -> None:
    """--url never reads taskd.yml; without it, a broken one is a warning and the default is tried."""
    broken = tmp_path / "taskd.yml"
    broken.write_text("api: {listen: '${UNSET_VARIABLE_FOR_TEST}'}\ntasks: [\n")
    url = f"http://127.0.0.1:{daemon.port}"
    listed = client("tasks", "-c", str(broken), "--url", url, "--token", "cli-secret", "--json")
    assert listed.code == 0, listed.err
    assert listed.err == ""
    from_env = client("tasks", "-c", str(broken), env={"TASKD_URL": url, "TASKD_TOKEN": "cli-secret"})
    assert from_env.code == 0 and "hello" in from_env.out
    fallback = client("status", "-c", str(broken), "--token", "cli-secret")
    assert "warning: cannot read" in fallback.err and "http://127.0.0.1:8080" in fallback.err
    assert "Traceback" not in fallback.err


def test_a_refused_token_is_exit_2_for_every_command_status_included(daemon: Daemon, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{daemon.port}"
    for command in (["status"], ["tasks"], ["task", "hello"], ["runs"], ["show", "x"], ["logs", "x"]):
        result = client(*command, "--url", url, "--token", "wrong")
        assert result.code == 2, (command, result)
        assert "token" in result.err
    token_file = tmp_path / "token"
    token_file.write_text("cli-secret\n")
    assert client("status", "--url", url, "--token-file", str(token_file)).code == 0
    assert client("status", env={"TASKD_URL": url, "TASKD_TOKEN_FILE": str(token_file)}).code == 0
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "api-token").write_text("cli-secret")
    assert client("tasks", env={"TASKD_URL": url, "CREDENTIALS_DIRECTORY": str(credentials)}).code == 0
    missing = client("status", "--url", url, "--token-file", str(tmp_path / "absent"))
    assert missing.code == 2 and "cannot read the token file" in missing.err


def test_url_unix_reaches_a_socket_and_a_bad_url_is_a_usage_error(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    socket = tmp_path / "api.sock"
    made = daemon_factory(base_config(TASKS, PIPELINES).replace("'127.0.0.1:{port}'", f"'unix:{socket}'"))
    made.start(ready=False)
    wait_for(lambda: client("status", "--url", f"unix:{socket}").code == 0, what="the socket to answer")
    listed = client("tasks", "--url", f"unix:{socket}", "-c", str(tmp_path / "absent.yml"))
    assert listed.code == 0 and "hello" in listed.out
    for bad in ("unix:", "ftp://x", "http://", "localhost:8080"):
        result = client("status", "--url", bad)
        assert result.code == 2 and "--url" in result.err and "Traceback" not in result.err, bad
    assert made.stop() == 0


def test_bad_urls_and_tokens_are_usage_errors_and_a_degraded_status_shows_its_details(daemon: Daemon) -> None:
    url = f"http://127.0.0.1:{daemon.port}"
    for bad in (
        "http://127.0.0.1:99999",
        "http://127.0.0.1:abc",
        "http://[::1",
        "http://u:p@127.0.0.1:1",
        f"{url}/?x=1",
    ):
        result = client("status", "--url", bad, "--token", "cli-secret")
        assert result.code == 2 and "--url" in result.err and "Traceback" not in result.err, (bad, result)
    for token in ("cli\r\nsecret", "cli secret", "clé"):
        result = client("status", "--url", url, "--token", token)
        assert result.code == 2 and "token" in result.err and "Traceback" not in result.err, (token, result)
    if ON_POSTGRES:
        return  # the degraded half moves the SQLite file's directory away
    # A degraded daemon: its store's directory moved away.
    (daemon.dir / "var").rename(daemon.dir / "var-moved")
    degraded = client("status", "--url", url, "--token", "cli-secret")
    assert degraded.code == 1 and "degraded" in degraded.out and "store" in degraded.out, degraded
    refused = client("status", "--url", url, "--token", "wrong")
    assert refused.code == 2, refused
    (daemon.dir / "var-moved").rename(daemon.dir / "var")


def test_reload_answers_whether_the_new_configuration_runs(daemon: Daemon) -> None:
    c = str(daemon.config_path)
    status = client("status", "-c", c)
    assert "reload:      none since the start" in status.out, status.out
    good = daemon.config_path.read_text().replace(
        "- {id: slow, pipeline: slow}", "- {id: slow, pipeline: slow}\n  - {id: extra, pipeline: hello}"
    )
    daemon.config_path.write_text(good)
    done = client("reload", "-c", c)
    assert done.code == 0 and done.out.startswith("reloaded: applied (added extra)"), (done.out, done.err)
    assert daemon.request("GET", "/task/extra").status == 200
    broken = good.replace("- {id: extra, pipeline: hello}", "- {id: extra, pipeline: hello, schedul: x}")
    daemon.config_path.write_text(broken)
    refused = client("reload", "-c", c)
    line = next(n for n, text in enumerate(broken.splitlines(), 1) if "schedul:" in text)
    assert refused.code == 2 and refused.out == ""
    assert f"taskd.yml:{line}: tasks[3].schedul: unknown key 'schedul' (did you mean 'schedule'?)" in refused.err
    assert daemon.request("GET", "/task/extra").status == 200  # the previous configuration runs
    health = daemon.request("GET", "/health").json()
    assert health["status"] == "ok" and health["reload"]["outcome"] == "refused"
    assert health["reload"]["errors"][0].endswith(
        "(did you mean 'schedule'?); allowed keys: " + health["reload"]["errors"][0].split("allowed keys: ")[1]
    )
    status = client("status", "-c", c)
    assert "refused, the previous configuration runs: " in status.out and "schedul" in status.out
    # A SIGHUP is recorded the same way.
    daemon.config_path.write_text(good)
    daemon.send(signal.SIGHUP)
    wait_for(lambda: daemon.request("GET", "/health").json()["reload"]["outcome"] == "applied", what="a reload")


def test_named_tokens_rerun_and_the_audit_trail(daemon_factory: Callable[..., Daemon]) -> None:
    tokens = (
        "api:\n  listen: '127.0.0.1:{port}'\n  tokens:\n"
        "    - {name: watcher, token: watcher-token-1234, role: viewer}\n"
        "    - {name: ops, token: ops-token-123456, role: operator}\n"
    )
    daemon = daemon_factory(base_config(TASKS, PIPELINES).replace("api: {listen: '127.0.0.1:{port}'}\n", tokens))
    daemon.token = "ops-token-123456"
    daemon.start()
    c = str(daemon.config_path)  # the configuration's highest role is the one the client uses
    started = client("start", "hello", "-c", c, "-p", "who=again")
    assert started.code == 0, started.err
    first = started.out.strip()
    daemon.wait_run(first)
    again = client("rerun", first, "-c", c)
    assert again.code == 0 and again.out.strip() != first, again.err
    assert daemon.wait_run(again.out.strip())["params"]["who"] == "again"
    viewer = {"TASKD_URL": f"http://127.0.0.1:{daemon.port}", "TASKD_TOKEN": "watcher-token-1234"}
    refused = client("delete", "hello", "--yes", env=viewer)
    assert (
        refused.code == 2 and "needs the admin role" in refused.err and "'watcher' has the viewer role" in refused.err
    )
    assert client("tasks", env={**viewer, "TASKD_TOKEN": "guess"}).code == 2

    audit = client("audit", "-c", c)
    assert audit.code == 0, audit.err
    header, *rows = audit.out.splitlines()
    assert header.split() == ["AT", "ACTION", "WHO", "ROLE", "FROM", "TARGET", "STATUS", "DETAIL"]
    assert [row.split()[1:4] for row in rows] == [
        ["sign_in_failed", "-", "-"],
        ["forbidden", "watcher", "viewer"],
        ["rerun", "ops", "operator"],
        ["start", "ops", "operator"],
    ]
    assert all(row.split()[4] == "127.0.0.1" for row in rows)
    only = client("audit", "-c", c, "--action", "rerun,start", "--actor", "ops", "--json").json()
    assert [e["action"] for e in only["entries"]] == ["rerun", "start"]  # type: ignore[index]
    assert client("audit", "-c", c, "--action", "explode").code == 2
    assert daemon.stop() == 0


def test_drain_lets_the_runs_finish_fires_nothing_more_and_exits_0(daemon_factory: Callable[..., Daemon]) -> None:
    tasks = TASKS + "- {id: ticking, pipeline: hello, schedule: '* * * * * *'}\n- {id: pause, pipeline: pause}\n"
    pipelines = PIPELINES + "- {name: pause, processors: [{shell: {command: 'sleep 2.5'}}]}\n"
    daemon = daemon_factory(base_config(tasks, pipelines)).start()
    env = {"TASKD_URL": f"http://127.0.0.1:{daemon.port}"}
    wait_for(lambda: daemon.runs("ticking"), timeout=5, what="the per-second task firing")
    long_run = daemon.start_task("pause")
    daemon.wait_run(long_run, states=("running",))
    asked = time.time()
    drained = client("drain", "--wait", env=env)
    assert drained.code == 0, drained.err
    assert "is draining" in drained.err and "1 run(s) still active" in drained.err
    assert "has drained and stopped" in drained.out
    assert daemon.proc is not None and daemon.proc.wait(timeout=10) == 0
    assert '"signal": "drain"' in daemon.output() or "signal=drain" in daemon.output()
    restarted = time.time()
    daemon.start()
    assert daemon.run(long_run)["state"] == "completed"
    assert time.time() - asked >= 2.0  # it waited for the run (2.5 s) before it stopped
    window = (_iso_at(asked + 0.5), _iso_at(restarted))
    fired = [r["queued_at"] for r in daemon.runs("ticking") if window[0] < r["queued_at"] < window[1]]
    assert fired == []  # nothing fired between the drain and the restart
    assert client("drain", "nobody", env=env).code == 3
    # Stopped (SIGTERM) before its runs end, a drain says it did not drain: exit 1.
    daemon.start_task("slow")  # sleep 30, longer than shutdown_timeout (5 s)
    wait_for(lambda: processes_matching("sleep 30"), timeout=5, what="the slow run's process")
    result: list[Result] = []
    waiting = threading.Thread(target=lambda: result.append(client("drain", "--wait", env=env)))
    waiting.start()
    wait_for(lambda: daemon.request("GET", "/health").json()["scheduler"] == "draining", timeout=5, what="draining")
    alone = daemon.request("POST", "/task/hello/_start")
    assert alone.status == 409 and "no other node is alive" in alone.text
    daemon.send(signal.SIGTERM)
    waiting.join(timeout=30)
    assert result and result[0].code == 1 and "did not drain" in result[0].err, result
    assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 0


def _iso_at(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_a_token_removed_by_a_reload_stops_working_at_once(daemon_factory: Callable[..., Daemon]) -> None:
    tokens = (
        "api:\n  listen: '127.0.0.1:{port}'\n  tokens:\n"
        "    - {name: oncall, token: oncall-token-1234, role: operator}\n"
        "    - {name: boss, token: boss-token-123456, role: admin}\n"
    )
    daemon = daemon_factory(base_config(TASKS, PIPELINES).replace("api: {listen: '127.0.0.1:{port}'}\n", tokens))
    daemon.token = "boss-token-123456"
    daemon.start()
    c = str(daemon.config_path)
    oncall = {"Authorization": "Bearer oncall-token-1234"}
    assert daemon.request("GET", "/whoami", headers=oncall).status == 200
    text = daemon.config_path.read_text()
    daemon.config_path.write_text(text.replace("    - {name: oncall, token: oncall-token-1234, role: operator}\n", ""))
    reloaded = client("reload", "-c", c)
    assert reloaded.code == 0 and "tokens oncall" in reloaded.out + reloaded.err, reloaded
    assert daemon.request("GET", "/whoami", headers=oncall).status == 401  # revoked, no restart needed
    assert daemon.request("GET", "/whoami").json()["name"] == "boss"
    # Turning tokens off altogether is refused (it needs a restart): the tokens in force stay.
    remaining = daemon.config_path.read_text()
    daemon.config_path.write_text(
        remaining.replace("  tokens:\n    - {name: boss, token: boss-token-123456, role: admin}\n", "")
    )
    refused = client("reload", "-c", c, "--token", "boss-token-123456")
    assert refused.code == 2 and "turning tokens on or off needs a restart" in refused.err, refused
    assert daemon.request("GET", "/tasks", headers={}).status == 200  # with boss's token, as before
    assert daemon.request("GET", "/tasks", headers={"Authorization": "Bearer nothing"}).status == 401
    assert daemon.stop() == 0
