"""Parsed YAML documents -> a validated Config, reporting every problem of every file in one pass.

Pure: the processor types are passed in, nothing is read from disk or from the environment.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from taskd.config.messages import describe_error, describe_value, with_suggestion
from taskd.config.model import Config, PipelineConfig, ProcessorConfig, Source
from taskd.config.schema import IncludedFile, MainFile, PipelineSpec, TaskConfig
from taskd.environment import env_name
from taskd.errors import ConfigError
from taskd.processor import COMMON_OPTIONS, ProcessorType, StepPolicy, describe
from taskd.yamldoc import Document, KeyPath


def _validate(doc: Document, model: type[BaseModel], data: Any, prefix: KeyPath = ()) -> Any:
    """`model` validated from `data`, or None with every error recorded on `doc` under `prefix`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            doc.problem((*prefix, *loc), describe_error(error, model, loc))
        return None


def _build_pipeline(
    spec: PipelineSpec,
    index: int,
    doc: Document,
    kinds: Mapping[str, ProcessorType],
    broken_plugins: Mapping[str, str],
) -> PipelineConfig | None:
    """Validate each `{type: options}` step against its processor type's options model."""
    base: KeyPath = ("pipelines", index, "processors")
    steps = [_build_step(entry, (*base, j), doc, kinds, broken_plugins) for j, entry in enumerate(spec.processors)]
    built = [step for step in steps if step is not None]
    if len(built) < len(steps):
        return None
    return PipelineConfig(
        spec.name,
        tuple(built),
        Source(doc.file, doc.line_of(base[:2])),
        Path(doc.file).absolute().parent,
        spec.description,
    )


def _build_step(
    entry: Any, path: KeyPath, doc: Document, kinds: Mapping[str, ProcessorType], broken_plugins: Mapping[str, str]
) -> ProcessorConfig | None:
    """One step of a pipeline, or None with its problems recorded on `doc`."""
    if not isinstance(entry, dict) or len(entry) != 1:
        doc.problem(path, "each processor is a single-key mapping such as '- shell: {command: ...}'")
        return None
    ((name, options),) = entry.items()
    kind = _step_kind(name, (*path, name), doc, kinds, broken_plugins)
    if kind is None:
        return None
    if options is None:
        options = {}
    if not isinstance(options, dict):
        doc.problem((*path, name), f"options of {name!r} must be a mapping, got {describe_value(options)}")
        return None
    parsed, policy = _step_options(kind, options, (*path, name), doc)
    if parsed is None or policy is None:
        return None
    policy = _step_when(kind, parsed, policy, (*path, name), doc)
    if policy is None:
        return None
    try:
        processor = kind.build(parsed)
    except Exception as exc:  # a plugin's constructor: anything it raises is this step's error
        doc.problem((*path, name), f"processor {name!r} cannot be built from these options: {describe(exc)}")
        return None
    return ProcessorConfig(name, parsed, Source(doc.file, doc.line_of(path)), processor, policy)


def _step_kind(
    name: str, path: KeyPath, doc: Document, kinds: Mapping[str, ProcessorType], broken_plugins: Mapping[str, str]
) -> ProcessorType | None:
    """The processor type a step names, or None with a message naming the types there are."""
    kind = kinds.get(name)
    if kind is None:
        available = sorted(kinds)
        broken = broken_plugins.get(name)
        doc.problem(
            path,
            with_suggestion(f"unknown processor type {name!r}", name, available)
            + f"; available: {', '.join(available)}"
            + (f" (the plugin {name!r} failed to load: {broken})" if broken else ""),
        )
    return kind


def _step_options(
    kind: ProcessorType, options: dict[str, Any], path: KeyPath, doc: Document
) -> tuple[Any, StepPolicy | None]:
    """A step's options split into the processor's own (validated by its model) and the options
    every processor takes (its policy); None for either part that has problems."""
    own = set(kind.options.model_fields) | {f.alias for f in kind.options.model_fields.values() if f.alias}
    common = {k: v for k, v in options.items() if k in COMMON_OPTIONS and k not in own}
    specific = {k: v for k, v in options.items() if k not in common}
    parsed = policy = None
    try:
        parsed = kind.options.model_validate(specific)
    except ValidationError as exc:
        for error in exc.errors():
            message = describe_error(error, kind.options, tuple(error["loc"]))
            if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
                message += f"; every processor also takes: {', '.join(sorted(COMMON_OPTIONS))}"
            doc.problem((*path, *error["loc"]), message)
    try:
        policy = StepPolicy.model_validate(common)
    except ValidationError as exc:
        for error in exc.errors():
            doc.problem((*path, *error["loc"]), describe_error(error, StepPolicy, tuple(error["loc"])))
    return parsed, policy


def _step_when(kind: ProcessorType, parsed: Any, policy: StepPolicy, path: KeyPath, doc: Document) -> StepPolicy | None:
    """The step's policy with its final-phase condition: `when:`, or the processor's own word for
    it (`send_alert`'s `condition:`), or the type's default. None when the two disagree."""
    alias = getattr(parsed, kind.when_option, None) if kind.when_option is not None else None
    if alias is not None and policy.when is not None and alias != policy.when:
        doc.problem((*path, "when"), f"when ({policy.when}) and {kind.when_option} ({alias}) disagree; give one")
        return None
    when = policy.when or alias or kind.default_when
    return policy if when == policy.when else policy.model_copy(update={"when": when})


def _items(doc: Document, key: str) -> list[Any]:
    data = doc.data
    items = data.get(key) if isinstance(data, dict) else None
    return items if isinstance(items, list) else []


def _raw_str(item: Any, key: str) -> str | None:
    value = item.get(key) if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


def build_config(
    path: Path,
    main: Document,
    includes: Sequence[Document],
    kinds: Mapping[str, ProcessorType],
    broken_plugins: Mapping[str, str] | None = None,
) -> Config:
    """Validate parsed documents into a Config, or raise ConfigError listing every problem.

    `kinds` are the processor types steps may use; `broken_plugins` (entry point name -> reason)
    explains an unknown type that a plugin failed to provide.
    """
    documents = [main, *includes]
    root = _validate(main, MainFile, main.data) if main.data is not None else None
    for doc in includes:
        if doc.data is not None:
            _validate(doc, IncludedFile, doc.data)
    pipelines, pipeline_sources = _pipelines(documents, kinds, broken_plugins or {})
    tasks, task_sources = _tasks(documents, pipeline_sources, root.pools if isinstance(root, MainFile) else None)
    problems = [msg for doc in documents for msg in doc.messages()]
    if problems or not isinstance(root, MainFile):
        raise ConfigError(problems or [f"{main.file}:1: invalid configuration"])
    return Config(
        path=path,
        task=root.task,
        api=root.api,
        store=root.store,
        log=root.log,
        metrics=root.metrics,
        node=root.node,
        alerts=root.alerts,
        pools=types.MappingProxyType(dict(root.pools)),
        cluster=root.cluster,
        tasks=tuple(tasks),
        pipelines=types.MappingProxyType(pipelines),
        task_sources=types.MappingProxyType(task_sources),
        files=(path, *(Path(d.file) for d in includes)),
    )


def _pipelines(
    documents: Sequence[Document], kinds: Mapping[str, ProcessorType], broken_plugins: Mapping[str, str]
) -> tuple[dict[str, PipelineConfig], dict[str, Source]]:
    """Every file's pipelines that build, and where each name is defined (duplicates are problems)."""
    pipelines: dict[str, PipelineConfig] = {}
    sources: dict[str, Source] = {}
    for doc in documents:
        for i, raw in enumerate(_items(doc, "pipelines")):
            name = _raw_str(raw, "name")
            if name is not None and name in sources:
                doc.problem(("pipelines", i, "name"), f"duplicate pipeline name {name!r} (also at {sources[name]})")
                continue
            if name is not None:
                sources[name] = Source(doc.file, doc.line_of(("pipelines", i)))
            spec = _validate(doc, PipelineSpec, raw, ("pipelines", i))
            built = _build_pipeline(spec, i, doc, kinds, broken_plugins) if spec is not None else None
            if built is not None:
                pipelines[built.name] = built
    return pipelines, sources


def _tasks(
    documents: Sequence[Document], pipeline_sources: Mapping[str, Source], pools: Mapping[str, int] | None
) -> tuple[list[TaskConfig], dict[str, Source]]:
    """Every file's valid tasks, and where each id is defined (duplicates and unknown pipelines are problems)."""
    tasks: list[TaskConfig] = []
    sources: dict[str, Source] = {}
    dependents: list[tuple[Document, int, TaskConfig]] = []
    for doc in documents:
        for i, raw in enumerate(_items(doc, "tasks")):
            task_id = _raw_str(raw, "id")
            if task_id is not None and task_id in sources:
                doc.problem(("tasks", i, "id"), f"duplicate task id {task_id!r} (also at {sources[task_id]})")
                continue
            if task_id is not None:
                sources[task_id] = Source(doc.file, doc.line_of(("tasks", i)))
            task = _validate(doc, TaskConfig, raw, ("tasks", i))
            if task is not None:
                tasks.append(task)
                if pools is not None:
                    _check_pools(doc, i, task, pools)
                if task.after is not None:
                    dependents.append((doc, i, task))
            ref = _raw_str(raw, "pipeline")
            if ref is not None and ref not in pipeline_sources:
                known = sorted(pipeline_sources)
                doc.problem(
                    ("tasks", i, "pipeline"),
                    with_suggestion(f"unknown pipeline {ref!r}", ref, known)
                    + (f"; defined pipelines: {', '.join(known)}" if known else "; no pipelines are defined"),
                )
    _check_dependencies(dependents, sources)
    return tasks, sources


def _check_pools(doc: Document, i: int, task: TaskConfig, pools: Mapping[str, int]) -> None:
    """A task's pools are defined at the top level, and none is asked for more units than it has."""
    for name, units in task.pools.items():
        path: KeyPath = ("tasks", i, "pools", name)
        if name not in pools:
            known = sorted(pools)
            doc.problem(
                path,
                with_suggestion(f"unknown pool {name!r}", name, known)
                + (f"; defined pools: {', '.join(known)}" if known else "; define it under the top-level pools:"),
            )
        elif units > pools[name]:
            doc.problem(path, f"asks for {units} units of pool {name!r}, which has {pools[name]}: it could never run")


def _check_dependencies(dependents: Sequence[tuple[Document, int, TaskConfig]], sources: Mapping[str, Source]) -> None:
    """`after:` names tasks that exist, never the task itself, and never closes a cycle."""
    edges: dict[str, tuple[str, ...]] = {}
    where: dict[str, tuple[Document, int]] = {}
    for doc, i, task in dependents:
        assert task.after is not None
        path: KeyPath = ("tasks", i, "after")
        for j, upstream in enumerate(task.after.tasks):
            if upstream == task.id:
                doc.problem((*path, "tasks", j), f"task {task.id!r} cannot run after itself")
            elif upstream not in sources:
                known = sorted(set(sources) - {task.id})
                doc.problem(
                    (*path, "tasks", j), with_suggestion(f"unknown upstream task {upstream!r}", upstream, known)
                )
        _same_names(doc, path, task.after.tasks)
        edges[task.id] = tuple(t for t in task.after.tasks if t != task.id and t in sources)
        where[task.id] = (doc, i)
    for cycle in dependency_cycles(edges):
        doc, i = where[cycle[0]]
        doc.problem(("tasks", i, "after"), "dependency cycle: " + " -> ".join((*cycle, cycle[0])))


def _same_names(doc: Document, path: KeyPath, upstream: Sequence[str]) -> None:
    """Two upstream ids whose TASKD_UPSTREAM_<ID>_* variables would be the same are an error."""
    seen: dict[str, str] = {}
    for j, task_id in enumerate(upstream):
        name = env_name(task_id)
        if name in seen and seen[name] != task_id:
            doc.problem(
                (*path, "tasks", j),
                f"upstream tasks {seen[name]!r} and {task_id!r} would both be TASKD_UPSTREAM_{name}_* in the"
                " environment of its steps; rename one",
            )
        seen.setdefault(name, task_id)


def dependency_cycles(edges: Mapping[str, Sequence[str]]) -> list[tuple[str, ...]]:
    """Each cycle of the graph `task -> the tasks it runs after`, once, in the order runs would
    follow each other (upstream first), starting from its smallest id."""
    cycles = []
    for cycle in _after_cycles(edges):
        flow = cycle[::-1]
        start = flow.index(min(flow))
        cycles.append(flow[start:] + flow[:start])
    return sorted(cycles)


def _after_cycles(edges: Mapping[str, Sequence[str]]) -> list[tuple[str, ...]]:
    """Cycles of the graph `task -> the tasks it runs after`, each once (at least one per group of
    tasks that depend on each other)."""
    found: dict[frozenset[str], tuple[str, ...]] = {}
    done: set[str] = set()
    for root in sorted(edges):
        if root in done:
            continue
        path: list[str] = [root]  # depth first, without recursion: a chain may be thousands long
        on_path = {root}
        pending = [iter(edges.get(root, ()))]
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                pending.pop()
                on_path.discard(node := path.pop())
                done.add(node)
            elif nxt in on_path:
                cycle = path[path.index(nxt) :]
                start = cycle.index(min(cycle))
                found.setdefault(frozenset(cycle), tuple(cycle[start:] + cycle[:start]))
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                pending.append(iter(edges.get(nxt, ())))
    return sorted(found.values())
