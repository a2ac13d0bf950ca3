"""Prometheus metrics, produced by `prometheus-client`. The names and labels are a contract:
operators write alerts against them (README, "Watching it").

Events are counted as they happen (`run_finished`, `first_step_started`, `fire_skipped`,
`store_committed`); what is a state rather than an event (active runs, slots, pending writes, each
task's next fire) is read at scrape time from a `Snapshot` the daemon provides.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from taskd.faults import KINDS as FAULT_KINDS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ALL_TASKS = ""
"""The `task` label of every per-task series when `metrics.per_task` is off: one series for all."""

RUN_BUCKETS = (0.1, 1, 10, 60, 300, 900, 3600, 7200)  # few: each is a series per task
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
CPU_BUCKETS = (0.01, 0.1, 1, 10, 60, 600, 3600)
MEMORY_BUCKETS = tuple(float(2**p) for p in (20, 24, 26, 28, 30, 32, 34))  # 1 MiB to 16 GiB
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


@dataclass(frozen=True)
class Snapshot:
    """The daemon's state at scrape time."""

    active: Mapping[str, int] = field(default_factory=dict)  # state -> runs
    slots: int = 0
    slots_in_use: int = 0
    pending_writes: int = 0
    overloaded: bool = False
    next_fires: Mapping[str, float] = field(default_factory=dict)  # task -> epoch seconds
    faults: frozenset[str] = frozenset()  # the kinds of fault current
    faults_raised: Mapping[str, int] = field(default_factory=dict)  # kind -> times raised
    overdue: Mapping[str, bool] = field(default_factory=dict)  # task with an expectation -> overdue now
    nodes_alive: int = 1  # nodes sharing the store with a live lease, as this node last saw them


class Metrics:
    """Every taskd metric, in a registry of its own (with the client's process metrics)."""

    def __init__(self, version: str, per_task: bool = True) -> None:
        # `*_created` series would double every per-task series for a value no alert needs.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.per_task = per_task
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Info("taskd_build", "The running taskd's version.", registry=self.registry).info({"version": version})
        # What every run reports is counted in plain containers and exposed by `_RunCollector`:
        # a client Counter and two Histograms cost more per run than the rest of a no-op run's
        # bookkeeping in the engine (a lock and a label lookup each).
        self._runs: dict[tuple[str, str], int] = {}  # (task, state) -> runs
        self._durations: dict[str, _Buckets] = {}  # task -> run durations
        self._cpu: dict[str, _Buckets] = {}  # task -> CPU seconds of its runs' processes
        self._memory: dict[str, _Buckets] = {}  # task -> the peak memory of its runs' processes
        self._lateness = _Buckets(LATENESS_BUCKETS)
        self._skipped = Counter(
            "taskd_fires_skipped",
            "Fires that did not become a run, by task and reason.",
            ["task", "reason"],
            registry=self.registry,
        )
        self._alerts = Counter(
            "taskd_alerts_sent",
            "Alert deliveries by channel (webhook, email, log) and outcome (sent, failed: after its retries).",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self._commit = Histogram(
            "taskd_store_commit_seconds",
            "How long one batch of staged writes took to commit.",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self._last_success: dict[str, float] = {}
        self._snapshot = Snapshot()
        self._lock = threading.Lock()
        self.registry.register(_RunCollector(self))
        self.registry.register(_StateCollector(self))

    def seed_last_successes(self, successes: Mapping[str, float]) -> None:
        """Each task's last successful run as the store remembers it (at start-up)."""
        for task_id, finished_at in successes.items():
            self._last_success[task_id] = max(finished_at, self._last_success.get(task_id, finished_at))

    def forget_task(self, task_id: str) -> None:
        """A deleted or removed task: its last-success series goes."""
        self._last_success.pop(task_id, None)
        if self.per_task:
            self._durations.pop(task_id, None)
            self._cpu.pop(task_id, None)
            self._memory.pop(task_id, None)
            for key in [key for key in self._runs if key[0] == task_id]:
                del self._runs[key]

    # -- events ----------------------------------------------------------------------------------
    def run_finished(self, task_id: str, state: str, duration_s: float | None, finished_at: float) -> None:
        label = task_id if self.per_task else ALL_TASKS
        runs = self._runs
        key = (label, state)
        runs[key] = runs.get(key, 0) + 1
        if duration_s is not None:
            buckets = self._durations.get(label)
            if buckets is None:
                buckets = self._durations[label] = _Buckets(RUN_BUCKETS)
            buckets.observe(duration_s)
        if state == "completed":
            self._last_success[task_id] = finished_at

    def run_used(self, task_id: str, cpu_s: float | None, peak_memory_bytes: int | None) -> None:
        """What an ended run's processes used (the figures it has)."""
        label = task_id if self.per_task else ALL_TASKS
        for figures, value, bounds in (
            (self._cpu, cpu_s, CPU_BUCKETS),
            (self._memory, peak_memory_bytes, MEMORY_BUCKETS),
        ):
            if value is not None:
                buckets = figures.get(label)
                if buckets is None:
                    buckets = figures[label] = _Buckets(bounds)
                buckets.observe(float(value))

    def first_step_started(self, lateness_s: float) -> None:
        self._lateness.observe(max(lateness_s, 0.0))

    def fire_skipped(self, task_id: str, reason: str) -> None:
        self._skipped.labels(task_id if self.per_task else ALL_TASKS, reason).inc()

    def alert_delivered(self, channel: str, outcome: str) -> None:
        self._alerts.labels(channel, outcome).inc()

    def store_committed(self, seconds: float) -> None:
        self._commit.observe(seconds)

    def exposition(self, snapshot: Snapshot | None = None) -> bytes:
        """The Prometheus text exposition of every metric, with `snapshot` as the daemon's state.

        Thread-safe, so that a large scrape can be formatted off the event loop; the snapshot must
        be taken on it.
        """
        with self._lock:
            self._snapshot = snapshot or Snapshot()
            return generate_latest(self.registry)

    # -- for the collector -------------------------------------------------------------------------
    def _task_times(self, times: Mapping[str, float]) -> Iterator[tuple[str, float]]:
        if self.per_task:
            yield from times.items()
        elif times:
            yield ALL_TASKS, max(times.values())


class _Buckets:
    """One histogram's counts: per bucket (not cumulative; the last is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        counts = list(self.counts)  # one copy: the loop may add to it while a scrape formats
        pairs, running = [], 0
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), counts, strict=True):
            running += count
            pairs.append((bound, float(running)))
        return pairs


class _RunCollector(Collector):
    """What runs report (counts of ended runs, their durations, schedule lateness), from the plain
    containers `Metrics` keeps. Read from the scrape's thread while the loop adds to them: every
    container is copied in one step first (atomic under the GIL)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        metrics = self._metrics
        runs = CounterMetricFamily("taskd_runs", "Runs that ended, by task and final state.", labels=["task", "state"])
        for (task, state), count in sorted(metrics._runs.items()):
            runs.add_metric([task, state], count)
        yield runs
        duration = HistogramMetricFamily(
            "taskd_run_duration_seconds", "From a run's first attempt starting to its end.", labels=["task"]
        )
        for task, buckets in sorted(metrics._durations.items()):
            duration.add_metric([task], buckets.cumulative(), buckets.total)
        yield duration
        for name, text, figures in (
            ("taskd_run_cpu_seconds", "CPU seconds (user + system) of a run's step processes.", metrics._cpu),
            (
                "taskd_run_peak_memory_bytes",
                "The largest resident set among a run's step processes.",
                metrics._memory,
            ),
        ):
            family = HistogramMetricFamily(name, text, labels=["task"])
            for task, buckets in sorted(figures.items()):
                family.add_metric([task], buckets.cumulative(), buckets.total)
            yield family
        lateness = HistogramMetricFamily(
            "taskd_schedule_lateness_seconds",
            "From a fire's scheduled instant to the start of its run's first step.",
        )
        lateness.add_metric([], metrics._lateness.cumulative(), metrics._lateness.total)
        yield lateness


class _StateCollector(Collector):
    """The metrics that are states, read when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # known only at scrape time; the registry must not call collect() at register()

    def collect(self) -> Iterable[Metric]:
        metrics = self._metrics
        snapshot = metrics._snapshot
        active = GaugeMetricFamily("taskd_runs_active", "Runs queued, running or retrying now.", labels=["state"])
        for state in ("queued", "running", "retrying"):
            active.add_metric([state], snapshot.active.get(state, 0))
        yield active
        yield GaugeMetricFamily(
            "taskd_nodes_alive",
            "Nodes sharing the store whose lease is live, this one included, as its last heartbeat saw them.",
            value=snapshot.nodes_alive,
        )
        yield GaugeMetricFamily("taskd_slots", "The max_concurrent_tasks limit.", value=snapshot.slots)
        yield GaugeMetricFamily("taskd_slots_in_use", "Slots held by running runs.", value=snapshot.slots_in_use)
        yield GaugeMetricFamily(
            "taskd_store_pending_writes", "Writes staged and not yet committed.", value=snapshot.pending_writes
        )
        current = GaugeMetricFamily(
            "taskd_fault",
            "1 while a fault the daemon survives is current (store_write, store_file, store_unreachable,"
            " reload, retention, alerts); /health gives the reason.",
            labels=["kind"],
        )
        raised = CounterMetricFamily("taskd_faults", "Times each kind of fault began.", labels=["kind"])
        for kind in FAULT_KINDS:
            current.add_metric([kind], int(kind in snapshot.faults))
            raised.add_metric([kind], snapshot.faults_raised.get(kind, 0))
        yield current
        yield raised
        yield GaugeMetricFamily(
            "taskd_overloaded",
            "1 while new runs are refused because the store or the slots cannot keep up.",
            value=int(snapshot.overloaded),
        )
        success = GaugeMetricFamily(
            "taskd_task_last_success_timestamp_seconds",
            "When each task's last successful run ended (epoch seconds).",
            labels=["task"],
        )
        for task_id, when in metrics._task_times(metrics._last_success):
            success.add_metric([task_id], when)
        yield success
        upcoming = GaugeMetricFamily(
            "taskd_task_next_fire_timestamp_seconds",
            "Each scheduled, enabled task's next fire (epoch seconds).",
            labels=["task"],
        )
        next_fires = snapshot.next_fires
        if metrics.per_task:
            for task_id, when in next_fires.items():
                upcoming.add_metric([task_id], when)
        elif next_fires:
            upcoming.add_metric([ALL_TASKS], min(next_fires.values()))
        yield upcoming
        overdue = GaugeMetricFamily(
            "taskd_task_overdue",
            "1 while a task's last success is older than its expect: {success_within}.",
            labels=["task"],
        )
        if metrics.per_task:
            for task_id, late in sorted(snapshot.overdue.items()):
                overdue.add_metric([task_id], int(late))
        elif snapshot.overdue:
            overdue.add_metric([ALL_TASKS], sum(snapshot.overdue.values()))
        yield overdue
