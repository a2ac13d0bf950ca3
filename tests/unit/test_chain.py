"""Templates, alert options and the processor registry; alerts that do not fire, through the
real runner and a real SQLite store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

from taskd.config import load_config
from taskd.models import RunState
from taskd.processor import Context, StepFailed
from taskd.processors import registry


def _ctx(now: datetime, zone: str = "Asia/Tokyo") -> Context:
    return Context(
        task_id="t", task_name="T", run_id="r", attempt=2, trigger="manual", params={"a": {"b": 1}},
        log=type("L", (), {"write": lambda *a: None})(), base_dir=Path("/"), time_zone=zone, now=lambda: now,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{now:%Y%m%d-%H%M%S}", "20261124-083000"),  # 23:30 UTC is 08:30 next day in Tokyo
        ("{params.a.b}", "1"),
        ("{{literal}} {attempt}", "{literal} 2"),
        ("no fields", "no fields"),
        ("{task.id}-{now:%H}", "t-08"),
    ],
)
def test_template_fields(template: str, expected: str) -> None:
    assert _ctx(datetime(2026, 11, 23, 23, 30, tzinfo=UTC)).format(template, "x") == expected


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{params.missing}", "option 'dest': unknown field {params.missing}"),
        ("{now.__class__}", "unknown field"),
        ("{params.__class__.__mro__}", "unknown field"),
        ("{task[id]}", "item access is not allowed"),
        ("{0}", "unknown field"),
        ("{", "bad template"),
        ("{now:%Y", "bad template"),
    ],
)
def test_template_errors_name_the_option(template: str, fragment: str) -> None:
    with pytest.raises(StepFailed) as info:
        _ctx(datetime(2026, 1, 1, tzinfo=UTC)).format(template, "dest")
    assert fragment in str(info.value)


# -- alerts --------------------------------------------------------------------------------------


async def test_no_alert_on_success_and_alert_failures_keep_the_outcome(harness: Any, receiver: dict[str, Any]) -> None:
    closed = f"http://127.0.0.1:{free_port()}/hook"
    h = await harness(
        f"""
  - name: p
    processors:
      - log: {{message: fine}}
      - send_alert: {{webhook: "{receiver["url"]}"}}
      - send_alert: {{webhook: "{closed}", when: success}}
      - send_alert: {{webhook: "{receiver["url"]}?status=500", condition: always}}
"""
    )
    result = await h.run("t")
    assert result["record"].state is RunState.COMPLETED and result["record"].error is None
    states = [s.state.value for s in result["steps"]]
    assert states == ["completed", "skipped", "failed", "failed"]
    assert "ClientConnectorError" in result["steps"][2].error and "status 500" in result["steps"][3].error
    assert len(receiver["got"]) == 1  # only the `always` one reached the receiver (and it answered 500)
    assert any("the run's outcome stands" in line for line in result["log"])


def test_alert_options_are_checked_at_load_time(tmp_path: Path) -> None:
    from taskd.errors import ConfigError

    (tmp_path / "taskd.yml").write_text(
        "tasks: [{id: t, pipeline: p}]\npipelines:\n  - name: p\n    processors:\n"
        "      - send_alert: {condition: sometimes, log: true}\n"
        "      - send_alert: {webhook: 'http://x', when: success, condition: failure}\n"
        "      - copy: {source: a, destination: b, bogus: 1}\n"
        "      - send_alert: {condition: failure}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "taskd.yml", {})
    text = "\n".join(info.value.problems)
    assert "processors[0].send_alert.condition: must be one of" in text and "got string 'sometimes'" in text
    assert "processors[3]" not in text  # no channel is allowed: it alerts to the daemon log
    assert "processors[1].send_alert.when: when (success) and condition (failure) disagree" in text
    assert "processors[2].copy.bogus: unknown key 'bogus'" in text and "every processor also takes" in text


def test_every_builtin_type_is_registered() -> None:
    assert set(registry().types) >= {
        "shell", "http", "sleep", "log", "python", "copy", "compress", "rotate", "upload",
        "check_disk_space", "check_memory", "check_http", "send_alert",
    }  # fmt: skip
