"""A crontab as a taskd.yml: each job a task and a one-step pipeline that fires at the same instants.

Reads what crontab(5) defines: a user's crontab (`crontab -l`) or a system one (`/etc/crontab`,
`/etc/cron.d/*`, with a user column); five-field schedules with ranges, steps, lists and names;
`@reboot`, `@daily` and the other macros; environment lines (`SHELL`, `PATH`, `MAILTO`, `CRON_TZ`,
any other variable for the jobs after it); `%` in a command (the first starts the job's standard
input, the next ones are newlines, `\\%` is a percent sign); comments, carried over. A line it
cannot carry over is listed with its number and why, never dropped in silence.

Pure: text in, text out (the command line reads the file and writes the result).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from taskd.errors import ScheduleError
from taskd.schedule import MACROS, load_zone, parse

_ENV = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_WORD = re.compile(r"[^A-Za-z0-9_.-]+")
CRON_PATH = "/usr/bin:/bin"
"""The PATH cron gives a job when the crontab sets none."""
AT_START = "@reboot"


@dataclass
class Job:
    """One crontab line that became a task."""

    line: int
    schedule: str
    command: str
    stdin: str | None
    env: dict[str, str]
    shell: str
    time_zone: str | None
    mailto: str | None
    user: str | None
    comments: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def task_id(self) -> str:
        first = self.command.split()[0] if self.command.split() else "job"
        word = _WORD.sub("-", first.rsplit("/", 1)[-1]).strip("-.") or "job"
        return f"{word[:40]}-{self.line}"


@dataclass
class Crontab:
    """What a crontab holds, as taskd sees it."""

    jobs: list[Job] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    """(line number, why) of each line that is not carried over."""
    trailing: list[str] = field(default_factory=list)
    """Comments after the last job."""


def read_crontab(text: str, system: bool = False) -> Crontab:
    """The jobs of a crontab; `system`: each job line has a user column before its command."""
    found = Crontab()
    env: dict[str, str] = {}
    shell, zone, mailto = "/bin/sh", None, None
    comments: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            comments.append(line[1:].strip())
            continue
        assignment = _ENV.match(raw) if not line[0].isdigit() and line[0] not in "*@" else None
        if assignment is not None:
            name, value = assignment.group(1), _unquoted(assignment.group(2))
            if name == "SHELL":
                shell = value or "/bin/sh"
            elif name == "MAILTO":
                mailto = value
            elif name == "CRON_TZ":
                try:
                    load_zone(value)
                except ScheduleError as exc:
                    found.skipped.append((number, f"CRON_TZ={value}: {exc}; the jobs after it keep the previous zone"))
                    continue
                zone = value
            else:
                env[name] = value
            continue
        job = _job(number, line, system, env, shell, zone, mailto)
        if isinstance(job, str):
            found.skipped.append((number, job))
            continue
        job.comments, comments = comments, []
        job.source = line
        found.jobs.append(job)
    found.trailing = comments
    return found


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _job(
    number: int,
    line: str,
    system: bool,
    env: dict[str, str],
    shell: str,
    zone: str | None,
    mailto: str | None,
) -> Job | str:
    """The job a line holds, or why it cannot be carried over."""
    macro = line.startswith("@")
    fields = 1 if macro else 5
    parts = line.split(None, fields + (1 if system else 0))
    if len(parts) < fields + (2 if system else 1):
        return "no command after the schedule" + (" and the user" if system else "")
    schedule = " ".join(parts[:fields])
    user = parts[fields] if system else None
    command = parts[-1]
    if macro and schedule != AT_START and schedule not in MACROS:
        return f"unknown schedule {schedule!r} (crontab(5) has @reboot, {', '.join(MACROS)})"
    if schedule != AT_START:
        try:
            parse(schedule, zone or "UTC")
        except ScheduleError as exc:
            return str(exc)
    run, stdin = split_percent(command)
    if not run.strip():
        return "the command is empty"
    return Job(number, schedule, run, stdin, dict(env), shell, zone, mailto, user)


def split_percent(command: str) -> tuple[str, str | None]:
    """crontab(5)'s `%`, as cron reads it: the first unescaped one ends the command and starts its
    standard input. In the command `\\%` is a percent sign (other backslashes stay); in the input
    each `%` is a newline, `\\%` and `\\\\` are `%` and `\\`, and a newline ends the input unless
    it ends with one."""
    head: list[str] = []
    escaped = False
    for i, char in enumerate(command):
        if escaped:  # a backslash keeps the next character from counting; only before % does it go
            if char == "%":
                head[-1] = "%"
            else:
                head.append(char)
            escaped = False
        elif char == "%":
            return "".join(head), _input(command[i + 1 :])
        else:
            head.append(char)
            escaped = char == "\\"
    return "".join(head), None


def _input(text: str) -> str:
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            out.append(char if char in "%\\" else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append("\n" if char == "%" else char)
    if escaped:
        out.append("\\")
    data = "".join(out)
    return data if not data or data.endswith("\n") else data + "\n"


# -- the taskd.yml -------------------------------------------------------------------------------
def _text(value: str) -> str:
    """A YAML double-quoted string whose `$` taskd does not expand."""
    return json.dumps(value.replace("$", "$$"), ensure_ascii=False)


def _comment(text: str) -> str:
    return "# " + text.replace("\n", " ") if text else "#"


def shell_step(job: Job) -> str:
    """The pipeline step that runs the job as cron would: its shell, its standard input."""
    command = job.command
    if job.stdin is not None:
        # A quoted here-document: the input reaches the command as written, nothing expanded.
        marker = "TASKD_CRON_INPUT"
        while marker in job.stdin:
            marker += "_"
        command = f"{command} <<'{marker}'\n{job.stdin}{marker}"
    if job.shell in ("/bin/sh", "sh"):
        return f"{{shell: {{command: {_text(command)}}}}}"
    return f'{{shell: {{argv: [{_text(job.shell)}, "-c", {_text(command)}]}}}}'


def to_yaml(crontab: Crontab, origin: str, smtp: tuple[str, int] | None = None) -> str:
    """A taskd.yml holding the crontab's jobs, with the crontab's comments and a comment for each
    line that was not carried over."""
    out = [
        f"# Imported from {origin} by taskd import-crontab. Each job is a task with a one-step pipeline that",
        "# fires at the same instants. As cron did, a job starts even while its previous run goes on",
        "# (concurrency: allow) and gets PATH=" + CRON_PATH + " unless the crontab set one. Unlike cron, the",
        "# commands run in this file's directory, as the user taskd runs as, and alerts tell of failures and",
        "# recoveries instead of mailing every job's output.",
    ]
    mailtos = {job.mailto for job in crontab.jobs if job.mailto}
    route = _route(mailtos, smtp, out)
    if crontab.skipped:
        out.append("#")
        out.append("# Not carried over (fix them by hand):")
        out += [f"#   line {number}: {why}" for number, why in crontab.skipped]
    if route:
        out += ["", route.rstrip("\n")]
    out += ["", "tasks:"]
    for job in crontab.jobs:
        out += _task(job, mailtos, smtp)
    if not crontab.jobs:
        out[-1] = "tasks: []"
    out += ["", "pipelines:"]
    for job in crontab.jobs:
        out.append(f"  - name: {job.task_id}")
        out.append(f"    processors: [{shell_step(job)}]")
    if not crontab.jobs:
        out[-1] = "pipelines: []"
    if crontab.trailing:
        out += [""] + [_comment(text) for text in crontab.trailing]
    return "\n".join(out) + "\n"


def _route(mailtos: set[str], smtp: tuple[str, int] | None, out: list[str]) -> str:
    if not mailtos:
        return ""
    if smtp is None:
        out.append(
            f"# MAILTO={', '.join(sorted(mailtos))}: give --smtp HOST[:PORT] to send the alerts there by e-mail,"
            " or write an alerts: section."
        )
        return ""
    if len(mailtos) > 1:
        return ""  # each task names its own recipients
    (mailto,) = mailtos
    return "alerts:\n  channels:\n" + _email(mailto, smtp, "    - ")


def _email(mailto: str, smtp: tuple[str, int], lead: str) -> str:
    recipients = ", ".join(_text(address.strip()) for address in mailto.split(",") if address.strip())
    return f"{lead}email: {{host: {_text(smtp[0])}, port: {smtp[1]}, to: [{recipients}]}}\n"


def _task(job: Job, mailtos: set[str], smtp: tuple[str, int] | None) -> list[str]:
    lines = [f"  {_comment(text)}" for text in job.comments]
    lines.append(f"  # line {job.line}: {job.source}" + (f" (cron ran it as {job.user})" if job.user else ""))
    lines.append(f"  - id: {job.task_id}")
    lines.append(f"    schedule: {_text(job.schedule)}")
    lines.append(f"    pipeline: {job.task_id}")
    lines.append("    concurrency: allow")
    if job.time_zone:
        lines.append(f"    time_zone: {_text(job.time_zone)}")
    env = {"PATH": CRON_PATH, **job.env}
    lines.append("    env: {" + ", ".join(f"{_text(k)}: {_text(v)}" for k, v in env.items()) + "}")
    if job.mailto == "" and mailtos:
        lines.append("    alerts: false  # MAILTO was empty for this job")
    elif smtp is not None and job.mailto and len(mailtos) > 1:
        lines.append("    alerts:\n      channels:\n" + _email(job.mailto, smtp, "        - ").rstrip("\n"))
    return lines
