"""structlog for the daemon: JSON lines when stdout is not a TTY (journald), console otherwise.

The stdlib records of aiohttp and APScheduler go through the same formatter, so every line the
daemon prints has one shape.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from taskd.redact import NONE, Redactor

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    debug: bool = False,
    log_task_execution: bool | str = "failures",
    access: bool = False,
) -> None:
    """Set up structlog and stdlib logging once for the whole process (safe to call again)."""
    out = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if use_json else _passthrough,
            mask_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level, debug, log_task_execution)
    set_access(access)
    # APScheduler's per-job chatter is noise at info.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


TASK_LOGGERS = ("taskd.engine", "taskd.run")
"""The task machinery: fires, queued runs, attempts, retries, run output."""
EXECUTION_LOGGER = "taskd.run.execution"
"""The one line per run that ends (run_finished) without completing."""
COMPLETED_LOGGER = "taskd.run.execution.completed"
"""The one line per run that completes: off by default, since a busy daemon would write thousands
a second (and journald drops lines past 10,000 per 30 s by default)."""


def set_access(enabled: bool) -> None:
    """Whether every API request is logged (`log.access`)."""
    logging.getLogger("aiohttp.access").setLevel(logging.INFO if enabled else logging.WARNING)


def set_level(level: str, debug: bool = False, log_task_execution: bool | str = "failures") -> None:
    """The daemon's log level; `debug` lowers the task machinery's to debug whatever the level,
    and `log_task_execution` says which ending runs write their line: every one (True), those
    that did not complete ("failures"), or none (False)."""
    logging.getLogger().setLevel(LEVELS.get(level, logging.INFO))
    for name in TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.NOTSET)
    every = log_task_execution is True
    logging.getLogger(EXECUTION_LOGGER).setLevel(logging.NOTSET if log_task_execution else logging.WARNING)
    logging.getLogger(COMPLETED_LOGGER).setLevel(logging.NOTSET if every or debug else logging.WARNING)


_SECRETS = [NONE]


def set_secrets(redactor: Redactor) -> None:
    """The secrets masked in every line the daemon logs (the API token, credentials)."""
    _SECRETS[0] = redactor


def mask_secrets(_: Any, __: str, event: Any) -> Any:
    """Mask the process's secrets, and a run's own when its logger carries them (`_redactor`)."""
    if not isinstance(event, dict):
        return event
    run = event.pop("_redactor", None)
    for redactor in (run, _SECRETS[0]):
        if redactor:
            event = {key: redactor.data(value) for key, value in event.items()}
    return event


def _passthrough(_: Any, __: str, event: Any) -> Any:
    return event
