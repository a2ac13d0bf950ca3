"""Fires through `taskd run`, on time; params reach a shell step as data, never as code."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path

from conftest import Api, Daemon, base_config, ts, wait_for

ApiFactory = Callable[..., Awaitable[Api]]


def test_a_per_second_task_fires_on_time(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(
        base_config(
            "- {id: tick, schedule: '* * * * * *', pipeline: note}",
            "- {name: note, processors: [{log: {message: 'tick {run.id}'}}]}",
        )
    ).start()
    runs = wait_for(
        lambda: (
            [r for r in daemon.runs("tick") if r["state"] == "completed"][:2]
            if len([r for r in daemon.runs("tick") if r["state"] == "completed"]) >= 2
            else None
        ),
        timeout=10,
        what="2 runs",
    )
    runs = sorted(runs, key=lambda r: r["scheduled_at"])
    instants = [ts(r["scheduled_at"]) for r in runs]
    assert all(r["trigger"] == "schedule" for r in runs)
    assert all(float(i).is_integer() for i in instants), instants
    assert [b - a for a, b in itertools.pairwise(instants)] == [1.0]
    for run in runs:
        lateness = ts(run["started_at"]) - ts(run["scheduled_at"])
        assert 0 <= lateness < 0.5, lateness  # a generous sanity bound; bench/ measures precision


async def test_manual_params_override_defaults_and_reach_shell_as_data(api_factory: ApiFactory, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("still here")
    api = await api_factory(
        base_config(
            "- {id: greet, pipeline: p, params: {greeting: hello, name: world}}",
            """
            - name: p
              processors:
                - shell: {command: 'echo "$TASKD_PARAM_GREETING, $TASKD_PARAM_NAME"'}
                - log: {message: 'said {params.greeting} to {params.name}'}
            """,
        )
    )
    run_id = await api.start_task("greet", {"name": f"x; rm -f {victim}; $(rm -f {victim})"})
    run = await api.wait_run(run_id)
    assert run["state"] == "completed" and run["params"]["greeting"] == "hello"
    log = (await api.request("GET", f"/run/{run_id}/log")).text
    assert f"hello, x; rm -f {victim}; $(rm -f {victim})" in log
    assert "said hello to x;" in log
    assert victim.read_text() == "still here"
