"""`shell`: run a command (through /bin/sh) or an argv list (directly) as its own process group.

Run params reach the child as environment variables (`TASKD_PARAM_<NAME>`), never as shell text.
On stop or timeout the whole process group gets SIGTERM, then SIGKILL after `kill_grace`; when the
main process exits, anything it left behind is killed too: its group, and every process whose
environment carries the run's TASKD_RUN_ID (the ones that called setsid or double-forked).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import signal
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field, StrictStr, model_validator

from taskd import cgroups
from taskd.durations import format_size
from taskd.environment import env_name
from taskd.processor import Context, Duration, ProcessorOptions, ProcessorType, StepFailed
from taskd.procgroup import KILL_WAIT_S, kill_run_processes_soon, signal_group, terminate_group
from taskd.reaper import Reaper, own_peak_memory
from taskd.reaper import current as current_reaper

STDERR_TAIL_LINES = 5
MAX_LINE_BYTES = 1 << 20


class ShellOptions(ProcessorOptions):
    command: StrictStr | None = Field(None, description="command line run by /bin/sh -c")
    argv: tuple[StrictStr, ...] | None = Field(None, description="program and arguments, run without a shell")
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="extra environment variables")
    cwd: StrictStr | None = Field(None, description="working directory (relative to the file defining the pipeline)")
    kill_grace: Duration = Field(5.0, description="seconds between SIGTERM and SIGKILL on stop or timeout")

    @model_validator(mode="after")
    def _one_of_command_or_argv(self) -> ShellOptions:
        if (self.command is None) == (self.argv is None):
            raise ValueError("give exactly one of 'command' (a shell string) or 'argv' (a list)")
        if self.command is not None and not self.command.strip():
            raise ValueError("'command' is empty")
        if self.argv is not None and not self.argv:
            raise ValueError("'argv' is empty")
        return self


def param_env_name(name: str) -> str:
    """`keep-days` -> `TASKD_PARAM_KEEP_DAYS`."""
    return "TASKD_PARAM_" + env_name(name)


def _env_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=list)


class _Child(asyncio.SubprocessProtocol):
    """Turns the child's stdout/stderr into log lines as they arrive, and notes its exit.

    The exit is reported on its own: asyncio's Process.wait() also waits for the pipes to close,
    which a backgrounded grandchild could hold open for as long as it lives.
    """

    def __init__(self, ctx: Context, exited: asyncio.Future[int]) -> None:
        self._ctx = ctx
        self._exited = exited
        self._buffers = {1: bytearray(), 2: bytearray()}
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.closed = asyncio.Event()
        self._open_pipes = 2
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buffer = self._buffers[fd]
        buffer += data
        while (end := buffer.find(b"\n")) >= 0:
            self._emit(fd, bytes(buffer[:end]))
            del buffer[: end + 1]
        if len(buffer) > MAX_LINE_BYTES:
            # A line too long is cut, but never inside a secret: what may be one waits for the rest.
            text = bytes(buffer).decode("utf-8", errors="surrogateescape")  # undone below: lossless
            cut = self._ctx.redactor.safe_cut(text) if self._ctx.redactor else len(text)
            self._emit(fd, text[:cut].encode("utf-8", errors="surrogateescape"))
            buffer[:] = text[cut:].encode("utf-8", errors="surrogateescape")

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if self._buffers.get(fd):
            self._emit(fd, bytes(self._buffers[fd]))
            self._buffers[fd].clear()
        self._open_pipes -= 1
        if self._open_pipes <= 0:
            self.closed.set()

    def process_exited(self) -> None:
        assert self.transport is not None
        if not self._exited.done():
            self._exited.set_result(self.transport.get_returncode() or 0)

    def _emit(self, fd: int, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        self._ctx.log.write("stdout" if fd == 1 else "stderr", line)
        if fd == 2 and line.strip():
            self.stderr_tail.append(self._ctx.redactor.text(line.strip())[:500])  # masked before it is cut


STRAGGLER_WAIT_S = 0.25
"""How long the end of a step waits for its pipes to close before looking for its processes again."""
PIPE_ROUNDS = 4


class ShellProcessor:
    def __init__(self, options: ShellOptions) -> None:
        self.options = options
        # How long a stop may take: SIGTERM, the grace, SIGKILL, then the pipes closing.
        self.stop_grace_s = options.kill_grace + KILL_WAIT_S + 1.0

    def _environment(self, ctx: Context, options: ShellOptions) -> dict[str, str]:
        env = dict(ctx.environment)
        env.update(
            TASKD_TASK_ID=ctx.task_id,
            TASKD_RUN_ID=ctx.run_id,
            TASKD_ATTEMPT=str(ctx.attempt),
            TASKD_TRIGGER=ctx.trigger,
        )
        env.update({param_env_name(k): _env_value(v) for k, v in ctx.params.items()})
        env.update(options.env)
        return env

    async def run(self, ctx: Context) -> Mapping[str, Any]:
        # `command` is shell text: it is never templated. argv, env and cwd are data.
        options = ctx.render(self.options, exempt=frozenset({"command"}))
        args = ["/bin/sh", "-c", options.command] if options.command is not None else list(options.argv or ())
        cwd = ctx.resolve(options.cwd) if options.cwd else ctx.base_dir
        loop = asyncio.get_running_loop()
        reaper = current_reaper(loop)
        floor = own_peak_memory() if reaper is not None else 0
        group = cgroups.current().make(f"{cgroups.PREFIX}{ctx.run_id}-{ctx.usage.processes + 1}", ctx.limits)
        exited: asyncio.Future[int] = loop.create_future()
        try:
            transport, child = await loop.subprocess_exec(
                lambda: _Child(ctx, exited),
                *cgroups.wrapper(group, ctx.limits, args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=self._environment(ctx, options),
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:
            # A missing program or directory stays missing; too many processes or files may pass.
            if group is not None:
                group.remove()
            missing = isinstance(exc, FileNotFoundError | PermissionError | NotADirectoryError | ValueError)
            raise StepFailed(f"cannot start {args[0]!r} in {cwd}: {exc}", permanent=missing) from None
        except BaseException:
            await _stopped_while_starting(ctx, group)
            raise
        pid = transport.get_pid()
        try:
            code = await asyncio.shield(exited)
        except BaseException:
            await terminate_group(pid, exited, options.kill_grace)
            raise
        finally:
            # Whatever the main process left running in its group goes with it, and so does
            # anything it started that left the group (setsid, double forks).
            signal_group(pid, signal.SIGKILL)
            await _kill_run_processes(ctx.run_id)
            # A process that was still starting during the scan (mid setsid or exec) holds the
            # step's pipes open: scan again until they close.
            for _ in range(PIPE_ROUNDS):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(child.closed.wait(), timeout=STRAGGLER_WAIT_S)
                if child.closed.is_set():
                    break
                await _kill_run_processes(ctx.run_id)
            transport.close()
            figures = await asyncio.shield(asyncio.to_thread(_end_group, group)) if group is not None else None
            _count(ctx, reaper, pid, floor, figures)
        failure = _failure(ctx, code, figures, args[0] if options.argv else "command", child.stderr_tail)
        if failure is not None:
            raise failure
        return {"exit_code": code}


def _failure(
    ctx: Context, code: int, figures: cgroups.StepFigures | None, what: str, stderr_tail: Iterable[str]
) -> StepFailed | None:
    """Why the step failed (None: it did not)."""
    if figures is not None and figures.oom_killed and ctx.limits.memory is not None:
        # The kernel killed the tree for its memory limit: said as such, never as a bare SIGKILL.
        return StepFailed(cgroups.memory_message(ctx.limits.memory), permanent=not ctx.retry_on_limit)
    if code == 0:
        return None
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    tail = " | ".join(stderr_tail)
    hint = ""
    if figures is None and ctx.limits.memory is not None:
        hint = f" (with its memory limited to {format_size(ctx.limits.memory)} of address space)"
    return StepFailed(
        f"{what} failed: {how}{hint}" + (f"; stderr: {tail}" if tail else ""),
        permanent=code in ctx.permanent_exit_codes,
    )


async def _stopped_while_starting(ctx: Context, group: cgroups.StepGroup | None) -> None:
    """Stopped while the child was being started: asyncio kills the main process only, and what
    it forked may still be starting (mid setsid or exec) at the first scan. Its cgroup goes too."""
    if group is not None:
        await asyncio.shield(asyncio.to_thread(_end_group, group))
    await _kill_run_processes(ctx.run_id)
    await asyncio.shield(asyncio.sleep(STRAGGLER_WAIT_S))
    await _kill_run_processes(ctx.run_id)


def _end_group(group: cgroups.StepGroup) -> cgroups.StepFigures:
    """The step cgroup's figures, then whatever is left in it killed and the cgroup removed."""
    figures = group.figures()
    group.end()
    return figures


def _count(ctx: Context, reaper: Reaper | None, pid: int, floor: int, figures: cgroups.StepFigures | None) -> None:
    """Add what the step used to the run's usage: its cgroup's figures when it had one, else what
    its process (and every descendant it waited for) used, the peak its own only above `floor`,
    taskd's own peak when it was started."""
    used = reaper.take(pid) if reaper is not None else None
    if figures is not None and figures.cpu_s is not None and figures.peak_memory_bytes is not None:
        ctx.usage.add_process(figures.cpu_s, figures.peak_memory_bytes, "cgroup")
        return
    if used is None:
        ctx.usage.processes += 1  # started and gone, its figures unknown on this system
        return
    ctx.usage.add_process(used.cpu_s, used.peak_memory_bytes, "rusage", floor)


async def _kill_run_processes(run_id: str) -> None:
    """Kill what the run started, off the event loop (it reads /proc) in a scan shared with the
    steps ending at the same time; finishes even if the step is cancelled again meanwhile."""
    await kill_run_processes_soon(run_id)


TYPE = ProcessorType(
    "shell", ShellOptions, "run a shell command or an argv list; fails on a non-zero exit", ShellProcessor
)
