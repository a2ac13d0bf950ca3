"""Run every benchmark and write bench/RESULTS.md (and results.json beside it).

    python -m bench            # the full set, a few minutes on 2 cores
    python -m bench --quick    # smaller sizes and shorter windows: a smoke check
    python -m bench --only search,throughput   # measure these sections again, keep the others

Peers run in the same invocation on the same machine: APScheduler 3's AsyncIOScheduler for schedule
precision, bare asyncio (the ceiling) and Celery with Redis for throughput, an aiohttp hello-world
handler for API latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    accounting,
    api_load,
    cluster,
    critical_path,
    followers,
    memory,
    metrics_scrape,
    overload,
    precision,
    run_search,
    shell_burst,
    stop_latency,
    throughput,
)
from bench.common import machine, spread, versions
from taskd.daemon import tune_gc

HERE = Path(__file__).resolve().parent
SECTIONS = (
    "precision",
    "critical_path",
    "throughput",
    "accounting",
    "api",
    "memory",
    "stop",
    "shell",
    "overload",
    "metrics",
    "followers",
    "search",
    "cluster",
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter windows")
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"), help="where to write the report")
    parser.add_argument("--render", metavar="RESULTS_JSON", help="only rewrite the report from a results.json")
    parser.add_argument(
        "--only",
        metavar="SECTIONS",
        help=f"measure only these sections (comma-separated: {', '.join(SECTIONS)}) and keep the other "
        "figures of the results.json beside the report; the report says which were measured when",
    )
    args = parser.parse_args()
    if args.render:
        Path(args.output).write_text(render(json.loads(Path(args.render).read_text())))
        return
    quick = args.quick
    sizes = [100, 1000] if quick else [100, 1000, 10_000]
    window = 4.0 if quick else 10.0
    results: dict[str, Any] = {"quick": quick, "machine": machine(), "versions": versions(), "started": now()}
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    if unknown := only - set(SECTIONS):
        parser.error(f"unknown section {', '.join(sorted(unknown))}; the sections are {', '.join(SECTIONS)}")
    if args.only:
        earlier = json.loads(Path(args.output).with_name("results.json").read_text())
        remeasured = {**earlier.get("remeasured", {}), **{name: now() for name in only}}
        results = {**earlier, "remeasured": remeasured, "machine": results["machine"]}
    began = time.monotonic()

    if "precision" in only:
        results["precision"] = {}
        for n in sizes:
            say(f"precision: {n} tasks, {window:g} s, taskd, APScheduler, then a bare loop")
            results["precision"][str(n)] = {
                "taskd": precision.measure_taskd(n, window),
                "apscheduler": precision.measure_apscheduler(n, window),
                "bare loop": precision.measure_bare_loop(n, window),
            }
        say(f"precision: 1000 tasks over 100 schedules, {window:g} s")
        results["precision"]["1000 over 100 schedules"] = {"taskd": precision.measure_taskd(1000, window, 100)}

    if "critical_path" in only:
        say("critical path")
        results["critical_path"] = {n: critical_path.measure(n, 3 if quick else 5) for n in (1000, 10_000)}

    if "throughput" in only:
        count = 5_000 if quick else 20_000
        repeats = 1 if quick else 3
        say(f"throughput: {count} runs x {repeats}, taskd and bare asyncio in turn")
        tune_gc()  # as the daemon runs: both the engine and the ceiling under its collector settings
        taskd_rates, bare_rates = [], []
        for _ in range(repeats):
            taskd_rates.append(asyncio.run(throughput.taskd_runs(count))["runs_per_s"])
            bare_rates.append(asyncio.run(throughput.bare_asyncio(count))["runs_per_s"])
        say("throughput: Celery + Redis")
        celery = throughput.celery_runs(2_000 if quick else count)
        results["throughput"] = {
            "runs": count,
            "taskd": spread(taskd_rates),
            "bare_asyncio": spread(bare_rates),
            "ratios": spread([t / b for t, b in zip(taskd_rates, bare_rates, strict=True)]),
            "celery": celery,
        }

    if "accounting" in only:
        count, repeats = (200, 1) if quick else (500, 3)
        say(f"accounting: {count} shell runs x {repeats}, none / rusage / cgroup")
        results["accounting"] = accounting.measure(count, repeats)

    if "api" in only:
        say("API under load")
        results["api"] = api_load.measure(
            tasks=1_000 if quick else 10_000, firing=100 if quick else 1_000, rate=200, seconds=2 if quick else 10
        )

    if "memory" in only:
        say("RSS floor: a bare interpreter importing the daemon's libraries")
        results["memory_floor"] = memory.floor(1 if quick else 3)
        results["memory"] = {}
        for n in [0, *sizes, *([] if quick else [100_000])]:
            say(f"idle RSS and start-up: {n} tasks")
            results["memory"][n] = memory.idle(n, 1 if quick or n >= 100_000 else 3)
        say("leak check")
        results["leak"] = memory.leak(20_000 if quick else 100_000)

    if "stop" in only:
        say("stop latency, then the same process group stopped with a bare killpg")
        results["stop"] = stop_latency.measure(10 if quick else 50)
        results["stop"]["bare"] = stop_latency.bare(10 if quick else 50)

    if "shell" in only:
        count = 200 if quick else 1000
        say(f"shell bursts: {count} shell tasks due at once, argv and command forms, a spawn loop, cron")
        results["shell"] = shell_burst.measure(count)

    if "overload" in only:
        say("overload: 3x capacity")
        results["overload"] = overload.measure(seconds=10 if quick else 60)

    if "metrics" in only:
        say("metrics scrape")
        results["metrics"] = metrics_scrape.measure(1_000 if quick else 10_000)

    if "followers" in only:
        say("live followers")
        results["followers"] = followers.measure(2_000 if quick else 10_000, 200)

    if "search" in only:
        say("run search")
        results["search"] = run_search.measure(100_000 if quick else 1_000_000, 10 if quick else 20)

    if "cluster" in only:
        say("several nodes on PostgreSQL")
        try:
            results["cluster"] = cluster.measure(quick)
        except OSError as exc:  # no PostgreSQL server here: the section says so
            results["cluster"] = {"skipped": f"PostgreSQL at {cluster.POSTGRES} is not reachable: {exc}"}

    if not args.only:
        results["seconds"] = round(time.monotonic() - began, 1)
    # The figures first: a report that fails to render can be rendered again with --render.
    Path(args.output).with_name("results.json").write_text(json.dumps(results, indent=2, default=str))
    Path(args.output).write_text(render(json.loads(json.dumps(results, default=str))))
    say(f"wrote {args.output} in {round(time.monotonic() - began, 1)} s")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def say(text: str) -> None:
    print(f"[bench] {text}", flush=True)


def f(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def mmm(values: dict[str, float], digits: int = 1) -> str:
    return f"{f(values['min'], digits)} / {f(values['median'], digits)} / {f(values['max'], digits)}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def followers_section(fl: dict[str, Any] | None) -> list[str]:
    if not fl:
        return []
    alone, followed = fl["alone"], fl["followed"]
    return [
        "## Live followers",
        "",
        f"{f(fl['runs'])} runs started at once (engine and SQLite store in-process, metrics on), alone and",
        f"with {fl['followers']} `/events` followers each reading every state change as it is published.",
        "",
        "| followers | runs/s | state changes received | cut off |",
        "|---|---|---|---|",
        f"| 0 | {f(alone['runs_per_s'], 0)} | {f(alone['events_received'])} | {alone['cut_off']} |",
        f"| {fl['followers']} | {f(followed['runs_per_s'], 0)} | {f(followed['events_received'])} "
        f"| {followed['cut_off']} |",
        "",
    ]


def critical_path_section(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return []
    rows = [
        f"| {int(n):,} | {f(x['fire_callback_per_run_us'])} | {f(x['first_step_p50_us'] / 1000)} "
        f"| {f(x['first_step_p99_us'] / 1000)} | {f(x['whole_run_us'])} | {f(x['whole_run_committed_us'])} |"
        for n, x in c.items()
    ]
    first = next(iter(c.values()))
    profile = [
        f"| `{row['function']}` | {f(row['calls'])} | {f(row['own_ms'])} | {f(row['share'] * 100)}% |"
        for row in first["profile"][:10]
    ]
    return [
        "",
        "### The critical path of a run",
        "",
        "In-process (real engine and SQLite store, metrics on, logging at info): N tasks on one schedule,",
        "one fire handed to the engine as the timer hands it; each pipeline is one Python step that stamps",
        "the time its code begins. Median of 5 bursts. *Runs created* is the time from the fire until the",
        "last run exists, per run (a fire creates its runs 25 at a time; the runs of a chunk begin before",
        "the next chunk is made); *whole run* is loop time from the fire until every run has ended, per",
        "run, then until every row is committed.",
        "",
        "| N | runs created us/run | first step p50 ms | first step p99 ms | whole run us | committed us |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Where a burst of {int(next(iter(c))):,} runs spends its time (cProfile, own time, top 10):",
        "",
        "| function | calls | own ms | share |",
        "|---|---|---|---|",
        *profile,
        "",
    ]


SHELL_SYSTEMS = (
    ("taskd argv", "taskd, `argv` form"),
    ("taskd command", "taskd, `command` form (/bin/sh -c)"),
    ("spawn loop", "plain spawn loop (the ceiling)"),
    ("cron", "Debian cron (the peer, /bin/sh -c)"),
)


def shell_section(sh: dict[str, Any] | None) -> list[str]:
    """Shell bursts at the spawn limit: taskd's two forms beside the spawn loop and cron."""
    if not sh:
        return []
    systems, loop = sh["systems"], sh["systems"].get("spawn loop", {})
    rows = []
    for key, label in SHELL_SYSTEMS:
        x = systems.get(key)
        if x is None or "skipped" in x:
            rows.append(f"| {label} | {x['skipped'] if x else 'not measured'} | | | | | |")
            continue
        slots = f" / {f(x['slots'])} slots" if x.get("slots") else ""
        target = ""
        if key.startswith("taskd") and "p99_ms" in loop:
            ratio = x["p99_ms"] / loop["p99_ms"]
            met = ratio <= shell_burst.TARGET and x["missed"] == 0 and x["max_concurrent"] <= x["slots"]
            target = f"{f(ratio, 2)}x: {verdict(met)}"
        rows.append(
            f"| {label} | {f(x['p50_ms'])} | {f(x['p99_ms'])} | {f(x['max_ms'])} | {f(x['missed'])} / "
            f"{f(x['expected'])} | {f(x['max_concurrent'])}{slots} | {target} |"
        )
    cgroups = {systems[k].get("cgroups") for k in ("taskd argv", "taskd command") if k in systems} - {None}
    return [
        "## Shell bursts at the spawn limit",
        "",
        f"{f(sh['tasks'])} `shell` tasks due at the same second, each its own one-step pipeline, as many slots as",
        "tasks (`max_concurrent_tasks` N), default config otherwise (every run persisted; step cgroups:",
        f"{', '.join(sorted(cgroups)) or 'n/a'}). Every process is one stamp program ({sh['stamp']}): its first",
        "instruction reads the clock, and when it ends, one O_APPEND write adds its start to a file; lateness",
        "is that start minus the due instant (the scheduled second; the spawn loop's first second; cron's",
        f"minute boundary). Each process lives {f(sh['hold_s'], 1)} s, so those of a burst overlap: the most",
        "alive at once comes from the stamps. The spawn loop is a plain Python loop of `subprocess.Popen`",
        "with the same argv; cron runs an `/etc/cron.d` file of N lines with `cron -f`.",
        "",
        f"| system | p50 | p99 | max | missed / expected | most alive at once "
        f"| p99 <= {shell_burst.TARGET:g}x the spawn loop |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def memory_section(sizes: dict[Any, Any], floor: dict[str, Any] | None) -> list[str]:
    """Idle RSS and start-up by task count, with the floor (the libraries alone) and the 0-task
    daemon beside them, and each task's cost above the 0-task daemon."""
    lines = [
        "## Memory and start-up",
        "",
        "Idle daemon with N tasks (`@hourly`), a second after it is ready (100,000 tasks: one run); start-up ="
        " process start to `/health` answering 200.",
        "",
        "| N | RSS MB (min / median / max) | KB per task above 0 tasks | start-up s (min / median / max) | target |",
        "|---|---|---|---|---|",
    ]
    empty = sizes.get("0", sizes.get(0))
    for key, x in sizes.items():
        n = int(key)
        per_task = ""
        if n and empty is not None:
            per_task = f(1024 * (x["rss_mb"]["median"] - empty["rss_mb"]["median"]) / n, 2)
        target = ""
        if n == 10_000:
            ok = x["rss_mb"]["median"] <= 80 and x["ready_s"]["median"] <= 2
            target = f"<= 80 MB and <= 2 s: {verdict(ok)}"
        lines.append(f"| {n:,} | {mmm(x['rss_mb'])} | {per_task} | {mmm(x['ready_s'], 2)} | {target} |")
    if floor is not None and empty is not None:
        base, fixed = floor["rss_mb"]["median"], empty["rss_mb"]["median"]
        lines += [
            "",
            f"Floor: a bare Python importing the daemon's libraries ({', '.join(floor['imports'])}) and nothing of"
            f" taskd takes {f(base)} MB; the daemon with no task {f(fixed)} MB: taskd's fixed cost is"
            f" {f(fixed - base)} MB above the interpreter and its libraries, and each task's is the column above.",
        ]
    return lines


def overload_section(o: dict[str, Any] | None) -> list[str]:
    if not o:
        return []
    skipped = ", ".join(f"{f(n)} {reason}" for reason, n in o["fires_skipped"].items()) or "none"
    return [
        "## Overload",
        "",
        f"Capacity set by the config: 50 slots and a 50 ms pipeline, at most {f(o['capacity_runs_per_s'], 0)}",
        f"runs/s. Offered: {f(o['offered_per_s'])} tasks with `concurrency: allow` firing every second (3x) for",
        f"{f(o['seconds'], 0)} s; then the config is reloaded with a tenth of them (0.3x).",
        f"`task.max_waiting_runs: {f(o['max_waiting_runs'])}` (the default is 50,000), `store.max_pending` left at",
        "its default (100,000).",
        "",
        f"- Fires: {f(o['fires_offered'])} offered, {f(o['fires_run'])} accepted as runs "
        f"({f(o['runs_completed'])} completed), skipped: {skipped}.",
        f"- Runs waiting for a slot peaked at {f(o['waiting_max'])}; staged writes at {f(o['pending_writes_max'])}.",
        f"- Overloaded in {o['seconds_overloaded']} of the {len(o['samples'])} one-second samples; a manual start",
        f"  each second got 202 {o['manual_starts']['202']} times and 503 {o['manual_starts']['503']} times.",
        f"- RSS: {f(o['rss_start_mb'])} MB at the start, {f(o['rss_max_mb'])} MB at most, "
        f"{f(o['rss_last_mb'])} MB at the end of the window.",
        f"- Recovery after the load dropped: new runs accepted after {f(o['recovery_s'], 2)} s, backlog drained "
        f"after {f(o['backlog_drained_s'], 1)} s.",
        "",
        "RSS over time (MB, one sample a second):",
        "",
        "    " + " ".join(f"{s['rss_mb']:.0f}" for s in o["samples"]),
        "",
    ]


def cluster_section(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return []
    if "skipped" in c:
        return ["## Several nodes on PostgreSQL", "", c["skipped"], ""]
    t, la, fo = c["throughput"], c["lateness"], c["failover"]
    nodes = ", ".join(f"{name} {f(n)}" for name, n in sorted(la["runs_by_node"].items()))
    return [
        "## Several nodes on PostgreSQL",
        "",
        "The local PostgreSQL 15 (a schema per measurement), the real engine and store, every run persisted.",
        "",
        f"- Persisted runs/s ({f(t['runs_per_node'])} manual no-op runs per node): one node "
        f"{f(t['one_node_runs_per_s'], 0)}; three nodes at once on one database {f(t['three_nodes_runs_per_s'], 0)} "
        "(SQLite, one node: see Throughput).",
        f"- Lateness with 3 nodes, {f(la['tasks'])} per-second tasks (each fire claimed by one node; first step's "
        f"stamp - scheduled instant): p50 {f(la['p50_ms'])} ms, p99 {f(la['p99_ms'])} ms, max {f(la['max_ms'])} ms; "
        f"{f(la['missed'])} of {f(la['fires_expected'])} fires missed. Runs by node: {nodes}.",
        *_sharing_lines(c.get("sharing"), c.get("capacity")),
        f"- Failover over {fo['kills']} kill -9 (one node at a time, started again after each): a surviving node "
        f"ran the next fire {f(fo['next_fire_s']['p50'], 2)} s after the kill (p50; max "
        f"{f(fo['next_fire_s']['max'], 2)} s), and marked the dead node's running run interrupted after "
        f"{f(fo['interrupted_s']['p50'], 2)} s (p50; max {f(fo['interrupted_s']['max'], 2)} s; the lease is 5 s).",
        "",
    ]


def _sharing_lines(sh: dict[str, Any] | None, cap: dict[str, Any] | None) -> list[str]:
    lines = []
    if sh:
        idle, busy = sh["idle"], sh["a_busy"]
        mean = ", ".join(f"{name} {f(share * 100, 1)}%" for name, share in busy["mean_share"].items())
        lines += [
            f"- Sharing a fire ({f(sh['tasks'])} tasks every 5 s, runs of 1 s, {f(sh['slots_per_node'])} slots per "
            f"node, {idle['fires']} fires): each node's share of each fire is off a third by "
            f"{f(idle['max_off_share'] * 100, 1)}% at most (target 15%). With node a holding a third of its slots "
            f"with long runs, the shares are {mean} (the less loaded nodes take more).",
        ]
    if cap:
        lines += [
            f"- Capacity with runs of 1 s ({f(cap['slots_per_node'])} slots per node, 4x as many per-second tasks): "
            f"1 node completed {f(cap['nodes_1_runs_per_s'], 0)} runs/s (ceiling {f(cap['ceiling_1_runs_per_s'], 0)}), "
            f"3 nodes {f(cap['nodes_3_runs_per_s'], 0)} (ceiling {f(cap['ceiling_3_runs_per_s'], 0)}): "
            f"{f(cap['ratio_3_to_1'], 2)}x one node (target 2.6x).",
        ]
    return lines


def search_section(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return []
    pg = s.get("postgres") or {}
    plain = s.get("postgres_plain") or {}

    def timed(store: dict[str, Any], name: str) -> str:
        q = store.get(name)
        return "n/a | n/a" if q is None else f"{f(q['p50_ms'])} | {f(q['p99_ms'])}"

    def verdicts(name: str) -> str:
        timings = [store[name]["p99_ms"] for store in (s["queries"], pg, plain) if name in store]
        return verdict(all(p99 <= 50 for p99 in timings))

    rows = [
        f"| {name} | {f(q['total'])} | {timed(s['queries'], name)} | {timed(pg, name)} | {timed(plain, name)} "
        f"| {verdicts(name)} |"
        for name, q in s["queries"].items()
    ]
    return [
        "## Run search",
        "",
        f"`GET /runs` queries on {f(s['runs'])} stored runs (1,000 tasks over 30 days, 5% failed, 10% manual,",
        "30% with params), written through the store's own writer. Each query is `GET /runs` to a `taskd run`",
        "on that store, timed from the request to the reply's last byte on a kept-alive connection; each",
        f"answer carries `total`; each query is timed {s.get('repeats', 20)} times on each store. SQLite is",
        "not analyzed (the daemon never runs ANALYZE); on PostgreSQL the same history is vacuumed and",
        "analyzed, as autovacuum would have done. *Without pg_trgm*: the same history copied into a",
        "database where the store's role may not create the extension, so text searches read the",
        "store's own trigram index. The target, p99 within 50 ms, holds for each store.",
        "",
        "| query | total | SQLite p50 ms | p99 ms | PostgreSQL p50 ms | p99 ms | without pg_trgm p50 ms | p99 ms "
        "| p99 <= 50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        *(["", f"PostgreSQL: {pg['skipped']}"] if "skipped" in pg else []),
        "",
    ]


def metrics_section(m: dict[str, Any] | None) -> list[str]:
    if not m:
        return []

    def ceiling(x: dict[str, Any]) -> str:
        if "library_ms" not in x:  # figures from before the ceiling was measured
            return "| | |"
        floor = x["library_ms"] + x["static_ms"]
        return f"| {f(x['library_ms'])} + {f(x['static_ms'])} | {f(x['p50_ms'] / floor, 1)}x |"

    rows = [
        f"| {name} | {f(m[key]['p50_ms'])} | {f(m[key]['max_ms'])} | {f(m[key]['bytes'] / 1024, 0)} KiB "
        f"| {f(m[key]['lines'])} {ceiling(m[key])}"
        for name, key in (("per task (default)", "per_task"), ("`metrics: {per_task: false}`", "aggregated"))
    ]
    return [
        "## Metrics scrape",
        "",
        f"`GET /metrics` with {f(m['tasks'])} tasks that have each run once (so every per-task series exists),",
        "timed from the request to the last byte of the answer, 10 scrapes. Ceiling, in the same run:",
        "prometheus-client's `generate_latest` writing the same samples (parsed back from the answer)",
        "in-process, plus the same bytes served by a bare aiohttp handler (no target: the ratio says what",
        "taskd's own collecting costs on top).",
        "",
        "| series | p50 ms | max ms | size | lines | ceiling p50 ms (library + transfer) | to the ceiling |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def accounting_section(a: dict[str, Any] | None) -> list[str]:
    """What measuring each run's usage costs, beside the same runs measured without it."""
    if not a:
        return []
    rates, notes = a["rates"], a["notes"]
    lines = [
        "",
        "## The cost of accounting",
        "",
        f"{a['runs']:,} manual runs of a one-step shell pipeline (`/bin/true`), `max_concurrent_tasks: 20`, each",
        "way of measuring in a fresh process, interleaved. Peer: none (asyncio's own child watcher, no",
        "figures). rusage: taskd's wait4 reaper on pidfds. cgroup: the reaper and a cgroup per step.",
        "",
        "| accounting | runs/s (min / median / max) | against none | target |",
        "|---|---|---|---|",
    ]
    peer = spread(rates["none"])["median"] if rates.get("none") else None
    for mode in ("none", "rusage", "cgroup"):
        if not rates.get(mode):
            lines.append(f"| {mode} | {notes.get(mode, 'not measured')} | | |")
            continue
        figures = spread(rates[mode])
        ratio = figures["median"] / peer if peer else None
        target = "" if mode == "none" else f">= 0.8x: {verdict(ratio is not None and ratio >= 0.8)}"
        lines.append(f"| {mode} | {mmm(figures, 0)} | {f(ratio, 2) if ratio else ''}x | {target} |")
    return lines


def throughput_target(t: dict[str, Any]) -> str:
    ratios = t.get("ratios")
    if not ratios:  # figures from before the ratio was recorded
        ratios = {"median": t["taskd"]["median"] / t["bare_asyncio"]["median"]}
    return f"{f(ratios['median'], 3)}x bare asyncio, >= 0.2x: {verdict(ratios['median'] >= 0.2)}"


def stop_lines(stop: dict[str, Any]) -> list[str]:
    """Stop latency beside a bare killpg of the same process group."""
    lines = [
        "`POST /task/{id}/_stop` on a running `shell` task (`sleep & sleep`) until the run is `stopped` and",
        f"its process group has no live member, over {stop['runs']} runs: p50 {f(stop['p50_ms'])} ms, "
        f"p99 {f(stop['p99_ms'])} ms, max {f(stop['max_ms'])} ms.",
    ]
    bare = stop.get("bare")
    if not bare:
        return [*lines[:-1], lines[-1][:-1] + f"; target p99 <= 200 ms: {verdict(stop['p99_ms'] <= 200)}."]
    ratio = stop["p99_ms"] / bare["p99_ms"]
    return [
        *lines,
        "Ceiling, in the same run: the same group started by a plain `Popen` in its own session, stopped",
        f"with `killpg(SIGTERM)` and watched the same way: p50 {f(bare['p50_ms'])} ms, p99 {f(bare['p99_ms'])} ms.",
        f"Target: p99 at most 4x the bare stop's: {f(ratio, 1)}x, {verdict(ratio <= 4)}.",
    ]


def render(r: dict[str, Any]) -> str:
    m, v = r["machine"], r["versions"]
    lines = [
        "# taskd benchmark results",
        "",
        f"Generated by `python -m bench{' --quick' if r['quick'] else ''}` on {r['started']} in {r['seconds']} s.",
        *(
            [
                "Measured again later with `--only`, on the same machine: "
                + ", ".join(f"{name} on {at}" for name, at in r["remeasured"].items())
                + ". Compare a figure with its peer in the same section.",
            ]
            if r.get("remeasured")
            else []
        ),
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}. "
        + "Versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + ".",
        "",
        "Figures marked min / median / max come from repeated measurements (for precision: the",
        "p99 of each one-second round of the window). Latencies are in milliseconds.",
        "",
        "## Schedule precision",
        "",
        "N tasks on `* * * * * *` (every second), default config (logging at info, every run persisted),",
        "slot limit N, a 10 s window. Lateness is measured where the work starts: the pipeline's only",
        "step is `log`, and the time it stamps on its line, read back from the store, minus the",
        "scheduled instant. Peer: APScheduler 3.11 AsyncIOScheduler, N coroutine jobs on",
        "`CronTrigger(second='*')`, lateness = the time the job's body stamps - the scheduled instant.",
        "Ceiling: a bare asyncio loop that wakes at each second and starts N coroutines, each stamping its",
        "start (nothing recorded). The target is a ratio to both, measured in the same run: taskd's p99",
        "at most 4x the bare loop's and at most 0.5x APScheduler's, nothing missed.",
        "",
        "| N | system | p50 | p99 | max | p99 per second (min / median / max) | missed / expected | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, pair in r["precision"].items():
        for name, x in pair.items():
            target = ""
            bare, peer = pair.get("bare loop"), pair.get("apscheduler")
            if name == "taskd" and bare and peer:
                to_bare, to_peer = x["p99_ms"] / bare["p99_ms"], x["p99_ms"] / peer["p99_ms"]
                met = to_bare <= 4 and to_peer <= 0.5 and x["missed"] == 0
                target = f"{f(to_bare, 1)}x the bare loop, {f(to_peer, 2)}x APScheduler: {verdict(met)}"
            label = f"{int(n):,}" if n.isdigit() else n
            lines.append(
                f"| {label} | {name} | {f(x['p50_ms'])} | {f(x['p99_ms'])} | {f(x['max_ms'])} | "
                f"{mmm(x['p99_per_second_ms'])} | {f(x['missed'])} / {f(x['fires_expected'])} | {target} |"
            )
    lines += critical_path_section(r.get("critical_path"))
    t = r["throughput"]
    celery = t["celery"]
    celery_text = f"{f(celery['runs_per_s'], 0)} runs/s" if "runs_per_s" in celery else celery.get("skipped", "n/a")
    lines += [
        "",
        "## Throughput",
        "",
        f"{t['runs']:,} manual runs of a no-op pipeline, `max_concurrent_tasks: 100`, every run persisted",
        "(runs/s from the first queued to the last committed; engine and SQLite store in-process).",
        "",
        "Both run under the daemon's garbage-collector settings (`tune_gc`), in turn, in the same process;",
        "the target is the ratio of each taskd figure to the bare figure measured right after it.",
        "",
        "| system | runs/s (min / median / max) | target |",
        "|---|---|---|",
        f"| taskd | {mmm(t['taskd'], 0)} | {throughput_target(t)} |",
        f"| bare asyncio (semaphore, nothing persisted: the ceiling) | {mmm(t['bare_asyncio'], 0)} | |",
        f"| Celery + Redis broker, 1 worker (results stored in Redis) | {celery_text} | |",
        *accounting_section(r.get("accounting")),
        "",
        "## API under load",
        "",
        "10,000 tasks defined (1,000 in --quick), 1,000 of them firing every second (100), while a",
        "separate process sends requests at 200 per second for 10 s (2 s), open loop: latency counts",
        "from each request's due time. Ceiling: an aiohttp hello-world handler, measured the same way",
        "in the same run (alone on the machine); the target for each read is its p99 at most 5x the",
        "hello world's.",
        "",
        "| endpoint | requests/s | p50 | p99 | max | errors | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, x in r["api"].items():
        if not isinstance(x, dict):
            continue
        target = ""
        hello = r["api"].get("hello_world")
        if name.startswith("GET") and hello:
            ratio = x["p99_ms"] / hello["p99_ms"]
            target = f"{f(ratio, 1)}x the hello world: {verdict(ratio <= 5)}"
        lines.append(
            f"| {name} | {f(x['rps'], 0)} | {f(x['p50_ms'])} | {f(x['p99_ms'])} | {f(x['max_ms'])} | "
            f"{sum(x['errors'].values()) if x['errors'] else 0} | {target} |"
        )
    lines += [
        f"\nScheduled runs per second during the load: {f(r['api'].get('scheduled_runs_per_s_during_load'), 0)}.",
        "",
        *memory_section(r["memory"], r.get("memory_floor")),
    ]
    leak = r["leak"]
    stop = r["stop"]
    lines += [
        "",
        f"Leak check: one engine running {leak['runs']:,} runs in batches of 1,000 after a 10,000-run warm-up:",
        f"RSS {f(leak['rss_before_mb'])} MB -> {f(leak['rss_after_mb'])} MB, growth {f(leak['growth_mb'], 2)} MB "
        f"({f(leak['runs_per_s'], 0)} runs/s); target <= 10 MB per 100,000 runs: "
        f"{verdict(leak['growth_mb'] * 100_000 / leak['runs'] <= 10)}.",
        "",
        "## Stop latency",
        "",
        *stop_lines(stop),
        "",
        *shell_section(r.get("shell")),
        *overload_section(r.get("overload")),
        *metrics_section(r.get("metrics")),
        *followers_section(r.get("followers")),
        *search_section(r.get("search")),
        *cluster_section(r.get("cluster")),
        ANALYSIS,
    ]
    return "\n".join(lines)


ANALYSIS = """## Where the time goes, and what limits the missed targets

Lateness is measured where the work starts: the time the first step's own code stamps, minus the
scheduled instant (the `taskd_schedule_lateness_seconds` metric is observed at the same point).
Profiled with py-spy on the daemon and cProfile in-process ("The critical path of a run" above):

- **A log line per successful run** (`run_finished` at info, through structlog's stdlib bridge)
  took about 40% of the event loop's busy time at 1,000 runs a second. By default only runs that
  did not complete log it now (`task.log_task_execution: failures`; `true` logs every run); the
  metrics count every run, and journald would drop such a stream anyway.
- **Metrics per run.** A `prometheus-client` Counter and two Histograms cost each run a lock and a
  label lookup per call, more than the rest of a no-op run's bookkeeping in the engine. Ended runs,
  their durations and schedule lateness are now counted in plain containers and exposed through a
  custom collector at scrape time, with the same names and labels. Whole-run cost went from about
  37 to 19 us per run in-process.
- **asyncio overhead per run:** an `asyncio.Event` made for every run (now only when something
  waits for the run) and a done-callback per run task to forget it (it is forgotten when it
  records its final state).
- **The cyclic garbage collector** during a burst: 10,000 runs allocate enough to trigger a dozen
  collections of objects that are all still alive, about a quarter of the burst's loop time. The
  daemon freezes its start-up heap and now collects the youngest generation every 300,000
  allocations instead of 50,000.

What is left is CPython's cost per object on one event loop, and SQLite's cost per row: about
50 us of the loop per no-op run (create it when the fire comes, begin it, end it, stage its rows)
and about as much again of SQLite's own work on the writer's thread (each run's row is written as
it starts and again as it ends, through eleven indexes that run search needs). The runs of one
instant are created and begun one after another, so the last of N starts about N times that
after the first. The bare loop beside it starts a coroutine in about 5 us and records nothing:
taskd stays within 4x of it only while the burst is small (see "Schedule precision"), and
APScheduler, with no persistence at all, is about as late as taskd from 1,000 tasks up.

- **The GIL and the store's threads.** aiosqlite runs each connection on a thread, and a thread
  needs the GIL to start each call and, within an `executemany`, to go on after each row. An
  event loop that is busy polls for I/O without waiting many times a millisecond; each poll drops
  the GIL and takes it straight back, and CPython then hands it to a waiting thread only when the
  loop blocks. Measured in a burst of 10,000 runs: a `BEGIN` waited 130-510 ms for the writer's
  thread to start it, an `executemany` of 50 rows ran 150 ms; in a two-thread test, a hand-off
  that takes 5 ms took up to 990 ms once the main thread polled every few hundred operations.
  What was done about it: the writer sends a batch as INSERTs of up to 500 rows (the thread needs
  the GIL once a statement, not once a row: +10% persisted runs/s), and the reads of a task's page
  (its stats, latest runs, history, fires) are answered on the loop's own thread from a second
  read-only connection that never waits for a lock; the reader's thread is left the searches.
  Tried and left out: yielding the processor after each poll that did not wait (`time.sleep(0)`
  in the selector): the threads got the GIL at once, but the loop lost as much as they gained
  (throughput 14,000 against 17,000 runs/s, 10,000-task lateness worse); a shorter switch interval
  (0.5 ms) changed nothing, since the poll resets the wait. uvloop: +3% runs/s for taskd (+40% for
  bare asyncio), so it is not used.
- **API under load.** The API shares the event loop with the once-a-second burst, so a request
  waits for the turns of the loop ahead of it. A fire creates its runs 25 at a time, a commit
  resumes the runs that waited for it 16 at a time, and a batch becomes rows 100 at a time, each
  slice a turn of the loop (the longest turn of a burst of 1,000 runs went from about 14 ms of CPU
  to under 4), and `GET /task/{id}` reads on the loop's thread (above), where its four reads had
  waited up to 20 ms for the reader's thread.
- **Overload.** Bounded by `task.max_waiting_runs` and `store.max_pending`; past either, fires are
  skipped as `overloaded` and manual starts get 503 until the figure is down to half its limit.
  Memory stays flat once the bound is reached (see "Overload").
- **Run search.** `runs` has an index for each sort key and for state, trigger and task. They
  are cheap to keep because the text index is written by the store, not by triggers: with an
  insert or update trigger on `runs`, SQLite paid several times as much for each index on each
  run's write. A search counts its matches first, through an
  index; when they are few it reads them through the filter's index and sorts them, when they are
  many it reads the runs in the order asked for (through the sort's index) and stops at the page.
  A count of most runs (completed, or scheduled) is all runs less the others. A text search finds
  its runs in one pass over the trigram index and then filters by their row numbers; the
  trigram index checks each candidate's text, so a word found in many runs costs in proportion.
  On PostgreSQL the planner takes a search's filters as independent (an error's text is only
  ever on a failed run) and expects a few dozen matches where there are thousands: it read all
  12,464 matches of a text and a state and sorted them (34 ms p50, 66 ms p99). When the capped
  count says the matches are many, the page is now also asked with sorting forbidden, which
  reads the sort's index in order and stops at the page, and the first answer wins (an index of
  the failed runs by duration serves that sort). Every search is planned for its own values: a
  prepared statement's generic plan, which PostgreSQL may switch to after five runs, cannot see
  a text's trigrams (a word in a third of the runs took 500 ms that way). Without pg_trgm the
  store indexes each run's trigrams itself (a GIN index of an array, built in) and gives the
  planner statistics on the searched text.
- **The machine.** The same code measured 12,000 to 18,000 runs/s at different hours on this
  machine (so did the bare asyncio ceiling beside it): compare a figure with its peer in the same
  run, not with another run's.
"""


if __name__ == "__main__":
    main()
