"""The command line, through the real entry points (`taskd` and `python -m taskd`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def taskd(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "taskd", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
    )


def test_console_script_is_installed() -> None:
    script = shutil.which("taskd")
    assert script, "pip install -e . should put a `taskd` script on PATH"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("taskd ")


def test_version() -> None:
    result = taskd("--version")
    assert result.returncode == 0
    assert result.stdout.strip().startswith("taskd ")


@pytest.mark.parametrize("command", [[], ["run"], ["check"], ["next"], ["processors"]])
def test_help_on_every_subcommand(command: list[str]) -> None:
    result = taskd(*command, "--help")
    assert result.returncode == 0
    assert "usage: taskd" in result.stdout


def test_next_prints_instants_strictly_after() -> None:
    result = taskd("next", "0 9 * * 1", "--after", "2026-11-23T09:00:00+00:00", "--count", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "2026-11-30T09:00:00+00:00",
        "2026-12-07T09:00:00+00:00",
        "2026-12-14T09:00:00+00:00",
    ]


def test_next_in_a_zone_across_spring_forward() -> None:
    """A naive --after is read in --tz; the skipped 02:30 fires at 03:00 EDT."""
    result = taskd("next", "30 2 * * *", "--tz", "America/New_York", "--after", "2026-03-08T00:00:00", "-n", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]


def test_next_defaults_to_now() -> None:
    result = taskd("next", "@every 1s", "--count", "2")
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and len(lines) == 2
    first = datetime.fromisoformat(lines[0])
    assert first.tzinfo is not None
    assert abs((first - datetime.now(first.tzinfo)).total_seconds()) < 30


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["61 * * * *"], "minute 61 out of range 0-59"),
        (["0 0 * * fri#2"], "nth weekday"),
        (["* * * * *", "--tz", "Mars/Base"], "unknown time zone"),
    ],
)
def test_next_rejects_bad_input_with_exit_2(args: list[str], fragment: str) -> None:
    result = taskd("next", *args)
    assert result.returncode == 2
    assert fragment in result.stderr and result.stdout == ""


def test_next_rejects_a_bad_after() -> None:
    result = taskd("next", "* * * * *", "--after", "yesterday")
    assert result.returncode == 2 and "ISO-8601" in result.stderr


def test_check_lists_tasks_with_status_schedule_zone_and_next_fires(tmp_path: Path) -> None:
    (tmp_path / "taskd.yml").write_text(
        "task: {time_zone: Europe/Berlin}\n"
        "tasks:\n"
        "  - {id: nightly, schedule: '30 2 * * *', pipeline: p}\n"
        "  - {id: paused, enabled: false, schedule: '@hourly', pipeline: p, time_zone: America/New_York}\n"
        "pipelines:\n  - name: p\n    processors: [{log: {message: hi}}]\n"
    )
    result = taskd("check", "-c", "taskd.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "OK: 2 task(s)" in out
    nightly, paused = out.split("\nnightly")[1].split("\npaused")
    assert "status:    enabled" in nightly and "Europe/Berlin" in nightly and "30 2 * * *" in nightly
    assert "status:    disabled" in paused and "America/New_York" in paused and "@hourly" in paused
    stamps = [line.split()[-1] for line in nightly.splitlines() if "T02:30:00" in line]
    assert len(stamps) == 3
    assert all(datetime.fromisoformat(s).utcoffset() is not None for s in stamps)


def test_check_fails_with_every_error_on_stderr(tmp_path: Path) -> None:
    (tmp_path / "taskd.yml").write_text(
        "task:\n  time_zone: Nope/Nope\ntasks:\n  - {id: a, schedule: '* * *', pipeline: q}\n"
    )
    result = taskd("check", "-c", "taskd.yml", cwd=tmp_path)
    assert result.returncode == 2
    assert "taskd.yml:2: task.time_zone: unknown time zone 'Nope/Nope'" in result.stderr
    assert "taskd.yml:4: tasks[0].schedule: invalid cron expression" in result.stderr
    assert "taskd.yml:4: tasks[0].pipeline: unknown pipeline 'q'" in result.stderr
    assert "3 errors" in result.stderr
    assert result.stdout == ""


def test_check_reads_taskd_config_from_the_environment(tmp_path: Path) -> None:
    result = taskd("check", cwd=tmp_path, env={"TASKD_CONFIG": str(ROOT / "taskd.yml")})
    assert result.returncode == 0, result.stderr
    assert "health_check" in result.stdout


def test_check_on_the_bundled_config() -> None:
    result = taskd("check")
    assert result.returncode == 0, result.stderr
    for task_id in ("health_check", "self_ping", "data_backup", "log_rotation"):
        assert f"\n{task_id}" in result.stdout


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = taskd("check", "-c", "absent.yml", cwd=tmp_path)
    assert result.returncode == 2 and "config file not found" in result.stderr
