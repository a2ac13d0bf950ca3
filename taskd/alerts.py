"""Alerting as operators keep it turned on: a task's alert state and the notices its changes send.

A task is `ok` or `failing`. The first failure after success sends `failing`; further failures
send nothing until the route's `repeat_interval` has passed since the last notice, then a
`reminder` that counts the failures since; the first success after failing sends `recovered`
with how long it was failing. A task with `expect: {success_within}` whose last success is older
than that is overdue: `overdue` goes out once, then on `repeat_interval`, until it succeeds.

Pure logic: the states, the decisions and the messages. The store keeps the states (shared by
every node on PostgreSQL) and `taskd.alerter` sends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskd.channels import Channel, channels_of
from taskd.config.schema import AlertsSection, TaskConfig
from taskd.durations import format_duration
from taskd.models import AlertState, iso

OK = AlertState.OK
FAILING = AlertState.FAILING

REMINDER = "reminder"
RECOVERED = "recovered"
OVERDUE = "overdue"
EVENTS = (FAILING, REMINDER, RECOVERED, OVERDUE)
"""What a notice says: began failing, still failing, recovered, overdue."""

LOG_TAIL = 20


def first_state(task_id: str, now: float) -> AlertState:
    """The state of a task alerting has just met: ok, seen now."""
    return AlertState(task_id, OK, since=now, first_seen=now)


@dataclass(frozen=True)
class Route:
    """Where a task's notices go and how often a reminder may."""

    channels: tuple[Channel, ...]
    repeat_s: float


def route_for(default: AlertsSection, task: TaskConfig) -> Route | None:
    """The task's route: its own `alerts:`, else the default; None with `alerts: false` or no channel."""
    own = task.alerts
    if own is not None and not own.enabled:
        return None
    entries = default.channels
    repeat = default.repeat_interval
    if own is not None:
        entries = own.channels if own.channels is not None else entries
        repeat = own.repeat_interval if own.repeat_interval is not None else repeat
    channels = tuple(channels_of(*entries))
    return Route(channels, repeat) if channels else None


def tracked(default: AlertsSection, task: TaskConfig) -> bool:
    """Whether the task has an alert state: it has somewhere to send notices, or an expectation."""
    return task.expect is not None or route_for(default, task) is not None


# -- decisions ------------------------------------------------------------------------------------
def after_run(state: AlertState, succeeded: bool, now: float, repeat_s: float) -> tuple[AlertState, str | None]:
    """The state after one of the task's runs ended (failed or completed), and the notice to send."""
    if succeeded:
        if state.status == OK and state.overdue_at is None:
            return state, None
        told = state.notified_at is not None or state.overdue_at is not None
        recovered = dataclasses.replace(
            state, status=OK, since=now, failures=0, unreported=0, notified_at=None, overdue_at=None
        )
        return recovered, RECOVERED if told else None
    if state.status == OK:
        return dataclasses.replace(state, status=FAILING, since=now, failures=1, unreported=0, notified_at=now), FAILING
    failures = state.failures + 1
    if state.notified_at is None or now - state.notified_at >= repeat_s:
        return dataclasses.replace(state, failures=failures, unreported=0, notified_at=now), REMINDER
    return dataclasses.replace(state, failures=failures, unreported=state.unreported + 1), None


def is_overdue(state: AlertState, last_success: float | None, within_s: float, now: float) -> bool:
    """Whether the task's last success (or, never having succeeded, its first sight) is older than `within_s`."""
    reference = last_success if last_success is not None else state.first_seen
    return now - reference >= within_s


def after_check(
    state: AlertState, last_success: float | None, within_s: float, now: float, repeat_s: float
) -> tuple[AlertState, str | None]:
    """The state after checking an expectation, and whether an overdue notice goes out."""
    if not is_overdue(state, last_success, within_s, now):
        return state, None
    if state.overdue_at is None or now - state.overdue_at >= repeat_s:
        return dataclasses.replace(state, overdue_at=now), OVERDUE
    return state, None


def next_check(state: AlertState, last_success: float | None, within_s: float, now: float, repeat_s: float) -> float:
    """When the expectation should be checked next: when it becomes overdue, or its next reminder."""
    if state.overdue_at is not None and is_overdue(state, last_success, within_s, now):
        return state.overdue_at + repeat_s
    reference = last_success if last_success is not None else state.first_seen
    return reference + within_s


# -- messages -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunFacts:
    """What a notice tells of the run that caused it."""

    run_id: str
    trigger: str
    attempts: int
    state: str
    error: str | None
    log_tail: Sequence[str] = ()


@dataclass(frozen=True)
class Notice:
    """One change to tell: the event, the task, the states before and after, and its facts."""

    event: str
    task_id: str
    task_name: str
    before: AlertState
    after: AlertState
    at: float
    node: str
    host: str
    run: RunFacts | None = None
    last_success: float | None = None
    success_within_s: float | None = None
    public_url: str | None = None
    defined: bool = True
    """False for a task deleted through the API (its definition is held back)."""


def run_url(public_url: str | None, run_id: str | None) -> str | None:
    return f"{public_url}/#/run/{run_id}" if public_url and run_id else None


def message(notice: Notice) -> dict[str, Any]:
    """The alert as JSON: the body of a `json` webhook, the attachment of an e-mail (README: Alerts)."""
    before, after, run = notice.before, notice.after, notice.run
    failing_since = before.since if before.status == FAILING else None
    if notice.event in (FAILING, REMINDER):
        failing_since = after.since
    failures = {FAILING: 1, REMINDER: before.unreported + 1, RECOVERED: before.failures}.get(notice.event, 0)
    failing_for = notice.at - before.since if notice.event == RECOVERED and before.status == FAILING else None
    overdue_for = None
    if notice.event == OVERDUE and notice.success_within_s is not None:
        reference = notice.last_success if notice.last_success is not None else before.first_seen
        overdue_for = max(0.0, notice.at - reference - notice.success_within_s)
    body: dict[str, Any] = {
        "event": notice.event,
        "text": summary(notice, failures, failing_for),
        "task": {"id": notice.task_id, "name": notice.task_name},
        "node": notice.node,
        "host": notice.host,
        "at": iso(notice.at),
        "run_id": run.run_id if run else None,
        "run_url": run_url(notice.public_url, run.run_id if run else None),
        "trigger": run.trigger if run else None,
        "state": run.state if run else None,
        "attempts": run.attempts if run else None,
        "error": run.error if run else None,
        "log_tail": list(run.log_tail[-LOG_TAIL:]) if run else [],
        "failing_since": iso(failing_since),
        "failures": failures,
        "failing_for_s": None if failing_for is None else round(failing_for, 3),
        "last_success": iso(notice.last_success),
        "success_within_s": notice.success_within_s,
        "overdue_for_s": None if overdue_for is None else round(overdue_for, 3),
    }
    return body


def summary(notice: Notice, failures: int, failing_for: float | None) -> str:
    """One line an on-call person reads first."""
    name = notice.task_id if notice.task_name == notice.task_id else f"{notice.task_id} ({notice.task_name})"
    where = f"on {notice.node}"
    run = notice.run
    about_run = f" [run {run.run_id}, {run.attempts} attempt(s)]" if run else ""
    error = f": {run.error}" if run and run.error else ""
    if notice.event == FAILING:
        return f"taskd: {name} is failing {where}{error}{about_run}"
    if notice.event == REMINDER:
        since = format_duration(round(notice.at - notice.after.since))
        count = f"{failures} failure(s) since the last alert"
        return f"taskd: {name} is still failing {where} (for {since}; {count}){error}{about_run}"
    if notice.event == RECOVERED:
        if failing_for is not None:
            how_long = f" after failing for {format_duration(round(failing_for))} ({failures} failure(s))"
        else:
            how_long = " (it was overdue)"
        return f"taskd: {name} recovered {where}{how_long}{about_run}"
    within = format_duration(notice.success_within_s or 0)
    last = (
        f"last success {iso(notice.last_success)}"
        if notice.last_success is not None
        else f"no success since {iso(notice.before.first_seen)}"
    )
    gone = "" if notice.defined else "; the task was deleted through the API"
    return f"taskd: {name} is overdue: expected a success within {within}; {last}{gone}"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


SLACK_MARK = {
    FAILING: ":red_circle:",
    REMINDER: ":red_circle:",
    RECOVERED: ":large_green_circle:",
    OVERDUE: ":hourglass:",
}


def slack(body: dict[str, Any]) -> dict[str, Any]:
    """The alert for Slack (and Mattermost): a bold first line, the facts, a link, the log's end."""
    task = body["task"]
    headline = body["text"].removesuffix(f" [run {body['run_id']}, {body['attempts']} attempt(s)]")
    lines = [f"{SLACK_MARK[body['event']]} *{_slack_escape(headline)}*"]  # the run is on the next line
    facts = [
        f"task `{_slack_escape(task['id'])}`",
        f"node {_slack_escape(body['node'])} ({_slack_escape(body['host'])})",
    ]
    if body["run_id"]:
        run = f"<{body['run_url']}|{body['run_id']}>" if body["run_url"] else f"`{body['run_id']}`"
        facts.append(f"run {run} ({body['trigger']}, {body['attempts']} attempt(s))")
    if body["failing_since"]:
        began = "had been failing since" if body["event"] == RECOVERED else "failing since"
        facts.append(f"{began} {body['failing_since']}")
    lines.append(" · ".join(facts))
    tail = [_slack_escape(line) for line in body["log_tail"][-10:]]
    if tail and body["event"] != RECOVERED:
        lines.append("```\n" + "\n".join(tail) + "\n```")
    return {"text": "\n".join(lines)}


def email_text(body: dict[str, Any]) -> str:
    """The alert as a plain-text e-mail."""
    rows = [
        ("event", body["event"]),
        ("task", f"{body['task']['id']} ({body['task']['name']})"),
        ("node", f"{body['node']} ({body['host']})"),
        ("run", body["run_id"]),
        ("link", body["run_url"]),
        ("trigger", body["trigger"]),
        ("attempts", body["attempts"]),
        ("error", body["error"]),
        ("failing since", body["failing_since"]),
        ("last success", body["last_success"]),
    ]
    lines = [body["text"], ""] + [f"{label}: {value}" for label, value in rows if value is not None]
    if body["log_tail"]:
        lines += ["", "last log lines:", *body["log_tail"]]
    return "\n".join(lines)
