"""The command-line client: `taskd tasks`, `start`, `runs`, `logs -f`, ... against a running daemon.

It finds the daemon from `--url`/`TASKD_URL` without reading the configuration, else from the
configuration's `api.listen` (unix sockets included), else the default address. The token comes from
`--token`, `--token-file`, `$TASKD_TOKEN`, `$TASKD_TOKEN_FILE`, the systemd credential `api-token`,
else the configuration's `api.token`/`api.token_file`. Exit codes: 0 success; 1 the
awaited run did not complete, a stopped run had not ended by `stop`'s deadline, or the daemon
refused (409); 2 usage; 3 not found; 4 the daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

import aiohttp

from taskd.config import load_config, parse_listen
from taskd.config.load import TOKEN_CREDENTIAL, load_api
from taskd.config.schema import ROLES, ApiSection
from taskd.errors import ConfigError, TaskdError
from taskd.http.access import AUDIT_ACTIONS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
DEFAULT_URL = "http://127.0.0.1:8080"
FINAL = ("completed", "failed", "stopped", "interrupted")
DRAIN_TIMEOUT_S = 3600.0
DRAIN_POLL_S = 0.5
STOP_TIMEOUT_S = 60.0
"""How long `taskd stop` polls the runs the daemon still reports stopping (it has waited up to 10 s
itself): a shell step is killed `kill_grace` after SIGTERM, 5 s by default."""
POLL_S = 0.2
LOG_PAGE_LINES = 1000


class ClientError(TaskdError):
    """A command that cannot be carried out; `code` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Target:
    """Where the daemon answers, and how to authenticate."""

    url: str  # http://host:port, or http://localhost for a unix socket
    socket: str | None
    token: str | None

    def describe(self) -> str:
        return f"unix:{self.socket}" if self.socket else self.url


def add_commands(sub: Any, config_help: str, default_config: str) -> None:
    """The client's subcommands, on the `taskd` parser."""

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=description)
        where = parser.add_argument_group("daemon")
        where.add_argument("-c", "--config", default=default_config, help=config_help + "; gives api.listen, api.token")
        where.add_argument(
            "--url",
            default=None,
            help="daemon URL, http://host:port or unix:/path (default: $TASKD_URL, else from the config)",
        )
        where.add_argument("--token", default=None, help="bearer token (default: $TASKD_TOKEN, else the config's)")
        where.add_argument(
            "--token-file", default=None, metavar="FILE", help="file holding the token (default: $TASKD_TOKEN_FILE)"
        )
        parser.add_argument("--json", action="store_true", help="print the daemon's JSON answer")
        return parser

    command("tasks", "list tasks with their status", "Every task: status, schedule, next fire, last run.")
    one = command("task", "show one task", "One task: definition, status, next fires, statistics, recent runs.")
    one.add_argument("task_id", metavar="ID")
    start = command(
        "start",
        "start a run of a task now",
        "Start a run; print its id. --wait waits for its end, --follow prints its log as it is written. "
        "Exit 1 when an awaited run does not complete or the task refuses the run (409).",
    )
    start.add_argument("task_id", metavar="ID")
    start.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="a run param")
    start.add_argument("--wait", action="store_true", help="wait until the run ends")
    start.add_argument("--follow", action="store_true", help="print the run's log until it ends")
    stop = command(
        "stop",
        "stop a task's active runs",
        "Stop every active run of the task and wait until they have ended: the daemon answers once they "
        "have, or after 10 s with those still stopping, which this command then polls until --timeout. "
        "Exit 1 when some have still not ended then, or when the task has no active run (409).",
    )
    stop.add_argument("task_id", metavar="ID")
    stop.add_argument(
        "--timeout",
        type=float,
        default=STOP_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long to wait for runs still stopping after the daemon's answer (default {STOP_TIMEOUT_S:g})",
    )
    delete = command("delete", "delete a task", "Stop the task's runs and delete it (it stays deleted).")
    delete.add_argument("task_id", metavar="ID")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    runs = command("runs", "search run history", "Runs, newest first.")
    runs.add_argument("--task", default=None, help="task id (a comma list is allowed)")
    runs.add_argument("--state", default=None, help="state (a comma list is allowed)")
    runs.add_argument(
        "--since", default=None, help="queued at or after: ISO-8601, epoch seconds, or a time ago (1h, 30m, 2d)"
    )
    runs.add_argument("--until", default=None, help="queued before: ISO-8601, epoch seconds, or a time ago")
    runs.add_argument("-q", dest="text", default=None, help="text in the error, params, task id or name")
    runs.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    show = command("show", "show one run", "One run: timings, params, attempts with their steps, error.")
    show.add_argument("run_id", metavar="RUN")
    logs = command("logs", "print a run's log", "Print a run's log; -f follows it until the run ends.")
    logs.add_argument("run_id", metavar="RUN")
    logs.add_argument("-f", "--follow", action="store_true", help="follow the log until the run ends")
    audit = command(
        "audit",
        "who did what through the API",
        "The audit trail, newest first: every start, stop, re-run, delete and reload, and every refused "
        "sign-in or action, with the token's name, the client's address and the answer's status.",
    )
    audit.add_argument("--action", default=None, help=f"action (a comma list is allowed): {', '.join(AUDIT_ACTIONS)}")
    audit.add_argument("--actor", default=None, help="the token's name")
    audit.add_argument("--since", default=None, help="at or after: ISO-8601, epoch seconds, or a time ago (1h, 2d)")
    audit.add_argument("--until", default=None, help="before: ISO-8601, epoch seconds, or a time ago")
    audit.add_argument("--limit", type=int, default=20, help="how many (default 20, at most 1000)")
    audit.add_argument("--offset", type=int, default=0, help="skip this many of the newest first")
    rerun = command(
        "rerun",
        "run a run's task again with the same params",
        "Start the run's task again with the params the run was given (secret ones take the task's "
        "defaults: they are never stored); print the new run's id.",
    )
    rerun.add_argument("run_id", metavar="RUN")
    drain = command(
        "drain",
        "drain a node for a restart or an upgrade",
        "Make a node (this daemon's by default) fire nothing more, finish its runs and exit 0, while the "
        "other nodes claim the fires. --wait waits until it has stopped, printing how many runs it still has; "
        "exit 1 when it has not by --timeout.",
    )
    drain.add_argument("node", metavar="NODE", nargs="?", default=None, help="the node's name (default: this one)")
    drain.add_argument("--wait", action="store_true", help="wait until the node has stopped")
    drain.add_argument(
        "--timeout", type=float, default=DRAIN_TIMEOUT_S, metavar="SECONDS", help="how long --wait waits (default 3600)"
    )
    command("status", "the daemon's health", "Health: store, scheduler, version, tasks, runs, slots, last reload.")
    command(
        "reload",
        "re-read the configuration and say how it went",
        "Ask the daemon to re-read its configuration file and wait for the outcome: exit 0 when the new "
        "configuration runs (the tasks added, changed and removed are listed), 2 with its errors (file, "
        "line, key) when it was refused and the previous one keeps running. The unit's ExecReload runs it, "
        "so `systemctl reload taskd` fails when the reload did.",
    )


COMMANDS = (
    "tasks",
    "task",
    "start",
    "stop",
    "delete",
    "runs",
    "show",
    "logs",
    "audit",
    "rerun",
    "drain",
    "status",
    "reload",
)


def run_command(args: argparse.Namespace, env: Mapping[str, str], out: TextIO | None = None) -> int:
    """Carry out a client command; print what went wrong and return the exit code."""
    out = out or sys.stdout
    try:
        if args.command == "delete" and not args.yes and not _confirmed(f"delete task {args.task_id!r}"):
            print("not deleted", file=sys.stderr)
            return EXIT_FAILED
        target = find_daemon(args, env)
        _checked_token(target.token)
        return asyncio.run(_run(args, target, out))
    except ClientError as exc:
        print(f"taskd {args.command}: {exc}", file=sys.stderr)
        return exc.code


def _confirmed(what: str) -> bool:
    if not sys.stdin.isatty():
        raise ClientError("refusing without --yes: nobody is at a terminal to confirm", EXIT_USAGE)
    return input(f"{what} and stop its runs? [y/N] ").strip().lower() in ("y", "yes")


def find_daemon(args: argparse.Namespace, env: Mapping[str, str], err: TextIO | None = None) -> Target:
    """--url/$TASKD_URL (the configuration is not read), else the configuration's api.listen, else
    the default address when the configuration is missing or broken (a warning on `err`)."""
    url = args.url or env.get("TASKD_URL")
    token = _given_token(args, env)
    if url:
        return _target(url, token)
    if not Path(args.config).exists():
        return Target(DEFAULT_URL, None, token)
    try:
        config = load_config(args.config, env)
    except ConfigError as exc:
        api = load_api(args.config, env)  # the rest has errors: its api: section still names the daemon
        if api is not None:
            return _listen_target(api.listen, token or _config_token(api))
        problems = "\n  ".join(exc.problems)
        print(
            f"taskd {args.command}: warning: cannot read {args.config}, trying {DEFAULT_URL}"
            f" (give --url to skip the configuration):\n  {problems}",
            file=err or sys.stderr,
        )
        return Target(DEFAULT_URL, None, token)
    return _listen_target(config.api.listen, token or _config_token(config.api))


def _config_token(api: ApiSection) -> str | None:
    """The token the configuration gives whoever can read it: api.token, else the named token
    with the highest role (the first of those)."""
    if api.token:
        return api.token
    ranked = sorted(api.tokens, key=lambda entry: -ROLES.index(entry.role))
    return next((entry.token for entry in ranked if entry.token), None)


def _given_token(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """The token named outside the configuration: --token, --token-file, $TASKD_TOKEN,
    $TASKD_TOKEN_FILE, then the systemd credential api-token."""
    if args.token:
        return str(args.token)
    if args.token_file:
        return _read_token(args.token_file)
    if env.get("TASKD_TOKEN"):
        return env["TASKD_TOKEN"]
    if env.get("TASKD_TOKEN_FILE"):
        return _read_token(env["TASKD_TOKEN_FILE"])
    credential = Path(env.get("CREDENTIALS_DIRECTORY") or "/nonexistent") / TOKEN_CREDENTIAL
    return _read_token(str(credential)) if credential.is_file() else None


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(f"cannot read the token file {path}: {exc}", EXIT_USAGE) from None
    if not token:
        raise ClientError(f"the token file {path} is empty", EXIT_USAGE)
    return token


def _target(url: str, token: str | None) -> Target:
    """A --url: http(s)://host:port, or unix:/path for a unix socket."""
    if url.startswith("unix:"):
        path = url[len("unix:") :]
        if not path:
            raise ClientError("--url unix: needs a socket path, e.g. unix:/run/taskd/api.sock", EXIT_USAGE)
        return Target("http://localhost", path, token)
    usage = ClientError(f"--url must be http://host:port or unix:/path, got {url!r}", EXIT_USAGE)
    try:
        parsed = urlsplit(url) if url.startswith(("http://", "https://")) else None
        _ = parsed and parsed.port  # raises on a port that is not a number from 0 to 65535
    except ValueError:
        raise usage from None
    if parsed is None or not parsed.hostname or parsed.username or parsed.password:
        raise usage
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise usage
    return Target(url.rstrip("/"), None, token)


def _listen_target(listen_text: str, token: str | None) -> Target:
    listen = parse_listen(listen_text)
    if isinstance(listen, str):
        return Target("http://localhost", listen, token)
    host, port = listen
    host = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return Target(f"http://{host}:{port}", None, token)


def _checked_token(token: str | None) -> None:
    """A bearer token is one word of visible ASCII characters: anything else could not be sent."""
    if token is not None and not (token.isascii() and token.isprintable() and not any(c.isspace() for c in token)):
        raise ClientError("the token holds spaces, line breaks or other characters a header cannot carry", EXIT_USAGE)


async def _run(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    connector = aiohttp.UnixConnector(path=target.socket) if target.socket else None
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(target.url, headers=headers, connector=connector, timeout=timeout) as session:
        api = _Api(session, target)
        handler = {
            "tasks": _tasks,
            "task": _task,
            "start": _start,
            "stop": _stop,
            "delete": _delete,
            "runs": _runs,
            "show": _show,
            "logs": _logs,
            "audit": _audit,
            "rerun": _rerun,
            "drain": _drain,
            "status": _status,
            "reload": _reload,
        }[args.command]
        return await handler(api, args, out)


class _Api:
    def __init__(self, session: aiohttp.ClientSession, target: Target) -> None:
        self._session = session
        self._target = target
        self.token_sent = bool(target.token)

    async def call(self, method: str, path: str, body: Any = None, answers: tuple[int, ...] = ()) -> Any:
        """The JSON answer of a request; `answers` are error statuses whose body is the answer."""
        try:
            async with self._session.request(method, path, json=body) as response:
                data = await response.json(content_type=None) if response.content_type == "application/json" else None
                if response.status < 400 or (response.status in answers and isinstance(data, dict)):
                    return data
                message = (data or {}).get("error", {}).get("message") or f"HTTP {response.status}"
        except aiohttp.ClientConnectionError as exc:
            raise ClientError(
                f"cannot reach the daemon at {self._target.describe()}: {exc}", EXIT_UNREACHABLE
            ) from None
        codes = {404: EXIT_NOT_FOUND, 409: EXIT_FAILED, 401: EXIT_USAGE, 403: EXIT_USAGE, 400: EXIT_USAGE}
        raise ClientError(message, codes.get(response.status, EXIT_FAILED))

    def _unreachable(self, exc: Exception) -> ClientError:
        return ClientError(f"cannot reach the daemon at {self._target.describe()}: {exc}", EXIT_UNREACHABLE)

    async def text(self, path: str) -> str:
        try:
            async with self._session.get(path) as response:
                if response.status < 400:
                    return await response.text()
                data = await response.json(content_type=None)
        except aiohttp.ClientConnectionError as exc:
            raise ClientError(
                f"cannot reach the daemon at {self._target.describe()}: {exc}", EXIT_UNREACHABLE
            ) from None
        raise ClientError(data["error"]["message"], EXIT_NOT_FOUND if response.status == 404 else EXIT_USAGE)

    async def stream(self, path: str) -> AsyncIterator[tuple[str, Any]]:
        """A server-sent event stream as (event name, data)."""
        try:
            async with self._session.get(path, headers={"Accept": "text/event-stream"}) as response:
                if response.status >= 400:
                    data = await response.json(content_type=None)
                    code = EXIT_NOT_FOUND if response.status == 404 else EXIT_USAGE
                    raise ClientError(data["error"]["message"], code)
                name, data_text = "message", ""
                async for raw in response.content:
                    line = raw.decode().rstrip("\n")
                    if not line:
                        if data_text:
                            yield name, json.loads(data_text)
                        name, data_text = "message", ""
                    elif line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data_text = line[6:]
        except aiohttp.ClientConnectionError as exc:
            raise ClientError(
                f"cannot reach the daemon at {self._target.describe()}: {exc}", EXIT_UNREACHABLE
            ) from None


# -- commands --------------------------------------------------------------------------------------


async def _tasks(api: _Api, args: argparse.Namespace, out: TextIO) -> int:
    body = await api.call("GET", "/tasks?limit=1000")
    if args.json:
        return _print_json(body, out)
    rows = [
        [
            t["id"],
            _status_text(t),
            t["schedule"] or (f"after {', '.join(t['after'])}" if t.get("after") else "manual"),
            t["next_run"] or "-",
            (t["last_run"] or {}).get("state") or "-",
            _seconds(t["duration"]),
        ]
        for t in body["tasks"]
    ]
    _table(["ID", "STATUS", "SCHEDULE", "NEXT RUN", "LAST RUN", "DURATION"], rows, out)
    return EXIT_OK


def _status_text(task: dict[str, Any]) -> str:
    """A task's status, with what it waits on when an upstream task is gone or disabled."""
    waiting = task.get("waiting_on") or []
    return f"waiting on {', '.join(waiting)}" if task["status"] == "waiting" and waiting else str(task["status"])


def _after_text(upstream: dict[str, Any] | None, waiting_for: list[str]) -> str:
    if not upstream:
        return "-"
    text = f"{', '.join(upstream['tasks'])} (when: {upstream['when']}, mode: {upstream['mode']})"
    return text + (f"; still to run: {', '.join(waiting_for)}" if waiting_for else "")


async def _task(api: _Api, args: argparse.Namespace, out: TextIO) -> int:
    body = await api.call("GET", f"/task/{args.task_id}")
    if args.json:
        return _print_json(body, out)
    stats = body["stats"]
    pairs = [
        ("id", body["id"]),
        ("name", body["name"]),
        ("status", _status_text(body)),
        ("schedule", f"{body['schedule'] or 'manual only'} ({body['time_zone']})"),
        ("pipeline", body["pipeline"]),
        ("after", _after_text(body.get("upstream"), body.get("waiting_for") or [])),
        ("before", ", ".join(body.get("downstream") or []) or "-"),
        ("next runs", ", ".join(body["next_runs"]) or "-"),
        ("runs", f"{stats['runs']} (success rate {stats['success_rate']}, p95 {_seconds(stats['p95_duration'])})"),
    ]
    for key, value in pairs:
        print(f"{key + ':':<11} {value}", file=out)
    if body["recent_runs"]:
        print(file=out)
        _run_table(body["recent_runs"], out)
    return EXIT_OK


async def _start(api: _Api, args: argparse.Namespace, out: TextIO) -> int:
    params: dict[str, str] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ClientError(f"a param is KEY=VALUE, got {item!r}", EXIT_USAGE)
        params[key] = value
    body = await api.call("POST", f"/task/{args.task_id}/_start", {"params": params} if params else None)
    run_id = body["run_id"]
    if not (args.wait or args.follow):
        if args.json:
            return _print_json(body, out)
        print(run_id, file=out)
        return EXIT_OK
    if not args.json:
        print(f"run {run_id} started", file=sys.stderr)
    state, error = await _await_end(api, run_id, out if args.follow else None)
    run = await api.call("GET", f"/run/{run_id}")
    if args.json:
        _print_json(run, out)
    else:
        print(f"run {run_id} {state}" + (f": {error}" if error else ""), file=sys.stderr)
    return EXIT_OK if state == "completed" else EXIT_FAILED


async def _await_end(api: _Api, run_id: str, out: TextIO | None) -> tuple[str, str | None]:
    """Follow the run's log (printed to `out` when given) until its end event."""
    async for name, data in api.stream(f"/run/{run_id}/log?follow=1"):
        if name == "end":
            return str(data["state"]), data.get("error")
        if out is not None and "line" in data:
            print(data["line"], file=out, flush=True)
    run = await api.call("GET", f"/run/{run_id}")  # the stream closed early: the daemon is stopping
    return str(run["state"]), run.get("error")


async def _stop(api: _Api, args: argparse.Namespace, out: TextIO) -> int:
    began = time.monotonic()
    body = await api.call("POST", f"/task/{args.task_id}/_stop")
    stopped = [str(run_id) for run_id in body["stopped"]]
    stopping = [str(run_id) for run_id in body.get("stopping") or ()]  # 202: not ended yet
    if stopping and not args.json:
        print(f"still stopping: {', '.join(stopping)}; waiting up to {args.timeout:g}s", file=sys.stderr)
    ended, left = await _await_final(api, stopping, args.timeout)
    if args.json:
        _print_json({**body, "stopped": stopped + list(ended), "stopping": list(left)}, out)
    else:
        shown = stopped + [run_id if state == "stopped" else f"{run_id} ({state})" for run_id, state in ended.items()]
        if shown:
            print(f"stopped {', '.join(shown)}", file=out)
        if left:
            still = ", ".join(f"{run_id} ({state})" for run_id, state in left.items())
            waited = f"{args.timeout:g}s after the daemon answered, {time.monotonic() - began:.1f}s in all"
            print(f"taskd stop: not stopped {waited}: {still}", file=sys.stderr)
    return EXIT_FAILED if left else EXIT_OK


async def _await_final(api: _Api, run_ids: Sequence[str], timeout_s: float) -> tuple[dict[str, str], dict[str, str]]:
    """Poll the runs until each is in a final state or `timeout_s` has passed: (the runs that
    ended, those that had not), each with its last state seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    ended: dict[str, str] = {}
    left = dict.fromkeys(run_ids, "unknown")
    while left:
        for run_id in list(left):
            state = await _run_state(api, run_id)
            if state in FINAL:
                ended[run_id] = state
                del left[run_id]
            else:
                left[run_id] = state
        remaining = deadline - loop.time()
        if not left or remaining <= 0:
            break
        await asyncio.sleep(min(POLL_S, remaining))
    return ended, left


async def _run_state(api: _Api, run_id: str) -> str:
    try:
        run = await api.call("GET", f"/run/{run_id}")
    except ClientError as exc:
        if exc.code != EXIT_NOT_FOUND:
            raise
        return "unknown"
    return str(run["state"])


async def _delete(api: _Api, args: argparse.Namespace, out: TextIO) -> int:
    body = await api.call("DELETE", f"/task/{args.task_id}")
    if args.json:
        return _print_json(body, out)
    print(
        f"deleted {body['deleted']}" + (f"; stopped {', '.join(body['stopped'])}" if body["stopped"] else ""), file=out
    )
    return EXIT_OK


async def _runs(api: _Api, args: argparse.Namespace, out: TextIO) -> int:
    query = {
        "task_id": args.task,
        "state": args.state,
        "since": args.since,
        "until": args.until,
        "q": args.text,
        "limit": args.limit,
    }
    body = await api.call("GET", "/runs?" + "&".join(f"{k}={_quote(str(v))}" for k, v in query.items() if v))
    if args.json:
        return _print_json(body, out)
    _run_table(body["runs"], out)
    print(f"{len(body['runs'])} of {body['total']} run(s)", file=sys.stderr)
    return EXIT_OK


async def _audit(api: _Api, args: argparse.Namespace, out: TextIO) -> int:
    if not 1 <= args.limit <= 1000 or args.offset < 0:
        raise ClientError("--limit must be 1 to 1000 and --offset 0 or more", EXIT_USAGE)
    query = {"action": args.action, "actor": args.actor, "since": args.since, "until": args.until}
    query |= {"limit": args.limit, "offset": args.offset}
    body = await api.call("GET", "/audit?" + "&".join(f"{k}={_quote(str(v))}" for k, v in query.items() if v))
    if args.json:
        return _print_json(body, out)
    rows = [
        [
            e["at"],
            e["action"],
            e["actor"] or "-",
            e["role"] or "-",
            e["remote"] or "-",
            e["target"] or "-",
            e["status"],
            e["detail"] or "",
        ]
        for e in body["entries"]
    ]
    _table(["AT", "ACTION", "WHO", "ROLE", "FROM", "TARGET", "STATUS", "DETAIL"], rows, out)
    print(f"{len(body['entries'])} of {body['total']} entr{'y' if body['total'] == 1 else 'ies'}", file=sys.stderr)
    return EXIT_OK


async def _rerun(api: _Api, args: argparse.Namespace, out: TextIO) -> int:
    body = await api.call("POST", f"/run/{_quote(args.run_id)}/_rerun")
    if args.json:
        return _print_json(body, out)
    print(body["run_id"], file=out)
    if body["params_not_repeated"]:
        print(f"params not repeated (secret): {', '.join(body['params_not_repeated'])}", file=sys.stderr)
    return EXIT_OK


async def _drain(api: _Api, args: argparse.Namespace, out: TextIO) -> int:
    nodes = (await api.call("GET", "/nodes"))["nodes"]
    this = next((node["name"] for node in nodes if node["this"]), None)
    name = args.node or this
    if name is None:
        raise ClientError("the daemon names no node of its own; give the node's name", EXIT_USAGE)
    path = f"/nodes/{_quote(name)}/_drain"
    if not args.wait:
        body = await api.call("POST", path)
        if args.json:
            return _print_json(body, out)
        print(f"node {name} is draining", file=sys.stderr)
        return EXIT_OK
    if name == this:
        return await _drain_here(api, path, name, args.timeout, out)
    await api.call("POST", path)
    print(f"node {name} is draining", file=sys.stderr)
    deadline, told = time.monotonic() + args.timeout, None
    while time.monotonic() < deadline:
        await asyncio.sleep(DRAIN_POLL_S)
        row = next((node for node in (await api.call("GET", "/nodes"))["nodes"] if node["name"] == name), None)
        if row is None or not row["alive"]:
            print(f"node {name} has stopped", file=out)
            return EXIT_OK
        if row["slots_in_use"] != told:
            told = row["slots_in_use"]
            print(f"node {name}: {told} run(s) holding a slot", file=sys.stderr)
    raise ClientError(f"node {name} has not stopped within {args.timeout:g} s", EXIT_FAILED)


async def _drain_here(api: _Api, path: str, name: str, limit_s: float, out: TextIO) -> int:
    """Drain the daemon asked: its answer comes when the drain has ended (or was cut short);
    meanwhile its health tells how many runs it still has."""
    waiting = asyncio.ensure_future(api.call("POST", f"{path}?wait=1"))
    print(f"node {name} is draining", file=sys.stderr)
    told = None
    try:
        async with asyncio.timeout(limit_s):
            while not waiting.done():
                await asyncio.wait([waiting], timeout=DRAIN_POLL_S)
                if waiting.done():
                    break
                with contextlib.suppress(ClientError):
                    active = (await api.call("GET", "/health", answers=(503,))).get("active_runs")
                    if active != told:
                        told = active
                        print(f"node {name}: {told} run(s) still active", file=sys.stderr)
            await waiting
    except TimeoutError:
        waiting.cancel()
        raise ClientError(
            f"node {name} has not drained within {limit_s:g} s (it goes on draining)", EXIT_FAILED
        ) from None
    print(f"node {name} has drained and stopped", file=out)
    return EXIT_OK


async def _show(api: _Api, args: argparse.Namespace, out: TextIO) -> int:
    run = await api.call("GET", f"/run/{args.run_id}")
    if args.json:
        return _print_json(run, out)
    for key in ("id", "task_id", "state", "trigger", "queued_at", "started_at", "finished_at"):
        print(f"{key + ':':<13} {run[key] or '-'}", file=out)
    print(f"{'duration:':<13} {_seconds(run['duration'])}", file=out)
    if run["params"]:
        print(f"{'params:':<13} {json.dumps(run['params'])}", file=out)
    if run["error"]:
        print(f"{'error:':<13} {run['error']}", file=out)
    usage = run.get("usage")
    if usage:
        print(f"{'used:':<13} {_usage_text(usage)}", file=out)
    for upstream in run.get("upstream_runs") or []:
        print(f"{'after:':<13} run {upstream['run_id']} of {upstream['task_id']} ({upstream['state']})", file=out)
    for downstream in run.get("downstream_runs") or []:
        started = f"run {downstream['run_id']}" if downstream["run_id"] else "waiting"
        print(f"{'triggered:':<13} {downstream['task_id']}: {started}", file=out)
    for attempt in run["attempt_list"]:
        print(f"attempt {attempt['number']}: {attempt['state']} in {_seconds(attempt['duration'])}", file=out)
        for step in attempt["steps"]:
            error = f"  {step['error']}" if step["error"] else ""
            print(
                f"  {step['index'] + 1}. {step['type']:<16} {step['state']:<10} {_seconds(step['duration'])}{error}",
                file=out,
            )
    return EXIT_OK


def _usage_text(usage: dict[str, Any]) -> str:
    """A run's usage in one line: `1.23 s CPU, 210.4 MiB peak, 1 process (rusage)`."""
    cpu = "CPU unknown" if usage["cpu_s"] is None else f"{usage['cpu_s']:.2f} s CPU"
    if usage["peak_memory_bytes"] is not None:
        peak = f"{usage['peak_memory_bytes'] / 2**20:.1f} MiB peak"
    elif usage.get("peak_memory_at_most") is not None:
        peak = f"peak at most {usage['peak_memory_at_most'] / 2**20:.1f} MiB"
    else:
        peak = "peak unknown"
    text = f"{cpu}, {peak}, {usage['processes']} process(es) ({usage['source']})"
    return text + (f"; unknown: {', '.join(usage['unknown'])}" if usage["unknown"] else "")


async def _logs(api: _Api, args: argparse.Namespace, out: TextIO) -> int:
    if not args.follow:
        # A page at a time: a run's log may be 80 MB. Each line is one line (the daemon escapes
        # newlines inside a line), so counting them tells where the next page starts.
        after = 0
        while True:
            page = await api.text(f"/run/{quote(args.run_id)}/log?after={after}&limit={LOG_PAGE_LINES}")
            print(page, end="", file=out)
            count = page.count("\n")
            if count < LOG_PAGE_LINES:
                return EXIT_OK
            after += count
    state = "unknown"
    async for name, data in api.stream(f"/run/{args.run_id}/log?follow=1"):
        if name == "end":
            state = data["state"]
            if args.json:
                _print_json({"end": data}, out)
            else:
                print(
                    f"run {args.run_id} {state}" + (f": {data['error']}" if data.get("error") else ""), file=sys.stderr
                )
            break
        if "line" in data:
            _print_line(data, args.json, out)
    return EXIT_OK if state == "completed" else EXIT_FAILED


async def _status(api: _Api, args: argparse.Namespace, out: TextIO) -> int:
    body = await api.call("GET", "/health", answers=(503,))  # degraded: its details are the answer
    if "version" not in body and api.token_sent:
        # /health answers anyone with the bare status; the details need an accepted token.
        raise ClientError("missing or wrong bearer token: the daemon answered with its bare status only", EXIT_USAGE)
    if args.json:
        return _print_json(body, out)
    for key, value in body.items():
        if key == "reload":
            shown = "none since the start" if value is None else _reload_line(value)
        elif isinstance(value, dict):
            shown = ", ".join(f"{k} {v}" for k, v in value.items())
        else:
            shown = value
        print(f"{key + ':':<12} {shown}", file=out)
    return EXIT_OK if body["status"] == "ok" else EXIT_FAILED


def _reload_line(reload: Mapping[str, Any]) -> str:
    """The last reload as `taskd status` shows it."""
    if reload["outcome"] == "applied":
        changed = "; ".join(f"{kind} {', '.join(ids)}" for kind, ids in reload["changes"].items()) or "no task changed"
        return f"{reload['at']} applied ({changed})"
    return f"{reload['at']} refused, the previous configuration runs: " + " | ".join(reload["errors"])


async def _reload(api: _Api, args: argparse.Namespace, out: TextIO) -> int:
    body = await api.call("POST", "/_reload", answers=(422,))
    if args.json:
        _print_json(body, out)
    if body["reload"]["outcome"] == "applied":
        if not args.json:
            print(f"reloaded: {_reload_line(body['reload']).split(' ', 1)[1]}", file=out)
        return EXIT_OK
    print("taskd reload: the new configuration was refused; the previous one keeps running:", file=sys.stderr)
    for error in body["reload"]["errors"]:
        print(f"  {error}", file=sys.stderr)
    return EXIT_USAGE


# -- output ----------------------------------------------------------------------------------------


def _print_json(body: Any, out: TextIO) -> int:
    print(json.dumps(body, indent=2), file=out)
    return EXIT_OK


def _print_line(data: Mapping[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(data), file=out, flush=True)
    else:
        print(f"{data['time']} [{data['stream']}] {data['line']}", file=out, flush=True)


def _run_table(runs: Sequence[Mapping[str, Any]], out: TextIO) -> None:
    rows = [
        [
            r["id"],
            r["task_id"],
            r["state"],
            r["trigger"],
            r["queued_at"] or "-",
            _seconds(r["duration"]),
            r["error"] or "",
        ]
        for r in runs
    ]
    _table(["RUN", "TASK", "STATE", "TRIGGER", "QUEUED", "DURATION", "ERROR"], rows, out)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    """Columns aligned to their widest cell; the last column is not padded."""
    cells = [list(map(str, header)), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)) + "  " + row[-1], file=out)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s" if value < 10 else f"{value:.1f}s"


def _quote(text: str) -> str:
    return quote(text, safe=",:")
