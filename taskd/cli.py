"""Command line: the daemon's verbs (`run`, `check`, `next`, `plan`, `processors`, `backup`) and the client's
(`tasks`, `task`, `start`, `stop`, `delete`, `runs`, `show`, `logs`, `status`; see taskd.client)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from taskd import __version__, client
from taskd import schedule as schedules
from taskd.alerts import Route, route_for
from taskd.capacity import detect as detect_capacity
from taskd.channels import describe_channel
from taskd.config import Config, PipelineConfig, ProcessorConfig, TaskConfig, load_config
from taskd.config.schema import Limits
from taskd.dependencies import Graph
from taskd.durations import format_duration, format_size, parse_duration
from taskd.engine.policy import requests_too_large
from taskd.errors import ConfigError, DurationError, ScheduleError
from taskd.forecast import MAX_DAYS, forecast
from taskd.forecast import lines as forecast_lines
from taskd.redact import Redactor

DEFAULT_CONFIG = "taskd.yml"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskd",
        description="A task daemon: cron schedules, pipelines of processors, retries, history and a REST API.",
    )
    parser.add_argument("--version", action="version", version=f"taskd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    default_config = os.environ.get("TASKD_CONFIG", DEFAULT_CONFIG)
    config_help = f"configuration file (default: $TASKD_CONFIG or {DEFAULT_CONFIG!r})"
    run = sub.add_parser(
        "run",
        help="run the daemon",
        description="Load the configuration and run the daemon: schedule tasks, run their pipelines, "
        "serve the REST API. SIGTERM/SIGINT stop it gracefully, SIGHUP reloads the configuration. "
        "Exit 0 after a clean stop, 1 when it cannot start, 2 on configuration errors.",
    )
    run.add_argument("-c", "--config", default=default_config, help=config_help)

    check = sub.add_parser(
        "check",
        help="validate the configuration and show upcoming fires",
        description="Load and validate the configuration; print every task with its schedule, "
        "time zone and next 3 fire times. Exit 0 when valid, 2 with all errors on stderr when not.",
    )
    check.add_argument("-c", "--config", default=default_config, help=config_help)
    check.add_argument("--count", type=_positive_int, default=3, help="fire times shown per task (default 3)")

    nxt = sub.add_parser(
        "next",
        help="print the next fire instants of a schedule expression",
        description="Print the next N fire instants of EXPR strictly after --after, as ISO-8601 with "
        "UTC offset, one per line. Exit 2 with a message when EXPR is invalid.",
    )
    nxt.add_argument("expression", metavar="EXPR", help='cron expression, macro or "@every <duration>"')
    nxt.add_argument("--tz", default="UTC", help="IANA time zone the expression is evaluated in (default UTC)")
    nxt.add_argument("--after", type=_instant, default=None, help="ISO-8601 instant (default: now); naive = in --tz")
    nxt.add_argument("--count", "-n", type=_positive_int, default=5, help="how many instants (default 5)")
    nxt.add_argument(
        "--spread",
        type=_spread,
        default=None,
        metavar="DURATION",
        help="shift the instants as `spread:` does for the task named by --task",
    )
    nxt.add_argument("--task", metavar="ID", default=None, help="the task id the spread's offset is derived from")
    plan = sub.add_parser(
        "plan",
        help="forecast the runs per hour and the minutes with more tasks due than slots",
        description="Read the configuration and print, for each hour of the next --days days (in the "
        "configuration's time zone), how many runs its schedules bring, and under it each minute when more "
        "tasks are due than max_concurrent_tasks lets run, naming them (a task counts once a minute). "
        "Spread is applied. Exit 0 when printed, 2 on configuration errors.",
    )
    plan.add_argument("-c", "--config", default=default_config, help=config_help)
    plan.add_argument("--days", type=_days, default=7, help=f"how many days ahead (1 to {MAX_DAYS}, default 7)")
    backup = sub.add_parser(
        "backup",
        help="copy the SQLite store to a file, safely while the daemon runs",
        description="Copy the configuration's SQLite store to DEST with SQLite's online backup (a consistent "
        "copy, also while the daemon runs). To restore: stop taskd, put DEST in place of store.path, start taskd. "
        "Exit 0 when copied, 1 when the store cannot be read or DEST cannot be written, 2 on usage errors "
        "(a PostgreSQL store: use pg_dump).",
    )
    backup.add_argument("destination", metavar="DEST", help="the file to write (must not exist)")
    backup.add_argument("-c", "--config", default=default_config, help=config_help)
    procs = sub.add_parser(
        "processors",
        help="list processor types and their options",
        description="List every processor type (built-in and plugins from the taskd.processors entry point "
        "group) with its options: name, type, default and description. Same data as GET /processors.",
    )
    procs.add_argument("--json", action="store_true", help="print JSON instead of text")
    imported = sub.add_parser(
        "import-crontab",
        help="turn a crontab into a taskd.yml",
        description="Read a crontab and print a taskd.yml whose tasks fire at the same instants: a user's "
        "crontab (FILE, - for standard input, or by default `crontab -l`, of --user NAME), /etc/crontab or an "
        "/etc/cron.d file (with the user column: --system, implied by those paths). Lines that cannot be "
        "carried over are listed on standard error and as comments in the result. Exit 0 when written, 1 when "
        "the crontab cannot be read, 2 on usage errors.",
    )
    imported.add_argument("file", metavar="FILE", nargs="?", help="the crontab; - reads standard input")
    imported.add_argument("--user", help="whose crontab `crontab -l` reads; with --system, only that user's jobs")
    imported.add_argument("--system", action="store_true", help="each job line has a user column")
    imported.add_argument("-o", "--output", help="write the taskd.yml to this new file instead of printing it")
    imported.add_argument("--smtp", metavar="HOST[:PORT]", help="send alerts to MAILTO through this SMTP server")
    service = sub.add_parser(
        "install-service",
        help="install taskd as a systemd service",
        description="As root: create the system user taskd, put the configuration (and the files it includes) "
        "in /etc/taskd (an existing one is kept), write the environment file (0640) and an API token (0600, "
        "loaded by the unit as the credential api-token), write the unit running this installation's taskd, "
        "and check it with systemd-analyze verify; then print the commands that enable and start it. "
        "--uninstall removes what it installed and keeps the state in /var/lib/taskd. Exit 0 when done, "
        "1 when a step failed, 2 on usage errors.",
    )
    service.add_argument("-c", "--config", default=default_config, help=config_help)
    service.add_argument("--dry-run", action="store_true", help="print every file and command; change nothing")
    service.add_argument("--root", default="/", help="install under this directory instead of / (packaging, tests)")
    service.add_argument("--uninstall", action="store_true", help="remove what install-service installed")
    client.add_commands(sub, config_help, default_config)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100000, got {value}")
    return value


def _days(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_DAYS}, got {value}")
    return value


def _spread(text: str) -> float:
    try:
        value = parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be longer than 0s")
    return value


def _instant(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 date-time: {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _dispatch(build_parser().parse_args(argv))
    except BrokenPipeError:  # `taskd check | head`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "next":
        return cmd_next(args)
    if args.command == "check":
        return cmd_check(args)
    if args.command == "plan":
        return cmd_plan(args)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "processors":
        return cmd_processors(args)
    if args.command == "backup":
        return cmd_backup(args)
    if args.command == "import-crontab":
        return cmd_import_crontab(args)
    if args.command == "install-service":
        return cmd_install_service(args)
    if args.command in client.COMMANDS:
        return client.run_command(args, os.environ)
    raise AssertionError(args.command)


def cmd_next(args: argparse.Namespace) -> int:
    try:
        schedule = schedules.parse(args.expression, args.tz)
    except ScheduleError as exc:
        print(f"taskd next: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if (args.spread is None) != (args.task is None):
        print("taskd next: --spread and --task go together: the offset is derived from the task id", file=sys.stderr)
        return EXIT_USAGE
    if args.spread is not None:
        schedule = schedules.shifted(schedule, schedules.spread_offset(args.task, args.spread))
    after: datetime = args.after or datetime.now(UTC)
    if after.tzinfo is None:
        after = after.replace(tzinfo=schedule.tz)
    for instant in schedule.next_n(after, args.count):
        print(instant.isoformat())
    return EXIT_OK


def _load(path: str) -> Config | None:
    try:
        return load_config(path, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{path}: {count} error{'s' if count != 1 else ''}; configuration rejected", file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    capacity = None
    if any(task.requests is not None for task in config.tasks):
        capacity = detect_capacity(config.node.capacity.memory, config.node.capacity.cpu)
        too_large = requests_too_large(config, capacity)
        if too_large and not config.store.url:  # alone on its SQLite file: the daemon would refuse it
            for problem in too_large:
                print(problem, file=sys.stderr)
            count = len(too_large)
            print(f"{args.config}: {count} error{'s' if count != 1 else ''}; configuration rejected", file=sys.stderr)
            return EXIT_USAGE
    now = datetime.now(UTC)
    print(
        f"{args.config}: OK: {len(config.tasks)} task(s), {len(config.pipelines)} pipeline(s), "
        f"{len(config.files)} file(s); max_concurrent_tasks={config.task.max_concurrent_tasks}"
    )
    default_route = _route_text(config, route_for(config.alerts, TaskConfig(id="x", pipeline="x")))
    print(f"alerts: {default_route}")
    if config.pools:
        print("pools: " + ", ".join(f"{name} ({size})" for name, size in sorted(config.pools.items())))
    if capacity is not None:
        print(f"capacity for requests: {capacity.describe()}")
    graph = Graph.of(config.tasks)
    if graph.upstream:
        by_id = {task.id: task for task in config.tasks}
        print("dependencies (task <- the tasks it runs after):")
        for line in graph.lines(by_id):
            print(f"  {line}")
    for task in config.tasks:
        _print_task(config, task, now, args.count, default_route)
    _print_findings("notes", config, lambda pipeline, step: step.options.notes())
    _print_findings("warnings", config, lambda pipeline, step: step.options.warnings(pipeline.base_dir))
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    zone = schedules.load_zone(config.task.time_zone)
    scheduled = [
        (task.id, schedule)
        for task in config.tasks
        if task.enabled and (schedule := config.schedule_for(task)) is not None
    ]
    plan = forecast(scheduled, datetime.now(UTC), args.days, config.task.max_concurrent_tasks)
    print(
        f"{len(scheduled)} scheduled task(s), {sum(runs for _, runs, _ in plan.hours)} run(s) in the next "
        f"{args.days} day(s); {plan.crowded_minutes} minute(s) with more tasks due than max_concurrent_tasks "
        f"({config.task.max_concurrent_tasks})"
    )
    for why in plan.cut_short:
        print(f"cut short: {why}")
    for line in forecast_lines(plan, zone):
        print(line)
    return EXIT_OK


def _print_task(config: Config, task: TaskConfig, now: datetime, count: int, default_route: str) -> None:
    """One task as `taskd check` lists it."""
    schedule = config.schedule_for(task)
    print(f"\n{task.id}  ({task.display_name})")
    print(f"  status:    {'enabled' if task.enabled else 'disabled'}")
    print(f"  schedule:  {task.schedule or 'manual only'}")
    print(f"  time zone: {config.zone_for(task)}")
    steps = len(config.pipelines[task.pipeline].processors)
    print(f"  pipeline:  {task.pipeline} ({steps} processor{'s' if steps != 1 else ''})")
    route = _route_text(config, route_for(config.alerts, task))
    if task.alerts is not None and not task.alerts.enabled:
        print("  alerts:    off (alerts: false)")
    elif route != default_route:
        print(f"  alerts:    {route}")
    if task.expect is not None:
        print(f"  expect:    a success within {format_duration(task.expect.success_within)}")
    _print_resources(config, task)
    if task.after is not None:
        after = task.after
        print(f"  after:     {', '.join(after.tasks)} (when: {after.when}, mode: {after.mode})")
    spread = config.spread_for(task)
    if spread is not None and schedule is not None:
        offset = schedules.spread_offset(task.id, spread)
        print(f"  spread:    {format_duration(spread)}: fires {format_duration(offset) if offset else '0s'} late")
    if schedule is not None:
        fires = schedule.next_n(now, count)
        print("  next:      " + ("\n             ".join(f.isoformat() for f in fires) or "never"))


def _print_resources(config: Config, task: TaskConfig) -> None:
    """A task's pools, limits and requests, as `taskd check` lists them."""
    if task.pools:
        print("  pools:     " + ", ".join(f"{name} x{units}" for name, units in task.pools.items()))
    limits = config.limits_for(task)
    if limits != Limits():
        print(f"  limits:    {_limits_text(limits, config.task.cgroups)}")
    if task.requests is not None:
        asked = [f"memory {format_size(task.requests.memory)}"] if task.requests.memory else []
        asked += [f"cpu {task.requests.cpu:g}"] if task.requests.cpu else []
        print(f"  requests:  {', '.join(asked)}")


def _limits_text(limits: Limits, cgroups: bool) -> str:
    """A task's limits, and what enforces them: with cgroups where the system lets taskd make them,
    else (and with `task: {cgroups: false}`) the rlimit fallback."""
    parts = [f"memory {format_size(limits.memory)}"] if limits.memory is not None else []
    parts += [f"cpu {limits.cpu:g}"] if limits.cpu is not None else []
    parts += [f"processes {limits.processes}"] if limits.processes is not None else []
    fallback = ["memory as address space (ulimit -v)"] if limits.memory is not None else []
    unenforced = [name for name in ("cpu", "processes") if getattr(limits, name) is not None]
    without = ", ".join(fallback + ([f"{' and '.join(unenforced)} not enforced"] if unenforced else []))
    if not cgroups:
        return f"{', '.join(parts)} (task: {{cgroups: false}}: {without})"
    return f"{', '.join(parts)} (each step's cgroup; where none can be made: {without})"


def _print_findings(title: str, config: Config, find: Callable[[PipelineConfig, ProcessorConfig], list[str]]) -> None:
    """What `find` says of each step (its notes, its warnings), under `title`."""
    lines = [
        f"{step.source}: pipeline {pipeline.name}, step {index + 1} ({step.type}): {text}"
        for pipeline in config.pipelines.values()
        for index, step in enumerate(pipeline.processors)
        for text in find(pipeline, step)
    ]
    if lines:
        print(f"\n{title}:")
        for line in lines:
            print(f"  {line}")


def _route_text(config: Config, route: Route | None) -> str:
    """A route as `taskd check` shows it (secrets in a URL masked)."""
    if route is None:
        return "none: failures and overdue tasks are told to nobody (see alerts: in the README)"
    channels = ", ".join(describe_channel(kind, channel) for kind, channel in route.channels)
    text = f"{channels}; a reminder every {format_duration(route.repeat_s)} while failing"
    return Redactor(sorted(config.secrets)).text(text) if config.secrets else text


def cmd_run(args: argparse.Namespace) -> int:
    from taskd.daemon import run_daemon

    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    return run_daemon(args.config, config, os.environ)


def cmd_backup(args: argparse.Namespace) -> int:
    from taskd.store import MEMORY

    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    if config.store.url or config.store_location == MEMORY:
        print("taskd backup: copies a SQLite store; for PostgreSQL use pg_dump", file=sys.stderr)
        return EXIT_USAGE
    source, destination = Path(config.store_location), Path(args.destination)
    if destination.exists():
        print(f"taskd backup: {destination} exists; give a new file", file=sys.stderr)
        return EXIT_USAGE
    if not source.exists():
        print(f"taskd backup: there is no store at {source}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src:
            with contextlib.closing(sqlite3.connect(destination)) as dst:
                src.backup(dst)
                verdict = [row[0] for row in dst.execute("PRAGMA integrity_check").fetchall()]
                runs = dst.execute("SELECT count(*) FROM runs").fetchone()[0]
    except (sqlite3.Error, OSError) as exc:
        destination.unlink(missing_ok=True)
        print(f"taskd backup: cannot copy {source} to {destination}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if verdict != ["ok"]:
        destination.unlink(missing_ok=True)
        print(f"taskd backup: the copy of {source} fails integrity_check: {'; '.join(verdict[:5])}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{source} -> {destination}: {runs} runs, integrity_check ok")
    return EXIT_OK


def cmd_import_crontab(args: argparse.Namespace) -> int:
    from taskd.crontab import read_crontab, to_yaml

    smtp = _smtp(args.smtp) if args.smtp else None
    if smtp is None and args.smtp:
        print(f"taskd import-crontab: --smtp must be HOST or HOST:PORT, got {args.smtp!r}", file=sys.stderr)
        return EXIT_USAGE
    if args.output and Path(args.output).exists():
        print(f"taskd import-crontab: {args.output} exists; give a new file", file=sys.stderr)
        return EXIT_USAGE
    text, origin = _crontab_text(args)
    if text is None:
        return EXIT_FAILURE
    system = args.system or origin == "/etc/crontab" or Path(origin).parent == Path("/etc/cron.d")
    crontab = read_crontab(text, system=system)
    if system and args.user:
        others = [job for job in crontab.jobs if job.user != args.user]
        crontab.jobs = [job for job in crontab.jobs if job.user == args.user]
        crontab.skipped += [(job.line, f"a job of user {job.user}, not {args.user}") for job in others]
        crontab.skipped.sort()
    for number, why in crontab.skipped:
        print(f"taskd import-crontab: {origin}:{number}: not carried over: {why}", file=sys.stderr)
    document = to_yaml(crontab, origin, smtp)
    if args.output:
        Path(args.output).write_text(document, encoding="utf-8")
        print(
            f"{origin} -> {args.output}: {len(crontab.jobs)} task(s), {len(crontab.skipped)} line(s) not carried over"
        )
    else:
        sys.stdout.write(document)
    return EXIT_OK


def _smtp(text: str) -> tuple[str, int] | None:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "25")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    return host, int(port)


def _crontab_text(args: argparse.Namespace) -> tuple[str | None, str]:
    """The crontab's text and where it came from; None (and a message) when it cannot be read."""
    if args.file == "-":
        return sys.stdin.read(), "standard input"
    if args.file:
        try:
            return Path(args.file).read_text(encoding="utf-8"), args.file
        except (OSError, UnicodeDecodeError) as exc:
            print(f"taskd import-crontab: cannot read {args.file}: {exc}", file=sys.stderr)
            return None, args.file
    command = ["crontab", "-l", *(["-u", args.user] if args.user else [])]
    try:
        listed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"taskd import-crontab: cannot run {' '.join(command)}: {exc}; give the crontab as FILE", file=sys.stderr)
        return None, "crontab -l"
    if listed.returncode != 0:
        print(f"taskd import-crontab: {' '.join(command)} failed: {listed.stderr.strip()}", file=sys.stderr)
        return None, "crontab -l"
    return listed.stdout, " ".join(command)


def cmd_install_service(args: argparse.Namespace) -> int:
    from taskd.install import Installer, InstallError

    root = Path(args.root)
    if root == Path("/") and not args.dry_run and os.geteuid() != 0:
        print("taskd install-service: run it as root (or give --dry-run, or --root DIR)", file=sys.stderr)
        return EXIT_USAGE
    installer = Installer(root, args.dry_run)
    try:
        if args.uninstall:
            installer.uninstall()
            return EXIT_OK
        config = _load(args.config)
        if config is None:
            return EXIT_USAGE
        outside = [f for f in config.files if not f.resolve().is_relative_to(config.base_dir.resolve())]
        if outside:
            print(f"taskd install-service: {outside[0]} is outside {config.base_dir}: copy it by hand", file=sys.stderr)
            return EXIT_USAGE
        installer.install(config)
    except (InstallError, OSError) as exc:
        print(f"taskd install-service: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_processors(args: argparse.Namespace) -> int:
    from taskd.processor import COMMON_OPTIONS, describe_types
    from taskd.processors import registry

    found = registry()
    listing = describe_types(found.types)
    if args.json:
        print(json.dumps({"processors": listing, "plugin_errors": dict(found.errors)}, indent=2, default=str))
    else:
        for item in listing:
            print(f"{item['type']}: {item['summary']}")
            for option in item["options"]:
                default = "required" if option["required"] else f"default {json.dumps(option['default'], default=str)}"
                print(f"    {option['name']:<22} {option['type']:<28} {default:<24} {option['description']}")
            print()
        print(f"every processor also takes: {', '.join(sorted(COMMON_OPTIONS))}")
    for name, error in found.errors.items():
        print(f"taskd processors: plugin {name!r} was not loaded: {error}", file=sys.stderr)
    return EXIT_OK
