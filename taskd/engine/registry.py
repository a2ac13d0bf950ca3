"""The task registry's pure part: a task as the engine runs it, the steps built for it, and the
diff between the registry and a (re)loaded config, tombstones included."""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from taskd.chain import Step
from taskd.config import Config, PipelineConfig, Source, TaskConfig, thaw
from taskd.environment import task_environment
from taskd.models import RunLimits
from taskd.redact import secret_values
from taskd.runner import RunPlan
from taskd.schedule import Schedule, offset_of


@dataclass(frozen=True, slots=True)
class TaskEntry:
    """A task as the engine runs it: its config plus what was built from it."""

    config: TaskConfig
    pipeline: PipelineConfig
    steps: tuple[Step, ...]
    schedule: Schedule | None
    time_zone: str
    definition_hash: str
    source: Source | None
    plan: RunPlan
    params: Mapping[str, Any]

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def group(self) -> str | None:
        """The timer job this task fires with: tasks on the same schedule in the same zone share one."""
        if self.schedule is None or not self.config.enabled:
            return None
        offset = offset_of(self.schedule)
        return f"{self.time_zone} {self.schedule.expression}" + (f" +{offset}s" if offset else "")


class StepBuilder:
    """A pipeline's steps, once per pipeline definition: every task using the pipeline shares them
    (processors hold no per-run state), and a reload that leaves the pipeline as it was keeps them."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ if environ is not None else {}
        self._built: dict[str, tuple[str, tuple[Step, ...]]] = {}  # pipeline -> (digest, steps)
        self._shared = _Shared(None)

    def steps(self, pipeline: PipelineConfig) -> tuple[Step, ...]:
        cached = self._built.get(pipeline.name)
        if cached is not None and cached[0] == pipeline.digest:
            return cached[1]
        steps = tuple(Step.build(i, p.type, p.processor, p.policy) for i, p in enumerate(pipeline.processors))
        self._built[pipeline.name] = (pipeline.digest, steps)
        return steps

    def entry(self, config: Config, task: TaskConfig) -> TaskEntry:
        """The registry entry of `task` as `config` defines it."""
        pipeline = config.pipelines[task.pipeline]
        steps = self.steps(pipeline)
        zone = config.zone_for(task)
        if self._shared.config is not config:  # a (re)load: the daemon's environment is read again
            self._shared = _Shared(config, dict(self._environ))
        shared = self._shared
        params = thaw(task.params) if task.params else EMPTY
        return TaskEntry(
            config=task,
            pipeline=pipeline,
            steps=steps,
            schedule=config.schedule_for(task),
            time_zone=zone,
            definition_hash=config.definition_hash(task),
            source=config.task_sources.get(task.id),
            plan=RunPlan(
                task=task,
                steps=steps,
                base_dir=pipeline.base_dir,
                time_zone=zone,
                environment=shared.environment(task),
                secrets=tuple(secret_values(params, task.secret_params)),
                needs=config.needs_of(task) or EMPTY,
                limits=shared.limits(config, task),
            ),
            params=params,
        )


EMPTY: Mapping[str, Any] = types.MappingProxyType({})
"""The params, needs and such of every task that has none."""


class _Shared:
    """What the entries built from one config share when their tasks agree (most tasks have no
    `env`, `pass_env` or `limits`): one environment and one RunLimits each, not one per task."""

    def __init__(self, config: Config | None, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self._environ = environ or {}
        self._environments: dict[tuple[Any, ...], Mapping[str, str]] = {}
        self._limits: dict[tuple[Any, ...], RunLimits] = {}

    def environment(self, task: TaskConfig) -> Mapping[str, str]:
        key = (task.pass_env, tuple(task.env.items()))
        found = self._environments.get(key)
        if found is None:
            found = types.MappingProxyType(task_environment(self._environ, task.pass_env, task.env))
            self._environments[key] = found
        return found

    def limits(self, config: Config, task: TaskConfig) -> RunLimits:
        limits = config.limits_for(task)
        key = (limits.memory, limits.cpu, limits.processes)
        found = self._limits.get(key)
        if found is None:
            found = self._limits[key] = RunLimits(*key)
        return found


@dataclass(frozen=True)
class RegistryDiff:
    """How a registry changes to match a config.

    `tasks` is the new registry. `held_back` maps the tasks a tombstone keeps deleted to their
    definition hash; `restored` are deleted tasks whose definition changed since, so they return.
    """

    tasks: Mapping[str, TaskEntry]
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    held_back: Mapping[str, str] = field(default_factory=dict)
    restored: tuple[str, ...] = ()

    def summary(self) -> dict[str, list[str]]:
        """The changes as lists of task ids, for the log."""
        return {
            "added": list(self.added),
            "changed": list(self.changed),
            "removed": list(self.removed),
            "held_back": sorted(self.held_back),
        }


def diff(current: Mapping[str, TaskEntry], wanted: Iterable[TaskEntry], tombstones: Mapping[str, str]) -> RegistryDiff:
    """The registry that `wanted` asks for, given the `current` one and the tombstones.

    An entry whose definition hash did not change keeps its current object (its schedule and
    built steps stay as they are).
    """
    tasks: dict[str, TaskEntry] = {}
    held: dict[str, str] = {}
    restored: list[str] = []
    added: list[str] = []
    changed: list[str] = []
    for entry in wanted:
        tombstone = tombstones.get(entry.id)
        if tombstone is not None:
            if tombstone == entry.definition_hash:
                held[entry.id] = tombstone
                continue
            restored.append(entry.id)  # the YAML definition changed since the task was deleted
        old = current.get(entry.id)
        if old is not None and old.definition_hash == entry.definition_hash:
            tasks[entry.id] = old
            continue
        tasks[entry.id] = entry
        (changed if old is not None else added).append(entry.id)
    removed = tuple(task_id for task_id in current if task_id not in tasks)
    return RegistryDiff(tasks, tuple(added), tuple(changed), removed, held, tuple(restored))
