"""Live logs over server-sent events as a shell step writes them, through the real app and
engine, and through `taskd run`."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from conftest import Api, Daemon, base_config, ts
from support.live import PIPELINES, TASKS, sse

ApiFactory = Callable[..., Awaitable[Api]]


async def follow(api: Api, run_id: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    async with api.client.get(
        f"/run/{run_id}/log?follow=1", headers={"Accept": "text/event-stream", **(headers or {})}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        return [event async for event in sse(response) if "comment" not in event]


async def test_a_follower_gets_each_line_as_it_is_written_then_the_end(api_factory: ApiFactory) -> None:
    api = await api_factory(base_config(TASKS, PIPELINES))
    run_id = await api.start_task("talk")
    events = await asyncio.wait_for(follow(api, run_id), 10)
    lines, end = events[:-1], events[-1]
    assert [(e["data"]["stream"], e["data"]["line"]) for e in lines] == [
        ("stdout", "one"),
        ("stdout", "two"),
        ("stderr", "oops"),
    ]
    assert [int(e["id"]) for e in lines] == [e["data"]["seq"] for e in lines] == [1, 2, 3]
    # Each line reached the follower right after it was written (a generous bound: bench/ measures).
    assert all(e["received"] - ts(e["data"]["time"]) < 0.25 for e in lines), lines
    assert lines[1]["received"] - lines[0]["received"] > 0.3  # live, not all at the end
    assert end["event"] == "end" and end["data"] == {"state": "completed", "error": None}
    plain = await api.request("GET", f"/run/{run_id}/log")  # without follow: text/plain as before
    assert plain.headers["Content-Type"].startswith("text/plain") and "[stdout] two" in plain.text


async def test_last_event_id_resumes_without_repeats_and_late_joiners_get_everything(api_factory: ApiFactory) -> None:
    api = await api_factory(base_config(TASKS, PIPELINES))
    run_id = await api.start_task("talk")
    resumed = await asyncio.wait_for(follow(api, run_id, {"Last-Event-ID": "1"}), 10)
    assert [e.get("id") for e in resumed] == ["2", "3", None] and resumed[-1]["event"] == "end"
    late = await asyncio.wait_for(follow(api, run_id), 5)  # the run has ended: all at once
    assert [e["data"].get("line") for e in late[:-1]] == ["one", "two", "oops"]
    assert late[-1]["event"] == "end" and late[-1]["data"]["state"] == "completed"
    bad = await api.request("GET", f"/run/{run_id}/log?follow=1", headers={"Last-Event-ID": "x"})
    assert bad.status == 400


async def test_a_stopped_run_ends_its_followers_with_its_state(api_factory: ApiFactory) -> None:
    api = await api_factory(base_config(TASKS, PIPELINES))
    run_id = await api.start_task("talk")
    following = asyncio.create_task(follow(api, run_id))
    await asyncio.sleep(0.2)
    assert (await api.request("POST", "/task/talk/_stop")).status == 200
    events = await asyncio.wait_for(following, 10)
    assert events[-1]["event"] == "end" and events[-1]["data"]["state"] == "stopped"
    assert "stopped through the API" in events[-1]["data"]["error"]


async def test_two_hundred_followers_all_get_the_whole_log(api_factory: ApiFactory) -> None:
    api = await api_factory(base_config(TASKS, PIPELINES))
    run_id = await api.start_task("talk")
    followers = [asyncio.create_task(follow(api, run_id)) for _ in range(200)]
    results = await asyncio.wait_for(asyncio.gather(*followers), 20)
    for events in results:
        assert [e["data"].get("line") for e in events[:-1]] == ["one", "two", "oops"]
        assert events[-1]["event"] == "end"
    assert api.engine.live.followers == 0  # everyone unsubscribed


def test_a_follower_does_not_keep_the_daemon_from_stopping(daemon_factory: Callable[..., Daemon]) -> None:
    """SIGTERM ends open streams (a run's follower gets its end; /events closes) and exits promptly."""
    config = base_config("- {id: long, pipeline: p}", "- {name: p, processors: [{shell: {command: 'sleep 30'}}]}")
    daemon = daemon_factory(config.replace("shutdown_timeout: 5s", "shutdown_timeout: 0.5s")).start()
    run_id = daemon.start_task("long")

    async def watch() -> tuple[list[dict[str, Any]], int]:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.port}") as session:
            async with session.get(f"/run/{run_id}/log?follow=1") as log, session.get("/events") as states:
                await asyncio.sleep(0.3)
                began = time.monotonic()
                await asyncio.to_thread(daemon.stop)
                events = [e async for e in sse(log) if "comment" not in e]
                _ = [e async for e in sse(states)]
                return events, int(time.monotonic() - began)

    events, seconds = asyncio.run(watch())
    assert events[-1]["event"] == "end" and events[-1]["data"]["state"] == "stopped"
    assert seconds < 5


def test_followers_that_hang_up_cost_no_error(daemon_factory: Callable[..., Daemon]) -> None:
    """A follower that closes its connection is let go quietly, however the stream goes on: no
    handler error in the log when states are published to it, or when the daemon stops."""
    config = base_config("- {id: quick, pipeline: p}", "- {name: p, processors: [{sleep: {duration: 0}}]}")
    daemon = daemon_factory(config).start()
    for path in ("/events", "/events", f"/run/{daemon.start_task('quick')}/log?follow=1"):
        with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
            assert b"200 OK" in sock.recv(4096)
    for _ in range(5):  # state changes published to the gone followers
        daemon.wait_run(daemon.start_task("quick"))
    with socket.create_connection(("127.0.0.1", daemon.port)) as sock:  # and one gone at shutdown
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in sock.recv(4096)
        sock.shutdown(socket.SHUT_WR)
        assert daemon.stop() == 0
    assert "api_handler_failed" not in daemon.output()
