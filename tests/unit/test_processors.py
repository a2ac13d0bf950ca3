"""Processors in-process: a loopback HTTP server, imported Python functions, log and sleep."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from support.processors import build, ctx

from taskd.processor import StepFailed


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def ok(request: web.Request) -> web.Response:
        body = await request.text()
        return web.json_response({"method": request.method, "body": body, "h": request.headers.get("X-T")})

    async def teapot(_: web.Request) -> web.Response:
        return web.Response(status=418, text="short and stout")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_route("*", "/ok", ok)
    app.router.add_get("/teapot", teapot)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_http_puts_status_and_body_in_the_context(server: str, tmp_path: Path) -> None:
    c = ctx(tmp_path)
    out = await build("http", url=f"{server}/ok", method="post", json={"a": 1}, headers={"X-T": "yes"}).run(c)
    assert out["http"]["status"] == 200
    assert '"method": "POST"' in out["http"]["body"] and '\\"a\\": 1' in out["http"]["body"]
    assert '"h": "yes"' in out["http"]["body"]


async def test_http_unexpected_status_unreachable_and_timeout(server: str, tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match=r"status 418, expected 200.*short and stout"):
        await build("http", url=f"{server}/teapot", expect=[200]).run(ctx(tmp_path))
    await build("http", url=f"{server}/teapot", expect=[418]).run(ctx(tmp_path))
    with pytest.raises(StepFailed, match="ClientConnectorError"):
        await build("http", url="http://127.0.0.1:9/", timeout=2).run(ctx(tmp_path))
    with pytest.raises(StepFailed, match=r"no complete answer within 0\.3s"):
        await build("http", url=f"{server}/slow", timeout=0.3).run(ctx(tmp_path))


async def test_python_sync_and_async_functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "jobs.py").write_text(
        textwrap.dedent(
            """
            import asyncio, threading
            def sync(ctx, factor):
                return {"product": ctx.params["n"] * factor, "thread": threading.current_thread().name}
            async def later(ctx):
                await asyncio.sleep(0)
                return 42
            def broken(ctx):
                raise RuntimeError("nope")
            """
        )
    )
    monkeypatch.setattr(sys, "path", list(sys.path))
    c = ctx(tmp_path, n=6)
    out = await build("python", function="jobs:sync", kwargs={"factor": 7}).run(c)
    assert out["product"] == 42 and out["thread"] != "MainThread"
    assert await build("python", function="jobs:later").run(c) == {"result": 42}
    with pytest.raises(RuntimeError, match="nope"):
        await build("python", function="jobs:broken").run(c)
    with pytest.raises(StepFailed, match="cannot import 'no_such_module'"):
        await build("python", function="no_such_module:f").run(c)
    with pytest.raises(StepFailed, match="has no attribute 'missing'"):
        await build("python", function="jobs:missing").run(c)


async def test_log_fills_safe_template_fields(tmp_path: Path) -> None:
    c = ctx(tmp_path, who="ops")
    c.data["size"] = 12
    await build("log", message="{task.id}/{run.id}#{attempt}: {params.who} {data.size}").run(c)
    assert c.log.lines == [("log", "t/r1#1: ops 12")]  # type: ignore[attr-defined]
    for template, fragment in [
        ("{params.nope}", "unknown field {params.nope}"),
        ("{os.environ}", "unknown field {os.environ}"),
        ("{params.who.__class__}", "unknown field"),
        ("{params[who]}", "item access is not allowed"),
        ("{", "bad template"),
    ]:
        with pytest.raises(StepFailed, match="option 'message'") as info:
            await build("log", message=template).run(c)
        assert fragment in str(info.value)


async def test_sleep_can_be_cancelled(tmp_path: Path) -> None:
    task = asyncio.create_task(build("sleep", duration="10s").run(ctx(tmp_path)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
