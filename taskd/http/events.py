"""Server-sent events: a run's log as it is written (`GET /run/{id}/log?follow=1`) and every run's
state changes (`GET /events`). Streams end on their own when the run ends, and when the daemon stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import web

from taskd.engine import Engine
from taskd.live import Event, StateChange, Subscription
from taskd.models import ACTIVE_STATES, iso
from taskd.store.base import LogLine, Store

HEARTBEAT_S = 15.0


class Streams:
    """The open streams, and the signal that the daemon is stopping."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = asyncio.Event()


STREAMS: web.AppKey[Streams] = web.AppKey("streams", Streams)
HEARTBEAT: web.AppKey[float] = web.AppKey("heartbeat", float)


def wants_stream(request: web.Request) -> bool:
    """`?follow=1`, or a client that asks for `text/event-stream` (without `follow=0`)."""
    follow = request.query.get("follow")
    if follow is not None and follow not in ("0", "1"):
        raise web.HTTPBadRequest(reason="follow must be 0 or 1")
    return follow == "1" or (follow is None and "text/event-stream" in request.headers.get("Accept", ""))


def setup(app: web.Application, heartbeat_s: float = HEARTBEAT_S) -> None:
    """Track the open streams, so that a stopping daemon ends them instead of waiting for them."""
    app[STREAMS] = Streams()
    app[HEARTBEAT] = heartbeat_s

    async def end_streams(app: web.Application) -> None:
        streams = app[STREAMS]
        streams.closing.set()  # each stream ends properly; one that does not within a second is cancelled
        if streams.tasks:
            _, pending = await asyncio.wait(list(streams.tasks), timeout=1.0)
            for task in pending:
                task.cancel()

    app.on_shutdown.append(end_streams)


async def _open(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    return response


@contextlib.contextmanager
def _tracked(request: web.Request) -> Iterator[None]:
    """Count the handler among the open streams while it streams."""
    task = asyncio.current_task()
    streams = request.app[STREAMS].tasks
    if task is not None:
        streams.add(task)
    try:
        yield
    finally:
        if task is not None:
            streams.discard(task)


def _event(data: Any, name: str | None = None, event_id: int | None = None) -> bytes:
    head = (f"event: {name}\n" if name else "") + (f"id: {event_id}\n" if event_id is not None else "")
    return f"{head}data: {json.dumps(data, default=str)}\n\n".encode()


def _line(line: LogLine) -> bytes:
    body = {"seq": line.seq, "time": iso(line.ts), "stream": line.stream, "line": line.line}
    return _event(body, event_id=line.seq)


class _Closing:
    """What `_next` answers when the daemon is stopping."""


CLOSING = _Closing()


async def _next(request: web.Request, subscription: Subscription) -> list[Event] | _Closing | None:
    """The next events; None when a heartbeat is due first; CLOSING when the daemon stops."""
    closing = request.app[STREAMS].closing
    if closing.is_set():
        return CLOSING
    events = subscription.pending()
    if events or subscription.overflowed:
        return events
    waiting = asyncio.ensure_future(subscription.wait())
    stopping = asyncio.ensure_future(closing.wait())
    try:
        done, _ = await asyncio.wait({waiting, stopping}, timeout=request.app[HEARTBEAT], return_when="FIRST_COMPLETED")
    finally:
        for future in (waiting, stopping):
            future.cancel()
    if stopping in done:
        return CLOSING
    return subscription.pending() if waiting in done else None


async def _incoming(
    request: web.Request, subscription: Subscription, response: web.StreamResponse
) -> AsyncIterator[Event]:
    """The subscription's events, writing heartbeats while it is quiet; ends when the daemon stops,
    or when the follower fell too far behind (it is told so)."""
    while True:
        events = await _next(request, subscription)
        if isinstance(events, _Closing):
            return
        if events is None:
            await response.write(b": heartbeat\n\n")
            continue
        for event in events:
            yield event
        if subscription.overflowed:
            await response.write(_event({"error": "too far behind; reconnect"}, name="error"))
            return


async def follow_log(
    request: web.Request, engine: Engine, store: Store, run_id: str, after_seq: int
) -> web.StreamResponse:
    """The run's log lines after `after_seq` (stored ones first, then live ones, none twice), then
    an `end` event with its final state and error."""
    with _tracked(request), engine.live.follow_run(run_id) as subscription:
        # Subscribed before reading the history: a line written meanwhile is in both; seq dedupes.
        response = await _open(request)
        with contextlib.suppress(ConnectionResetError):  # the follower went away: nobody to tell
            await _stream_log(request, engine, store, run_id, after_seq, subscription, response)
            await response.write_eof()
        return response


async def _stream_log(
    request: web.Request,
    engine: Engine,
    store: Store,
    run_id: str,
    after_seq: int,
    subscription: Subscription,
    response: web.StreamResponse,
) -> None:
    async for page in store.log_pages(run_id, after_seq):
        for line in page:
            await response.write(_line(line))
            after_seq = line.seq
    final = await _final(engine, store, run_id)
    if final is None:
        async for event in _incoming(request, subscription, response):
            if isinstance(event, LogLine):
                if event.seq > after_seq:
                    await response.write(_line(event))
                    after_seq = event.seq
            elif event.state not in ACTIVE_STATES:
                final = (event.state, event.error)
                break
    if final is not None:
        for event in subscription.pending():  # lines written just before the end
            if isinstance(event, LogLine) and event.seq > after_seq:
                await response.write(_line(event))
                after_seq = event.seq
        await response.write(_event({"state": final[0], "error": final[1]}, name="end"))


async def _final(engine: Engine, store: Store, run_id: str) -> tuple[str, str | None] | None:
    """The run's final state and error, or None while it is still going."""
    live = engine.live_run(run_id)
    if live is not None:
        return None if live.state in ACTIVE_STATES else (str(live.state), live.record.error)
    stored = await store.get_run(run_id)
    if stored is None or stored.state in ACTIVE_STATES:
        return None
    return str(stored.state), stored.error


async def follow_states(request: web.Request, engine: Engine) -> web.StreamResponse:
    """Every run's state changes as they happen (`event: run`), with a comment heartbeat."""
    with _tracked(request), engine.live.follow_all() as subscription:
        response = await _open(request)
        with contextlib.suppress(ConnectionResetError):  # the follower went away: nobody to tell
            async for event in _incoming(request, subscription, response):
                if isinstance(event, StateChange):
                    body = {
                        "run_id": event.run_id,
                        "task_id": event.task_id,
                        "state": event.state,
                        "at": iso(event.at),
                        "error": event.error,
                    }
                    await response.write(_event(body, name="run"))
            await response.write_eof()
        return response
