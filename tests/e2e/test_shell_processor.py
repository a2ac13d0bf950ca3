"""The shell processor for real: output streamed, params as environment variables, exit codes,
missing programs, and background children killed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support.processors import build, ctx

from taskd.processor import StepFailed


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
