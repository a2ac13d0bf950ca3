"""Steps for the `python` processor that tests use instead of processes: they fail or succeed as
told, in-process, and count their calls (`function: "fake_steps:fail"`)."""

from __future__ import annotations

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
