"""System checks: `check_disk_space`, `check_memory` and `check_http`."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StrictInt, StrictStr

from taskd.processor import Context, ProcessorOptions, ProcessorType, StepFailed
from taskd.processors.http import HttpOptions, HttpProcessor


def _number(value: object) -> object:
    """Accept "95" (e.g. from ${VAR:-95} in quotes) as well as 95."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


Percent = Annotated[float, BeforeValidator(_number)]


class DiskOptions(ProcessorOptions):
    path: StrictStr = Field(".", description="any path on the filesystem to check")
    threshold: Percent = Field(90.0, ge=0, le=100, description="fail when more than this percent is used")


class DiskProcessor:
    def __init__(self, options: DiskOptions) -> None:
        self.options = options

    async def run(self, ctx: Context) -> Mapping[str, Any]:
        o = ctx.render(self.options)
        path = ctx.resolve(o.path)
        try:
            usage = shutil.disk_usage(path)
        except OSError as exc:
            raise StepFailed(f"cannot check disk space of {path}: {exc.strerror or exc}") from None
        # As df computes Use%: blocks reserved for root count neither as used nor as available.
        percent = round(100.0 * usage.used / ((usage.used + usage.free) or 1), 2)
        info = {"path": str(path), "total": usage.total, "used": usage.used, "free": usage.free, "percent": percent}
        ctx.info(f"disk {path}: {percent}% used ({usage.free} bytes free), threshold {o.threshold:g}%")
        if percent > o.threshold:
            raise StepFailed(f"disk usage of {path} is {percent}%, above the threshold of {o.threshold:g}%")
        return {"disk": info}


class MemoryOptions(ProcessorOptions):
    threshold: Percent = Field(90.0, ge=0, le=100, description="fail when more than this percent is in use")
    meminfo: StrictStr = Field("/proc/meminfo", description="where to read memory figures (Linux)")


def read_meminfo(path: Path) -> dict[str, int]:
    """Fields of /proc/meminfo in bytes."""
    values = {}
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return values


class MemoryProcessor:
    def __init__(self, options: MemoryOptions) -> None:
        self.options = options

    async def run(self, ctx: Context) -> Mapping[str, Any]:
        o = self.options
        try:
            info = read_meminfo(Path(o.meminfo))
            total, available = info["MemTotal"], info["MemAvailable"]
        except (OSError, KeyError) as exc:
            raise StepFailed(f"cannot read memory figures from {o.meminfo}: {exc}") from None
        percent = round(100.0 * (total - available) / (total or 1), 2)
        ctx.info(f"memory: {percent}% used ({available} of {total} bytes available), threshold {o.threshold:g}%")
        if percent > o.threshold:
            raise StepFailed(f"memory usage is {percent}%, above the threshold of {o.threshold:g}%")
        return {"memory": {"total": total, "available": available, "percent": percent}}


class CheckHttpOptions(HttpOptions):
    expect: tuple[StrictInt, ...] = Field((200,), description="accepted status codes")


DISK = ProcessorType(
    "check_disk_space", DiskOptions, "fail when a filesystem is fuller than a threshold", DiskProcessor
)
MEMORY = ProcessorType("check_memory", MemoryOptions, "fail when memory use is above a threshold", MemoryProcessor)
HTTP_CHECK = ProcessorType(
    "check_http", CheckHttpOptions, "an http request that must answer 200 (or `expect`)", HttpProcessor
)
