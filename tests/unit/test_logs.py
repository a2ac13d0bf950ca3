"""Daemon logging: one JSON object per line off a TTY, for taskd's and for libraries' records."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Awaitable, Callable

import pytest
import structlog
from conftest import Api, base_config

from taskd import logs


def test_json_lines_for_structlog_and_stdlib_records() -> None:
    out = io.StringIO()
    logs.configure("info", "auto", stream=out)  # StringIO is not a TTY: JSON
    try:
        structlog.get_logger("taskd.run").info("attempt_started", task_id="t", run_id="r", attempt=2)
        logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed by %s", "0:00:02")
        logging.getLogger("aiohttp.server").error("Error handling request")
        structlog.get_logger("taskd.run").debug("hidden at info")
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        logs.configure("warning", "console", stream=io.StringIO())
    assert [line["event"] for line in lines] == [
        "attempt_started",
        "Run time of job was missed by 0:00:02",
        "Error handling request",
    ]
    first = lines[0]
    assert first["task_id"] == "t" and first["run_id"] == "r" and first["attempt"] == 2
    assert first["level"] == "info" and first["timestamp"].endswith("Z")
    assert lines[1]["logger"] == "apscheduler.scheduler" and lines[1]["level"] == "warning"


def test_console_format_and_level() -> None:
    out = io.StringIO()
    logs.configure("debug", "console", stream=out)
    try:
        structlog.get_logger("taskd").debug("visible_at_debug", task_id="t")
    finally:
        logs.configure("warning", "console", stream=io.StringIO())
    text = out.getvalue()
    assert "visible_at_debug" in text and "task_id=t" in text and not text.startswith("{")


@pytest.mark.parametrize(
    ("setting", "logged"),
    [(None, {"failed"}), ("failures", {"failed"}), ("true", {"completed", "failed"}), ("false", set())],
)
async def test_log_task_execution_says_which_ending_runs_write_a_line(
    api_factory: Callable[..., Awaitable[Api]], setting: str | None, logged: set[str]
) -> None:
    """By default only the runs that did not complete log `run_finished`: a busy daemon would
    otherwise write a line per successful run."""
    extra = "" if setting is None else f"task: {{log_task_execution: {setting}}}\n"
    config = base_config(
        "- {id: good, pipeline: ok}\n- {id: bad, pipeline: ko}",
        "- {name: ok, processors: [{sleep: {duration: 0}}]}\n"
        "- {name: ko, processors: [{python: {function: 'fake_steps:fail'}}]}",
    ).replace("task: {max_concurrent_tasks: 10, shutdown_timeout: 5s}\n", extra)
    api = await api_factory(config)
    out = io.StringIO()
    logs.configure("info", "json", out, False, api.engine.config.task.log_task_execution)
    try:
        for task_id in ("good", "bad"):
            await api.wait_run(await api.start_task(task_id))
    finally:
        logs.configure("warning", "console", stream=io.StringIO())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {line["state"] for line in lines if line["event"] == "run_finished"} == logged


def test_a_log_line_and_an_error_escape_c0_and_c1_controls() -> None:
    from taskd.recorder import escape_line

    assert escape_line("a\r\nb\x85c\x9b31m\x1b]0;t\x07\u2028") == "a\\r\\nb\\x85c\\x9b31m\\x1b]0;t\\x07\\u2028"
    assert escape_line("plain text, tabs\tstay") == "plain text, tabs\tstay"
