"""`send_alert`: tell people how a run ended, by webhook, e-mail and/or the daemon log.

It runs in the final phase (by default on failure; `condition:` or `when:` say otherwise). The
alert carries the task, run id, state, error, duration and the last lines of the run log. A channel
that fails is logged and recorded on the step; the run's outcome never changes because of it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from pydantic import Field, StrictBool, StrictInt, StrictStr, model_validator

from taskd.processor import Context, Duration, ProcessorOptions, ProcessorType, StepFailed


class WebhookChannel(ProcessorOptions):
    url: StrictStr = Field(description="http(s) URL that receives a JSON POST")
    format: Literal["json", "slack"] = Field("json", description="json: the full alert; slack: {text} (Mattermost too)")
    headers: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="extra request headers")
    timeout: Duration = Field(10.0, description="seconds for the request")


class EmailChannel(ProcessorOptions):
    host: StrictStr = Field(description="SMTP server")
    port: StrictInt = Field(25, ge=1, le=65535, description="SMTP port (587 with starttls, 465 with ssl)")
    sender: StrictStr = Field(alias="from", description="From address")
    to: tuple[StrictStr, ...] = Field(min_length=1, description="recipients")
    starttls: StrictBool = Field(False, description="upgrade the connection with STARTTLS")
    ssl: StrictBool = Field(False, description="connect with TLS from the start (SMTPS)")
    verify_tls: StrictBool = Field(True, description="check the server's certificate")
    username: StrictStr | None = Field(None, description="SMTP login")
    password: StrictStr | None = Field(None, description="SMTP password")
    subject: StrictStr = Field("[taskd] {task.id}: {outcome.state}", description="subject template")
    timeout: Duration = Field(30.0, description="seconds for the whole exchange")


class LogChannel(ProcessorOptions):
    level: Literal["info", "warning", "error"] = Field("warning", description="level in the daemon log")


class ChannelEntry(ProcessorOptions):
    webhook: StrictStr | WebhookChannel | None = None
    email: EmailChannel | None = None
    log: StrictBool | LogChannel | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ChannelEntry:
        given = [name for name in ("webhook", "email", "log") if getattr(self, name) not in (None, False)]
        if len(given) != 1:
            raise ValueError("each entry of channels names exactly one of webhook, email, log")
        return self


class AlertOptions(ProcessorOptions):
    condition: Literal["failure", "success", "always"] | None = Field(
        None, description="when to alert (same as when:); default failure"
    )
    webhook: StrictStr | WebhookChannel | None = Field(None, description="a URL, or {url, format, headers, timeout}")
    email: EmailChannel | None = Field(None, description="SMTP settings and recipients")
    log: StrictBool | LogChannel | None = Field(None, description="true, or {level}: write the alert to the daemon log")
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
        out: list[tuple[str, Any]] = []
        for holder in (self, *self.channels):
            for name in ("webhook", "email", "log"):
                value = getattr(holder, name)
                if value is None or value is False or value == "":
                    continue  # an empty webhook (say, from an unset ${VAR:-}) means none
                if name == "webhook" and isinstance(value, str):
                    value = WebhookChannel(url=value)
                if name == "log" and value is True:
                    value = LogChannel()
                out.append((name, value))
        return out


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


async def _webhook(channel: WebhookChannel, alert: dict[str, Any]) -> str:
    if channel.format == "slack":
        tail = "\n".join(alert["log_tail"][-10:])
        payload: dict[str, Any] = {"text": alert["text"] + (f"\n```\n{tail}\n```" if tail else "")}
    else:
        payload = alert
    timeout = aiohttp.ClientTimeout(total=channel.timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(channel.url, json=payload, headers=channel.headers) as response,
        ):
            if response.status >= 300:
                body = (await response.content.read(300)).decode(errors="replace")
                raise StepFailed(f"webhook {channel.url}: status {response.status}: {body}")
            return f"webhook {channel.url}: {response.status}"
    except TimeoutError:
        raise StepFailed(f"webhook {channel.url}: no answer within {channel.timeout:g}s") from None
    except aiohttp.ClientError as exc:
        raise StepFailed(f"webhook {channel.url}: {type(exc).__name__}: {exc}") from None


def _send_email(channel: EmailChannel, subject: str, alert: dict[str, Any]) -> str:
    import smtplib  # only deployments that send e-mail pay for these imports
    import ssl
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.to)
    message["Subject"] = subject
    body = [alert["text"], "", f"task: {alert['task']['id']}", f"run: {alert['run_id']}", f"state: {alert['state']}"]
    if alert["error"]:
        body.append(f"error: {alert['error']}")
    body += ["", "last log lines:", *alert["log_tail"]]
    message.set_content("\n".join(body))
    message.add_attachment(json.dumps(alert, indent=2, default=str), filename="alert.json", subtype="json")
    context = ssl.create_default_context()
    if not channel.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        smtp_class = smtplib.SMTP_SSL if channel.ssl else smtplib.SMTP
        kwargs: dict[str, Any] = {"context": context} if channel.ssl else {}
        with smtp_class(channel.host, channel.port, timeout=channel.timeout, **kwargs) as smtp:
            if channel.starttls:
                smtp.starttls(context=context)
            if channel.username:
                smtp.login(channel.username, channel.password or "")
            refused = smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise StepFailed(f"email via {channel.host}:{channel.port}: {type(exc).__name__}: {exc}") from None
    if refused:
        raise StepFailed(f"email via {channel.host}: recipients refused: {', '.join(refused)}")
    return f"email to {', '.join(channel.to)}"


class AlertProcessor:
    def __init__(self, options: AlertOptions) -> None:
        self.options = options

    async def run(self, ctx: Context) -> Mapping[str, Any]:
        alert = ctx.redactor.data(build_alert(ctx, self.options.message))
        sent, failed = [], []
        for kind, channel in self.options.entries():
            try:
                if kind == "webhook":
                    sent.append(await _webhook(ctx.render(channel), alert))
                elif kind == "email":
                    subject = ctx.redactor.text(ctx.format(channel.subject, "email.subject"))
                    sent.append(await asyncio.to_thread(_send_email, ctx.render(channel), subject, alert))
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
