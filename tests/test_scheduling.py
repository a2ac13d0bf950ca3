"""End to end through `taskd run`: fires, the slot limit, priority order and concurrency policies."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from conftest import Daemon, base_config, ts, wait_for

SLEEPERS = "\n".join(f"- {{id: s{i}, pipeline: nap}}" for i in range(6))


def test_a_per_second_task_fires_on_time(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(
        base_config(
            "- {id: tick, schedule: '* * * * * *', pipeline: note}",
            "- {name: note, processors: [{log: {message: 'tick {run.id}'}}]}",
        )
    ).start()
    runs = wait_for(
        lambda: (
            [r for r in daemon.runs("tick") if r["state"] == "completed"][:3]
            if len([r for r in daemon.runs("tick") if r["state"] == "completed"]) >= 3
            else None
        ),
        timeout=10,
        what="3 runs",
    )
    runs = sorted(runs, key=lambda r: r["scheduled_at"])
    instants = [ts(r["scheduled_at"]) for r in runs]
    assert all(r["trigger"] == "schedule" for r in runs)
    assert all(float(i).is_integer() for i in instants), instants
    assert [b - a for a, b in itertools.pairwise(instants)] == [1.0, 1.0]
    for run in runs:
        lateness = ts(run["started_at"]) - ts(run["scheduled_at"])
        assert 0 <= lateness < 0.5, lateness  # a generous sanity bound; bench/ measures precision


def test_disabled_tasks_never_fire(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(
        base_config(
            """
            - {id: paused, enabled: false, schedule: '* * * * * *', pipeline: note}
            - {id: active, schedule: '* * * * * *', pipeline: note}
            """,
            "- {name: note, processors: [{log: {message: hi}}]}",
        )
    ).start()
    wait_for(lambda: len(daemon.runs("active")) >= 2, timeout=10, what="the enabled task to fire twice")
    assert daemon.runs("paused") == []
    task = daemon.request("GET", "/task/paused").json()
    assert task["status"] == "disabled" and task["next_run"] is None


def _overlap(runs: list[dict]) -> int:
    events = sorted(
        [(ts(r["started_at"]), 1) for r in runs] + [(ts(r["finished_at"]), -1) for r in runs],
        key=lambda e: (e[0], e[1]),
    )
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def test_at_most_max_concurrent_tasks_run_at_once(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(base_config(SLEEPERS, "- {name: nap, processors: [{sleep: {duration: 0.4s}}]}", slots=2))
    daemon.start()
    run_ids = [daemon.start_task(f"s{i}") for i in range(6)]
    health = daemon.request("GET", "/health").json()
    assert health["slots"]["held"] <= 2
    runs = [daemon.wait_run(r) for r in run_ids]
    assert all(r["state"] == "completed" for r in runs)
    assert _overlap(runs) == 2
    waited = [r for r in runs if ts(r["started_at"]) - ts(r["queued_at"]) > 0.3]
    assert len(waited) >= 4, "the runs beyond the limit should have waited in `queued`"


def test_queued_runs_start_by_priority_then_fifo(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(
        base_config(
            """
            - {id: blocker, pipeline: long}
            - {id: low, pipeline: short, priority: 0}
            - {id: mid_a, pipeline: short, priority: 5}
            - {id: high, pipeline: short, priority: 10}
            - {id: mid_b, pipeline: short, priority: 5}
            """,
            """
            - {name: long, processors: [{sleep: {duration: 0.5s}}]}
            - {name: short, processors: [{sleep: {duration: 0.05s}}]}
            """,
            slots=1,
        )
    ).start()
    blocker = daemon.start_task("blocker")
    wait_for(lambda: daemon.run(blocker)["state"] == "running", what="blocker running")
    order = ["low", "mid_a", "high", "mid_b"]
    ids = {name: daemon.start_task(name) for name in order}
    assert all(daemon.run(i)["state"] == "queued" for i in ids.values())
    runs = {name: daemon.wait_run(i) for name, i in ids.items()}
    started = sorted(runs, key=lambda name: ts(runs[name]["started_at"]))
    assert started == ["high", "mid_a", "mid_b", "low"]


def _policy_daemon(factory: Callable[..., Daemon], policy: str, seconds: str = "0.6s") -> Daemon:
    return factory(
        base_config(
            f"- {{id: job, pipeline: nap, concurrency: {policy}}}",
            f"- {{name: nap, processors: [{{shell: {{command: 'sleep {seconds.rstrip('s')}'}}}}]}}",
        )
    ).start()


def test_forbid_refuses_a_second_manual_run(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = _policy_daemon(daemon_factory, "forbid")
    first = daemon.start_task("job")
    second = daemon.request("POST", "/task/job/_start")
    assert second.status == 409
    assert second.json()["error"]["code"] == "conflict" and first in second.json()["error"]["message"]
    assert daemon.wait_run(first)["state"] == "completed"


def test_forbid_records_skipped_fires(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(
        base_config(
            "- {id: slow, schedule: '* * * * * *', pipeline: nap}",
            "- {name: nap, processors: [{sleep: {duration: 2.5s}}]}",
        )
    ).start()

    def skipped() -> list:
        return daemon.request("GET", "/task/slow").json()["skipped_fires"]

    fires = wait_for(skipped, timeout=10, what="a skipped fire")
    assert fires[0]["kind"] == "skipped" and "already has an active run" in fires[0]["reason"]
    assert len([r for r in daemon.runs("slow") if r["state"] in ("running", "queued")]) <= 1


def test_allow_runs_side_by_side(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = _policy_daemon(daemon_factory, "allow")
    runs = [daemon.wait_run(r) for r in (daemon.start_task("job"), daemon.start_task("job"))]
    assert _overlap(runs) == 2


def test_replace_stops_the_active_run(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = _policy_daemon(daemon_factory, "replace", "30s")
    first = daemon.start_task("job")
    wait_for(lambda: daemon.run(first)["state"] == "running")
    second = daemon.start_task("job")
    old = daemon.wait_run(first, timeout=10)
    assert old["state"] == "stopped" and "replaced" in old["error"]
    new = wait_for(lambda: (r := daemon.run(second))["state"] == "running" and r, what="the new run to start")
    assert ts(new["started_at"]) >= ts(old["finished_at"])
    daemon.request("POST", "/task/job/_stop")


def test_queue_runs_after_the_active_one(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = _policy_daemon(daemon_factory, "queue", "0.4s")
    first, second = daemon.start_task("job"), daemon.start_task("job")
    assert daemon.run(second)["state"] == "queued"
    a, b = daemon.wait_run(first), daemon.wait_run(second)
    assert a["state"] == b["state"] == "completed"
    assert ts(b["started_at"]) >= ts(a["finished_at"])


def test_retries_with_exponential_backoff_then_fail(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(
        base_config(
            "- {id: flaky, pipeline: fail, retry: {count: 3, backoff: 0.2s, max_backoff: 0.5s}}",
            "- {name: fail, processors: [{shell: {command: 'echo boom >&2; exit 3'}}]}",
        )
    ).start()
    run_id = daemon.start_task("flaky")
    wait_for(lambda: daemon.run(run_id)["state"] == "retrying", what="the retrying state")
    run = daemon.wait_run(run_id)
    assert run["state"] == "failed" and run["attempts"] == 4
    assert "exit code 3" in run["error"] and "boom" in run["error"]
    attempts = run["attempt_list"]
    assert [a["state"] for a in attempts] == ["failed"] * 4
    gaps = [ts(b["started_at"]) - ts(a["finished_at"]) for a, b in itertools.pairwise(attempts)]
    for gap, expected in zip(gaps, [0.2, 0.4, 0.5], strict=True):  # 0.2 * 2**k, capped at 0.5
        assert expected - 0.02 <= gap <= expected + 0.4, gaps
    log = daemon.request("GET", f"/run/{run_id}/log").text
    assert log.count("[stderr] boom") == 4 and "retrying in" in log
    transitions = run["transitions"]
    assert [t["state"] for t in transitions] == ["queued"] + ["running", "retrying"] * 3 + ["running", "failed"]
    assert [ts(t["at"]) for t in transitions] == sorted(ts(t["at"]) for t in transitions)
    assert transitions[2]["detail"] == "retry 1 of 3 in 200ms"


def test_retry_count_shorthand_and_success_on_retry(daemon_factory: Callable[..., Daemon], tmp_path) -> None:
    marker = tmp_path / "seen"
    daemon = daemon_factory(
        base_config(
            "- {id: second_time, pipeline: p, retry_count: 2, retry: {backoff: 0.1s}}",
            f"- {{name: p, processors: [{{shell: {{command: 'test -e {marker} || {{ touch {marker}; exit 1; }}'}}}}]}}",
        )
    ).start()
    run = daemon.wait_run(daemon.start_task("second_time"))
    assert run["state"] == "completed" and run["attempts"] == 2 and run["error"] is None


def test_manual_params_override_defaults_and_reach_shell_as_data(
    daemon_factory: Callable[..., Daemon], tmp_path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("still here")
    daemon = daemon_factory(
        base_config(
            "- {id: greet, pipeline: p, params: {greeting: hello, name: world}}",
            """
            - name: p
              processors:
                - shell: {command: 'echo "$TASKD_PARAM_GREETING, $TASKD_PARAM_NAME"'}
                - log: {message: 'said {params.greeting} to {params.name}'}
            """,
        )
    ).start()
    run_id = daemon.start_task("greet", {"name": f"x; rm -f {victim}; $(rm -f {victim})"})
    run = daemon.wait_run(run_id)
    assert run["state"] == "completed" and run["params"]["greeting"] == "hello"
    log = daemon.request("GET", f"/run/{run_id}/log").text
    assert f"hello, x; rm -f {victim}; $(rm -f {victim})" in log
    assert "said hello to x;" in log
    assert victim.read_text() == "still here"
