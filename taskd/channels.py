"""Where alerts go: the channel settings (webhook, e-mail, the daemon log) that `send_alert` steps
and the `alerts:` routes share, and the delivery of one message to one channel.

A delivery raises `DeliveryFailed`; `permanent` says whether trying again could help (a webhook
refusing the request with a 4xx other than 408 and 429 will refuse it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, StrictInt, StrictStr, model_validator

from taskd.processor import TYPE_NAME, Duration, ProcessorOptions, StepFailed


class DeliveryFailed(StepFailed):
    """A channel did not take the message."""


def _http_url(value: str) -> str:
    """An http(s) URL, a template filled at run time ({params.hook}), or empty (no webhook)."""
    if value and "{" not in value and not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    return value


def _url_shorthand(value: Any) -> Any:
    """`webhook: URL` is `webhook: {url: URL}`."""
    if isinstance(value, str):
        return {"url": value}
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"webhook must be a URL or {{url, format, headers, timeout}}; got {value!r}")
    return value


def _log_switch(value: Any) -> Any:
    """`log: true` is `log: {}` (warning level); `log: false`, no log channel."""
    if value is True:
        return {}
    if value is False:
        return None
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"log must be true, false or {{level}}; got {value!r}")
    return value


class WebhookChannel(ProcessorOptions):
    url: Annotated[StrictStr, AfterValidator(_http_url)] = Field(
        description="http(s) URL that receives a JSON POST (empty: none)"
    )
    format: Literal["json", "slack"] = Field("json", description="json: the full alert; slack: {text} (Mattermost too)")
    headers: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="extra request headers")
    timeout: Duration = Field(10.0, description="seconds for the request")


class EmailChannel(ProcessorOptions):
    host: StrictStr = Field(description="SMTP server")
    port: StrictInt = Field(25, ge=1, le=65535, description="SMTP port (587 with starttls, 465 with ssl)")
    sender: StrictStr = Field(
        default_factory=lambda: f"taskd@{socket.gethostname()}",
        alias="from",
        description="From address (default: taskd@host)",
    )
    to: tuple[StrictStr, ...] = Field(min_length=1, description="recipients")
    starttls: StrictBool = Field(False, description="upgrade the connection with STARTTLS")
    ssl: StrictBool = Field(False, description="connect with TLS from the start (SMTPS)")
    verify_tls: StrictBool = Field(True, description="check the server's certificate")
    username: StrictStr | None = Field(None, description="SMTP login")
    password: StrictStr | None = Field(None, description="SMTP password")
    subject: StrictStr | None = Field(
        None,
        description="subject template; default: [taskd] {task.id}: {outcome.state} for send_alert,"
        " [taskd] {task.id} {event} for the alerts: routes",
    )
    timeout: Duration = Field(30.0, description="seconds for the whole exchange")


class LogChannel(ProcessorOptions):
    level: Literal["info", "warning", "error"] = Field("warning", description="level in the daemon log")


Webhook = Annotated[WebhookChannel | None, BeforeValidator(_url_shorthand)]
"""A URL, or {url, format, headers, timeout}."""
Log = Annotated[LogChannel | None, BeforeValidator(_log_switch)]
"""true, or {level}."""


class ChannelEntry(ProcessorOptions):
    """One item of a `channels:` list: exactly one of webhook, email, log."""

    webhook: Webhook = Field(
        None, description="a URL, or {url, format, headers, timeout}", json_schema_extra={TYPE_NAME: "URL or mapping"}
    )
    email: EmailChannel | None = None
    log: Log = Field(None, description="true, or {level}", json_schema_extra={TYPE_NAME: "boolean or mapping"})

    @model_validator(mode="after")
    def _exactly_one(self) -> ChannelEntry:
        given = [name for name in ("webhook", "email", "log") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("each entry of channels names exactly one of webhook, email, log")
        return self


Channel = tuple[str, Any]
"""A channel to send to: its kind (webhook, email, log) and its settings."""


def channels_of(*holders: Any) -> list[Channel]:
    """The channels that objects with `webhook`, `email` and `log` attributes name, in order;
    an empty webhook (say, from an unset ${VAR:-}) names none."""
    out: list[Channel] = []
    for holder in holders:
        for name in ("webhook", "email", "log"):
            value = getattr(holder, name)
            if value is None or (isinstance(value, WebhookChannel) and not value.url):
                continue
            out.append((name, value))
    return out


def describe_channel(kind: str, channel: Any) -> str:
    """A channel as a log line names it (never its credentials or headers)."""
    if kind == "webhook":
        return f"webhook {channel.url}"
    if kind == "email":
        return f"email to {', '.join(channel.to)} via {channel.host}:{channel.port}"
    return "log"


async def send_webhook(channel: WebhookChannel, payload: dict[str, Any]) -> str:
    """POST `payload` as JSON; returns what happened, raises DeliveryFailed."""
    import aiohttp  # the daemon has it loaded already; `taskd check` need not load it

    timeout = aiohttp.ClientTimeout(total=channel.timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(channel.url, json=payload, headers=channel.headers) as response,
        ):
            if response.status >= 300:
                body = (await response.content.read(300)).decode(errors="replace")
                status = response.status
                raise DeliveryFailed(
                    f"webhook {channel.url}: status {status}: {body}",
                    permanent=400 <= status < 500 and status not in (408, 429),
                )
            return f"webhook {channel.url}: {response.status}"
    except TimeoutError:
        raise DeliveryFailed(f"webhook {channel.url}: no answer within {channel.timeout:g}s") from None
    except aiohttp.InvalidURL as exc:  # a template filled with something that is no URL
        raise DeliveryFailed(f"webhook {channel.url}: not a URL: {exc}", permanent=True) from None
    except aiohttp.ClientError as exc:
        raise DeliveryFailed(f"webhook {channel.url}: {type(exc).__name__}: {exc}") from None


def send_email(channel: EmailChannel, subject: str, body: str, attachment: dict[str, Any]) -> str:
    """Send one message over SMTP (blocking: call it in a thread); raises DeliveryFailed."""
    import smtplib  # only deployments that send e-mail pay for these imports
    import ssl
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.to)
    message["Subject"] = subject
    message.set_content(body)
    message.add_attachment(
        json.dumps(attachment, indent=2, default=str).encode(),
        maintype="application",
        subtype="json",
        filename="alert.json",
    )
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
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryFailed(f"email via {channel.host}:{channel.port}: login refused: {exc}", permanent=True) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"email via {channel.host}:{channel.port}: {type(exc).__name__}: {exc}") from None
    if refused:
        raise DeliveryFailed(f"email via {channel.host}: recipients refused: {', '.join(refused)}", permanent=True)
    return f"email to {', '.join(channel.to)}"


T = TypeVar("T")
_MAILERS = threading.BoundedSemaphore(4)


async def in_thread(work: Callable[..., T], *args: Any) -> T:
    """Run blocking `work` (an SMTP exchange) in a daemon thread of its own, at most 4 at once.

    Not in the loop's default executor: a mail server that never answers would hold its few
    threads, which every shell step's end and each metrics scrape need, and would hold the
    process at exit. A daemon thread holds neither; the exchange's own timeout ends it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # the waiter was cancelled meanwhile
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def body() -> None:
        with _MAILERS:
            try:
                result = work(*args)
            except BaseException as exc:
                outcome: tuple[T | None, BaseException | None] = (None, exc)
            else:
                outcome = (result, None)
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=body, name="taskd-mail", daemon=True).start()
    return await done
