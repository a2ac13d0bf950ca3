"""The API's listener: how many connections it keeps, how long a client may take, and what a
client that does not speak HTTP gets (a JSON 400, never an echo of its bytes or a traceback).

aiohttp's own handler closes a connection whose first request has not arrived within its
keep-alive timeout; this one adds a shorter header deadline for that first request, a cap on open
connections (past it the oldest connection with no request in progress is closed to make room),
and error answers in the API's JSON shape, logged at most once a second per kind.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

log = structlog.get_logger("taskd.http")


@dataclass(frozen=True)
class Limits:
    """What one client may hold and for how long (`api.header_timeout`, `idle_timeout`, `max_connections`)."""

    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    max_connections: int = 1024


class Throttle:
    """At most one line per `interval_s` for each kind of event; the lines between are counted."""

    def __init__(self, interval_s: float = 1.0, clock: Any = time.monotonic) -> None:
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, kind: str) -> int | None:
        """None when this event is to be counted only; else how many were held back before it."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._held.pop(kind, 0)


THROTTLE = Throttle()


def error_body(code: str, message: str, extra: dict[str, str] | None = None) -> str:
    """The API's error shape: `{"error": {"code", "message"}}`, and what a refusal adds (the role
    it needs)."""
    return json.dumps({"error": {"code": code, "message": message, **(extra or {})}})


class _Handler(RequestHandler):
    """One client connection, with the header deadline and JSON error answers."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = manager.limits
        self._deadline: asyncio.TimerHandle | None = None
        self.opened = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.opened = self._loop.time()
        self._deadline = self._loop.call_later(self._limits.header_timeout_s, self._headers_overdue)
        manager = self._manager
        if isinstance(manager, GuardedServer):
            manager.make_room(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _headers_overdue(self) -> None:
        self._deadline = None
        if self._request_count == 0:  # no complete request head within the deadline
            _count("header_timeout", "a client sent no complete request within api.header_timeout")
            self.drop()

    def drop(self) -> None:
        """Close the connection now, whatever it was doing."""
        self.closed = True
        self.force_close()
        if self.transport is not None:
            self.transport.close()

    @property
    def busy(self) -> bool:
        return bool(self._request_in_progress)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse or serve: answered as JSON without the client's bytes."""
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had begun; the connection is closed")
        if status >= 500:
            if THROTTLE.allow("internal") is not None:
                log.error("api_request_failed", exc_info=exc)
            body = error_body("internal", "internal error; see the daemon log")
        else:
            _count("bad_request", "a client sent a request that is not valid HTTP", error=type(exc).__name__)
            body = error_body("bad_request", f"malformed HTTP request ({status})")
        response = web.Response(status=status, text=body, content_type="application/json")
        response.force_close()
        return response


def _count(kind: str, message: str, **fields: Any) -> None:
    held = THROTTLE.allow(kind)
    if held is not None:
        log.warning("api_connection_refused", kind=kind, detail=message, held_back=held, **fields)


class GuardedServer(Server):
    """aiohttp's low-level server, making `_Handler`s and keeping at most `max_connections`."""

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)

    def open_connections(self) -> int:
        if len(self._connections) <= self.limits.max_connections:  # the cheap answer, nearly always
            return len(self._connections)
        return sum(1 for h in self._connections if isinstance(h, _Handler) and not h.closed)

    def make_room(self, newcomer: _Handler) -> None:
        """Past the cap, close the oldest connection with no request in progress (a slow or idle
        client); when every one is busy, the newcomer is the one closed."""
        # A connection closed a moment ago stays listed until its handler has finished: not counted.
        handlers = [h for h in self.connections if isinstance(h, _Handler) and not h.closed]
        excess = len(handlers) - self.limits.max_connections
        if excess <= 0:
            return
        idle = sorted((h for h in handlers if h is not newcomer and not h.busy), key=lambda h: h.opened)
        victims = idle[:excess] if len(idle) >= excess else [*idle, newcomer]
        _count("max_connections", "api.max_connections reached: the oldest idle connections were closed")
        for victim in victims:
            victim.drop()


class GuardedRunner(web.AppRunner):
    """web.AppRunner serving through a GuardedServer."""

    def __init__(self, app: web.Application, limits: Limits, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.idle_timeout_s, **kwargs)
        self._limits = limits

    async def _make_server(self) -> Server:
        plain = await super()._make_server()
        app_handler = plain.request_handler

        async def handle(request: BaseRequest) -> web.StreamResponse:
            # aiohttp answers an expectation it does not know with text quoting the header.
            expect = request.headers.get("Expect")
            if expect is not None and expect.lower() != "100-continue":
                body = error_body("expectation_failed", "only 'Expect: 100-continue' is supported")
                return web.Response(status=417, text=body, content_type="application/json")
            response = await app_handler(request)
            if server.open_connections() > self._limits.max_connections:
                # Over the cap because the others were busy when it came: this one closes once answered.
                response.force_close()
            return response

        server = GuardedServer(
            handle,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            limits=self._limits,
            **plain._kwargs,
        )
        return server


def quiet_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """The loop's own errors (accept() out of descriptors, a transport failing) logged at most once
    a second per message, with how many were held back."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "event loop error"))
        held = THROTTLE.allow("loop:" + message)
        if held is not None:
            exc = context.get("exception")
            log.error("event_loop_error", message=message, error=repr(exc) if exc else None, held_back=held)

    loop.set_exception_handler(handler)
