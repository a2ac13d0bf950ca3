"""Small processors: `sleep`, `log` and `python`."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import Field, StrictStr, field_validator

from taskd.processor import Context, Duration, ProcessorOptions, ProcessorType, StepFailed


class SleepOptions(ProcessorOptions):
    duration: Duration = Field(description="how long to wait")


class SleepProcessor:
    def __init__(self, options: SleepOptions) -> None:
        self.options = options

    async def run(self, ctx: Context) -> None:
        await asyncio.sleep(self.options.duration)


class LogOptions(ProcessorOptions):
    message: StrictStr = Field(description="text for the run log; {params.x}, {data.x}, {task.id} fields allowed")
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")


class LogProcessor:
    def __init__(self, options: LogOptions) -> None:
        self.options = options

    async def run(self, ctx: Context) -> None:
        options = ctx.render(self.options)
        ctx.log.write("log" if options.level == "info" else options.level, options.message)


_FUNCTION = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


class PythonOptions(ProcessorOptions):
    function: StrictStr = Field(description="'module:function', async or sync (sync runs in a thread)")
    kwargs: dict[StrictStr, Any] = Field(default_factory=dict, description="keyword arguments passed along")

    @field_validator("function")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not _FUNCTION.fullmatch(value):
            raise ValueError(f"function must look like 'package.module:function', got {value!r}")
        return value


class PythonProcessor:
    """Calls `function(ctx, **kwargs)`. A sync function runs in a thread; a thread cannot be
    interrupted, so on stop or timeout it is abandoned and finishes in the background."""

    def __init__(self, options: PythonOptions) -> None:
        self.options = options
        self._function: Callable[..., Any] | None = None

    def _load(self, ctx: Context) -> Callable[..., Any]:
        if self._function is None:
            module_name, _, attribute = self.options.function.partition(":")
            base = str(ctx.base_dir)
            if base not in sys.path:
                sys.path.append(base)  # modules kept next to the config file are importable
            try:
                target: Any = importlib.import_module(module_name)
            except Exception as exc:
                raise StepFailed(
                    f"cannot import {module_name!r}: {type(exc).__name__}: {exc}", permanent=True
                ) from None
            for part in attribute.split("."):
                target = getattr(target, part, None)
                if target is None:
                    raise StepFailed(f"{module_name!r} has no attribute {attribute!r}", permanent=True)
            if not callable(target):
                raise StepFailed(f"{self.options.function} is not callable", permanent=True)
            self._function = target
        return self._function

    async def run(self, ctx: Context) -> Mapping[str, Any] | None:
        # It runs inside taskd: what it uses cannot be told from taskd's own use.
        ctx.usage.add_unknown(f"python {self.options.function}")
        function = self._load(ctx)
        if inspect.iscoroutinefunction(function):
            result = await function(ctx, **self.options.kwargs)
        else:
            result = await asyncio.to_thread(function, ctx, **self.options.kwargs)
        if result is None or isinstance(result, Mapping):
            return result
        return {"result": result}


SLEEP = ProcessorType("sleep", SleepOptions, "wait for a duration", SleepProcessor)
LOG = ProcessorType("log", LogOptions, "write a message to the run log", LogProcessor)
PYTHON = ProcessorType("python", PythonOptions, "call a Python function named module:function", PythonProcessor)
