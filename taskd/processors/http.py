"""`http`: one HTTP request with aiohttp's client; fails on an unexpected status."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictInt, StrictStr, field_validator, model_validator

from taskd.pipeline import Duration, ProcessorOptions, ProcessorType

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


TYPE = ProcessorType("http", HttpOptions, "send an HTTP request; fails unless the status is expected")
