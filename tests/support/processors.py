"""A processor built from its options, and a context whose log is a list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taskd.processor import Context
from taskd.processors import registry


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def write(self, stream: str, text: str) -> None:
        self.lines.append((stream, text))


def ctx(tmp_path: Path, **params: Any) -> Context:
    return Context(
        task_id="t", task_name="T", run_id="r1", attempt=1, trigger="manual", params=params,
        log=Lines(), base_dir=tmp_path, time_zone="UTC",
    )  # fmt: skip


def build(kind: str, **options: Any) -> Any:
    spec = registry().types[kind]
    return spec.build(spec.options.model_validate(options))
