"""Chain semantics, templating and alerts with shell steps, through the real runner and a real
SQLite store: on_error, the final phase, webhooks and email."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

from taskd.models import RunState


async def test_a_failing_step_skips_the_rest_and_on_error_continue_goes_on(harness: Any) -> None:
    h = await harness(
        """
  - name: p
    processors:
      - shell: {command: "exit 1", on_error: continue}
      - log: {message: second}
      - shell: {command: "echo third; exit 2"}
      - log: {message: never}
"""
    )
    result = await h.run("t")
    assert result["record"].state is RunState.FAILED
    assert result["record"].error.startswith("step 3 (shell): command failed: exit code 2")
    assert [s.state.value for s in result["steps"]] == ["failed", "completed", "failed", "skipped"]
    assert "second" in result["log"] and "never" not in result["log"]
    assert any("on_error: continue" in line for line in result["log"])


async def test_final_phase_runs_once_after_retries_with_the_outcome(harness: Any, tmp_path: Path) -> None:
    record = tmp_path / "outcome.json"
    (tmp_path / "hooks.py").write_text(
        "import json\ndef record(ctx, path):\n    open(path, 'a').write(json.dumps(ctx.outcome) + '\\n')\n"
    )
    h = await harness(
        f"""
  - name: p
    processors:
      - shell: {{command: "exit 3"}}
      - log: {{message: "cleanup for {{task.id}}", when: always}}
      - python: {{function: "hooks:record", kwargs: {{path: "{record}"}}, when: failure}}
      - log: {{message: "celebrate", when: success}}
""",
        task="{id: t, pipeline: p, retry: {count: 2, backoff: 0.05s}}",
    )
    result = await h.run("t")
    assert result["record"].state is RunState.FAILED and result["record"].attempts == 3
    outcomes = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(outcomes) == 1 and outcomes[0]["state"] == "failed" and outcomes[0]["attempts"] == 3
    assert "exit code 3" in outcomes[0]["error"]
    last_attempt = [s for s in result["steps"] if s.attempt == 3]
    assert [s.state.value for s in last_attempt] == ["failed", "completed", "completed", "skipped"]
    assert all(len([s for s in result["steps"] if s.attempt == n]) == 1 for n in (1, 2))
    assert "cleanup for t" in result["log"] and "celebrate" not in result["log"]


async def test_templating_in_options(harness: Any, tmp_path: Path) -> None:
    h = await harness(
        """
  - name: p
    processors:
      - log: {message: "{task.id} {run.id} {attempt} {params.who} {now:%Y}"}
      - shell: {argv: [echo, "{params.who}", "{data.nothing_yet}"], on_error: continue}
      - shell: {command: "echo '{params.who}' | awk '{print $1}'"}
""",
        tasks="  - {id: u, pipeline: p, params: {who: ops}}\n",
    )
    result = await h.run("u")
    run_id = result["record"].id
    assert f"u {run_id} 1 ops {datetime.now(UTC).year}" in result["log"]
    assert result["steps"][1].state.value == "failed"
    assert "option 'argv': unknown field {data.nothing_yet}" in result["steps"][1].error
    assert "{params.who}" in result["log"], "a shell command is never templated"


# -- alerts --------------------------------------------------------------------------------------


async def test_alert_on_failure_carries_the_outcome_and_log_tail(harness: Any, receiver: dict[str, Any]) -> None:
    h = await harness(
        f"""
  - name: p
    processors:
      - shell: {{command: "echo working; echo broke >&2; exit 7"}}
      - send_alert:
          condition: failure
          channels:
            - webhook: "{receiver["url"]}"
            - webhook: {{url: "{receiver["url"]}", format: slack}}
            - log: true
"""
    )
    result = await h.run("t")
    assert result["record"].state is RunState.FAILED
    full, slack = receiver["got"]
    assert full["state"] == "failed" and full["task"]["id"] == "t" and full["run_id"] == result["record"].id
    assert "exit code 7" in full["error"] and full["duration"] is not None
    assert "[stdout] working" in full["log_tail"] and "[stderr] broke" in full["log_tail"]
    assert set(slack) == {"text"} and "task t" in slack["text"] and "broke" in slack["text"]
    assert result["steps"][-1].state.value == "completed"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real SMTP server (aiosmtpd) with STARTTLS and AUTH, which refuses `nobody@`."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    messages: list[Any] = []

    class Handler:
        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
            if address.startswith("nobody@"):
                return "550 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            messages.append(envelope)
            return "250 accepted"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = data.login == b"ops" and data.password == b"secret"
        return AuthResult(success=ok)

    port = free_port()
    controller = Controller(
        Handler(), hostname="127.0.0.1", port=port, tls_context=context, authenticator=authenticator,
        auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    yield {"port": port, "messages": messages}
    controller.stop()


async def test_email_alert_over_starttls_with_auth(harness: Any, smtp: dict[str, Any]) -> None:
    h = await harness(
        f"""
  - name: p
    processors:
      - shell: {{command: "echo disk on fire >&2; exit 1"}}
      - send_alert:
          email:
            host: 127.0.0.1
            port: {smtp["port"]}
            starttls: true
            verify_tls: false
            username: ops
            password: secret
            from: taskd@example.org
            to: [ops@example.org]
"""
    )
    result = await h.run("t")
    assert result["record"].state is RunState.FAILED
    assert result["steps"][-1].state.value == "completed", result["steps"][-1].error
    (message,) = smtp["messages"]
    assert message.rcpt_tos == ["ops@example.org"]
    text = message.content.decode()
    assert "Subject: [taskd] t: failed" in text and "disk on fire" in text


async def test_smtp_refusal_is_recorded_but_the_outcome_stands(harness: Any, smtp: dict[str, Any]) -> None:
    h = await harness(
        f"""
  - name: p
    processors:
      - shell: {{command: "exit 1"}}
      - send_alert:
          email: {{host: 127.0.0.1, port: {smtp["port"]}, from: a@example.org, to: [nobody@example.org]}}
"""
    )
    result = await h.run("t")
    assert result["record"].state is RunState.FAILED and "exit code 1" in result["record"].error
    alert = result["steps"][-1]
    assert alert.state.value == "failed" and "550" in alert.error
