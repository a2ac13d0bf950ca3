"""`taskd import-crontab`: a crontab corpus covering each rule of crontab(5); the result passes
`taskd check` on its own, and every job fires at the instants cron's reference (cronsim) gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from cronsim import CronSim
from support.cli import taskd

from taskd.config import load_config
from taskd.crontab import read_crontab, split_percent, to_yaml

CORPUS = r"""# m h  dom mon dow   command (a user's crontab, as `crontab -l` prints it)
SHELL=/bin/sh
PATH=/usr/local/bin:/usr/bin:/bin
MAILTO=ops@example.org
# Every quarter of an hour
*/15 * * * * /usr/local/bin/poll-queue --fast
0 2 * * * /srv/backup.sh >> /var/log/backup.log 2>&1
30 4 1,15 * 5 /usr/bin/report
0 9-17/2 * * MON-FRI echo office
0 0 1 JAN,JUL * /usr/bin/half-year
5 4 * * sun /usr/bin/weekly
0 0 * * 7 echo seven-is-sunday
15 3 * * 1-5 echo weekdays
0 0 29 2 * echo leap
23 0-20/2 * * * echo every-other-hour
0 0 1-7 * 1 echo first-week-or-monday
*/5 * * feb-apr sat,sun echo spring-weekends
0 */6 * * * echo six-hourly
1-59/7 * * * * echo odd-steps
0 12 * * 1,3,5 echo mwf
59 23 31 12 * echo new-years-eve
0 0 * jan-mar,oct-dec * echo winter
@hourly echo hourly
@daily echo daily
@midnight echo midnight
@weekly echo weekly
@monthly echo monthly
@yearly echo yearly
@annually echo annually
@reboot echo booted >> /tmp/booted
GREETING="hello there"
0 8 * * * echo "$GREETING" from ${HOME}
0 7 * * * mail -s "Morning" root%Good morning,%the report is attached.%
0 6 * * * printf '100\%\n'
0 5 * * * date +\%Y-\%m-\%d
SHELL=/bin/bash
0 4 * * * [[ -d /srv ]] && echo bash-only
SHELL=/bin/sh
CRON_TZ=America/New_York
30 1 * * * echo new-york
0 3 * * * echo dst-gap-in-new-york
CRON_TZ=Mars/Olympus
0 12 L * * echo last-day
@every 5m echo not-crontab
0 5 * * *
MAILTO=""
0 1 * * * echo quiet
61 * * * * echo bad-minute
# trailing comment
"""


CRONTAB_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""crontab(5)'s table of macros."""


def test_the_corpus_has_at_least_forty_lines_each_carried_over_or_explained() -> None:
    lines = [line for line in CORPUS.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(lines) >= 40
    crontab = read_crontab(CORPUS)
    numbered = {n for n, line in enumerate(CORPUS.splitlines(), 1) if line.strip() and not line.startswith("#")}
    env_lines = {n for n, line in enumerate(CORPUS.splitlines(), 1) if "=" in line.split(" ")[0]}
    carried = {job.line for job in crontab.jobs}
    skipped = dict(crontab.skipped)
    assert numbered - env_lines == carried | (skipped.keys() - env_lines)  # each job line is one or the other
    reasons = {CORPUS.splitlines()[n - 1]: why for n, why in crontab.skipped}
    assert "'L' (last day) is not part of crontab(5)" in reasons["0 12 L * * echo last-day"]
    assert reasons["@every 5m echo not-crontab"].startswith("unknown schedule '@every'")
    assert reasons["0 5 * * *"] == "no command after the schedule"
    assert "minute" in reasons["61 * * * * echo bad-minute"]
    assert reasons["CRON_TZ=Mars/Olympus"].startswith("CRON_TZ=Mars/Olympus: ")
    assert crontab.trailing == ["trailing comment"]


@pytest.mark.parametrize("start", ["2026-12-01T10:23:00", "2027-02-27T23:59:00", "2027-03-07T05:00:00"])
def test_every_job_fires_when_cron_would(start: str, tmp_path: Path) -> None:
    path = tmp_path / "taskd.yml"
    path.write_text(to_yaml(read_crontab(CORPUS), "crontab"))
    config = load_config(path, {})
    crontab = {job.task_id: job for job in read_crontab(CORPUS).jobs}
    checked = 0
    for task in config.tasks:
        job = crontab[task.id]
        if task.at_start:
            continue
        zone = ZoneInfo(config.zone_for(task))
        moment = datetime.fromisoformat(start).replace(tzinfo=zone)
        ours = config.schedule_for(task).next_n(moment, 12)  # type: ignore[union-attr]
        reference = CronSim(CRONTAB_MACROS.get(job.schedule, job.schedule), moment)
        expected = [next(reference) for _ in range(12)]
        assert [t.astimezone(UTC) for t in ours] == [t.astimezone(UTC) for t in expected], job.source
        checked += 1
    assert checked >= 30


def test_the_result_passes_taskd_check_on_its_own(tmp_path: Path) -> None:
    (tmp_path / "crontab").write_text(CORPUS)
    made = taskd("import-crontab", "crontab", "-o", "taskd.yml", "--smtp", "mail.example:2525", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "line(s) not carried over" in made.stdout
    assert "crontab:43: not carried over: invalid cron expression '0 12 L * *'" in made.stderr
    checked = taskd("check", "-c", "taskd.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    text = (tmp_path / "taskd.yml").read_text()
    assert "# Every quarter of an hour\n  # line 6: */15 * * * * /usr/local/bin/poll-queue --fast" in text
    assert "#   line 43: invalid cron expression '0 12 L * *'" in text and "# trailing comment" in text
    document = yaml.safe_load(text)
    assert document["alerts"] == {
        "channels": [{"email": {"host": "mail.example", "port": 2525, "to": ["ops@example.org"]}}]
    }
    quiet = next(t for t in document["tasks"] if t["id"] == "echo-47")
    assert quiet["alerts"] is False


def test_environment_lines_shell_zone_and_percent_signs(tmp_path: Path) -> None:
    path = tmp_path / "taskd.yml"
    path.write_text(to_yaml(read_crontab(CORPUS), "crontab"))
    config = load_config(path, {})
    tasks = {task.id: task for task in config.tasks}
    steps = {name: pipeline.processors[0].options for name, pipeline in config.pipelines.items()}
    greeting = next(t for t in tasks.values() if t.env.get("GREETING"))
    assert greeting.env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "GREETING": "hello there"}
    assert steps[greeting.id].command == 'echo "$GREETING" from ${HOME}'  # for the shell, not taskd, to expand
    mail = steps["mail-33"].command
    assert (
        mail
        == "mail -s \"Morning\" root <<'TASKD_CRON_INPUT'\nGood morning,\nthe report is attached.\nTASKD_CRON_INPUT"
    )
    assert steps["printf-34"].command == "printf '100%\\n'" and steps["date-35"].command == "date +%Y-%m-%d"
    bash = next(t for t in tasks.values() if "bash-only" in str(steps[t.id].argv))
    assert steps[bash.id].argv == ("/bin/bash", "-c", "[[ -d /srv ]] && echo bash-only")
    assert tasks["echo-40"].time_zone == "America/New_York" and tasks["echo-47"].time_zone == "America/New_York"
    assert tasks["echo-32"].time_zone is None
    assert tasks["echo-30"].schedule == "@reboot" and tasks["echo-30"].at_start
    assert all(t.concurrency == "allow" for t in tasks.values())


def test_mailto_without_an_smtp_server_is_a_note(tmp_path: Path) -> None:
    text = to_yaml(read_crontab(CORPUS), "crontab")
    assert "# MAILTO=ops@example.org: give --smtp HOST[:PORT]" in text and "\nalerts:" not in text


@pytest.mark.parametrize(
    ("command", "run", "stdin"),
    [
        ("echo hi", "echo hi", None),
        ("cat%one%two", "cat", "one\ntwo\n"),
        ("cat%", "cat", ""),
        (r"date +\%s", "date +%s", None),
        (r"echo a\%b%x\%y%", "echo a%b", "x%y\n"),
        ("echo 100\\", "echo 100\\", None),
        (r"echo \\%in", "echo \\\\", "in\n"),
        (r"cat%a\\b\q", "cat", "a\\b\\q\n"),
    ],
)
def test_percent_signs(command: str, run: str, stdin: str | None) -> None:
    assert split_percent(command) == (run, stdin)


def test_a_system_crontab_has_a_user_column(tmp_path: Path) -> None:
    system = (
        "SHELL=/bin/sh\n17 * * * * root cd / && run-parts --report /etc/cron.hourly\n25 6 * * * www-data /srv/purge\n"
    )
    crontab = read_crontab(system, system=True)
    assert [(job.user, job.command) for job in crontab.jobs] == [
        ("root", "cd / && run-parts --report /etc/cron.hourly"),
        ("www-data", "/srv/purge"),
    ]
    (tmp_path / "system").write_text(system)
    only = taskd("import-crontab", "system", "--system", "--user", "www-data", cwd=tmp_path)
    assert only.returncode == 0 and "purge-3" in only.stdout and "run-parts" not in only.stdout.split("tasks:")[1]
    assert "system:2: not carried over: a job of user root, not www-data" in only.stderr
    assert "(cron ran it as www-data)" in only.stdout
    broken = read_crontab("0 5 * * * root\n", system=True)
    assert broken.skipped == [(1, "no command after the schedule and the user")]


def test_reading_a_missing_file_or_an_existing_output_is_refused(tmp_path: Path) -> None:
    missing = taskd("import-crontab", "nothing", cwd=tmp_path)
    assert missing.returncode == 1 and "cannot read nothing" in missing.stderr
    (tmp_path / "crontab").write_text("@daily true\n")
    (tmp_path / "taskd.yml").write_text("")
    exists = taskd("import-crontab", "crontab", "-o", "taskd.yml", cwd=tmp_path)
    assert exists.returncode == 2 and "exists" in exists.stderr
    bad = taskd("import-crontab", "crontab", "--smtp", "host:port", cwd=tmp_path)
    assert bad.returncode == 2 and "--smtp must be HOST or HOST:PORT" in bad.stderr


def test_the_reference_agrees_on_a_dst_change() -> None:
    """A sanity check of the comparison itself: New York's spring-forward night."""
    start = datetime(2027, 3, 13, 12, 0, tzinfo=ZoneInfo("America/New_York"))
    it = CronSim("30 2 * * *", start)
    first = next(it)
    assert first.date() == (start + timedelta(days=1)).date() or first.date() == (start + timedelta(days=2)).date()
