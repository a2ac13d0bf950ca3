"""The seed's pipelines as shipped in pipelines/, run by a real daemon on the bundled taskd.yml."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def webhook() -> Iterator[dict[str, Any]]:
    received: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}/alert", "received": received}
    server.shutdown()


def bundled(factory: Callable[..., Daemon], subdir: str = "d", **env: str) -> Daemon:
    """A daemon on a copy of the bundled taskd.yml and pipelines/, on a free port."""
    daemon = factory("placeholder: true\n", subdir=subdir)
    text = (ROOT / "taskd.yml").read_text()
    # Keep the suite fast: the bundled health check waits 10s between retries.
    daemon.config_path.write_text(text.replace("retry: {count: 2, backoff: 10s, max_backoff: 1m}", "retry: {count: 0}"))
    shutil.copytree(ROOT / "pipelines", daemon.dir / "pipelines")
    daemon.port = free_port()
    daemon.env = {
        "TASKD_LISTEN": f"127.0.0.1:{daemon.port}",
        "TASKD_URL": f"http://127.0.0.1:{daemon.port}",
        "TASKD_DISK_THRESHOLD": "100",
        "TASKD_MEMORY_THRESHOLD": "100",
        **env,
    }
    return daemon.start()


def test_backup_produces_a_correct_archive(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = bundled(daemon_factory)
    run = daemon.wait_run(daemon.start_task("data_backup"), timeout=30)
    assert run["state"] == "completed", run["error"]
    archives = sorted((daemon.dir / "var" / "backups").glob("pipelines-*.tar.gz"))
    assert len(archives) == 1
    assert list((daemon.dir / "var" / "staging").iterdir()) == []
    unpacked = daemon.dir / "unpacked"
    with tarfile.open(archives[0]) as tar:
        tar.extractall(unpacked, filter="tar")
    (top,) = unpacked.iterdir()
    compared = filecmp.dircmp(daemon.dir / "pipelines", top)
    assert not compared.left_only and not compared.right_only and not compared.diff_files
    assert sorted(compared.common_files) == ["backup.yml", "health.yml", "rotation.yml"]
    steps = [s["type"] for s in run["attempt_list"][0]["steps"]]
    assert steps == ["copy", "compress", "upload", "rotate", "rotate"]


def test_health_check_alerts_once_when_a_threshold_is_crossed(
    daemon_factory: Callable[..., Daemon], webhook: dict[str, Any]
) -> None:
    quiet = bundled(daemon_factory, TASKD_ALERT_WEBHOOK=webhook["url"])
    run = quiet.wait_run(quiet.start_task("health_check"), timeout=30)
    assert run["state"] == "completed", run["error"]
    time.sleep(0.3)
    assert webhook["received"] == []
    assert quiet.stop() == 0

    loud = bundled(daemon_factory, "loud", TASKD_ALERT_WEBHOOK=webhook["url"], TASKD_DISK_THRESHOLD="0")
    run = loud.wait_run(loud.start_task("health_check"), timeout=30)
    assert run["state"] == "failed" and "above the threshold of 0%" in run["error"]
    wait_for(lambda: webhook["received"], timeout=10, what="the alert")
    again = loud.wait_run(loud.start_task("health_check"), timeout=30)
    assert again["state"] == "failed"
    time.sleep(0.3)
    (alert,) = webhook["received"]  # the second failure is no news
    assert alert["event"] == "failing" and alert["task"]["id"] == "health_check" and alert["run_id"] == run["id"]
    assert alert["state"] == "failed" and "above the threshold" in alert["error"]
    states = [s["state"] for s in run["attempt_list"][0]["steps"]]
    assert states == ["failed", "skipped", "skipped"]
    logged = [e for e in loud.events() if e.get("event") == "alert"]
    assert len(logged) == 1 and logged[0]["level"] == "warning" and logged[0]["run_id"] == run["id"]


def test_log_rotation_keeps_exactly_what_it_should(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = bundled(daemon_factory)
    logs = daemon.dir / "var" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    now = time.time()
    ages_days = [0, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20]  # 14 files, newest first
    for i, age in enumerate(ages_days):
        path = logs / f"app-{i:02d}.log"
        path.write_text(str(i))
        os.utime(path, (now - age * 86400, now - age * 86400))
    (logs / "notes.txt").write_text("not a log")
    run = daemon.wait_run(daemon.start_task("log_rotation"))
    assert run["state"] == "completed", run["error"]
    kept = sorted(p.name for p in logs.iterdir())
    assert kept == [f"app-{i:02d}.log" for i in range(10)] + ["notes.txt"]
