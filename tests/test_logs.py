"""Daemon logging: one JSON object per line off a TTY, for taskd's and for libraries' records."""

from __future__ import annotations

import io
import json
import logging

import structlog

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
