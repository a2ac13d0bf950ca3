"""The validated configuration as frozen objects, with the digests that tell when a task changed."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskd import schedule as schedules
from taskd.config.schema import (
    AlertsSection,
    ApiSection,
    ClusterSection,
    Limits,
    LogSection,
    MetricsSection,
    NodeSection,
    StoreSection,
    TaskConfig,
    TaskSection,
    cached_schedule,
)
from taskd.processor import Processor, ProcessorOptions, StepPolicy
from taskd.store.base import MEMORY


@dataclass(frozen=True, slots=True)
class Source:
    """Where something was defined: file and 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class ProcessorConfig:
    """One validated pipeline step: its type's options, the options every step has, and the
    processor built from them (built while validating, so a constructor's error is a config error)."""

    type: str
    options: ProcessorOptions
    source: Source
    processor: Processor
    policy: StepPolicy = field(default_factory=StepPolicy)


@dataclass(frozen=True)
class PipelineConfig:
    """A validated pipeline. Relative paths in its options resolve against `base_dir`, the
    directory of the file that defines it."""

    name: str
    processors: tuple[ProcessorConfig, ...]
    source: Source
    base_dir: Path
    description: str | None = None

    @functools.cached_property
    def digest(self) -> str:
        """A digest of the steps, part of every using task's definition hash."""
        steps = [
            {
                "type": p.type,
                "options": p.options.model_dump(mode="json", by_alias=True),
                "policy": p.policy.model_dump(mode="json"),
            }
            for p in self.processors
        ]
        return hashlib.sha256(json.dumps(steps, sort_keys=True, default=str).encode()).hexdigest()


_LATER_FIELDS: dict[str, Any] = {
    "placement": "any",
    "secret_params": (),
    "env": {},
    "pass_env": (),
    "alerts": None,
    "expect": None,
    "after": None,
    "spread": None,
    "pools": {},
    "requests": None,
    "limits": None,
}
"""Task fields added after tombstones existed, with their defaults."""
_LATER_NESTED: dict[str, dict[str, Any]] = {"retry": {"permanent_exit_codes": (), "on_limit": False}}
"""The same, inside a task's sections."""


CLUSTER_SLOTS = "*slots"
"""The pool that `cluster.max_concurrent_tasks` makes (not a name a configured pool can have)."""


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration. Paths in it are resolved against the main file."""

    path: Path
    task: TaskSection
    api: ApiSection
    store: StoreSection
    log: LogSection
    metrics: MetricsSection
    node: NodeSection
    tasks: tuple[TaskConfig, ...]
    pipelines: Mapping[str, PipelineConfig]
    task_sources: Mapping[str, Source] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    secrets: frozenset[str] = frozenset()
    """Values shown as *** wherever they would appear: the API token and ${credential:NAME} values."""
    alerts: AlertsSection = field(default_factory=AlertsSection)
    pools: Mapping[str, int] = field(default_factory=dict)
    """Named pools and their sizes."""
    cluster: ClusterSection = field(default_factory=ClusterSection)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def store_location(self) -> str:
        """`store.url` when set; else the store's file, resolved against the main file's
        directory (`:memory:` as it is)."""
        if self.store.url:
            return self.store.url
        if self.store.path == MEMORY:
            return MEMORY
        return str(self.resolve(self.store.path))

    def resolve(self, path: str) -> Path:
        """A config path made absolute against the directory of the main config file."""
        return (self.base_dir / Path(path).expanduser()).resolve()

    def zone_for(self, task: TaskConfig) -> str:
        return task.time_zone or self.task.time_zone

    def schedule_for(self, task: TaskConfig) -> schedules.Schedule | None:
        """The parsed schedule of `task` in its effective time zone (None for manual-only tasks)."""
        if task.schedule is None or task.at_start:
            return None
        schedule = cached_schedule(task.schedule, self.zone_for(task))
        spread = self.spread_for(task)
        return schedules.shifted(schedule, schedules.spread_offset(task.id, spread)) if spread else schedule

    def pool_sizes(self) -> dict[str, int]:
        """Every pool's size, with the cluster's slots as the pool `*slots` when they are limited."""
        sizes = dict(self.pools)
        if self.cluster.max_concurrent_tasks is not None:
            sizes[CLUSTER_SLOTS] = self.cluster.max_concurrent_tasks
        return sizes

    def needs_of(self, task: TaskConfig) -> dict[str, int]:
        """What a run of `task` holds while it runs besides a slot: `pool <name>` units, `memory`
        bytes and `cpu` millicores."""
        needs = {f"pool {name}": units for name, units in task.pools.items()}
        if self.cluster.max_concurrent_tasks is not None:
            needs[f"pool {CLUSTER_SLOTS}"] = 1
        if task.requests is not None:
            if task.requests.memory:
                needs["memory"] = task.requests.memory
            if task.requests.cpu:
                needs["cpu"] = round(task.requests.cpu * 1000)
        return needs

    def limits_for(self, task: TaskConfig) -> Limits:
        """The task's limits, key by key its own else the `task:` section's."""
        section = self.task.limits
        if task.limits is None:
            return section
        own = task.limits
        return Limits(
            memory=own.memory if own.memory is not None else section.memory,
            cpu=own.cpu if own.cpu is not None else section.cpu,
            processes=own.processes if own.processes is not None else section.processes,
        )

    def spread_for(self, task: TaskConfig) -> float | None:
        """The task's `spread`, else the `task:` section's (None: fires are not shifted)."""
        return task.spread if task.spread is not None else self.task.spread

    def definition_hash(self, task: TaskConfig) -> str:
        """A digest of the task's definition and its pipeline's, to tell when YAML changed."""
        # Fields in their declared order; the ones added later only when set, so that hashes taken
        # before they existed (the tombstones of deleted tasks) still match.
        unset: dict[str, Any] = {
            name: True for name, default in _LATER_FIELDS.items() if getattr(task, name) == default
        }
        for section, fields in _LATER_NESTED.items():
            value = getattr(task, section)
            nested = {name for name, default in fields.items() if getattr(value, name) == default}
            if nested:
                unset[section] = nested
        digest = hashlib.sha256(task.model_dump_json(exclude=unset).encode())
        digest.update(self.pipelines[task.pipeline].digest.encode())
        digest.update(self.zone_for(task).encode())
        if task.spread is None and self.task.spread is not None:  # the section's spread moves its fires
            digest.update(f"spread {self.task.spread!r}".encode())
        if self.task.limits != Limits():  # so do the section's limits
            digest.update(f"limits {self.limits_for(task).model_dump_json()}".encode())
        return digest.hexdigest()[:16]
