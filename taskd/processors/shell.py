"""`shell`: run a command (through /bin/sh) or an argv list (directly) as its own process group.

Run params reach the child as environment variables (`TASKD_PARAM_<NAME>`), never as shell text.
On stop or timeout the whole process group gets SIGTERM, then SIGKILL after `kill_grace`; when the
main process exits, anything it left behind in its group is killed too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import signal
from collections.abc import Mapping
from typing import Any

from pydantic import Field, StrictStr, model_validator

from taskd.pipeline import Context, Duration, ProcessorOptions, ProcessorType, StepFailed

STDERR_TAIL_LINES = 5
MAX_LINE_BYTES = 1 << 20


class ShellOptions(ProcessorOptions):
    command: StrictStr | None = Field(None, description="command line run by /bin/sh -c")
    argv: tuple[StrictStr, ...] | None = Field(None, description="program and arguments, run without a shell")
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="extra environment variables")
    cwd: StrictStr | None = Field(None, description="working directory (relative to the config file)")
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
    return "TASKD_PARAM_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _env_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=list)


class ShellProcessor:
    def __init__(self, options: ShellOptions) -> None:
        self.options = options

    def _environment(self, ctx: Context) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TASKD_TASK_ID=ctx.task_id,
            TASKD_RUN_ID=ctx.run_id,
            TASKD_ATTEMPT=str(ctx.attempt),
            TASKD_TRIGGER=ctx.trigger,
        )
        env.update({param_env_name(k): _env_value(v) for k, v in ctx.params.items()})
        env.update(self.options.env)
        return env

    async def run(self, ctx: Context) -> Mapping[str, Any]:
        options = self.options
        args = ["/bin/sh", "-c", options.command] if options.command is not None else list(options.argv or ())
        cwd = ctx.resolve(options.cwd) if options.cwd else ctx.base_dir
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=self._environment(ctx),
                start_new_session=True,
                limit=MAX_LINE_BYTES,
            )
        except (OSError, ValueError) as exc:
            raise StepFailed(f"cannot start {args[0]!r} in {cwd}: {exc}") from None
        stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            asyncio.create_task(_pump(proc.stdout, "stdout", ctx, None), name=f"shell-stdout-{proc.pid}"),
            asyncio.create_task(_pump(proc.stderr, "stderr", ctx, stderr_tail), name=f"shell-stderr-{proc.pid}"),
        ]
        try:
            code = await proc.wait()
        except BaseException:
            await _terminate(proc, options.kill_grace)
            raise
        finally:
            # Whatever the main process left running in its group goes with it.
            _signal_group(proc.pid, signal.SIGKILL)
            _, pending = await asyncio.wait(readers, timeout=2)
            for reader in pending:
                reader.cancel()
        if code != 0:
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            tail = " | ".join(stderr_tail)
            raise StepFailed(
                f"{args[0] if options.argv else 'command'} failed: {how}" + (f"; stderr: {tail}" if tail else "")
            )
        return {"exit_code": code}


async def _pump(stream: asyncio.StreamReader, name: str, ctx: Context, tail: collections.deque[str] | None) -> None:
    while True:
        try:
            raw = await stream.readline()
        except (ValueError, asyncio.LimitOverrunError):
            raw = await stream.read(MAX_LINE_BYTES)
        if not raw:
            return
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        ctx.log.write(name, line)
        if tail is not None and line.strip():
            tail.append(line.strip()[:500])


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, then SIGKILL it if the leader has not exited within `grace`."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=grace)
    except BaseException:  # the grace ran out, or we were cancelled again while waiting
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=5)


TYPE = ProcessorType(
    "shell", ShellOptions, "run a shell command or an argv list; fails on a non-zero exit", ShellProcessor
)
