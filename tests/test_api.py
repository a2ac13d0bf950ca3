"""The REST API through a real daemon: listing, details, auth, and JSON errors for bad input."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, base_config, wait_for

TASKS = """
- {id: alpha, name: Alpha job, schedule: '0 3 * * *', pipeline: ok, time_zone: Europe/Berlin}
- {id: beta, pipeline: bad}
- {id: gamma, enabled: false, schedule: '@hourly', pipeline: ok}
"""
PIPELINES = """
- {name: ok, processors: [{log: {message: fine}}]}
- {name: bad, processors: [{shell: {command: 'exit 2'}}]}
"""


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    return daemon_factory(base_config(TASKS, PIPELINES)).start()


def test_list_tasks_with_status_next_run_and_filters(daemon: Daemon) -> None:
    daemon.wait_run(daemon.start_task("alpha"))
    daemon.wait_run(daemon.start_task("beta"))
    for path in ("/tasks", "/tasks/"):
        body = daemon.request("GET", path).json()
        assert body["total"] == 3
        by_id = {t["id"]: t for t in body["tasks"]}
        assert set(by_id) == {"alpha", "beta", "gamma"}
    alpha, beta, gamma = by_id["alpha"], by_id["beta"], by_id["gamma"]
    assert alpha["name"] == "Alpha job" and alpha["status"] == "completed" and alpha["time_zone"] == "Europe/Berlin"
    assert alpha["next_run"].endswith(("+01:00", "+02:00")) and "T03:00:00" in alpha["next_run"]
    assert alpha["last_run"]["state"] == "completed" and alpha["duration"] is not None
    assert beta["status"] == "failed" and beta["schedule"] is None and beta["next_run"] is None
    assert gamma["status"] == "disabled" and gamma["enabled"] is False and gamma["last_run"] is None
    assert alpha["pipeline"] == "ok"
    failed = daemon.request("GET", "/tasks?status=failed").json()
    assert [t["id"] for t in failed["tasks"]] == ["beta"] and failed["total"] == 1
    page = daemon.request("GET", "/tasks?limit=1&offset=1").json()
    assert [t["id"] for t in page["tasks"]] == ["beta"] and page["total"] == 3
    assert [t["id"] for t in daemon.request("GET", "/tasks?q=alp").json()["tasks"]] == ["alpha"]
    assert [t["id"] for t in daemon.request("GET", "/tasks?sort=-id").json()["tasks"]] == ["gamma", "beta", "alpha"]


def test_task_details(daemon: Daemon) -> None:
    run = daemon.wait_run(daemon.start_task("alpha"))
    body = daemon.request("GET", "/task/alpha").json()
    assert body["definition"]["pipeline"]["processors"] == [{"log": {"message": "fine"}}]
    assert body["definition"]["source"].endswith("taskd.yml:6")
    assert len(body["next_runs"]) == 5
    assert body["stats"]["runs"] == 1 and body["stats"]["success_rate"] == 1.0
    assert body["recent_runs"][0]["id"] == run["id"]


def test_runs_history_filters_and_run_details(daemon: Daemon) -> None:
    ok = daemon.wait_run(daemon.start_task("alpha"))
    bad = daemon.wait_run(daemon.start_task("beta"))
    assert bad["state"] == "failed" and "exit code 2" in bad["error"]
    assert bad["attempt_list"][0]["steps"][0]["type"] == "shell"
    everything = daemon.request("GET", "/runs").json()
    assert everything["total"] == 2 and [r["id"] for r in everything["runs"]] == [bad["id"], ok["id"]]
    assert [r["id"] for r in daemon.request("GET", "/runs?state=failed").json()["runs"]] == [bad["id"]]
    assert daemon.request("GET", "/task/alpha/runs?trigger=schedule").json()["total"] == 0
    log = daemon.request("GET", f"/run/{ok['id']}/log")
    assert log.status == 200 and log.headers["Content-Type"].startswith("text/plain") and "[log] fine" in log.text


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/task/nope", 404, "not_found"),
        ("POST", "/task/nope/_start", 404, "not_found"),
        ("POST", "/task/nope/_stop", 404, "not_found"),
        ("DELETE", "/task/nope", 404, "not_found"),
        ("GET", "/task/nope/runs", 404, "not_found"),
        ("GET", "/run/0123456789abcdef0123", 404, "not_found"),
        ("GET", "/run/nope/log", 404, "not_found"),
        ("GET", "/no/such/route", 404, "not_found"),
        ("PUT", "/tasks", 405, "method_not_allowed"),
        ("GET", "/task/alpha/_start", 405, "method_not_allowed"),
        ("POST", "/task/alpha/_stop", 409, "conflict"),
        ("GET", "/tasks?limit=abc", 400, "bad_request"),
        ("GET", "/tasks?limit=0", 400, "bad_request"),
        ("GET", "/tasks?sort=color", 400, "bad_request"),
        ("GET", "/runs?state=sleeping", 400, "bad_request"),
        ("GET", "/runs?since=yesterday", 400, "bad_request"),
    ],
)
def test_errors_are_json_with_the_right_status(daemon: Daemon, method: str, path: str, status: int, code: str) -> None:
    resp = daemon.request(method, path)
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["code"] == code and error["message"]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"params": [1]}', '"params" must be a JSON object'),
        (b'{"params": {}, "extra": 1}', "unknown field(s) 'extra'"),
    ],
)
def test_malformed_start_bodies_get_400(daemon: Daemon, raw: bytes, fragment: str) -> None:
    resp = daemon.request("POST", "/task/alpha/_start", raw=raw)
    assert resp.status == 400
    assert fragment in resp.json()["error"]["message"]
    assert daemon.request("GET", "/task/alpha/runs").json()["total"] == 0


def test_oversized_bodies_get_413(daemon_factory: Callable[..., Daemon]) -> None:
    config = base_config(TASKS, PIPELINES).replace(
        "api: {listen: '127.0.0.1:{port}'}", "api: {listen: '127.0.0.1:{port}', max_body_bytes: 2048}"
    )
    daemon = daemon_factory(config).start()
    resp = daemon.request("POST", "/task/alpha/_start", {"params": {"blob": "x" * 5000}})
    assert resp.status == 413 and resp.json()["error"]["code"] == "payload_too_large"
    small = daemon.request("POST", "/task/alpha/_start", {"params": {"blob": "x" * 100}})
    assert small.status == 202
    assert daemon.request("GET", "/health").status == 200


def test_garbage_on_the_socket_does_not_hurt_the_daemon(daemon: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        sock.sendall(b"\x00\x01\x02 NOT HTTP\r\n\r\n")
        sock.recv(1024)
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        sock.sendall(b"GET /tasks HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        assert sock.recv(1024).split(b" ")[1] == b"400"  # answered by aiohttp's parser, before the app
    assert daemon.request("GET", "/health").status == 200


def test_bearer_token_is_required_on_every_request(daemon_factory: Callable[..., Daemon]) -> None:
    config = base_config(TASKS, PIPELINES).replace(
        "api: {listen: '127.0.0.1:{port}'}", "api: {listen: '127.0.0.1:{port}', token: '${SECRET}'}"
    )
    daemon = daemon_factory(config, env={"SECRET": "s3cret-value"}).start(ready=False)
    wait_for(lambda: _status(daemon, "/health", None) == 401, timeout=20, what="the API to come up")
    for path in ("/health", "/tasks", "/task/alpha", "/runs"):
        resp = daemon.request("GET", path)
        assert resp.status == 401 and resp.json()["error"]["code"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert _status(daemon, "/tasks", "Bearer wrong") == 401
    assert _status(daemon, "/tasks", "Basic s3cret-value") == 401
    assert _status(daemon, "/tasks", "Bearer s3cret-value") == 200
    assert daemon.request("POST", "/task/alpha/_start").status == 401
    daemon.token = "s3cret-value"
    assert daemon.request("POST", "/task/alpha/_start").status == 202


def _status(daemon: Daemon, path: str, authorization: str | None) -> int:
    try:
        return daemon.request("GET", path, headers={"Authorization": authorization} if authorization else {}).status
    except OSError:
        return 0


def test_unix_socket_listener(daemon_factory: Callable[..., Daemon], tmp_path: Path) -> None:
    path = tmp_path / "run" / "api.sock"
    config = base_config(TASKS, PIPELINES).replace("'127.0.0.1:{port}'", f"'unix:{path}'")
    daemon = daemon_factory(config).start(ready=False)
    wait_for(path.exists, timeout=20, what="the socket")

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(path))

    conn = UnixConnection("localhost", timeout=10)
    conn.request("GET", "/tasks")
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["total"] == 3
    assert oct(path.stat().st_mode & 0o777) == "0o660"
    assert daemon.stop() == 0


def test_processors_endpoint_lists_types_and_options(daemon: Daemon) -> None:
    body = daemon.request("GET", "/processors").json()
    kinds = {p["type"]: p for p in body["processors"]}
    assert {"shell", "http", "sleep", "log", "python"} <= set(kinds)
    shell = {o["name"]: o for o in kinds["shell"]["options"]}
    assert shell["kill_grace"]["default"] == 5.0 and not shell["command"]["required"]
    assert {o["name"] for o in kinds["http"]["options"]} >= {"url", "method", "json", "expect", "timeout"}
