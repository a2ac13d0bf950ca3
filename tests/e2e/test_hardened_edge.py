"""The daemon's edge as an attacker or a careless client meets it: what tasks can see, what pages
show, slow and malformed connections, paged logs, and the client CLI without a usable config."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from conftest import Daemon

TOKEN = "s3cr3t-admin-token-0123456789"


def _config(tasks: str, pipelines: str, api: str = "") -> str:
    return (
        "task: {max_concurrent_tasks: 10, shutdown_timeout: 5s}\n"
        f"api: {{listen: '127.0.0.1:{{port}}'{api}}}\n"
        "store: {path: ./var/taskd.db}\n"
        "log: {level: info, format: json}\n"
        "tasks:\n"
        + textwrap.indent(textwrap.dedent(tasks).strip("\n"), "  ")
        + "\npipelines:\n"
        + textwrap.indent(textwrap.dedent(pipelines).strip("\n"), "  ")
        + "\n"
    )


def _log_text(daemon: Daemon, run_id: str) -> str:
    resp = daemon.request("GET", f"/run/{run_id}/log")
    assert resp.status == 200, resp.text
    return resp.text


def _environment(daemon: Daemon, run_id: str) -> dict[str, str]:
    """The variables a task's `env` printed, from its run log."""
    found = {}
    for line in _log_text(daemon, run_id).splitlines():
        name, sep, value = line.split("[stdout] ", 1)[-1].partition("=")
        if sep and "[stdout]" in line:
            found[name] = value
    return found


def test_a_task_sees_a_clean_environment_never_the_daemons_token_or_store(daemon_factory: Any) -> None:
    tasks = """
        - {id: show_env, pipeline: print_env, pass_env: [SHARED_SETTING], env: {TASK_LEVEL: from-task}}
        - {id: show_env_plain, pipeline: print_env}
    """
    pipelines = """
        - name: print_env
          processors:
            - shell: {argv: [env], env: {STEP_LEVEL: from-step}}
    """
    daemon = daemon_factory(
        _config(tasks, pipelines, ", token: '${TASKD_TOKEN}'"),
        env={
            "TASKD_TOKEN": TOKEN,
            "DATABASE_URL": "postgresql://admin:hunter2@db/prod",
            "SHARED_SETTING": "passed-on",
            "LC_TIME": "C.UTF-8",
        },
    )
    daemon.token = TOKEN
    daemon.start()
    run_id = daemon.start_task("show_env")
    assert daemon.wait_run(run_id)["state"] == "completed"
    env = _environment(daemon, run_id)
    assert TOKEN not in _log_text(daemon, run_id)
    assert "TASKD_TOKEN" not in env and "DATABASE_URL" not in env
    assert env["SHARED_SETTING"] == "passed-on"
    assert env["TASK_LEVEL"] == "from-task" and env["STEP_LEVEL"] == "from-step"
    assert env["LC_TIME"] == "C.UTF-8" and env["PATH"]
    assert env["TASKD_RUN_ID"] == run_id and env["TASKD_TASK_ID"] == "show_env"
    plain = daemon.start_task("show_env_plain")
    daemon.wait_run(plain)
    names = set(_environment(daemon, plain))
    allowed = {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "PWD", "SHLVL", "_", "STEP_LEVEL"}
    assert {n for n in names if not n.startswith(("LC_", "TASKD_"))} <= allowed, names


def test_the_token_comes_from_a_file_or_a_systemd_credential(daemon_factory: Any, tmp_path: Path) -> None:
    tasks = "- {id: quick, pipeline: noop}"
    pipelines = """
        - name: noop
          processors:
            - shell: {argv: ['true']}
    """
    (tmp_path / "token.txt").write_text(TOKEN + "\n")
    daemon = daemon_factory(_config(tasks, pipelines, f", token_file: {tmp_path / 'token.txt'}"))
    daemon.start()
    assert daemon.request("GET", "/tasks").status == 401
    daemon.token = TOKEN
    assert daemon.request("GET", "/tasks").status == 200
    daemon.stop()

    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "api-token").write_text("credential-token-abcdef\n")
    other = daemon_factory(_config(tasks, pipelines), env={"CREDENTIALS_DIRECTORY": str(credentials)}, subdir="c")
    other.token = "credential-token-abcdef"
    other.start()
    assert other.request("GET", "/tasks").status == 200
    other.token = None
    assert other.request("GET", "/tasks").status == 401
