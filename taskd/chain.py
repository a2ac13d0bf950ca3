"""Running a pipeline's built steps: the chain, the final phase, and each step's own policy
(timeout, retries, `on_error`). Steps are reported through `Hooks` so the runner can record them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from taskd.clock import Clock
from taskd.processor import Context, Processor, StepFailed, StepPolicy, describe, is_permanent
from taskd.retry import backoff_delay


@dataclass(frozen=True)
class Step:
    """One built step of a pipeline."""

    index: int
    type: str
    processor: Processor
    policy: StepPolicy = field(default_factory=StepPolicy)
    stop_grace_s: float = 0.0
    """How long the processor may take to stop once cancelled (its `stop_grace_s`, if it has one)."""

    @classmethod
    def build(cls, index: int, type_name: str, processor: Processor, policy: StepPolicy) -> Step:
        grace = getattr(processor, "stop_grace_s", 0.0)
        return cls(index, type_name, processor, policy, float(grace) if isinstance(grace, int | float) else 0.0)

    @property
    def label(self) -> str:
        return f"step {self.index + 1} ({self.type})"


class Hooks(Protocol):
    """How the chain reports steps: started, and ended in a state ('completed', 'failed',
    'skipped', 'stopped') with the exception if there was one."""

    def started(self, step: Step) -> None: ...

    def ended(self, step: Step, state: str, exc: BaseException | None) -> None: ...


async def run_main(steps: Sequence[Step], ctx: Context, hooks: Hooks, clock: Clock) -> None:
    """The chain: steps without `when`, in order; returned mappings merge into ctx.data.

    A failing step ends the chain (the rest are recorded as skipped) and its exception
    propagates, unless the step says `on_error: continue`.
    """
    chain = [s for s in steps if s.policy.when is None]
    for position, step in enumerate(chain):
        error = await _execute(step, ctx, hooks, clock)
        if error is None:
            continue
        if step.policy.on_error == "continue":
            ctx.info(f"{step.label} failed ({describe(error)}); on_error: continue, so the chain goes on")
            continue
        for later in chain[position + 1 :]:
            hooks.ended(later, "skipped", None)
        raise error


async def run_final(steps: Sequence[Step], ctx: Context, outcome: dict[str, Any], hooks: Hooks, clock: Clock) -> None:
    """The final phase: steps with `when` matching the outcome. Their failures are recorded and
    logged but never change the outcome, which was decided before they ran."""
    ctx.outcome = outcome
    succeeded = outcome["state"] == "completed"
    for step in steps:
        when = step.policy.when
        if when is None:
            continue
        if when != "always" and (when == "success") != succeeded:
            hooks.ended(step, "skipped", None)
            continue
        error = await _execute(step, ctx, hooks, clock)
        if error is not None:
            ctx.info(f"{step.label} failed in the final phase ({describe(error)}); the run's outcome stands")


async def _execute(step: Step, ctx: Context, hooks: Hooks, clock: Clock) -> Exception | None:
    """Run one step, record it and merge what it returns; return its failure, if any.
    Cancellation is recorded and propagates."""
    hooks.started(step)
    try:
        produced = await call_step(step, ctx, clock)
    except asyncio.CancelledError as exc:
        hooks.ended(step, "stopped", exc)
        raise
    except Exception as exc:
        hooks.ended(step, "failed", exc)
        return exc
    if produced:
        ctx.data.update(produced)
    hooks.ended(step, "completed", None)
    return None


async def call_step(step: Step, ctx: Context, clock: Clock) -> Mapping[str, Any] | None:
    """One step with its own timeout and retries, both measured on `clock`."""
    policy = step.policy
    tries = 1 + policy.retry.count
    if tries == 1 and policy.timeout is None:  # the common case, kept cheap
        return await step.processor.run(ctx)
    for attempt in range(1, tries + 1):
        try:
            async with clock.timeout(policy.timeout) as deadline:
                return await step.processor.run(ctx)
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            error: Exception = StepFailed(f"timed out after {policy.timeout:g}s")
            error.__cause__ = exc
        except Exception as exc:
            error = exc
        if attempt == tries or is_permanent(error):
            raise error
        delay = backoff_delay(policy.retry.backoff, attempt, policy.retry.max_backoff)
        ctx.info(f"{step.label} failed ({describe(error)}); try {attempt + 1} of {tries} in {delay:g}s")
        await clock.sleep(delay)
    raise AssertionError("unreachable")
