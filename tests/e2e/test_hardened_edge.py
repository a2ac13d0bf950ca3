"""The daemon's edge as an attacker or a careless client meets it: what tasks can see, what pages
show, slow and malformed connections, paged logs, and the client CLI without a usable config."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from conftest import Daemon, free_port

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


def test_secret_params_are_masked_in_every_answer_log_alert_and_search(daemon_factory: Any) -> None:
    """The steps get the real values; the API, the run log, the search, the alert and the daemon's
    own log show ***, also where an option templated a secret into a URL or an error quoted it."""
    tasks = """
        - id: deploy
          pipeline: deploy
          secret_params: [password, api_key]
          params: {user: bob, password: default-Pass-123, api_key: {header: key-in-a-map-77}}
    """
    pipelines = """
        - name: deploy
          processors:
            - shell: {command: 'printf %s "$TASKD_PARAM_PASSWORD" > seen.txt; echo "login $TASKD_PARAM_PASSWORD"'}
            - log: {message: 'user {params.user} with {params.password}'}
            - http: {url: 'http://127.0.0.1:{free_port}/login?pw={params.password}', timeout: 2s}
            - send_alert: {log: true, message: 'deploy failed for {params.password}'}
    """
    daemon = daemon_factory(_config(tasks, pipelines.replace("{free_port}", str(free_port()))))
    daemon.start()
    secret = "runtime-Secret-42/x y"
    run_id = daemon.start_task("deploy", {"password": secret})
    run = daemon.wait_run(run_id)
    assert run["state"] == "failed"
    assert (daemon.dir / "seen.txt").read_text() == secret  # the step got the real value
    assert run["params"] == {"user": "bob", "password": "***", "api_key": "***"}
    shown = [
        daemon.request("GET", f"/run/{run_id}").text,
        daemon.request("GET", f"/run/{run_id}/log").text,
        daemon.request("GET", "/runs?limit=100").text,
        daemon.request("GET", "/task/deploy").text,
        daemon.request("GET", "/tasks").text,
    ]
    assert "***" in shown[1] and "127.0.0.1" in run["error"]
    assert daemon.request("GET", "/runs?q=Secret-42").json()["runs"] == []
    default_run = daemon.start_task("deploy")
    daemon.wait_run(default_run)
    shown.append(daemon.request("GET", f"/run/{default_run}").text)
    shown.append(daemon.request("GET", f"/run/{default_run}/log").text)
    alert_lines = [e for e in daemon.events() if e.get("event") == "alert"]
    assert alert_lines and "***" in alert_lines[-1]["summary"]
    shown.append(daemon.output())
    for text in shown:
        for value in ("Secret-42", "Secret-42%2Fx", "default-Pass-123", "key-in-a-map-77"):
            assert value not in text, (value, text[:2000])
