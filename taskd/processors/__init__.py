"""Built-in processor types, one module per family, and third-party ones from entry points."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from taskd.processor import ProcessorType
from taskd.processors import alert, basic, checks, files, http, shell, upload

ENTRY_POINT_GROUP = "taskd.processors"

BUILTINS: dict[str, ProcessorType] = {
    kind.name: kind
    for kind in (
        shell.TYPE,
        http.TYPE,
        basic.SLEEP,
        basic.LOG,
        basic.PYTHON,
        files.COPY,
        files.COMPRESS,
        files.ROTATE,
        upload.UPLOAD,
        checks.DISK,
        checks.MEMORY,
        checks.HTTP_CHECK,
        alert.ALERT,
    )
}


@dataclass(frozen=True)
class Registry:
    """Every processor type by name, and the plugins that could not be loaded (and why)."""

    types: Mapping[str, ProcessorType]
    errors: Mapping[str, str] = field(default_factory=dict)


@functools.cache
def registry() -> Registry:
    """Built-ins plus the `taskd.processors` entry points (discovered once per process).

    An entry point names a ProcessorType, or a callable returning one. A plugin cannot replace a
    built-in type; one that fails to load is reported instead of taking the daemon down.
    """
    types = dict(BUILTINS)
    errors: dict[str, str] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
            kind = loaded() if callable(loaded) and not isinstance(loaded, ProcessorType) else loaded
            if not isinstance(kind, ProcessorType):
                raise TypeError(f"{point.value} is not a taskd ProcessorType")
        except Exception as exc:
            errors[point.name] = f"{type(exc).__name__}: {exc}"
            continue
        if kind.name in BUILTINS:
            errors[point.name] = f"cannot replace the built-in processor {kind.name!r}"
            continue
        if kind.name in types:
            errors[point.name] = f"another plugin already provides {kind.name!r}"
            continue
        types[kind.name] = kind
    return Registry(types, errors)
