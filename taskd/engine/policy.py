"""The engine's decisions, as pure functions: concurrency policy, what a fire becomes, catch-up
after downtime (misfire policy), and a task's status. Time is always passed in."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from taskd.capacity import Capacity
from taskd.config import Config, Placement, PlacementLabels, PlacementNodes
from taskd.durations import format_size
from taskd.errors import Conflict
from taskd.models import ACTIVE_STATES, RunState
from taskd.schedule import Schedule

MAX_QUEUED_PER_TASK = 100
MISSED_COUNT_CAP = 1000


@dataclass(frozen=True)
class Admission:
    """A new run is allowed: `stop` are the active runs it replaces, `after` the runs it must
    wait for before it begins (by id)."""

    stop: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


FREE = Admission()
"""Nothing to stop, nothing to wait for."""


def admit(task_id: str, concurrency: str, active: Sequence[tuple[str, RunState]]) -> Admission:
    """Apply the task's concurrency policy to a new run, given its active runs (id, state),
    oldest first. Raises Conflict when the policy refuses the run."""
    if not active or concurrency == "allow":
        return FREE
    if concurrency == "forbid":
        raise Conflict(
            f"task {task_id!r} already has an active run ({active[0][0]}); concurrency is forbid", "concurrency"
        )
    ids = tuple(run_id for run_id, _ in active)
    if concurrency == "replace":
        return Admission(stop=ids, after=ids)
    if concurrency == "queue":
        waiting = sum(1 for _, state in active if state is RunState.QUEUED)
        if waiting >= MAX_QUEUED_PER_TASK:
            raise Conflict(f"task {task_id!r} already has {waiting} queued runs; concurrency is queue", "queue_full")
        return Admission(after=ids)
    raise ValueError(f"unknown concurrency policy {concurrency!r}")


def overload(pending: int, max_pending: int, waiting: int, max_waiting: int, already: bool) -> str | None:
    """Why taskd is overloaded now, or None. It becomes overloaded when staged writes or waiting
    runs reach their limit, and stays so until both are down to half of it, so that it does not
    flap at the edge."""
    share = 0.5 if already else 1.0
    if pending >= max_pending * share:
        return f"{pending} writes are waiting for the store (store.max_pending is {max_pending})"
    if waiting >= max_waiting * share:
        return f"{waiting} runs are waiting for a slot or a retry (task.max_waiting_runs is {max_waiting})"
    return None


def eligible(placement: Placement, node: str, labels: Mapping[str, str]) -> bool:
    """Whether a task with this placement may run on the node named `node` with `labels`."""
    if isinstance(placement, PlacementNodes):
        return node in placement.nodes
    if isinstance(placement, PlacementLabels):
        return all(labels.get(key) == value for key, value in placement.labels.items())
    return True


def claim_key(task_id: str, placement: Placement, node: str) -> str:
    """What a node claims a fire under: the task (one node runs it), or for `placement: all` the
    task on this node (every node runs it once)."""
    return f"{task_id}@{node}" if placement == "all" else task_id


@dataclass(frozen=True)
class FirePlan:
    """What one fire of a task becomes: a run for `instant`, and `coalesced` instants that came
    due at the same time (the loop was late) and are recorded as skipped."""

    instant: float
    coalesced: tuple[float, ...] = ()


def plan_fire(instants: Sequence[float]) -> FirePlan:
    """Several instants due at once make one run, for the latest; the others are skipped."""
    if not instants:
        raise ValueError("a fire has at least one instant")
    return FirePlan(instants[-1], tuple(instants[:-1]))


def missed_fires(
    schedule: Schedule, last: datetime, now: datetime, cap: int = MISSED_COUNT_CAP
) -> tuple[int, bool, datetime | None]:
    """Fires after `last` and up to `now`: how many (counted up to `cap`; the flag says there were
    more) and the latest one, found without walking a long outage instant by instant."""
    count = 0
    current = schedule.next_after(last)
    latest = None
    while current is not None and current <= now and count < cap:
        latest, count = current, count + 1
        current = schedule.next_after(current)
    if current is None or current > now:
        return count, False, latest
    # More than `cap`: look for the latest fire in growing windows that end at `now`.
    for window in (
        timedelta(minutes=1),
        timedelta(hours=1),
        timedelta(days=1),
        timedelta(days=32),
        timedelta(days=400),
    ):
        start = max(last, now - window)
        probe = schedule.next_after(start)
        found = None
        while probe is not None and probe <= now:
            found = probe
            probe = schedule.next_after(probe)
        if found is not None:
            return cap, True, found
    return cap, True, latest


@dataclass(frozen=True)
class CatchUp:
    """Fires missed while the daemon was down: `count` of them (or more, when `capped`), the latest
    at `instant`; `run` when the misfire policy wants one run for them (run_once), else they are
    recorded as missed."""

    instant: datetime
    count: int
    capped: bool
    run: bool

    @property
    def reason(self) -> str:
        more = "+" if self.capped else ""
        return f"missed while the daemon was down ({self.count}{more} fire(s)); misfire policy is skip"


def catch_up(schedule: Schedule | None, misfire: str, last_fire: datetime | None, now: datetime) -> CatchUp | None:
    """What to do at start-up about a task's fires between its last fire and `now` (None: nothing
    was missed, or the task never fired)."""
    if schedule is None or last_fire is None:
        return None
    count, capped, latest = missed_fires(schedule, last_fire, now)
    if latest is None:
        return None
    return CatchUp(latest, count, capped, run=misfire == "run_once")


_STATUS_ORDER = (RunState.RUNNING, RunState.RETRYING, RunState.QUEUED)


TASK_STATUSES = ("scheduled", "manual", "disabled", "overdue", "waiting", *(str(state) for state in RunState))
"""Every status `task_status` gives."""


def task_status(
    enabled: bool,
    active: Iterable[RunState],
    last: str | None,
    scheduled: bool = True,
    overdue: bool = False,
    waiting: bool = False,
) -> str:
    """A task's status (DESIGN.md): disabled; else its busiest active run's state; else its last
    run's final state; else scheduled, or manual for a task without a schedule (or `after:`). A
    task whose last success is older than its `expect:` allows is overdue instead, disabled or not,
    while no run of it is active; one waiting on an upstream task that was deleted or disabled is
    waiting."""
    if not enabled and not overdue:
        return "disabled"
    states = set(active)
    for state in _STATUS_ORDER:
        if state in states:
            return str(state)
    if overdue:
        return "overdue"
    if waiting:
        return "waiting"
    if last is not None and last not in ACTIVE_STATES:
        return str(last)
    return "scheduled" if scheduled else "manual"


def requests_too_large(config: Config, capacity: Capacity) -> list[str]:
    """The tasks whose `requests` are more than `capacity`, one line each (file:line, what, why)."""
    problems = []
    sizes = capacity.sizes()
    for task in config.tasks:
        needs = config.needs_of(task)
        for name, where in (("memory", capacity.memory_from), ("cpu", capacity.cpu_from)):
            need = needs.get(name)
            if need is None or need <= sizes[name]:
                continue
            if name == "memory":
                asked, has = format_size(need), format_size(sizes[name])
            else:
                asked, has = f"{need / 1000:g} cores", f"{sizes[name] / 1000:g} cores"
            source = config.task_sources.get(task.id)
            problems.append(
                f"{source or config.path}: tasks.{task.id}.requests.{name}: {asked} is more than this node's"
                f" capacity ({has}, {where}); lower it, or set node.capacity"
            )
    return problems


@dataclass(frozen=True)
class Claimant:
    """A live node that may claim fires, as the last heartbeat showed it: `free` slots."""

    name: str
    labels: Mapping[str, str]
    free: int


def owner(key: str, instant: float, placement: Placement, nodes: Sequence[Claimant]) -> str | None:
    """The node that claims a fire first: weighted rendezvous hashing over the nodes the task's
    placement allows, each weighted by its free slots (plus one, so a full node still gets a small
    share). Every node works out the same owner from the same view, so the fires of a burst are
    shared out with no contention, about in proportion to free slots; the owners of a node that
    stops claiming are left to the others, which claim whatever is left a moment later."""
    best, best_score = None, -1.0
    for node in nodes:
        if placement != "any" and not eligible(placement, node.name, node.labels):
            continue
        digest = hashlib.blake2b(f"{key}\0{instant!r}\0{node.name}".encode(), digest_size=8).digest()
        uniform = (int.from_bytes(digest, "big") + 1) / (2**64 + 2)  # in (0, 1)
        score = (node.free + 1) / -math.log(uniform)
        if score > best_score:
            best, best_score = node.name, score
    return best
