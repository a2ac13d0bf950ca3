"""The REST API: listing, details, auth, and JSON errors for bad input. The real app, engine and
SQLite store serve on a loopback port in-process."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, base_config, ts, until
from support.api import PIPELINES, TASKS


@pytest.fixture
async def api(api_factory: Callable[..., Awaitable[Api]]) -> Api:
    return await api_factory(base_config(TASKS, PIPELINES))


async def test_list_tasks_with_status_next_run_and_filters(
    api: Api, api_factory: Callable[..., Awaitable[Api]]
) -> None:
    await api.wait_run(await api.start_task("alpha"))
    await api.wait_run(await api.start_task("beta"))
    for path in ("/tasks", "/tasks/"):
        body = (await api.request("GET", path)).json()
        assert body["total"] == 3
        by_id = {t["id"]: t for t in body["tasks"]}
        assert set(by_id) == {"alpha", "beta", "gamma"}
    alpha, beta, gamma = by_id["alpha"], by_id["beta"], by_id["gamma"]
    assert alpha["name"] == "Alpha job" and alpha["status"] == "completed" and alpha["time_zone"] == "Europe/Berlin"
    assert alpha["next_run"].endswith(("+01:00", "+02:00")) and "T03:00:00" in alpha["next_run"]
    assert alpha["last_run"]["state"] == "completed" and alpha["duration"] is not None
    assert beta["status"] == "failed" and beta["schedule"] is None and beta["next_run"] is None
    assert alpha["schedule_text"] == "at 03:00 every day, Europe/Berlin" and beta["schedule_text"] is None
    # Before its first run, a task without a schedule is manual, not scheduled.
    fresh = await api_factory(base_config(TASKS, PIPELINES))
    statuses = {t["id"]: t["status"] for t in (await fresh.request("GET", "/tasks")).json()["tasks"]}
    assert statuses == {"alpha": "scheduled", "beta": "manual", "gamma": "disabled"}
    assert gamma["status"] == "disabled" and gamma["enabled"] is False and gamma["last_run"] is None
    assert alpha["pipeline"] == "ok"
    failed = (await api.request("GET", "/tasks?status=failed")).json()
    assert [t["id"] for t in failed["tasks"]] == ["beta"] and failed["total"] == 1
    page = (await api.request("GET", "/tasks?limit=1&offset=1")).json()
    assert [t["id"] for t in page["tasks"]] == ["beta"] and page["total"] == 3
    assert [t["id"] for t in (await api.request("GET", "/tasks?q=alp")).json()["tasks"]] == ["alpha"]
    assert [t["id"] for t in (await api.request("GET", "/tasks?sort=-id")).json()["tasks"]] == [
        "gamma",
        "beta",
        "alpha",
    ]


async def test_task_details(api: Api) -> None:
    run = await api.wait_run(await api.start_task("alpha"))
    body = (await api.request("GET", "/task/alpha")).json()
    assert body["definition"]["pipeline"]["processors"] == [{"log": {"message": "fine"}}]
    assert body["definition"]["source"].endswith("taskd.yml:6")
    assert len(body["next_runs"]) == 10
    assert body["stats"]["runs"] == 1 and body["stats"]["success_rate"] == 1.0
    assert body["recent_runs"][0]["id"] == run["id"]


async def test_a_task_page_shows_a_run_that_just_ended_as_ended(api: Api) -> None:
    """The page's runs are read without waiting for the writer (its figures may lag the last
    ~25 ms of writes), but a run that this node has finished is never listed active: a page asked
    for right after the run's end (the dashboard asks 300 ms after the event, and a loaded
    machine's commit can take longer) listed it running, beside "Active runs: none", until the
    next change."""
    api.store._batch_window_s = 30.0  # the run's end stays staged, not committed
    run_id = await api.start_task("alpha")
    await until(lambda: api.engine.live_run(run_id) is None, "the run to end")
    body = (await api.request("GET", "/task/alpha")).json()
    assert body["recent_runs"][0]["id"] == run_id
    assert body["recent_runs"][0]["state"] == "completed" and body["active_runs"] == []


async def test_runs_history_filters_and_run_details(api: Api) -> None:
    ok = await api.wait_run(await api.start_task("alpha"))
    bad = await api.wait_run(await api.start_task("beta"))
    assert bad["state"] == "failed" and "no-such-source does not exist" in bad["error"]
    assert bad["attempt_list"][0]["steps"][0]["type"] == "copy"
    everything = (await api.request("GET", "/runs")).json()
    assert everything["total"] == 2 and [r["id"] for r in everything["runs"]] == [bad["id"], ok["id"]]
    assert [r["id"] for r in (await api.request("GET", "/runs?state=failed")).json()["runs"]] == [bad["id"]]
    assert (await api.request("GET", "/task/alpha/runs?trigger=schedule")).json()["total"] == 0
    log = await api.request("GET", f"/run/{ok['id']}/log")
    assert log.status == 200 and log.headers["Content-Type"].startswith("text/plain") and "[log] fine" in log.text


async def test_run_search_lists_text_sort_and_time(api: Api) -> None:
    ok = await api.wait_run(await api.start_task("alpha"))
    bad = await api.wait_run(await api.start_task("beta"))
    again = await api.wait_run(await api.start_task("alpha", {"note": "needle-in-params"}))

    async def ids(query: str) -> list[str]:
        body = (await api.request("GET", f"/runs?{query}")).json()
        assert body["total"] == len(body["runs"])
        return [r["id"] for r in body["runs"]]

    assert await ids("state=completed,failed") == [again["id"], bad["id"], ok["id"]]
    assert await ids("task_id=alpha,beta&state=failed") == [bad["id"]]
    assert await ids("q=DOES%20NOT%20EXIST") == [bad["id"]]  # the error, any case
    assert await ids("q=needle-in") == [again["id"]]  # params
    assert await ids("q=alpha%20job") == [again["id"], ok["id"]]  # the task's name
    assert await ids("sort=queued_at") == [ok["id"], bad["id"], again["id"]]
    assert await ids("sort=-task_id") == [bad["id"], again["id"], ok["id"]]
    assert (await ids("sort=duration"))[-1] in {ok["id"], bad["id"], again["id"]}
    since = ts(bad["queued_at"])
    assert await ids(f"since={since}") == [again["id"], bad["id"]]  # epoch seconds
    assert await ids(f"until={bad['queued_at']}") == [ok["id"]]  # or ISO-8601
    everything = [again["id"], bad["id"], ok["id"]]
    assert await ids("since=1h") == everything  # or a time ago on the daemon's clock
    assert await ids("since=1h30m&until=0s") == everything
    assert await ids("until=10m") == [] and await ids("since=1d&until=2h") == []
    error = (await api.request("GET", "/runs?since=1x")).json()["error"]["message"]
    assert "a time ago such as 2h or 30m" in error
    paged = (await api.request("GET", "/task/alpha/runs?limit=1&offset=1&sort=queued_at")).json()
    assert paged["total"] == 2 and [r["id"] for r in paged["runs"]] == [again["id"]]
    error = (await api.request("GET", "/runs?sort=colour")).json()["error"]["message"]
    assert "queued_at, started_at, finished_at, duration, state, task_id" in error
    error = (await api.request("GET", "/runs?state=done")).json()["error"]["message"]
    assert "'done' is not one of queued, running, retrying, completed, failed, stopped, interrupted" in error


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/task/nope", 404, "not_found"),
        ("POST", "/task/nope/_start", 404, "not_found"),
        ("POST", "/task/nope/_stop", 404, "not_found"),
        ("DELETE", "/task/nope", 404, "not_found"),
        ("GET", "/task/nope/runs", 404, "not_found"),
        ("GET", "/run/0123456789abcdef0123", 404, "not_found"),
        ("GET", "/run/nope/log", 404, "not_found"),
        ("GET", "/no/such/route", 404, "not_found"),
        ("PUT", "/tasks", 405, "method_not_allowed"),
        ("GET", "/task/alpha/_start", 405, "method_not_allowed"),
        ("POST", "/task/alpha/_stop", 409, "conflict"),
        ("GET", "/tasks?limit=abc", 400, "bad_request"),
        ("GET", "/tasks?limit=0", 400, "bad_request"),
        ("GET", "/tasks?sort=color", 400, "bad_request"),
        ("GET", "/runs?state=sleeping", 400, "bad_request"),
        ("GET", "/runs?since=yesterday", 400, "bad_request"),
        ("GET", "/tasks?status=nonsense", 400, "bad_request"),
        ("GET", "/runs?task_id=nope", 404, "not_found"),
        ("GET", "/runs?state=completed,sleeping", 400, "bad_request"),
        ("GET", "/runs?sort=colour", 400, "bad_request"),
        ("GET", "/runs?stat=failed", 400, "bad_request"),
        ("GET", "/task/alpha/runs?trigger=cron", 400, "bad_request"),
    ],
)
async def test_errors_are_json_with_the_right_status(api: Api, method: str, path: str, status: int, code: str) -> None:
    resp = await api.request(method, path)
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["code"] == code and error["message"]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"params": [1]}', '"params" must be a JSON object'),
        (b'{"params": {}, "extra": 1}', "unknown field(s) 'extra'"),
    ],
)
async def test_malformed_start_bodies_get_400(api: Api, raw: bytes, fragment: str) -> None:
    resp = await api.request("POST", "/task/alpha/_start", raw=raw)
    assert resp.status == 400
    assert fragment in resp.json()["error"]["message"]
    assert (await api.request("GET", "/task/alpha/runs")).json()["total"] == 0


async def test_oversized_bodies_get_413(api_factory: Callable[..., Awaitable[Api]]) -> None:
    config = base_config(TASKS, PIPELINES).replace(
        "api: {listen: '127.0.0.1:{port}'}", "api: {listen: '127.0.0.1:{port}', max_body_bytes: 2048}"
    )
    api = await api_factory(config)
    resp = await api.request("POST", "/task/alpha/_start", {"params": {"blob": "x" * 5000}})
    assert resp.status == 413 and resp.json()["error"]["code"] == "payload_too_large"
    small = await api.request("POST", "/task/alpha/_start", {"params": {"blob": "x" * 100}})
    assert small.status == 202
    assert (await api.request("GET", "/health")).status == 200


async def test_garbage_on_the_socket_does_not_hurt_the_daemon(api: Api) -> None:
    port = api.client.port
    assert port is not None

    def poke() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"\x00\x01\x02 NOT HTTP\r\n\r\n")
            sock.recv(1024)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /tasks HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
            return sock.recv(1024)

    answer = await asyncio.to_thread(poke)
    assert answer.split(b" ")[1] == b"400"  # answered by aiohttp's parser, before the app
    assert (await api.request("GET", "/health")).status == 200


async def test_bearer_token_is_required_on_every_request(api_factory: Callable[..., Awaitable[Api]]) -> None:
    config = base_config(TASKS, PIPELINES).replace(
        "api: {listen: '127.0.0.1:{port}'}", "api: {listen: '127.0.0.1:{port}', token: '${SECRET}'}"
    )
    api = await api_factory(config, env={"SECRET": "s3cret-value"})
    for path in ("/tasks", "/task/alpha", "/runs", "/processors", "/run/x/log"):
        resp = await api.request("GET", path)
        assert resp.status == 401 and resp.json()["error"]["code"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    # /health answers without the token, with the bare status only; a wrong token gets no more
    # (the dashboard asks it whether a token is accepted without a refused request on the way).
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        bare = await api.request("GET", "/health", headers=headers)
        assert bare.status == 200 and bare.json() == {"status": "ok", "faults": []}
    full = await api.request("GET", "/health", headers={"Authorization": "Bearer s3cret-value"})
    assert full.status == 200 and full.json()["scheduler"] == "running" and "slots" in full.json()

    async def status(authorization: str) -> int:
        return (await api.request("GET", "/tasks", headers={"Authorization": authorization})).status

    assert await status("Bearer wrong") == 401
    assert await status("Basic s3cret-value") == 401
    assert await status("Bearer s3cret-value") == 200
    assert (await api.request("POST", "/task/alpha/_start")).status == 401
    api.token = "s3cret-value"
    assert (await api.request("POST", "/task/alpha/_start")).status == 202


async def test_processors_endpoint_lists_types_and_options(api: Api) -> None:
    body = (await api.request("GET", "/processors")).json()
    kinds = {p["type"]: p for p in body["processors"]}
    assert {"shell", "http", "sleep", "log", "python"} <= set(kinds)
    shell = {o["name"]: o for o in kinds["shell"]["options"]}
    assert shell["kill_grace"]["default"] == 5.0 and not shell["command"]["required"]
    assert {o["name"] for o in kinds["http"]["options"]} >= {"url", "method", "json", "expect", "timeout"}


async def test_a_run_read_while_it_ends_is_shown_as_it_was_when_read(
    api_factory: Callable[..., Awaitable[Api]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /run reads the store after looking at the live run; if the run ends in between, the
    answer must not pair the new state with the older attempts and steps."""
    api = await api_factory(
        base_config("- {id: nap, pipeline: nap}", "- {name: nap, processors: [{sleep: {duration: 0.3s}}]}")
    )
    run_id = await api.start_task("nap")
    live = api.engine.live_run(run_id)
    assert live is not None
    read_attempts = api.store.attempts

    async def attempts_then_the_run_ends(rid: str) -> Any:
        found = await read_attempts(rid)
        await live.done.wait()  # the run ends while the handler is still reading
        return found

    monkeypatch.setattr(api.store, "attempts", attempts_then_the_run_ends)
    view = (await api.request("GET", f"/run/{run_id}")).json()
    assert view["state"] == "running" and view["finished_at"] is None
    assert [a["state"] for a in view["attempt_list"]] == ["running"]
    monkeypatch.undo()
    done = await api.wait_run(run_id)
    assert done["state"] == "completed" and [a["state"] for a in done["attempt_list"]] == ["completed"]


async def test_a_lone_node_lists_itself(api: Api) -> None:
    (node,) = (await api.request("GET", "/nodes")).json()["nodes"]
    assert node["this"] and node["alive"] and not node["config_differs"] and node["dead_at"] is None
    assert node["name"] == api.engine.node_name and node["slots"] == 10 and node["slots_in_use"] == 0


async def test_a_task_deleted_while_the_cluster_is_asked_keeps_the_row_it_had(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task list asks the coordinator for what other nodes hold of its rows; a task deleted
    meanwhile keeps its row instead of failing the request."""

    async def latest_elsewhere(task_ids: list[str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
        await api.engine.delete_task("alpha")  # deleted while the other nodes are asked
        return {}, {task_id: ["running"] for task_id in task_ids}

    monkeypatch.setattr(api.engine.coordinator, "latest_elsewhere", latest_elsewhere)
    resp = await api.request("GET", "/tasks?limit=2")
    assert resp.status == 200, resp.text
    assert [(t["id"], t["status"]) for t in resp.json()["tasks"]] == [("alpha", "running"), ("beta", "running")]
    monkeypatch.undo()
    assert [t["id"] for t in (await api.request("GET", "/tasks")).json()["tasks"]] == ["beta", "gamma"]


async def test_bytes_that_are_not_utf8_in_authorization_are_a_401_not_a_500(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    config = base_config(TASKS, PIPELINES).replace(
        "api: {listen: '127.0.0.1:{port}'}", "api: {listen: '127.0.0.1:{port}', token: 'tok'}"
    )
    api = await api_factory(config)
    reader, writer = await asyncio.open_connection("127.0.0.1", api.client.port)
    writer.write(b"GET /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xfd\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), answer[:300]
    assert json.loads(body)["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"params": {"a": NaN}}', "NaN is not a JSON number"),
        (b'{"params": {"a": -Infinity}}', "-Infinity is not a JSON number"),
        (b'{"params": {"a": 1e400}}', "1e400 is out of range"),
        (b'{"params": {"a": ' + b"[" * 40 + b"]" * 40 + b"}}", "nests deeper than 32 levels"),
        (b'{"params": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}", "nests deeper than 32 levels"),
    ],
    ids=["nan", "infinity", "huge", "deep", "very-deep"],
)
async def test_a_start_body_json_cannot_answer_back_is_a_400(api: Api, raw: bytes, fragment: str) -> None:
    resp = await api.request("POST", "/task/alpha/_start", raw=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 400 and fragment in resp.json()["error"]["message"], resp.text


async def test_a_last_event_id_past_any_sequence_number_is_a_400(api: Api) -> None:
    run_id = await api.start_task("alpha")
    resp = await api.request("GET", f"/run/{run_id}/log?follow=1", headers={"Last-Event-ID": "9" * 26})
    assert resp.status == 400 and "Last-Event-ID" in resp.json()["error"]["message"], resp.text


async def test_a_run_log_is_paged_by_after_offset_and_limit(api_factory: Callable[..., Awaitable[Api]]) -> None:
    tasks = "- {id: chatty, pipeline: chatty}"
    pipelines = "- {name: chatty, processors: [{python: {function: 'fake_steps:write_lines', kwargs: {count: 1234}}}]}"
    api = await api_factory(base_config(tasks, pipelines))
    run_id = await api.start_task("chatty")
    await api.wait_run(run_id)

    async def lines(query: str) -> list[str]:
        resp = await api.request("GET", f"/run/{run_id}/log{query}")
        assert resp.status == 200, resp.text
        assert resp.headers["Content-Type"].startswith("text/plain")
        return [line.split("] ", 1)[1] for line in resp.text.splitlines()]

    whole = await lines("")
    assert whole[0] == "line 1" and whole[1233] == "line 1234" and len(whole) == 1234
    assert await lines("?limit=3") == whole[:3]
    assert await lines("?after=1000&limit=2") == whole[1000:1002]
    assert await lines("?offset=1000&limit=2") == whole[1000:1002]
    assert await lines("?after=1230") == whole[1230:]
    assert await lines("?after=5000") == []
    assert await lines("?after=1000&offset=10&limit=2") == whole[1010:1012]
    for bad in ("?limit=0", "?limit=x", "?after=-1", "?limit=", "?offset=99999999", "?follow=yes", "?after=1_0"):
        resp = await api.request("GET", f"/run/{run_id}/log{bad}")
        assert resp.status == 400 and resp.json()["error"]["code"] == "bad_request", bad


async def test_a_param_cannot_start_a_log_line_of_its_own(api_factory: Callable[..., Awaitable[Api]]) -> None:
    tasks = "- {id: echo, pipeline: echo}"
    pipelines = "- {name: echo, processors: [{log: {message: 'hello {params.who}'}}]}"
    api = await api_factory(base_config(tasks, pipelines))
    forged = "bob\r\n2026-01-01T00:00:00Z [stderr] rm -rf / done\x1b[31m"
    run_id = await api.start_task("echo", {"who": forged})
    await api.wait_run(run_id)
    text = (await api.request("GET", f"/run/{run_id}/log")).text
    assert not any(line.split(" ", 1)[1].startswith("[stderr]") for line in text.splitlines())
    assert "hello bob\\r\\n2026-01-01T00:00:00Z [stderr] rm -rf / done\\x1b[31m" in text


async def test_a_nul_in_a_run_id_task_id_or_search_finds_nothing(api: Api) -> None:
    """PostgreSQL refuses a NUL in a query: it must be an answer about the data, never a 503."""
    assert (await api.request("GET", "/run/ab%00cd")).status == 404
    assert (await api.request("GET", "/run/ab%00cd/log")).status == 404
    assert (await api.request("GET", "/runs?task_id=al%00pha")).status == 404
    found = await api.request("GET", "/runs?q=x%00y")
    assert found.status == 200 and found.json() == {"runs": [], "total": 0, "total_exact": True}


async def test_reload_answers_what_changed_or_the_errors_that_kept_the_old_configuration(
    api_factory: Callable[..., Awaitable[Api]], tmp_path: Path
) -> None:
    api = await api_factory(base_config(TASKS, PIPELINES))
    path = tmp_path / "api0" / "taskd.yml"
    assert (await api.request("GET", "/health")).json()["reload"] is None
    text = path.read_text()
    path.write_text(text.replace("tasks:\n", "tasks:\n  - {id: fresh, pipeline: ok}\n", 1))
    done = await api.request("POST", "/_reload")
    assert done.status == 200 and done.json()["reload"]["outcome"] == "applied"
    assert done.json()["reload"]["changes"] == {"added": ["fresh"]}
    path.write_text(text.replace("tasks:\n", "tasks:\n  - {id: fresh, pipeline: nowhere}\n", 1))
    refused = await api.request("POST", "/_reload")
    body = refused.json()
    assert refused.status == 422 and body["error"]["code"] == "config_refused"
    assert body["reload"]["outcome"] == "refused"
    assert body["reload"]["errors"] == [
        f"{path}:6: tasks[0].pipeline: unknown pipeline 'nowhere'; defined pipelines: bad, ok"
    ]
    assert "tasks[0].pipeline: unknown pipeline 'nowhere'" in body["error"]["message"]
    assert (await api.request("GET", "/task/fresh")).status == 200  # the previous configuration runs
    health = (await api.request("GET", "/health")).json()
    assert health["reload"] == body["reload"]
