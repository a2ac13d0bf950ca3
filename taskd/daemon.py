"""Wiring and lifecycle: store, engine and API on an exit stack; signals, reload, sd_notify,
watchdog, retention and shutdown. The only module that installs signal handlers and opens sockets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import stat
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from taskd import __version__, logs
from taskd.clock import Clock, SystemClock
from taskd.cluster import Coordinator, coordinator_for
from taskd.config import Config, load_config, parse_listen
from taskd.engine import Engine
from taskd.errors import ConfigError, TaskdError
from taskd.http.app import create_app
from taskd.metrics import Metrics
from taskd.processor import describe
from taskd.procgroup import kill_run_processes
from taskd.store import Store, StoreError, open_store
from taskd.store.base import redacted
from taskd.systemd import Notifier

log = structlog.get_logger("taskd.daemon")

RETENTION_INTERVAL_S = 3600.0


class StartupError(TaskdError):
    """The daemon cannot start (port in use, socket path unusable)."""


GC_THRESHOLDS = (300_000, 10, 10)


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path.

    Every run allocates a few dozen tracked objects, so with CPython's default threshold (700) a
    busy daemon collects young objects thousands of times a second, and each full collection walks
    the whole heap: measured, that halves run throughput. Freezing what start-up (or a reload)
    built moves the modules and the configuration out of every future collection, and a larger
    first-generation threshold makes collections rarer (a burst of 10,000 runs otherwise pays for a
    dozen collections of objects that are all still alive: measured, 25% of its loop time);
    garbage cycles still get collected, at most a few hundred thousand objects late.
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

    def __init__(self, config_path: str, config: Config, env: Mapping[str, str], clock: Clock | None = None) -> None:
        self.config_path = config_path
        self.config = config
        self.env = env
        self.clock: Clock = clock or SystemClock()
        self.notifier = Notifier(env.get("NOTIFY_SOCKET"))
        self._stop = asyncio.Event()
        self._side_tasks: list[asyncio.Task[None]] = []
        self.engine: Engine | None = None

    async def run(self) -> int:
        config = self.config
        async with contextlib.AsyncExitStack() as stack:
            metrics = Metrics(__version__, per_task=config.metrics.per_task)
            store = open_store(config.store_location, self.clock)
            store.commit_observer = metrics.store_committed
            await store.open()
            stack.push_async_callback(store.close)
            coordinator = coordinator_for(store, config.node.name, config.node.labels, self.clock)
            engine = self.engine = Engine(config, store, clock=self.clock, metrics=metrics, coordinator=coordinator)
            await coordinator.join()  # first: another live process may hold this node's name
            stack.push_async_callback(coordinator.leave)
            await self._recover(coordinator)
            await engine.start()
            stack.push_async_callback(engine.shutdown, 0.0)  # if start-up fails from here on
            tune_gc()
            app = create_app(engine, store, config.api.token, config.api.max_body_bytes, metrics)
            runner = web.AppRunner(app)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            address = await self._listen(runner, config)
            stack.push_async_callback(self._cancel_side_tasks)
            # Unwound first: runs drain while the API still answers, then the rest closes.
            stack.push_async_callback(self._drain, engine)
            self._install_signals()
            self._watch(store.writer, "store writer")
            self._watch(coordinator.task, "heartbeat")
            self._spawn(self._retention(store), "retention")
            self._start_watchdog()
            log.info(
                "taskd_ready",
                version=__version__,
                listen=address,
                tasks=engine.task_count,
                held_back=sorted(engine.held_back),
                store=redacted(config.store_location),
                max_concurrent_tasks=config.task.max_concurrent_tasks,
            )
            self.notifier.notify("READY=1", f"STATUS=taskd {__version__}: {engine.task_count} tasks")
            await self._stop.wait()
            self.notifier.notify("STOPPING=1")
        log.info("taskd_stopped")
        return 0

    async def _recover(self, coordinator: Coordinator) -> None:
        """Runs a dead process left active become interrupted; the children they left are killed."""
        interrupted = await coordinator.recover(self.clock.time())
        for run in interrupted:
            log.warning("run_interrupted", task_id=run.task_id, run_id=run.id, reason=run.error)
        killed = await asyncio.to_thread(kill_run_processes, [run.id for run in interrupted])
        if killed:
            log.warning("orphans_killed", process_groups=killed, reason="left running by interrupted runs")

    async def _drain(self, engine: Engine) -> None:
        grace_s = self.config.task.shutdown_timeout
        log.info("taskd_stopping", active_runs=engine.load().active_runs, grace_s=grace_s)
        await engine.shutdown(grace_s)

    async def _cancel_side_tasks(self) -> None:
        for task in self._side_tasks:
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)

    async def _listen(self, runner: web.AppRunner, config: Config) -> str:
        target = parse_listen(config.api.listen)
        try:
            if isinstance(target, str):
                path = _prepare_socket_path(target)
                await web.UnixSite(runner, str(path)).start()
                os.chmod(path, 0o660)
                return f"unix:{path}"
            host, port = target
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {config.api.listen}: {exc.strerror or exc}") from None
        bound = runner.addresses[0] if runner.addresses else (host, port)
        return f"{bound[0]}:{bound[1]}"

    # -- signals and reload ----------------------------------------------------------------------
    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload(), "reload"))

    def request_stop(self, why: str = "requested") -> None:
        """Stop gracefully; asked again while draining, stop the remaining runs at once."""
        if not self._stop.is_set():
            log.info("stop_requested", signal=why, grace_s=self.config.task.shutdown_timeout)
            self._stop.set()
        elif self.engine is not None and not self.engine.hurried:
            log.warning("stop_hurried", signal=why, reason="asked again while draining: remaining runs stop now")
            self.engine.hurry()

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
            try:
                self.engine.reload(config)
            except Exception as exc:  # a bug, not a config error: still no reason to stop the daemon
                log.exception(
                    "config_reload_failed", path=self.config_path, errors=[describe(exc)], kept="previous config"
                )
                return False
            logs.set_level(config.log.level, config.task.debug, config.task.log_task_execution)
            logs.set_access(config.log.access)
            self.config = config
            tune_gc()
            return True
        finally:
            self.notifier.notify("READY=1")

    # -- side tasks ------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=f"taskd-{name}")
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

    async def _retention(self, store: Store) -> None:
        while True:
            retention = self.config.store.retention
            try:
                removed = await store.prune(self.clock.time(), retention.days, retention.max_runs_per_task)
                if removed:
                    log.info("retention_pruned", runs=removed)
            except StoreError as exc:
                log.warning("retention_failed", error=str(exc))
            await self.clock.sleep(RETENTION_INTERVAL_S)

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
            await self.clock.sleep(interval)


def run_daemon(config_path: str, config: Config, env: Mapping[str, str]) -> int:
    """Set up logging and run the daemon on an already loaded config until it is told to stop."""
    task, log_section = config.task, config.log
    logs.configure(log_section.level, log_section.format, None, task.debug, task.log_task_execution, log_section.access)
    try:
        return asyncio.run(Daemon(config_path, config, env).run())
    except (StartupError, StoreError) as exc:
        log.error("taskd_cannot_start", error=str(exc))
        return 1
