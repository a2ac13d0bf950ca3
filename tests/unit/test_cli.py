"""The command line through `cli.main(argv)`, in-process."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from support.cli import ROOT, taskd

from taskd import client


@pytest.mark.parametrize(
    "command",
    [[], ["run"], ["check"], ["next"], ["processors"], ["backup"], *([c] for c in client.COMMANDS)],
)
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
    assert "pipeline:  p (1 processor)\n" in nightly
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
    assert f"looked for absent.yml in {tmp_path}" in result.stderr


@pytest.mark.parametrize(
    ("api", "code"),
    [
        ("{listen: '0.0.0.0:8080'}", 2),
        ("{listen: '0.0.0.0:8080', token: secret}", 0),
        ("{listen: '0.0.0.0:8080', insecure: true}", 0),
        ("{listen: '[::1]:8080'}", 0),
        ("{listen: 'localhost:8080'}", 0),
        ("{listen: 'unix:/run/taskd/api.sock'}", 0),
    ],
)
def test_check_refuses_what_run_refuses_an_open_listener_without_a_token(tmp_path: Path, api: str, code: int) -> None:
    (tmp_path / "taskd.yml").write_text(f"api: {api}\n")
    result = taskd("check", "-c", "taskd.yml", cwd=tmp_path)
    assert result.returncode == code, result.stderr
    if code:
        assert "taskd.yml:1: api: refusing to listen on 0.0.0.0:8080 without api.token" in result.stderr


def test_processors_lists_option_types_in_words() -> None:
    result = taskd("processors")
    assert result.returncode == 0
    for python_spelling in ("Annotated", "Optional", "Literal[", "Strict(", "tuple[", "dict["):
        assert python_spelling not in result.stdout
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("    ")}
    assert "one of gzip|bzip2|xz" in lines["algorithm"] and "duration" in lines["kill_grace"]
    assert "list of integers" in lines["expect"] and "string (optional)" in lines["cwd"]


def test_backup_refuses_what_it_cannot_copy(tmp_path: Path) -> None:
    config = tmp_path / "taskd.yml"
    config.write_text("store: {url: 'postgresql://taskd@db.example/taskd'}\n")
    refused = taskd("backup", str(tmp_path / "copy.db"), "-c", str(config))
    assert refused.returncode == 2 and "pg_dump" in refused.stderr
    config.write_text("store: {path: ./var/taskd.db}\n")
    missing = taskd("backup", str(tmp_path / "copy.db"), "-c", str(config))
    assert missing.returncode == 1 and "there is no store at" in missing.stderr
    (tmp_path / "exists.db").write_text("")
    taken = taskd("backup", str(tmp_path / "exists.db"), "-c", str(config))
    assert taken.returncode == 2 and "exists" in taken.stderr


@pytest.mark.parametrize(
    "text",
    [
        "tasks:\n  - id: a\n    pipeline: !include other.yml\n",
        "task: !!python/object:os.system {a: 1}\n",
        "base: &b [1, 2]\ntasks:\n  - <<: *b\n",
        "x: &r [*r]\n",
        "".join(
            f"{name}: &{name} [" + ",".join([f"*{prev}" if prev else "lol"] * 9) + "]\n"
            for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
        ),
    ],
    ids=["include", "python-object", "bad-merge", "self-alias", "alias-bomb"],
)
def test_check_refuses_yaml_no_config_can_hold_with_exit_2_and_no_traceback(tmp_path: Path, text: str) -> None:
    (tmp_path / "taskd.yml").write_text(text)
    result = taskd("check", "-c", str(tmp_path / "taskd.yml"))
    assert result.returncode == 2, result
    assert "taskd.yml:" in result.stderr and "Traceback" not in result.stderr


def test_check_warns_of_sources_that_do_not_exist_yet(tmp_path: Path) -> None:
    (tmp_path / "here.txt").write_text("x")
    (tmp_path / "taskd.yml").write_text(
        "tasks:\n  - {id: b, pipeline: p}\n"
        "pipelines:\n  - name: p\n    processors:\n"
        "      - copy: {source: ./data, destination: ./out}\n"
        "      - copy: {source: ./here.txt, destination: ./out}\n"
        "      - compress: {path: './{params.day}.log'}\n"
        "      - rotate: {pattern: ./logs/*.log, keep: 3}\n"
    )
    result = taskd("check", "-c", "taskd.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = result.stdout.split("\nwarnings:\n")[1].splitlines()
    assert warnings == [
        f"  taskd.yml:6: pipeline p, step 1 (copy): source {tmp_path}/data does not exist (yet): the step fails,"
        " and is not retried, unless it appears",
        f"  taskd.yml:9: pipeline p, step 4 (rotate): pattern's directory {tmp_path}/logs does not exist (yet):"
        " the step finds nothing to rotate until it does",
    ]


def test_check_shows_where_alerts_go(tmp_path: Path) -> None:
    (tmp_path / "taskd.yml").write_text(
        "api: {token: hush-hush-token}\n"
        "alerts: {channels: [{log: true}, {webhook: 'https://hooks.example/hush-hush-token'}]}\n"
        "tasks:\n  - {id: a, pipeline: p, expect: {success_within: 26h}}\n"
        "  - {id: b, pipeline: p, alerts: false}\n  - {id: c, pipeline: p, alerts: {repeat_interval: 1h}}\n"
        "pipelines: [{name: p, processors: [{log: {message: hi}}]}]\n"
    )
    out = taskd("check", "-c", "taskd.yml", cwd=tmp_path).stdout
    assert "\nalerts: log, webhook https://hooks.example/***; a reminder every 4h while failing\n" in out
    a, b, c = (
        out.split("\na  (a)")[1].split("\nb  (b)")[0],
        out.split("\nb  (b)")[1].split("\nc  (c)")[0],
        out.split("\nc  (c)")[1],
    )
    assert "expect:    a success within 1d2h" in a and "alerts:" not in a
    assert "alerts:    off (alerts: false)" in b
    assert "alerts:    log, webhook https://hooks.example/***; a reminder every 1h while failing" in c
    (tmp_path / "taskd.yml").write_text("tasks: []\n")
    assert (
        "alerts: none: failures and overdue tasks are told to nobody"
        in taskd("check", "-c", "taskd.yml", cwd=tmp_path).stdout
    )
