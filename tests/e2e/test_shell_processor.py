"""The shell processor for real: output streamed, params as environment variables, exit codes,
missing programs, and background children killed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from taskd.processor import Context, StepFailed
from taskd.processors import registry


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def write(self, stream: str, text: str) -> None:
        self.lines.append((stream, text))


def ctx(tmp_path: Path, **params: Any) -> Context:
    return Context(
        task_id="t", task_name="T", run_id="r1", attempt=1, trigger="manual", params=params,
        log=Lines(), base_dir=tmp_path, time_zone="UTC",
    )  # fmt: skip


def build(kind: str, **options: Any) -> Any:
    spec = registry().types[kind]
    return spec.build(spec.options.model_validate(options))


async def test_shell_streams_output_and_passes_params_as_environment(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    c = ctx(tmp_path, who="$(id)", count=3)
    proc = build(
        "shell",
        command='echo "hi $TASKD_PARAM_WHO $TASKD_PARAM_COUNT $EXTRA $TASKD_RUN_ID"; pwd; echo oops >&2',
        env={"EXTRA": "x"},
        cwd="sub",
    )
    assert await proc.run(c) == {"exit_code": 0}
    lines = c.log.lines  # type: ignore[attr-defined]
    assert ("stdout", "hi $(id) 3 x r1") in lines
    assert ("stdout", str(tmp_path / "sub")) in lines and ("stderr", "oops") in lines


async def test_shell_argv_runs_without_a_shell(tmp_path: Path) -> None:
    c = ctx(tmp_path)
    await build("shell", argv=["printf", "%s", "a b; echo c"]).run(c)
    assert c.log.lines == [("stdout", "a b; echo c")]  # type: ignore[attr-defined]


async def test_shell_failure_reports_exit_code_and_stderr_tail(tmp_path: Path) -> None:
    proc = build("shell", command="for i in 1 2 3 4 5 6 7; do echo line$i >&2; done; exit 4")
    with pytest.raises(StepFailed) as info:
        await proc.run(ctx(tmp_path))
    message = str(info.value)
    assert "exit code 4" in message and "line7" in message and "line3" in message and "line2" not in message


async def test_shell_missing_program_is_a_step_failure(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="cannot start 'no-such-program-xyz'"):
        await build("shell", argv=["no-such-program-xyz"]).run(ctx(tmp_path))


async def test_shell_kills_leftover_background_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    await build("shell", command=f"sleep 300 & echo $! > {pidfile}").run(ctx(tmp_path))
    pid = int(pidfile.read_text())
    for _ in range(100):
        if not _alive(pid):
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the background child outlived its step")


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


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
