"""Wiring and lifecycle: store, engine and API; signals, reload, sd_notify, watchdog, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import os
import signal
import stat
import time
from collections.abc import Mapping
from pathlib import Path

import structlog
from aiohttp import web

from taskd import __version__, logs
from taskd.api import create_app
from taskd.config import Config, load_config, parse_listen
from taskd.engine import Engine
from taskd.errors import ConfigError, TaskdError
from taskd.processors.shell import kill_orphans
from taskd.sdnotify import Notifier
from taskd.store.sqlite import SQLiteStore, StoreError

log = structlog.get_logger("taskd.daemon")

RETENTION_INTERVAL_S = 3600.0


class StartupError(TaskdError):
    """The daemon cannot start (unsafe listen address, port in use, store unusable)."""


def check_listen_safety(config: Config) -> None:
    """Refuse a non-loopback TCP address without a token unless `api.insecure: true`."""
    target = parse_listen(config.api.listen)
    if isinstance(target, str) or config.api.token or config.api.insecure:
        return
    host = target[0]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise StartupError(
            f"refusing to listen on {config.api.listen} without api.token: anyone who can reach it could "
            "start, stop and delete tasks. Set api.token (e.g. token: ${TASKD_TOKEN}), listen on 127.0.0.1, "
            "or set api.insecure: true if the network is trusted."
        )


GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path.

    Every run allocates a few dozen tracked objects, so with CPython's default threshold (700) a
    busy daemon collects young objects thousands of times a second, and each full collection walks
    the whole heap: measured, that halves run throughput. Freezing what start-up (or a reload)
    built moves the modules and the configuration out of every future collection, and a larger
    first-generation threshold makes collections rarer; garbage cycles still get collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _prepare_socket_path(target: str) -> Path:
    """Create the socket's directory and remove a socket file left behind by a previous process."""
    path = Path(target)
    if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class Daemon:
    """One taskd process. `run()` returns the exit code."""

    def __init__(self, config_path: str, config: Config, env: Mapping[str, str]) -> None:
        self.config_path = config_path
        self.config = config
        self.env = env
        self.notifier = Notifier(env.get("NOTIFY_SOCKET"))
        self._stop = asyncio.Event()
        self._side_tasks: list[asyncio.Task[None]] = []
        self.engine: Engine | None = None

    async def run(self) -> int:
        config = self.config
        check_listen_safety(config)
        store = SQLiteStore(config.store_path)
        await store.open()
        try:
            interrupted = await store.recover_interrupted(time.time())
            for run in interrupted:
                log.warning("run_interrupted", task_id=run.task_id, run_id=run.id, reason=run.error)
            killed = await asyncio.to_thread(kill_orphans, [run.id for run in interrupted])
            if killed:
                log.warning("orphans_killed", process_groups=killed, reason="left running by interrupted runs")
            engine = self.engine = Engine(config, store)
            await engine.start()
            tune_gc()
            runner = web.AppRunner(create_app(engine, store, config.api.token, config.api.max_body_bytes))
            await runner.setup()
            try:
                address = await self._listen(runner, config)
                self._install_signals()
                self._watch(store._writer, "store writer")
                self._spawn(self._retention(store), "retention")
                self._start_watchdog()
                log.info(
                    "taskd_ready",
                    version=__version__,
                    listen=address,
                    tasks=len(engine.tasks),
                    held_back=sorted(engine.held_back),
                    store=str(config.store_path),
                    max_concurrent_tasks=config.task.max_concurrent_tasks,
                )
                self.notifier.notify("READY=1", f"STATUS=taskd {__version__}: {len(engine.tasks)} tasks")
                await self._stop.wait()
                self.notifier.notify("STOPPING=1")
                log.info("taskd_stopping", active_runs=len(engine.runs), grace_s=self.config.task.shutdown_timeout)
                await engine.shutdown(self.config.task.shutdown_timeout)
            finally:
                await runner.cleanup()
        finally:
            for task in self._side_tasks:
                task.cancel()
            await asyncio.gather(*self._side_tasks, return_exceptions=True)
            await store.close()
        log.info("taskd_stopped")
        return 0

    async def _listen(self, runner: web.AppRunner, config: Config) -> str:
        target = parse_listen(config.api.listen)
        try:
            if isinstance(target, str):
                path = _prepare_socket_path(target)
                site: web.BaseSite = web.UnixSite(runner, str(path))
                await site.start()
                os.chmod(path, 0o660)
                return f"unix:{path}"
            host, port = target
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {config.api.listen}: {exc.strerror or exc}") from None
        sockets = getattr(site._server, "sockets", None) or []
        bound = sockets[0].getsockname() if sockets else (host, port)
        return f"{bound[0]}:{bound[1]}"

    # -- signals and reload ----------------------------------------------------------------------
    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload(), "reload"))

    def request_stop(self, why: str = "requested") -> None:
        if not self._stop.is_set():
            log.info("stop_requested", signal=why)
            self._stop.set()

    async def reload(self) -> bool:
        """Re-read the configuration; keep the running one when the new one has errors."""
        assert self.engine is not None
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            try:
                config = await asyncio.to_thread(load_config, self.config_path, self.env)
            except ConfigError as exc:
                log.error(
                    "config_reload_failed", path=self.config_path, errors=list(exc.problems), kept="previous config"
                )
                return False
            if config.api != self.config.api or config.store != self.config.store:
                log.warning("restart_needed", reason="api: and store: changes take effect at the next start")
            logs.set_level(config.log.level)
            self.engine.reload(config)
            self.config = config
            tune_gc()
            return True
        finally:
            self.notifier.notify("READY=1")

    # -- side tasks ------------------------------------------------------------------------------
    def _spawn(self, coro: object, name: str) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        task.set_name(f"taskd-{name}")
        self._watch(task, name)
        self._side_tasks.append(task)

    def _watch(self, task: asyncio.Task[None] | None, name: str) -> None:
        """A side task that dies with an error takes the daemon down instead of dying silently."""
        if task is None:
            return

        def done(finished: asyncio.Task[None]) -> None:
            if finished.cancelled():
                return
            exc = finished.exception()
            if exc is not None:
                log.error("side_task_failed", task=name, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
                self.request_stop(f"{name} failed")

        task.add_done_callback(done)

    async def _retention(self, store: SQLiteStore) -> None:
        while True:
            retention = self.config.store.retention
            try:
                removed = await store.prune(time.time(), retention.days, retention.max_runs_per_task)
                if removed:
                    log.info("retention_pruned", runs=removed)
            except StoreError as exc:
                log.warning("retention_failed", error=str(exc))
            await asyncio.sleep(RETENTION_INTERVAL_S)

    def _start_watchdog(self) -> None:
        usec = self.env.get("WATCHDOG_USEC")
        pid = self.env.get("WATCHDOG_PID")
        if not usec or not self.notifier.enabled or (pid and pid != str(os.getpid())):
            return
        with contextlib.suppress(ValueError):
            interval = int(usec) / 2_000_000
            self._spawn(self._watchdog(interval), "watchdog")

    async def _watchdog(self, interval: float) -> None:
        assert self.engine is not None
        while True:
            if self.engine.scheduler_running:
                self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


def run_daemon(config_path: str, config: Config, env: Mapping[str, str]) -> int:
    """Set up logging and run the daemon on an already loaded config until it is told to stop."""
    logs.configure(config.log.level, config.log.format)
    try:
        return asyncio.run(Daemon(config_path, config, env).run())
    except (StartupError, StoreError) as exc:
        log.error("taskd_cannot_start", error=str(exc))
        return 1
