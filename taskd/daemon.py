"""Wiring and lifecycle: store, engine and API on an exit stack; signals, reload, sd_notify,
watchdog, retention and shutdown. The only module that installs signal handlers and opens sockets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import signal
import socket
import stat
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from taskd import __version__, cgroups, logs, reaper
from taskd.clock import Clock, SystemClock
from taskd.cluster import Coordinator, coordinator_for
from taskd.config import Config, load_config, parse_listen
from taskd.config.schema import ApiSection
from taskd.engine import Engine
from taskd.errors import ConfigError, TaskdError
from taskd.faults import RELOAD, RETENTION, STORE_KINDS, STORE_UNREACHABLE
from taskd.http.access import Access
from taskd.http.app import create_app
from taskd.http.server import GuardedRunner, Limits, quiet_loop_errors
from taskd.metrics import Metrics
from taskd.models import ReloadOutcome
from taskd.processor import describe
from taskd.procgroup import kill_run_processes, runs_with_processes
from taskd.redact import Redactor
from taskd.store import Store, StoreError, open_store
from taskd.store.base import redacted
from taskd.systemd import Notifier

log = structlog.get_logger("taskd.daemon")

RETENTION_INTERVAL_S = 3600.0
RETENTION_RETRY_S = 300.0
"""After a failed prune, how long until the next try."""
STORE_WATCH_S = 1.0
"""How often the daemon asks the store whether it is still there (file, server)."""

EXIT_OK = 0
"""Stopped by SIGTERM or SIGINT: systemd's Restart=on-failure leaves it stopped."""
EXIT_FAILURE = 1
"""Anything else: cannot start, a fault it cannot survive, a bug. systemd restarts it."""
EXIT_CONFIG = 2
"""The configuration cannot start (RestartPreventExitStatus=2: restarting cannot fix it)."""


class StartupError(TaskdError):
    """The daemon cannot start (port in use, socket path unusable)."""


LISTEN_BACKLOG = 128

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
    """Create the socket's directory and remove a socket file left behind by a previous process;
    one that a live process still answers on is refused (StartupError), never taken from it."""
    path = Path(target)
    if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                pass  # nobody listens: a leftover
            else:
                raise StartupError(f"cannot listen on unix:{path}: another process is listening on it")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class Daemon:
    """One taskd process. `run()` returns the exit code."""

    def __init__(self, config_path: str, config: Config, env: Mapping[str, str], clock: Clock | None = None) -> None:
        self.config_path = config_path
        self.config = config
        self.started = config
        """The configuration the daemon started with: its `api:` and `store:` hold until a restart."""
        self.env = env
        self.clock: Clock = clock or SystemClock()
        self.notifier = Notifier(env.get("NOTIFY_SOCKET"))
        self._stop = asyncio.Event()
        self._exit_code = EXIT_OK
        self._side_tasks: list[asyncio.Task[None]] = []
        self._reloading = asyncio.Lock()
        self.engine: Engine | None = None
        self.store: Store | None = None
        self.access = Access.of(config.api)
        """The API's tokens: a reload swaps them."""

    async def run(self) -> int:
        config = self.config
        async with contextlib.AsyncExitStack() as stack:
            # Step processes are reaped with wait4, which also tells what each used (taskd.reaper).
            reaper.install(asyncio.get_running_loop())
            stack.callback(reaper.uninstall)
            metrics = Metrics(__version__, per_task=config.metrics.per_task)
            store = self.store = open_store(config.store_location, self.clock)
            store.commit_observer = metrics.store_committed
            # Start-up order: what makes this process the store's only daemon (its lock, a node
            # name) and its socket come first; nothing is recovered, killed or fired before both.
            await store.open()
            stack.push_async_callback(self._close_store, store)
            sock = self._bind(config)
            stack.callback(sock.close)
            coordinator = coordinator_for(store, config.node.name, config.node.labels, self.clock)
            engine = self.engine = Engine(
                config, store, clock=self.clock, metrics=metrics, coordinator=coordinator, environ=self.env
            )
            await coordinator.join()  # another live process may hold this node's name
            stack.push_async_callback(coordinator.leave)
            await self._recover(coordinator)
            # A cgroup per shell step where the system lets taskd make them (limits, figures); the
            # ones a previous process of this daemon left go (recovery killed what ran in them).
            cgroups.set_up(config.task.cgroups, cgroups.instance_of(config.store_location, config.node.name))
            stack.callback(cgroups.tear_down)
            await engine.start()
            stack.push_async_callback(engine.shutdown, 0.0)  # if start-up fails from here on
            engine.on_drained = lambda: self.request_stop("drain")
            tune_gc()
            quiet_loop_errors(asyncio.get_running_loop())
            self.access = Access.of(config.api)
            app = create_app(engine, store, self.access, config.api.max_body_bytes, metrics, reload=self.reload)
            api = config.api
            runner = GuardedRunner(app, Limits(api.header_timeout, api.idle_timeout, api.max_connections))
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            address = await self._serve(runner, sock, config)
            stack.push_async_callback(self._cancel_side_tasks)
            # Unwound first: runs drain while the API still answers, then the rest closes.
            stack.push_async_callback(self._drain, engine)
            self._install_signals()
            self._watch(store.writer, "store writer")
            self._watch(coordinator.task, "heartbeat")
            self._spawn(self._retention(store, engine), "retention")
            self._spawn(self._watch_store(engine), "store watch")
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
        log.info("taskd_stopped", exit_code=self._exit_code)
        return self._exit_code

    async def _close_store(self, store: Store) -> None:
        """Commit what is staged and close. Writes that cannot be committed by now are lost: said
        in the log, and the exit code is 1 whatever asked the daemon to stop."""
        pending = store.pending_writes
        try:
            await store.close()
        except Exception as exc:
            self._exit_code = EXIT_FAILURE
            log.error(
                "store_writes_lost",
                writes=pending,
                error=str(store.explain(exc) or f"{type(exc).__name__}: {exc}"),
                exit_code=EXIT_FAILURE,
            )

    async def _recover(self, coordinator: Coordinator) -> None:
        """Runs a dead process left active become interrupted; the children they left are killed:
        those of every run of this node still running on this host, the runs another node already
        marked interrupted included (nothing of this process runs yet)."""
        interrupted = await coordinator.recover(self.clock.time())
        for run in interrupted:
            log.warning("run_interrupted", task_id=run.task_id, run_id=run.id, reason=run.error)
        found = await asyncio.to_thread(runs_with_processes)
        orphaned = {run.id for run in interrupted} | set(await coordinator.own_runs(sorted(found)))
        killed = await asyncio.to_thread(kill_run_processes, sorted(orphaned))
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

    def _bind(self, config: Config) -> socket.socket:
        """The API's listening socket, bound before anything else happens: a second daemon given
        a taken port fails here, before it touches a run. Served once the daemon is ready
        (connections made meanwhile wait in the backlog)."""
        target = parse_listen(config.api.listen)
        try:
            if isinstance(target, str):
                path = _prepare_socket_path(target)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.bind(str(path))
                    os.chmod(path, 0o660)
                    sock.listen(LISTEN_BACKLOG)
                except OSError:
                    sock.close()
                    raise
                return sock
            host, port = target
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            return socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG, reuse_port=False)
        except OSError as exc:
            raise StartupError(f"cannot listen on {config.api.listen}: {exc.strerror or exc}") from None

    async def _serve(self, runner: web.AppRunner, sock: socket.socket, config: Config) -> str:
        await web.SockSite(runner, sock).start()
        if sock.family == socket.AF_UNIX:
            return f"unix:{sock.getsockname()}"
        bound = sock.getsockname()
        return f"{bound[0]}:{bound[1]}"

    # -- signals and reload ----------------------------------------------------------------------
    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload(), "reload"))

    def request_stop(self, why: str = "requested") -> None:
        """Stop gracefully (exit 0: SIGTERM, SIGINT); asked again while draining, stop the
        remaining runs at once."""
        if not self._stop.is_set():
            log.info("stop_requested", signal=why, grace_s=self.config.task.shutdown_timeout)
            self._stop.set()
        elif self.engine is not None and not self.engine.hurried:
            log.warning("stop_hurried", signal=why, reason="asked again while draining: remaining runs stop now")
            self.engine.hurry()

    def fail(self, why: str) -> None:
        """Stop because of a fault the daemon cannot survive: exit 1, so that systemd restarts it."""
        self._exit_code = EXIT_FAILURE
        log.error("taskd_failing", reason=why, exit_code=EXIT_FAILURE)
        self.request_stop(why)

    async def reload(self) -> ReloadOutcome:
        """Re-read the configuration; keep the running one when the new one has errors. Never
        stops the daemon: a refusal is logged and shown by /health until a reload succeeds. The
        outcome is kept for /health and answered to `POST /_reload` (`taskd reload`)."""
        assert self.engine is not None
        async with self._reloading:  # a SIGHUP and a POST /_reload at once take turns
            self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                outcome = await self._reload()
            finally:
                self.notifier.notify("READY=1")
            self.engine.last_reload = outcome
            return outcome

    async def _reload(self) -> ReloadOutcome:
        assert self.engine is not None
        try:
            config = await asyncio.to_thread(load_config, self.config_path, self.env)
        except ConfigError as exc:
            return self._refused(list(exc.problems))
        except Exception as exc:  # a bug, or the file unreadable in a way load_config missed
            return self._refused([describe(exc)], crashed=True)
        if _without_tokens(config.api) != _without_tokens(self.started.api) or config.store != self.started.store:
            log.warning(
                "restart_needed", reason="api: (but its tokens) and store: changes take effect at the next start"
            )
        fresh = Access.of(config.api)
        if fresh.enabled != self.access.enabled:
            return self._refused(
                ["api: turning tokens on or off needs a restart (the running tokens are kept until then)"]
            )
        try:
            changes = self.engine.reload(config)
        except ConfigError as exc:  # what only the engine can tell: a request larger than this node
            return self._refused(list(exc.problems))
        except Exception as exc:  # a bug, not a config error: still no reason to stop the daemon
            return self._refused([describe(exc)], crashed=True)
        self.engine.faults.clear(RELOAD)
        tokens = self.access.replace(fresh)
        if tokens:
            log.info("tokens_reloaded", changed=tokens)
            changes = {**changes, "tokens": tokens}
        logs.set_level(config.log.level, config.task.debug, config.task.log_task_execution)
        logs.set_access(config.log.access)
        logs.set_secrets(Redactor(config.secrets | self.started.secrets))
        self.config = config
        tune_gc()
        return ReloadOutcome(self.clock.time(), True, changes=changes)

    def _refused(self, errors: list[str], crashed: bool = False) -> ReloadOutcome:
        assert self.engine is not None
        (log.exception if crashed else log.error)(
            "config_reload_failed", path=self.config_path, errors=errors, kept="previous config"
        )
        self.engine.faults.set(RELOAD, f"reload refused, the previous configuration runs: {'; '.join(errors)}")
        return ReloadOutcome(self.clock.time(), False, tuple(errors))

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
                self.fail(f"{name} failed: {type(exc).__name__}: {exc}")

        task.add_done_callback(done)

    async def _retention(self, store: Store, engine: Engine) -> None:
        """Prune history hourly. A failed prune (its transaction rolled back) is logged, shown by
        /health and tried again sooner; it never stops the daemon."""
        while True:
            retention = self.started.store.retention
            try:
                removed = await store.prune(self.clock.time(), retention.days, retention.max_runs_per_task)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("retention_failed", error=error, retry_in_s=RETENTION_RETRY_S)
                engine.faults.set(RETENTION, f"the last prune failed and is tried again: {error}")
                await self.clock.sleep(RETENTION_RETRY_S)
                continue
            engine.faults.clear(RETENTION)
            if removed:
                log.info("retention_pruned", runs=removed)
            await self.clock.sleep(RETENTION_INTERVAL_S)

    async def _watch_store(self, engine: Engine) -> None:
        """Every second: is the store still there? A store fault that lasts past store.max_outage
        stops the daemon with exit 1, so that systemd restarts it on a fresh connection or file."""
        while True:
            await self.clock.sleep(STORE_WATCH_S)
            try:
                await engine.check_store()
            except Exception as exc:  # the check itself failing is a fault of the store too
                engine.faults.set(STORE_UNREACHABLE, f"the store cannot be checked: {type(exc).__name__}: {exc}")
            since = engine.faults.outage_since()
            limit = self.started.store.max_outage
            if since is not None and self.clock.time() - since > limit:
                reasons = "; ".join(f.reason for f in engine.faults.current() if f.kind in STORE_KINDS)
                self.fail(f"the store has been failing for more than store.max_outage ({limit:g} s): {reasons}")
                return

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


MAX_OPEN_FILES = 1 << 20


def raise_open_files_limit() -> None:
    """Raise the soft limit on open descriptors to the hard one: systemd's default soft limit of
    1,024 is what a few hundred slow clients and running pipelines would exhaust."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("open_files_limit_kept", soft=soft, hard=hard, error=str(exc))
            return
        log.info("open_files_limit_raised", soft=wanted, was=soft)


def run_daemon(config_path: str, config: Config, env: Mapping[str, str]) -> int:
    """Set up logging and run the daemon on an already loaded config until it is told to stop;
    returns the exit code (EXIT_OK only after SIGTERM/SIGINT)."""
    task, log_section = config.task, config.log
    logs.configure(log_section.level, log_section.format, None, task.debug, task.log_task_execution, log_section.access)
    logs.set_secrets(Redactor(config.secrets))
    raise_open_files_limit()
    daemon = Daemon(config_path, config, env)
    try:
        return asyncio.run(daemon.run())
    except (StartupError, StoreError) as exc:
        log.error("taskd_cannot_start", error=str(exc), exit_code=EXIT_FAILURE)
        return EXIT_FAILURE
    except ConfigError as exc:
        log.error("taskd_cannot_start", error="; ".join(exc.problems), exit_code=EXIT_CONFIG)
        return EXIT_CONFIG
    except Exception as exc:
        explained = daemon.store.explain(exc) if daemon.store is not None else None
        if explained is not None:
            log.error("taskd_cannot_continue", error=str(explained), exit_code=EXIT_FAILURE)
        else:
            log.exception("taskd_crashed", error=f"{type(exc).__name__}: {exc}", exit_code=EXIT_FAILURE)
        return EXIT_FAILURE


def _without_tokens(api: ApiSection) -> ApiSection:
    """The api section but its tokens, which a reload applies."""
    return api.model_copy(update={"token": None, "token_file": None, "tokens": ()})
