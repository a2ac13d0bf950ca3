"""What ships in contrib/ works as shipped: the Prometheus alert rules pass `promtool check rules`
and their unit tests (`promtool test rules`), the Grafana dashboard is a dashboard whose every
panel has a query, and every taskd metric the rules and the dashboard name is one a live daemon
exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, base_config

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
RULES = CONTRIB / "prometheus" / "taskd-rules.yml"
GRAFANA = CONTRIB / "grafana" / "taskd.json"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("TASKD_REQUIRE_PROMTOOL"):
            pytest.fail("promtool is required here (apt-get install prometheus)")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def test_the_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    tool = promtool()
    checked = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0 and "SUCCESS: 6 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = subprocess.run(
        [tool, "test", "rules", "taskd-rules.test.yml"], cwd=RULES.parent, capture_output=True, text=True
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_every_metric_the_rules_and_the_dashboard_name_is_exported(daemon_factory: Callable[..., Daemon]) -> None:
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["uid"] == "taskd" and dashboard["panels"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) == len(dashboard["panels"]) and all(exprs)
    named = set(re.findall(r"\btaskd_[a-z_]+", RULES.read_text() + "\n".join(exprs)))
    assert len(named) >= 15

    daemon = daemon_factory(
        base_config(
            "- {id: ok, pipeline: p, expect: {success_within: 1h}, schedule: '0 3 * * *'}",
            "- {name: p, processors: [{shell: {command: 'true'}}]}",
        )
    ).start()
    daemon.wait_run(daemon.start_task("ok"))
    exposition = daemon.request("GET", "/metrics").text
    assert daemon.stop() == 0
    families = set(re.findall(r"^# TYPE (\S+) ", exposition, re.MULTILINE))
    suffixes = ("_bucket", "_sum", "_count", "_total")
    missing = {
        name
        for name in named
        if name not in families and not any(name.endswith(s) and name[: -len(s)] in families for s in suffixes)
    }
    assert missing == set(), f"named in contrib/ but not exported: {sorted(missing)}"
