"""Third-party processors from the `taskd.processors` entry point group, end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, base_config, wait_for

PLUGIN = """
from pydantic import Field
from taskd.processor import ProcessorOptions, ProcessorType

class ShoutOptions(ProcessorOptions):
    text: str = Field(description="what to shout")
    times: int = Field(1, ge=1, le=10, description="how often")

class Shout:
    def __init__(self, options):
        self.options = options
    async def run(self, ctx):
        o = ctx.render(self.options)
        ctx.info(" ".join([o.text.upper()] * o.times))
        return {"shouted": o.times}

TYPE = ProcessorType("shout", ShoutOptions, "shout a text into the run log", Shout)
IMPOSTOR = ProcessorType("sleep", ShoutOptions, "not the real sleep", Shout)
TWIN = ProcessorType("shout", ShoutOptions, "a second shout", Shout)

class Boom:
    def __init__(self, options):
        raise RuntimeError("no credentials for " + options.text)

EXPLODING = ProcessorType("explode", ShoutOptions, "a constructor that raises", Boom)
"""


@pytest.fixture
def plugin_path(tmp_path: Path) -> str:
    """A plugin distribution as pip would leave it: a module and a dist-info with entry points."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "taskd_shout.py").write_text(PLUGIN)
    info = site / "taskd_shout-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: taskd-shout\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[taskd.processors]\nshout = taskd_shout:TYPE\nbroken = taskd_no_such_module:TYPE\n"
        "sleep = taskd_shout:IMPOSTOR\nshout2 = taskd_shout:TWIN\nexplode = taskd_shout:EXPLODING\n"
    )
    return str(site)


def _env(plugin_path: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": plugin_path + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_taskd_processors_lists_builtins_and_plugins(plugin_path: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "taskd", "processors", "--json"], capture_output=True, text=True, env=_env(plugin_path)
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    kinds = {p["type"]: p for p in body["processors"]}
    assert kinds["shout"]["summary"] == "shout a text into the run log"
    assert {o["name"]: o["default"] for o in kinds["shout"]["options"]} == {"text": None, "times": 1}
    assert "ModuleNotFoundError" in body["plugin_errors"]["broken"]
    assert "cannot replace the built-in processor 'sleep'" in body["plugin_errors"]["sleep"]
    assert "another plugin already provides 'shout'" in body["plugin_errors"]["shout2"]
    assert "plugin 'broken' was not loaded" in result.stderr
    text = subprocess.run(
        [sys.executable, "-m", "taskd", "processors"], capture_output=True, text=True, env=_env(plugin_path)
    ).stdout
    assert "shout: shout a text into the run log" in text and "copy: copy a file" in text
    assert "every processor also takes: on_error, retry, timeout, when" in text


def test_plugin_option_errors_are_config_errors(plugin_path: str, tmp_path: Path) -> None:
    (tmp_path / "taskd.yml").write_text(
        textwrap.dedent(
            """
            tasks: [{id: t, pipeline: p}]
            pipelines:
              - name: p
                processors:
                  - shout: {text: hi, times: 99, loud: true}
                  - broken: {}
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "taskd", "check", "-c", "taskd.yml"],
        capture_output=True, text=True, cwd=tmp_path, env=_env(plugin_path),
    )  # fmt: skip
    assert result.returncode == 2
    assert "taskd.yml:6: pipelines[0].processors[0].shout.times: must be <= 10, got 99" in result.stderr
    assert "taskd.yml:6: pipelines[0].processors[0].shout.loud: unknown key 'loud'" in result.stderr
    assert "unknown processor type 'broken'" in result.stderr and "failed to load: ModuleNotFoundError" in result.stderr


def test_a_plugin_runs_in_the_daemon(plugin_path: str, daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(
        base_config(
            "- {id: t, pipeline: p, params: {word: hey}}",
            "- {name: p, processors: [{shout: {text: '{params.word}', times: 2}}, {log: {message: '{data.shouted}'}}]}",
        ),
        env={"PYTHONPATH": plugin_path},
    ).start()
    run = daemon.wait_run(daemon.start_task("t"))
    assert run["state"] == "completed", run["error"]
    log = daemon.request("GET", f"/run/{run['id']}/log").text
    assert "[log] HEY HEY" in log and "[log] 2" in log
    kinds = {p["type"] for p in daemon.request("GET", "/processors").json()["processors"]}
    assert "shout" in kinds


def test_a_processor_whose_constructor_raises_is_a_config_error_and_never_kills_a_reload(
    plugin_path: str, daemon_factory: Callable[..., Daemon]
) -> None:
    good = base_config("- {id: t, pipeline: p}", "- {name: p, processors: [{shout: {text: hi}}]}")
    bad = base_config("- {id: t, pipeline: p}", "- {name: p, processors: [{explode: {text: vault}}]}")
    daemon = daemon_factory(good, env={"PYTHONPATH": plugin_path}).start()
    (daemon.dir / "bad.yml").write_text(bad.replace("{port}", str(daemon.port)))
    check = subprocess.run(
        [sys.executable, "-m", "taskd", "check", "-c", "bad.yml"],
        capture_output=True, text=True, cwd=daemon.dir, env=_env(plugin_path),
    )  # fmt: skip
    assert check.returncode == 2
    assert "bad.yml:" in check.stderr
    assert "pipelines[0].processors[0].explode: processor 'explode' cannot be built" in check.stderr
    assert "RuntimeError: no credentials for vault" in check.stderr

    daemon.write_config(bad)
    daemon.send(signal.SIGHUP)
    failed = wait_for(
        lambda: [e for e in daemon.events() if e.get("event") == "config_reload_failed"], what="the failed reload"
    )
    assert any("no credentials for vault" in problem for problem in failed[-1]["errors"])
    run = daemon.wait_run(daemon.start_task("t"))  # the old configuration still runs
    assert run["state"] == "completed"
    assert "[log] HI" in daemon.request("GET", f"/run/{run['id']}/log").text
    assert daemon.stop() == 0
