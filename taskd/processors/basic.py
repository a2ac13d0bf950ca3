"""Small processors: `sleep`, `log` and `python`."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, StrictStr, field_validator

from taskd.pipeline import Duration, ProcessorOptions, ProcessorType


class SleepOptions(ProcessorOptions):
    duration: Duration = Field(description="how long to wait")


class LogOptions(ProcessorOptions):
    message: StrictStr = Field(description="text for the run log; {params.x} and {data.x} fields allowed")
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")


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


SLEEP = ProcessorType("sleep", SleepOptions, "wait for a duration")
LOG = ProcessorType("log", LogOptions, "write a message to the run log")
PYTHON = ProcessorType("python", PythonOptions, "call a Python function named module:function")
