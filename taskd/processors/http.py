"""`http`: one HTTP request with aiohttp's client; fails on an unexpected status."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from pydantic import Field, StrictInt, StrictStr, field_validator, model_validator

from taskd.processor import Context, Duration, ProcessorOptions, ProcessorType, StepFailed

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class HttpOptions(ProcessorOptions):
    url: StrictStr = Field(description="http:// or https:// URL")
    method: Method = Field("GET", description="request method")
    headers: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="request headers")
    json_body: Any = Field(None, alias="json", description="value sent as a JSON body")
    body: StrictStr | None = Field(None, description="text sent as the body")
    expect: tuple[StrictInt, ...] = Field((200, 201, 202, 203, 204), description="accepted status codes")
    timeout: Duration = Field(30.0, description="seconds for the whole request")
    max_body: StrictInt = Field(2048, ge=0, le=1_048_576, description="bytes of the response kept")

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) < 8:
            raise ValueError(f"url must start with http:// or https://, got {value!r}")
        return value

    @field_validator("expect")
    @classmethod
    def _statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [code for code in value if not 100 <= code <= 599]
        if bad or not value:
            raise ValueError(f"expect must list HTTP status codes 100-599, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _one_body(self) -> HttpOptions:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give at most one of 'json' and 'body'")
        return self


class HttpProcessor:
    def __init__(self, options: HttpOptions) -> None:
        self.options = options

    async def run(self, ctx: Context) -> Mapping[str, Any]:
        o = ctx.render(self.options)
        started = time.perf_counter()
        timeout = aiohttp.ClientTimeout(total=o.timeout)
        kwargs: dict[str, Any] = {"headers": o.headers}
        if o.json_body is not None:
            kwargs["json"] = o.json_body
        elif o.body is not None:
            kwargs["data"] = o.body.encode()
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(o.method, o.url, **kwargs) as response,
            ):
                raw = await response.content.read(o.max_body) if o.max_body else b""
                status = response.status
        except TimeoutError:
            raise StepFailed(f"{o.method} {o.url}: no complete answer within {o.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise StepFailed(f"{o.method} {o.url}: {type(exc).__name__}: {exc}") from None
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        excerpt = raw.decode("utf-8", errors="replace")
        ctx.info(f"{o.method} {o.url} -> {status} in {elapsed_ms} ms")
        if status not in o.expect:
            short = ctx.redactor.text(excerpt)[:300].replace("\n", " ")  # masked before a secret is cut
            raise StepFailed(
                f"{o.method} {o.url}: status {status}, expected {', '.join(map(str, o.expect))}"
                + (f"; body: {short}" if short else ""),
                permanent=400 <= status < 500 and status not in TRANSIENT_4XX,
            )
        return {"http": {"url": o.url, "status": status, "body": excerpt, "elapsed_ms": elapsed_ms}}


TRANSIENT_4XX = frozenset({408, 429})
"""Client errors that may pass: a request timeout, too many requests. Other 4xx answers come again."""

TYPE = ProcessorType("http", HttpOptions, "send an HTTP request; fails unless the status is expected", HttpProcessor)
