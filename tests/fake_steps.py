"""Steps for the `python` processor that tests use instead of processes: they fail or succeed as
told, in-process, and count their calls (`function: "fake_steps:fail"`)."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from taskd.processor import Context, StepFailed

CALLS: collections.Counter[str] = collections.Counter()
"""Calls so far, by run id and step key."""


async def fail(ctx: Context, message: str = "boom") -> None:
    """Write `message` to the run's stderr and fail with it."""
    ctx.log.write("stderr", message)
    raise StepFailed(f"failed on purpose: {message}")


async def fail_until_attempt(ctx: Context, attempt: int) -> dict[str, Any]:
    """Fail in every attempt before `attempt`."""
    if ctx.attempt < attempt:
        raise StepFailed(f"attempt {ctx.attempt} fails on purpose")
    return {"succeeded_in": ctx.attempt}


async def fail_first(ctx: Context, times: int, key: str = "step") -> dict[str, Any]:
    """Fail the first `times` calls of this run (a step's own retries count), then succeed."""
    CALLS[f"{ctx.run_id} {key}"] += 1
    calls = CALLS[f"{ctx.run_id} {key}"]
    if calls <= times:
        raise StepFailed(f"call {calls} fails on purpose")
    return {"calls": calls}


STARTED: list[str] = []
"""The runs whose `note_start` step began, in order."""


async def note_start(ctx: Context) -> None:
    """Note that this run's step began."""
    STARTED.append(ctx.run_id)


class Gate:
    """What a `stop_when_let` step tells its test, and what the test lets it do."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()  # the step is running
        self.stopping = asyncio.Event()  # the step has been told to stop (and goes on regardless)
        self.opened = asyncio.Event()  # the test lets it stop


GATES: dict[str, Gate] = {}


def gate(key: str) -> Gate:
    """A fresh gate for the `stop_when_let` steps called with `key` (made on the test's loop)."""
    GATES[key] = Gate()
    return GATES[key]


async def stop_when_let(ctx: Context, key: str) -> None:
    """Run until stopped, then ignore the stop until the test opens the gate `key` (or the run's
    param `gate`): a step that overruns its stop grace. A second stop ends it at once."""
    held = GATES[str(ctx.params.get("gate", key))]
    held.entered.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        held.stopping.set()
        ctx.info("told to stop; going on until let")
        await held.opened.wait()
        raise


async def write_lines(ctx: Context, count: int, text: str = "line") -> None:
    """Write `count` lines to the run's stdout, each `text` followed by its number."""
    for number in range(1, count + 1):
        ctx.log.write("stdout", f"{text} {number}")


SEEN: dict[str, dict[str, Any]] = {}
"""What each run of `report` saw, by run id: its task, params and TASKD_UPSTREAM_* variables."""


async def report(ctx: Context, rows: int = 0, echo: str = "") -> dict[str, Any]:
    """Note what the run got from its upstream runs; put `rows` and the task id in the context (and
    with `echo`, `echo` followed by the param of that name: a step that returns a secret)."""
    upstream = {k: v for k, v in ctx.environment.items() if k.startswith("TASKD_UPSTREAM")}
    SEEN[ctx.run_id] = {"task": ctx.task_id, "params": dict(ctx.params), "env": upstream}
    out: dict[str, Any] = {"rows": rows, "made_by": ctx.task_id}
    if echo:
        out["echoed"] = f"{echo}={ctx.params.get(echo)}"
    return out
