"""Named tokens with roles, the audit trail, and what the operator's console reads: stopping and
re-running one run, runs per minute and the upcoming fires. The real app, engine and store serve
on a loopback port in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, base_config

from taskd.config import load_config
from taskd.errors import ConfigError
from taskd.http.access import Access, Throttle

TOKENS = """
api:
  listen: '127.0.0.1:{port}'
  tokens:
    - {name: alice, token: viewer-token-123456, role: viewer}
    - {name: bob, token: operator-token-123456, role: operator}
    - {name: carol, token_file: carol.token, role: admin}
"""
TASKS = """
- {id: quick, pipeline: quick, params: {label: plain, password: default-pw}, secret_params: [password]}
- {id: nap, pipeline: nap, concurrency: allow}
- {id: hourly, schedule: '0 * * * *', pipeline: quick, time_zone: Asia/Tokyo}
- {id: idle, enabled: false, schedule: '* * * * *', pipeline: quick}
"""
PIPELINES = """
- {name: quick, processors: [{log: {message: fine}}]}
- {name: nap, processors: [{sleep: {duration: 30s}}]}
"""
VIEWER, OPERATOR, ADMIN = "viewer-token-123456", "operator-token-123456", "admin-token-1234567"


def with_tokens(text: str = "") -> str:
    config = base_config(TASKS, PIPELINES).replace("api: {listen: '127.0.0.1:{port}'}\n", TOKENS.lstrip())
    return config + text


@pytest.fixture
async def api(api_factory: Callable[..., Awaitable[Api]], tmp_path: Path) -> Api:
    (tmp_path / "carol.token").write_text(ADMIN + "\n")
    made = await api_factory(with_tokens().replace("token_file: carol.token", f"token_file: {tmp_path}/carol.token"))
    made.token = VIEWER  # what the helpers that wait for runs read with
    return made


def as_token(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def call(api: Api, method: str, path: str, token: str | None, body: Any = None) -> Any:
    return await api.request(method, path, body, headers=as_token(token))


async def test_each_role_may_do_what_it_says_and_is_told_the_role_it_lacks(api: Api) -> None:
    for token, name, role in ((VIEWER, "alice", "viewer"), (OPERATOR, "bob", "operator"), (ADMIN, "carol", "admin")):
        who = await call(api, "GET", "/whoami", token)
        assert who.status == 200 and who.json() == {"name": name, "role": role, "auth": True}
        assert (await call(api, "GET", "/tasks", token)).status == 200
        assert (await call(api, "GET", "/health", token)).json()["version"]  # the details: any role
    api.token = None
    assert (await call(api, "GET", "/whoami", None)).status == 401
    api.token = VIEWER
    assert (await call(api, "GET", "/whoami", "no-such-token")).status == 401

    refused = await call(api, "POST", "/task/quick/_start", VIEWER)
    assert refused.status == 403
    error = refused.json()["error"]
    assert error["code"] == "forbidden" and error["required_role"] == "operator"
    assert "operator role" in error["message"] and "'alice' has the viewer role" in error["message"]
    started = await call(api, "POST", "/task/quick/_start", OPERATOR)
    assert started.status == 202
    await api.wait_run(started.json()["run_id"])

    for method, path in (("DELETE", "/task/quick"), ("POST", "/_reload")):
        for token in (VIEWER, OPERATOR):
            answer = await call(api, method, path, token)
            assert answer.status == 403 and answer.json()["error"]["required_role"] == "admin", (method, path)
    assert (await call(api, "POST", "/_reload", ADMIN)).status == 200
    assert (await call(api, "DELETE", "/task/quick", ADMIN)).status == 200
    # A route that does not exist is a 404 to anyone signed in, whatever the role.
    assert (await call(api, "POST", "/no/such/route", VIEWER)).status == 404


async def test_the_audit_trail_records_who_did_what_from_where(api: Api) -> None:
    started = (await call(api, "POST", "/task/quick/_start", OPERATOR)).json()["run_id"]
    await api.wait_run(started)
    assert (await call(api, "POST", "/task/quick/_stop", OPERATOR)).status == 409  # nothing to stop
    assert (await call(api, "DELETE", "/task/nap", VIEWER)).status == 403
    assert (await call(api, "DELETE", "/task/nap", ADMIN)).status == 200
    assert (await call(api, "POST", "/_reload", ADMIN)).status == 200
    for _ in range(3):  # a burst of wrong tokens from one address: one entry
        assert (await call(api, "GET", "/tasks", "guess")).status == 401
    assert (await call(api, "GET", "/tasks", VIEWER)).status == 200  # reads are not recorded

    body = (await call(api, "GET", "/audit", VIEWER)).json()
    entries = body["entries"]
    assert body["total"] == len(entries) == 6
    seen = [(e["action"], e["actor"], e["role"], e["target"], e["status"]) for e in reversed(entries)]
    assert seen == [
        ("start", "bob", "operator", "quick", 202),
        ("stop", "bob", "operator", "quick", 409),
        ("forbidden", "alice", "viewer", "nap", 403),
        ("delete", "carol", "admin", "nap", 200),
        ("reload", "carol", "admin", None, 200),
        ("sign_in_failed", None, None, None, 401),
    ]
    assert all(e["remote"] == "127.0.0.1" and e["at"].endswith("Z") for e in entries)
    assert entries[-1]["detail"] == f"run {started}"
    assert entries[0]["detail"] == "wrong bearer token for GET /tasks"

    only = (await call(api, "GET", "/audit?action=delete,forbidden&actor=carol", VIEWER)).json()
    assert [e["action"] for e in only["entries"]] == ["delete"] and only["total"] == 1
    page = (await call(api, "GET", "/audit?limit=2&offset=1", VIEWER)).json()
    assert [e["action"] for e in page["entries"]] == ["reload", "delete"] and page["total"] == 6
    for bad in ("/audit?action=explode", "/audit?color=red", "/audit?since=yesterday-ish"):
        answer = await call(api, "GET", bad, VIEWER)
        assert answer.status == 400 and answer.json()["error"]["code"] == "bad_request", bad


def test_refused_sign_ins_are_recorded_once_a_minute_per_address_with_the_rest_counted() -> None:
    throttle = Throttle(window_s=60.0, size=2)
    assert throttle.admit("10.0.0.1", 0.0) == 0
    assert throttle.admit("10.0.0.1", 1.0) is None
    assert throttle.admit("10.0.0.1", 59.0) is None
    assert throttle.admit("10.0.0.2", 59.5) == 0  # another address has its own minute
    assert throttle.admit("10.0.0.1", 60.5) == 2  # the next one recorded tells of the two between
    assert throttle.admit("10.0.0.1", 61.0) is None
    throttle.admit("10.0.0.3", 62.0)
    throttle.admit("10.0.0.4", 62.0)  # the oldest address is forgotten past `size`
    assert throttle.admit("10.0.0.1", 63.0) == 0


def test_every_token_is_compared_and_a_scheme_other_than_bearer_names_nobody() -> None:
    access = Access([("one", "first-token", "viewer"), ("two", "second-token", "admin")])
    assert access.caller("Bearer second-token") == access.caller("bearer  second-token ")
    found = access.caller("Bearer second-token")
    assert found is not None and found.name == "two" and found.may("operator")
    assert access.caller("Basic second-token") is None and access.caller("Bearer first") is None
    assert access.caller("") is None
    nobody = Access([]).caller("")
    assert nobody is not None and nobody.role == "admin" and nobody.name is None


async def test_without_tokens_everyone_is_a_nameless_admin_and_still_audited(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    api = await api_factory(base_config(TASKS, PIPELINES))
    assert (await api.request("GET", "/whoami")).json() == {"name": None, "role": "admin", "auth": False}
    await api.wait_run(await api.start_task("quick"))
    [entry] = (await api.request("GET", "/audit")).json()["entries"]
    assert entry["action"] == "start" and entry["actor"] is None and entry["role"] == "admin"


async def test_the_single_api_token_is_an_admin_named_admin(api_factory: Callable[..., Awaitable[Api]]) -> None:
    config = base_config(TASKS, PIPELINES).replace(
        "api: {listen: '127.0.0.1:{port}'}", "api: {listen: '127.0.0.1:{port}', token: 'only-token-1234'}"
    )
    api = await api_factory(config)
    api.token = "only-token-1234"
    assert (await api.request("GET", "/whoami")).json() == {"name": "admin", "role": "admin", "auth": True}
    assert (await api.request("DELETE", "/task/nap")).status == 200


@pytest.mark.parametrize(
    ("tokens", "fragment"),
    [
        (
            "[{name: a, token: same-token-1, role: viewer}, {name: b, token: same-token-1, role: admin}]",
            "taskd.yml:4: api.tokens[1]: token 'b' is the same as token 'a'",
        ),
        ("[{name: a, token: t-1, role: viewer}, {name: a, token: t-2, role: admin}]", "token name 'a' is given twice"),
        ("[{name: a, token: t-1, token_file: f, role: viewer}]", "give token or token_file, one of them"),
        ("[{name: a, token: t-1}]", "taskd.yml:4: api.tokens[0].role: required key is missing"),
        ("[{name: a, token: t-1, role: root}]", "'viewer', 'operator' or 'admin'"),
        ("[{name: a, token_file: missing.token, role: viewer}]", "api.tokens[0].token_file: cannot read"),
        ("[{name: a, token: 'two words', role: viewer}]", "holds whitespace"),
    ],
)
def test_bad_tokens_are_refused_naming_file_line_and_key(tmp_path: Path, tokens: str, fragment: str) -> None:
    text = base_config(TASKS, PIPELINES).replace(
        "api: {listen: '127.0.0.1:{port}'}\n", f"api:\n  listen: '127.0.0.1:8080'\n  tokens: {tokens}\n"
    )
    (tmp_path / "taskd.yml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "taskd.yml", {})
    assert any(fragment in problem for problem in caught.value.problems), caught.value.problems


def test_named_tokens_guard_an_open_listener_and_are_masked_as_secrets(tmp_path: Path) -> None:
    text = base_config(TASKS, PIPELINES).replace(
        "api: {listen: '127.0.0.1:{port}'}\n",
        "api: {listen: '0.0.0.0:8080', tokens: [{name: ops, token: ops-token-98765, role: operator}]}\n",
    )
    (tmp_path / "taskd.yml").write_text(text)
    loaded = load_config(tmp_path / "taskd.yml", {})
    assert "ops-token-98765" in loaded.secrets


async def test_stop_one_run_and_run_it_again_with_its_params(api: Api) -> None:
    first = (await call(api, "POST", "/task/nap/_start", OPERATOR)).json()["run_id"]
    second = (await call(api, "POST", "/task/nap/_start", OPERATOR)).json()["run_id"]
    stopped = await call(api, "POST", f"/run/{first}/_stop", OPERATOR)
    assert stopped.status == 200 and stopped.json() == {"run_id": first, "stopped": True, "stopping": False}
    assert await api.run_state(first) == "stopped"
    assert await api.run_state(second) == "running"  # the task's other run goes on
    again = await call(api, "POST", f"/run/{first}/_stop", OPERATOR)
    assert again.status == 409 and "not active" in again.json()["error"]["message"]
    assert (await call(api, "POST", "/run/no-such-run/_stop", OPERATOR)).status == 404
    assert (await call(api, "POST", f"/run/{second}/_stop", VIEWER)).status == 403
    assert (await call(api, "POST", f"/run/{second}/_stop", OPERATOR)).status == 200

    given = {"params": {"label": "given", "password": "hunter2-secret"}}
    original = (await call(api, "POST", "/task/quick/_start", OPERATOR, given)).json()["run_id"]
    await api.wait_run(original)
    answer = await call(api, "POST", f"/run/{original}/_rerun", OPERATOR)
    assert answer.status == 202, answer.text
    body = answer.json()
    assert body["rerun_of"] == original and body["task_id"] == "quick" and body["run_id"] != original
    assert body["params_not_repeated"] == ["password"]  # never stored: the task's default is used
    rerun = await api.wait_run(body["run_id"])
    assert rerun["state"] == "completed" and rerun["trigger"] == "manual"
    assert rerun["params"]["label"] == "given" and rerun["params"]["password"] == "***"
    assert (await call(api, "POST", "/run/no-such-run/_rerun", OPERATOR)).status == 404
    assert (await call(api, "POST", f"/run/{original}/_rerun", VIEWER)).status == 403
    audited = (await call(api, "GET", "/audit?action=rerun", VIEWER)).json()["entries"]
    assert [e["detail"] for e in audited if e["status"] == 202] == [
        f"run {body['run_id']}; params not repeated: password"
    ]


async def test_runs_per_minute_and_the_upcoming_fires(api: Api) -> None:
    runs = [(await call(api, "POST", "/task/quick/_start", OPERATOR)).json()["run_id"] for _ in range(3)]
    for run_id in runs:
        await api.wait_run(run_id)
    nap = (await call(api, "POST", "/task/nap/_start", OPERATOR)).json()["run_id"]
    await call(api, "POST", f"/run/{nap}/_stop", OPERATOR)
    await api.store.flush()
    body = (await call(api, "GET", "/stats/runs", VIEWER)).json()
    assert body["bucket_s"] == 60 and len(body["buckets"]) == 60
    totals = {state: sum(b[state] for b in body["buckets"]) for state in ("completed", "failed", "stopped")}
    assert totals == {"completed": 3, "failed": 0, "stopped": 1}
    assert body["buckets"][-1]["completed"] + body["buckets"][-2]["completed"] == 3  # in the last minute or two
    assert len((await call(api, "GET", "/stats/runs?minutes=5", VIEWER)).json()["buckets"]) == 5
    assert (await call(api, "GET", "/stats/runs?minutes=0", VIEWER)).status == 400

    ahead = (await call(api, "GET", "/upcoming?hours=24", VIEWER)).json()
    [hourly] = ahead["tasks"]  # disabled and unscheduled tasks have no fires
    assert hourly["task_id"] == "hourly" and hourly["time_zone"] == "Asia/Tokyo" and not hourly["more"]
    assert len(hourly["fires"]) == 24 and all(f.endswith("+09:00") for f in hourly["fires"])
    fires = [datetime.fromisoformat(f) for f in hourly["fires"]]
    assert datetime.fromisoformat(ahead["from"]) < fires[0] and fires[-1] <= datetime.fromisoformat(ahead["until"])
    short = (await call(api, "GET", "/upcoming?hours=2", VIEWER)).json()
    assert len(short["tasks"][0]["fires"]) == 2
    assert (await call(api, "GET", "/upcoming?hours=0", VIEWER)).status == 400


async def test_the_task_page_reads_its_history_and_percentiles(api: Api) -> None:
    for _ in range(4):
        await api.wait_run((await call(api, "POST", "/task/quick/_start", OPERATOR)).json()["run_id"])
    await asyncio.sleep(0)
    detail = (await call(api, "GET", "/task/quick", VIEWER)).json()
    assert len(detail["history"]) == 4 and all(p["state"] == "completed" for p in detail["history"])
    assert [p["finished_at"] for p in detail["history"]] == sorted(p["finished_at"] for p in detail["history"])
    stats = detail["stats"]
    assert stats["success_rate"] == 1.0 and stats["p50_duration"] is not None
    assert stats["p50_duration"] <= stats["p95_duration"]


async def test_what_a_client_sends_is_written_escaped_and_refusals_are_throttled(api: Api) -> None:
    forged = "/task/x%0A2026-12-01T17:00:00Z%20%20delete%20%20carol%1b%5b2J"
    assert (await call(api, "DELETE", forged, "no-such-token")).status == 401
    for _ in range(20):  # a viewer hammering an action it may not do: one entry, the rest counted
        assert (await call(api, "POST", "/task/quick/_start", VIEWER)).status == 403
    entries = (await call(api, "GET", "/audit", VIEWER)).json()["entries"]
    refused = [e for e in entries if e["action"] == "forbidden"]
    assert len(refused) == 1 and refused[0]["actor"] == "alice"
    [signed] = [e for e in entries if e["action"] == "sign_in_failed"]
    assert "\n" not in signed["target"] and "\x1b" not in signed["target"]
    assert signed["target"] == "x\\n2026-12-01T17:00:00Z  delete  carol\\x1b[2J"
    assert "\\n" in signed["detail"] and "\n" not in signed["detail"]


async def test_a_rerun_never_sends_a_masked_value(api_factory: Callable[..., Awaitable[Api]]) -> None:
    tasks = (
        "- {id: sec, pipeline: quick, params: {url: 'https://user:hunter2hunter2@example.com/x',"
        " password: hunter2hunter2, label: plain}, secret_params: [password]}"
    )
    api = await api_factory(base_config(tasks, PIPELINES))
    first = await api.start_task("sec")
    await api.wait_run(first)
    body = (await api.request("POST", f"/run/{first}/_rerun")).json()
    assert body["params_not_repeated"] == ["password", "url"]  # the url held the password, masked
    again = await api.wait_run(body["run_id"])
    assert again["params"]["label"] == "plain"
    live = api.engine.entry("sec").params  # the rerun took the task's own values for those
    assert live["url"].startswith("https://user:") and "***" not in live["url"]


def test_a_token_given_as_digits_is_text_and_any_other_value_is_refused_unquoted(tmp_path: Path) -> None:
    text = base_config(TASKS, PIPELINES).replace(
        "api: {listen: '127.0.0.1:{port}'}\n", "api:\n  listen: '127.0.0.1:8080'\n  token: TOKEN\n"
    )
    (tmp_path / "taskd.yml").write_text(text.replace("TOKEN", "${TOK}"))
    loaded = load_config(tmp_path / "taskd.yml", {"TOK": "918273645501"})
    assert loaded.api.token == "918273645501" and "918273645501" in loaded.secrets
    (tmp_path / "taskd.yml").write_text(text.replace("TOKEN", "3.14159"))
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "taskd.yml", {})
    assert list(caught.value.problems) == [f"{tmp_path / 'taskd.yml'}:4: api.token: a token must be text: quote it"]


async def test_upcoming_and_runs_per_minute_refuse_parameters_they_do_not_take(api: Api) -> None:
    for path in ("/upcoming?foo=1", "/stats/runs?hours=2", "/nodes/x/_drain?wait=2"):
        method = "POST" if "_drain" in path else "GET"
        answer = await call(api, method, path, ADMIN)
        assert answer.status == 400, (path, answer.text)
    ahead = (await call(api, "GET", "/upcoming", VIEWER)).json()
    assert ahead["from"].endswith("Z") and ahead["until"].endswith("Z")
