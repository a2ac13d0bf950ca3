"""A context for the file processors' tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.processors import Lines
from taskd.processor import Context


def ctx(base: Path, task_id: str = "backup", **data: Any) -> Context:
    """A context for a run of `task_id` in `base`, with `data` from earlier steps."""
    c = Context(
        task_id=task_id, task_name="Backup", run_id="r1", attempt=1, trigger="manual", params={"dest": "out"},
        log=Lines(), base_dir=base, time_zone="Europe/Berlin",
    )  # fmt: skip
    c.data.update(data)
    return c
