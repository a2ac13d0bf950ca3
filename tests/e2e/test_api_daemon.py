"""The API through `taskd run`: the access log, and the unix socket listener."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from conftest import Api, Daemon, base_config, wait_for
from support.api import PIPELINES, TASKS


@pytest.fixture
async def api(api_factory: Callable[..., Awaitable[Api]]) -> Api:
    return await api_factory(base_config(TASKS, PIPELINES))


def test_the_access_log_is_off_by_default_and_on_with_log_access(daemon_factory: Callable[..., Daemon]) -> None:
    config = base_config(TASKS, PIPELINES)
    for name, text in (("off", config), ("on", config.replace("format: json}", "format: json, access: true}"))):
        daemon = daemon_factory(text, subdir=name).start()
        assert daemon.request("GET", "/tasks?q=access-probe").status == 200
        assert daemon.stop() == 0
        access = [e for e in daemon.events() if e.get("logger") == "aiohttp.access"]
        if name == "off":
            assert access == []
        else:
            assert any("GET /tasks?q=access-probe" in e["event"] for e in access), access


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
