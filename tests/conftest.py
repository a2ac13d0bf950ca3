"""Shared fixtures: a real `taskd run` subprocess on a free loopback port, with a temp SQLite file;
and the real aiohttp app with the real engine and SQLite store in-process, on an ephemeral port.

Two tiers: `tests/unit/` runs in-process (no process started, no PostgreSQL server unless the whole
suite runs on it with TASKD_TEST_STORE=postgres, no browser), and a unit test that starts a process
fails; `tests/e2e/` holds the real daemons, clusters on PostgreSQL, systemd checks and the browser."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict
from support.chain import harness, receiver  # noqa: F401  # fixtures of the chain tests in both tiers

from taskd import __version__
from taskd.clock import Clock, FakeClock
from taskd.config import load_config
from taskd.engine import Engine
from taskd.errors import ConfigError
from taskd.http.access import Access
from taskd.http.app import create_app
from taskd.metrics import Metrics
from taskd.models import ReloadOutcome
from taskd.store import Store, open_store
from taskd.store.buffer import BufferedStore

T = TypeVar("T")
UNIT = Path(__file__).resolve().parent / "unit"


@pytest.fixture(autouse=True)
def _unit_tier_stays_in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A unit test that starts a process, or reaches PostgreSQL when the suite is not running on
    it, fails (even when the code under test caught the refusal): it belongs in tests/e2e."""
    if UNIT not in Path(str(request.node.path)).parents:
        yield
        return
    tried: list[str] = []

    def refused(*args: Any, **kwargs: Any) -> Any:
        tried.append(repr(args[1:3])[:200])
        raise AssertionError("a unit test may not start a process or reach PostgreSQL: move it to tests/e2e")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refused)
    if not ON_POSTGRES:
        import asyncpg

        monkeypatch.setattr(asyncpg, "connect", refused)
        monkeypatch.setattr(asyncpg, "create_pool", refused)
    yield
    assert tried == [], "a unit test started a process or reached PostgreSQL: move it to tests/e2e"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)
        last = predicate()
    return last


async def until(predicate: Callable[[], bool], what: str = "") -> None:
    """Poll `predicate` on the event loop until it holds; fail after 10 seconds."""
    try:
        async with asyncio.timeout(10):
            while not predicate():  # noqa: ASYNC110  # polled with a deadline
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after 10s waiting for {what or predicate}") from None


def ts(value: str | None) -> float:
    """An ISO instant from the API as epoch seconds."""
    assert value is not None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def encode_request(
    token: str | None, body: Any, raw: bytes | None, headers: dict[str, str] | None
) -> tuple[bytes | None, dict[str, str]]:
    """A request's body (JSON unless `raw`) and headers (content type, bearer token, extras)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    all_headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    all_headers.update(headers or {})
    return data, all_headers


class Response:
    def __init__(self, status: int, body: bytes, headers: CIMultiDict[str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


class Daemon:
    """A `taskd run` process in its own directory."""

    def __init__(self, directory: Path, config: str, env: dict[str, str] | None = None) -> None:
        self.dir = directory
        self.port = free_port()
        self.env = env or {}
        self.token: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "daemon.log"
        self.config_path = directory / "taskd.yml"
        self.write_config(config)

    def write_config(self, config: str) -> None:
        text = textwrap.dedent(config).replace("{port}", str(self.port))
        self.config_path.write_text(text)

    def start(
        self, ready: bool = True, extra_env: dict[str, str] | None = None, preexec: Callable[[], None] | None = None
    ) -> Daemon:
        env = {**os.environ, **self.env}
        env.pop("NOTIFY_SOCKET", None)  # only a test that asks for sd_notify gets one
        env.update(extra_env or {})
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "taskd", "run", "-c", str(self.config_path)],
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=preexec,
        )
        log.close()
        if ready:
            wait_for(self._healthy, timeout=20, what=f"taskd to answer /health; log:\n{self.output()[-3000:]}")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"taskd exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
        try:
            return self.request("GET", "/health").status == 200
        except OSError:
            return False

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Response:
        data, all_headers = encode_request(self.token, body, raw, headers)
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Response(resp.status, resp.read(), CIMultiDict(resp.headers.items()))
        except urllib.error.HTTPError as err:
            return Response(err.code, err.read(), CIMultiDict(err.headers.items()))

    # -- conveniences ----------------------------------------------------------------------------
    def start_task(self, task_id: str, params: dict[str, Any] | None = None) -> str:
        resp = self.request("POST", f"/task/{task_id}/_start", {"params": params} if params is not None else None)
        assert resp.status == 202, resp.text
        return str(resp.json()["run_id"])

    def run(self, run_id: str) -> dict[str, Any]:
        resp = self.request("GET", f"/run/{run_id}")
        assert resp.status == 200, resp.text
        return dict(resp.json())

    def wait_run(
        self, run_id: str, states: tuple[str, ...] = ("completed", "failed", "stopped"), timeout: float = 15
    ) -> dict[str, Any]:
        return wait_for(
            lambda: (r := self.run(run_id))["state"] in states and r, timeout=timeout, what=f"run {run_id} in {states}"
        )

    def runs(self, task_id: str, **query: Any) -> list[dict[str, Any]]:
        qs = "&".join(f"{k}={v}" for k, v in {"limit": 1000, **query}.items())
        resp = self.request("GET", f"/task/{task_id}/runs?{qs}")
        assert resp.status == 200, resp.text
        return list(resp.json()["runs"])

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"taskd did not exit within {timeout}s:\n{self.output()[-3000:]}") from None


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Make Daemon objects in tmp_path; whatever is still running at the end is killed. With
    TASKD_TEST_STORE=postgres, a config on the default SQLite file gets a PostgreSQL schema of its
    own instead (one per daemon directory, dropped at the end)."""
    made: list[Daemon] = []
    schemas: dict[Path, str] = {}

    def make(config: str, env: dict[str, str] | None = None, subdir: str = "d") -> Daemon:
        directory = tmp_path / subdir
        directory.mkdir(exist_ok=True)
        if ON_POSTGRES and "store: {path: ./var/taskd.db}" in config:
            if directory not in schemas:
                schemas[directory] = f"taskd_test_{os.getpid()}_{abs(hash(str(directory))) % 10**9}"
                _blocking(_create_schema(schemas[directory]))
            url = f"{POSTGRES_URL}?search_path={schemas[directory]}"
            config = config.replace("store: {path: ./var/taskd.db}", f"store: {{url: '{url}'}}")
        daemon = Daemon(directory, config, env)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait()
    for schema in schemas.values():
        _blocking(_drop_schema(schema))


def processes_matching(marker: str) -> list[int]:
    """PIDs whose command line contains `marker` (read from /proc, no pgrep needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "pytest" not in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def hold_s() -> Iterator[str]:
    """How long a test's step `sleep`s, as a value no other test uses (and no other test's marker
    contains): a node killed by the test leaves its step's sleep, and that sleep alone (or any
    whose seconds begin with it) is killed after the test, while other tests' sleeps may be
    running beside it in other workers."""
    seconds = f"61.{random.randrange(10**6):06d}"
    yield seconds
    kill_matching(f"sleep {seconds}")


def kill_matching(marker: str) -> None:
    for pid in processes_matching(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def base_config(tasks: str, pipelines: str, slots: int = 10, extra: str = "") -> str:
    """A taskd.yml on {port} with a store under ./var; `tasks` and `pipelines` are YAML list bodies."""
    return (
        f"task: {{max_concurrent_tasks: {slots}, shutdown_timeout: 5s}}\n"
        "api: {listen: '127.0.0.1:{port}'}\n"
        "store: {path: ./var/taskd.db}\n"
        "log: {level: info, format: json}\n"
        + textwrap.dedent(extra)
        + "tasks:\n"
        + textwrap.indent(textwrap.dedent(tasks).strip("\n"), "  ")
        + "\npipelines:\n"
        + textwrap.indent(textwrap.dedent(pipelines).strip("\n"), "  ")
        + "\n"
    )


class Api:
    """The real app (engine, SQLite store in a temp dir, routes) served in-process on a free port."""

    def __init__(self, client: TestClient[Any, Any], engine: Engine, store: Store) -> None:
        self.client = client
        self.engine = engine
        self.store = store
        self.token: str | None = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        data, all_headers = encode_request(self.token, body, raw, headers)
        resp: ClientResponse = await self.client.request(method, path, data=data, headers=all_headers)
        async with resp:
            return Response(resp.status, await resp.read(), CIMultiDict(resp.headers))

    async def start_task(self, task_id: str, params: dict[str, Any] | None = None) -> str:
        resp = await self.request("POST", f"/task/{task_id}/_start", {"params": params} if params is not None else None)
        assert resp.status == 202, resp.text
        return str(resp.json()["run_id"])

    async def run_state(self, run_id: str) -> str:
        """The run's state as the API shows it now."""
        resp = await self.request("GET", f"/run/{run_id}")
        assert resp.status == 200, resp.text
        return str(resp.json()["state"])

    async def wait_run(self, run_id: str) -> dict[str, Any]:
        """Wait (15 s at most) for the run to end, on the run itself, then read it through the API."""
        run = self.engine.live_run(run_id)
        if run is not None:
            await asyncio.wait_for(run.done.wait(), 15)
        resp = await self.request("GET", f"/run/{run_id}")
        assert resp.status == 200, resp.text
        return dict(resp.json())


ON_POSTGRES = os.environ.get("TASKD_TEST_STORE") == "postgres"
"""TASKD_TEST_STORE=postgres runs the in-process API tests on PostgreSQL instead of SQLite files."""


@pytest.fixture
async def api_factory(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    """Make an `Api` from a config text (`base_config(...)`), its engine on `clock` (the system's by
    default); everything is closed at the end. With TASKD_TEST_STORE=postgres, a config on the
    default SQLite file uses a fresh PostgreSQL schema instead."""
    made: list[tuple[Api, Store]] = []

    async def make(
        config: str, env: dict[str, str] | None = None, heartbeat_s: float = 15.0, clock: Clock | None = None
    ) -> Api:
        directory = tmp_path / f"api{len(made)}"
        directory.mkdir()
        if ON_POSTGRES and "store: {path: ./var/taskd.db}" in config:
            url = f"{POSTGRES_URL}?search_path={await postgres_schema(request)}_{len(made)}"
            await _create_schema(url.rpartition("=")[2])
            config = config.replace("store: {path: ./var/taskd.db}", f"store: {{url: '{url}'}}")
        (directory / "taskd.yml").write_text(textwrap.dedent(config).replace("{port}", "0"))
        loaded = load_config(directory / "taskd.yml", env or {})
        metrics = Metrics(__version__, per_task=loaded.metrics.per_task)
        store = open_store(loaded.store_location)
        store.commit_observer = metrics.store_committed
        await store.open()
        if isinstance(clock, FakeClock) and isinstance(store, BufferedStore):
            clock.waits_for(store.settled)
        engine = Engine(loaded, store, metrics=metrics, clock=clock)
        await engine.start()

        async def reload() -> ReloadOutcome:  # what the daemon's reload does, without its logging
            try:
                fresh = load_config(directory / "taskd.yml", env or {})
            except ConfigError as exc:
                engine.last_reload = ReloadOutcome(engine.clock.time(), False, exc.problems)
            else:
                engine.last_reload = ReloadOutcome(engine.clock.time(), True, changes=engine.reload(fresh))
            return engine.last_reload

        app = create_app(
            engine, store, Access.of(loaded.api), loaded.api.max_body_bytes, metrics, heartbeat_s, reload=reload
        )
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        api = Api(client, engine, store)
        made.append((api, store))
        return api

    yield make
    for api, store in reversed(made):
        await api.client.close()
        await api.engine.shutdown(1)
        await store.close()


POSTGRES_URL = os.environ.get("TASKD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""The PostgreSQL server the tests use; each test makes a schema of its own and drops it."""


async def postgres_schema(request: pytest.FixtureRequest) -> str:
    """A fresh schema in the test database, dropped when the test ends. Skips when the server cannot
    be reached, unless TASKD_REQUIRE_POSTGRES is set (CI), where that fails the test instead."""
    import asyncpg

    try:
        db = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("TASKD_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}")
    await db.close()
    schema = f"taskd_test_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**9}"
    await _drop_schema(schema)
    await _create_schema(schema)

    def drop() -> None:
        _blocking(_drop_schema(schema))

    request.addfinalizer(drop)
    return schema


def _blocking(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` to its end from synchronous code, even where a loop runs (Playwright's sync API)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _drop_schema(name: str) -> None:
    await _schema_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


async def _create_schema(name: str) -> None:
    await _schema_sql(f'CREATE SCHEMA IF NOT EXISTS "{name}"')


async def _schema_sql(sql: str) -> None:
    import asyncpg

    db = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await db.execute(sql)
    finally:
        await db.close()
