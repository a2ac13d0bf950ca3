"""`send_alert`: tell people how a run ended, by webhook, e-mail and/or the daemon log.

It runs in the final phase (by default on failure; `condition:` or `when:` say otherwise). The
alert carries the task, run id, state, error, duration and the last lines of the run log. A channel
that fails is logged and recorded on the step; the run's outcome never changes because of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, StrictStr

from taskd.channels import (
    ChannelEntry,
    EmailChannel,
    Log,
    LogChannel,
    Webhook,
    channels_of,
    in_thread,
    send_email,
    send_webhook,
)
from taskd.processor import TYPE_NAME, Context, ProcessorOptions, ProcessorType, StepFailed

STEP_SUBJECT = "[taskd] {task.id}: {outcome.state}"


class AlertOptions(ProcessorOptions):
    condition: Literal["failure", "success", "always"] | None = Field(
        None, description="when to alert (same as when:); default failure"
    )
    webhook: Webhook = Field(
        None, description="a URL, or {url, format, headers, timeout}", json_schema_extra={TYPE_NAME: "URL or mapping"}
    )
    email: EmailChannel | None = Field(None, description="SMTP settings and recipients")
    log: Log = Field(
        None,
        description="true, or {level}: write the alert to the daemon log",
        json_schema_extra={TYPE_NAME: "boolean or mapping"},
    )
    channels: tuple[ChannelEntry, ...] = Field((), description="several channels: a list of {webhook|email|log: ...}")
    message: StrictStr | None = Field(None, description="summary template; default: task, state, error, duration")

    def notes(self) -> list[str]:
        if not self.given():
            return ["no channel (webhook, email, log, channels): alerts go to the daemon log"]
        return []

    def entries(self) -> list[tuple[str, Any]]:
        """The channels to send to; with none given, the daemon log."""
        return self.given() or [("log", LogChannel())]

    def given(self) -> list[tuple[str, Any]]:
        return channels_of(self, *self.channels)


def build_alert(ctx: Context, message: str | None) -> dict[str, Any]:
    outcome = ctx.outcome or {"state": "unknown", "error": None, "attempts": ctx.attempt, "duration": None}
    tail = ctx.recent_log()
    summary = (
        ctx.format(message, "message")
        if message
        else f"taskd: task {ctx.task_id} ({ctx.task_name}) {outcome['state']}"
        + (f": {outcome['error']}" if outcome.get("error") else "")
        + f" [run {ctx.run_id}, {outcome.get('attempts')} attempt(s), {outcome.get('duration')}s]"
    )
    return {
        "text": summary,
        "task": {"id": ctx.task_id, "name": ctx.task_name},
        "run_id": ctx.run_id,
        "state": outcome["state"],
        "error": outcome.get("error"),
        "duration": outcome.get("duration"),
        "attempts": outcome.get("attempts"),
        "trigger": ctx.trigger,
        "log_tail": tail,
    }


def email_body(alert: dict[str, Any]) -> str:
    body = [alert["text"], "", f"task: {alert['task']['id']}", f"run: {alert['run_id']}", f"state: {alert['state']}"]
    if alert["error"]:
        body.append(f"error: {alert['error']}")
    return "\n".join([*body, "", "last log lines:", *alert["log_tail"]])


def slack_payload(alert: dict[str, Any]) -> dict[str, Any]:
    tail = "\n".join(alert["log_tail"][-10:])
    return {"text": alert["text"] + (f"\n```\n{tail}\n```" if tail else "")}


class AlertProcessor:
    def __init__(self, options: AlertOptions) -> None:
        self.options = options

    async def run(self, ctx: Context) -> Mapping[str, Any]:
        alert = ctx.redactor.data(build_alert(ctx, self.options.message))
        sent, failed = [], []
        for kind, channel in self.options.entries():
            try:
                if kind == "webhook":
                    hook = ctx.render(channel)
                    sent.append(await send_webhook(hook, slack_payload(alert) if hook.format == "slack" else alert))
                elif kind == "email":
                    subject = ctx.redactor.text(ctx.format(channel.subject or STEP_SUBJECT, "email.subject"))
                    mail = ctx.render(channel)
                    sent.append(await in_thread(send_email, mail, subject, email_body(alert), alert))
                else:
                    if ctx.logger is not None:
                        getattr(ctx.logger, channel.level)(
                            "alert", **{k: v for k, v in alert.items() if k != "text"}, summary=alert["text"]
                        )
                    sent.append("log")
            except StepFailed as exc:
                failed.append(str(exc))
        for line in sent:
            ctx.info(f"alert sent: {line}")
        if failed:
            raise StepFailed("; ".join(failed) + (f" (sent: {', '.join(sent)})" if sent else ""))
        return {"alert": {"sent": sent, "state": alert["state"]}}


ALERT = ProcessorType(
    "send_alert",
    AlertOptions,
    "send the run's outcome to a webhook, e-mail and/or the log (final phase; on failure by default)",
    AlertProcessor,
    when_option="condition",
    default_when="failure",
)
