"""The daemon's edge as an attacker or a careless client meets it: what tasks can see, what pages
show, slow and malformed connections, paged logs, and the client CLI without a usable config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import socket
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
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
          params: {user: bob, password: default-Pass-123, api_key: {header: key-in-a-map-77, pin: 24681357}}
    """
    pipelines = """
        - name: deploy
          processors:
            - shell:
                command: 'printf %s "$TASKD_PARAM_PASSWORD" > seen.txt; printf "login %s\\n" "$TASKD_PARAM_PASSWORD"'
            - log: {message: 'user {params.user} with {params.password}; all: {params}'}
            - shell: {argv: [python3, -c, 'import json, os; print(json.dumps(os.environ["TASKD_PARAM_PASSWORD"]))']}
            - http: {url: 'http://127.0.0.1:{free_port}/login?pw={params.password}', timeout: 2s}
            - send_alert: {log: true, message: 'deploy failed for {params.password}'}
    """
    daemon = daemon_factory(_config(tasks, pipelines.replace("{free_port}", str(free_port()))))
    daemon.start()
    secret = "runtime-Secret-42/x y\"\\\\ä'"
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
        for value in ("Secret-42", "default-Pass-123", "key-in-a-map-77", "24681357"):
            assert value not in text, (value, text[:2000])


def _soft_limit(limit: int) -> Any:
    """A preexec_fn giving the child systemd's default soft limit on descriptors."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    return apply


def test_two_thousand_idle_and_trickling_clients_cannot_take_the_api_down(daemon_factory: Any) -> None:
    """With systemd's soft limit of 1,024 descriptors, 1,000 idle and 1,000 trickling connections:
    /health still answers within a second, and the log stays small."""
    tasks = "- {id: quick, pipeline: noop}"
    pipelines = "- {name: noop, processors: [{shell: {argv: ['true']}}]}"
    daemon = daemon_factory(_config(tasks, pipelines, ", header_timeout: 3s, max_connections: 500"))
    daemon.start(preexec=_soft_limit(1024))
    assert daemon.proc is not None
    limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text()
    soft, hard = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()  # type: ignore[union-attr]
    assert int(soft) == int(hard) > 1024

    async def attack() -> list[float]:
        writers = []
        for i in range(2000):
            _, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
            if i % 2:
                writer.write(b"GET /tasks HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            writers.append(writer)
        timings = []
        stop = time.monotonic() + 8
        while time.monotonic() < stop:
            for i, writer in enumerate(writers):
                if i % 2 and not writer.is_closing():
                    writer.write(b"a")
            began = time.monotonic()
            reader, probe = await asyncio.open_connection("127.0.0.1", daemon.port)
            probe.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), timeout=5)
            timings.append(time.monotonic() - began)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            probe.close()
            await asyncio.sleep(0.25)
        for writer in writers:
            writer.close()
        return timings

    timings = asyncio.run(attack())
    assert len(timings) >= 10 and max(timings) < 1.0, timings
    assert daemon.log_path.stat().st_size < 1_000_000
    assert daemon.request("GET", "/health").status == 200
    events = daemon.events()
    refused = [e for e in events if e.get("event") == "api_connection_refused"]
    assert refused and {e["kind"] for e in refused} <= {"max_connections", "header_timeout", "bad_request"}
    assert not [e for e in events if e.get("level") == "error"]


def test_protocol_errors_are_json_400s_without_the_clients_bytes_or_a_traceback(daemon_factory: Any) -> None:
    tasks = "- {id: quick, pipeline: noop}"
    pipelines = "- {name: noop, processors: [{shell: {argv: ['true']}}]}"
    daemon = daemon_factory(_config(tasks, pipelines, ", token: sekrit-token"))
    daemon.start()
    for raw in (
        b"G\x00T / HTTP/1.1\r\n\r\n",
        b"GET /<script>alert(1)</script> HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header <script>\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    ):
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] 400 ", head), answer
        assert b"application/json" in head
        assert json.loads(body)["error"]["code"] == "bad_request"
        assert b"script" not in body and b"\x16" not in body
    for method, path in (("TRACE", "/health"), ("PUT", "/openapi.json"), ("PATCH", "/tasks"), ("TRACE", "/task/x")):
        resp = daemon.request(method, path)
        assert resp.status == 405, (method, path, resp.status)
        assert resp.json()["error"]["code"] == "method_not_allowed" and "Allow" in resp.headers
    output = daemon.output()
    assert "Traceback" not in output and '"level": "error"' not in output


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def test_four_reads_of_an_80_mb_log_at_once_stay_under_50_mb_and_taskd_logs_pages(daemon_factory: Any) -> None:
    tasks = "- {id: chatty, pipeline: chatty}"
    pipelines = """
        - name: chatty
          processors:
            - shell: {argv: [python3, -c, "import sys\\nfor i in range(10000): print(str(i).rjust(8000, 'x'))"]}
    """
    daemon = daemon_factory(_config(tasks, pipelines))
    daemon.start()
    run_id = daemon.start_task("chatty")
    assert daemon.wait_run(run_id, timeout=120)["state"] == "completed"
    assert daemon.proc is not None
    pid = daemon.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak RSS starts again from here
    before = _rss_kib(pid)

    async def read_all() -> list[int]:
        async with aiohttp.ClientSession() as session:

            async def one() -> int:
                size = 0
                async with session.get(f"http://127.0.0.1:{daemon.port}/run/{run_id}/log") as resp:
                    assert resp.status == 200
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        size += len(chunk)
                return size

            return list(await asyncio.gather(*(one() for _ in range(4))))

    sizes = asyncio.run(read_all())
    added_mib = (_rss_kib(pid, "VmHWM") - before) / 1024
    assert all(size > 80_000_000 for size in sizes), sizes
    assert added_mib < 50, f"four reads added {added_mib:.0f} MiB"

    from support.cli import taskd

    printed = taskd("logs", run_id, "--url", f"http://127.0.0.1:{daemon.port}")
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert len(lines) == 10000 and lines[0].endswith("x0") and lines[-1].endswith("x9999")


def test_a_burst_of_connections_is_cut_back_to_max_connections(daemon_factory: Any) -> None:
    tasks = "- {id: quick, pipeline: noop}"
    pipelines = "- {name: noop, processors: [{shell: {argv: ['true']}}]}"
    daemon = daemon_factory(_config(tasks, pipelines, ", max_connections: 8"))
    daemon.start()

    async def burst() -> int:
        async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
            with contextlib.suppress(ConnectionError):  # closed already, to make room: fine
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                await writer.drain()
            return reader, writer

        pairs = await asyncio.gather(*(one() for _ in range(100)))
        readers = [reader for reader, _ in pairs]

        async def closed(reader: asyncio.StreamReader) -> bool:
            """Whether the daemon has closed it (its answer read and dropped)."""
            try:
                async with asyncio.timeout(0.2):
                    while await reader.read(65536):
                        pass
                    return True
            except ConnectionError:  # reset: closed too
                return True
            except TimeoutError:
                return False

        # Polled with a deadline: a loaded machine answers the burst slowly.
        deadline = time.monotonic() + 15
        while readers and time.monotonic() < deadline:
            done = await asyncio.gather(*(closed(reader) for reader in readers))
            readers = [reader for reader, gone in zip(readers, done, strict=True) if not gone]
            if len(readers) <= 8:
                break
        for _, writer in pairs:
            writer.close()
        return len(readers)

    still_open = asyncio.run(burst())
    assert still_open <= 8, f"{still_open} connections left open past max_connections 8"
    assert daemon.request("GET", "/health").status == 200


def test_an_unknown_expectation_is_a_json_417_that_echoes_nothing(daemon_factory: Any) -> None:
    tasks = "- {id: quick, pipeline: noop}"
    pipelines = "- {name: noop, processors: [{shell: {argv: ['true']}}]}"
    daemon = daemon_factory(_config(tasks, pipelines))
    daemon.start()
    for path in ("/health", "/tasks", "/nowhere"):
        resp = daemon.request("GET", path, headers={"Expect": "<script>alert(1)</script>"})
        assert resp.status == 417 and resp.headers["Content-Type"].startswith("application/json"), (path, resp.text)
        assert "script" not in resp.text
    started = daemon.request("POST", "/task/quick/_start", body={}, headers={"Expect": "100-continue"})
    assert started.status == 202, started.text
