"""The dashboard as an operator's console, in a real browser against the real daemon: a task's page
(its schedule, next fires, success rate and durations, Start, Stop and Delete), a run's Stop and
Re-run, the overview's charts, health and nodes, times in the chosen zone, what each role sees
(viewer, operator, admin) and how a refusal reads, the audit trail, and every view on a phone.

Set TASKD_README_SCREENSHOTS=1 to write the README's screenshots to docs/screenshots/."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from conftest import Daemon
from support.browser import (  # noqa: F401  # chromium: the browser fixture
    DESKTOP,
    PHONE,
    TOKEN,
    Watched,
    chromium,
    expect,
    fact,
    fits,
    served,
    sign_in,
    task_row,
)

VIEWER = "viewer-token-123456"
OPERATOR = "operator-token-123456"
ADMIN = "admin-token-1234567"
# Three named tokens, one per role; api.token (the tests' own requests) is one more admin.
API = (
    f"api: {{listen: '127.0.0.1:{{port}}', token: {TOKEN}, tokens: ["
    f"{{name: alice, token: {VIEWER}, role: viewer}}, "
    f"{{name: bob, token: {OPERATOR}, role: operator}}, "
    f"{{name: carol, token: {ADMIN}, role: admin}}]}}\n"
)
TASKS = """
- {id: hello, name: Say hello, schedule: '30 1 * * *', time_zone: Asia/Tokyo, pipeline: quick}
- {id: nightly, schedule: '0 */6 * * *', pipeline: quick}
- {id: flaky, pipeline: flaky, params: {code: "0"}}
- {id: slow, pipeline: slow, params: {seconds: "30"}}
"""
PIPELINES = r"""
- {name: quick, processors: [{sleep: {duration: 0}}]}
- {name: flaky, processors: [{shell: {command: 'echo "exit $TASKD_PARAM_CODE"; exit "$TASKD_PARAM_CODE"'}}]}
- {name: slow, processors: [{shell: {command: 'sleep "$TASKD_PARAM_SECONDS"'}}]}
"""
ISO = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
UTC_BROWSER = {"timezone_id": "UTC"}


@contextlib.contextmanager
def opened_console(
    daemon_factory: Callable[..., Daemon], browser: Any, tmp_path: Path, prefix: str, viewport: Any, context: Any
) -> Iterator[tuple[Daemon, Watched]]:
    """The console's daemon (TASKS, 4 slots, the named tokens) and a browser page on it."""
    with served(
        daemon_factory,
        browser,
        tmp_path,
        TASKS,
        4,
        PIPELINES,
        api=API,
        prefix=prefix,
        viewport=viewport,
        context=context,
    ) as opened:
        yield opened


@pytest.fixture
def console(daemon_factory: Callable[..., Daemon], browser: Any, tmp_path: Path) -> Iterator[tuple[Daemon, Watched]]:
    with opened_console(daemon_factory, browser, tmp_path, "console", DESKTOP, UTC_BROWSER) as opened:
        yield opened


@pytest.fixture
def new_york(daemon_factory: Callable[..., Daemon], browser: Any, tmp_path: Path) -> Iterator[tuple[Daemon, Watched]]:
    """The console in a browser whose own zone is America/New_York."""
    with opened_console(
        daemon_factory, browser, tmp_path, "zones", DESKTOP, {"timezone_id": "America/New_York"}
    ) as opened:
        yield opened


@pytest.fixture
def phone(daemon_factory: Callable[..., Daemon], browser: Any, tmp_path: Path) -> Iterator[tuple[Daemon, Watched]]:
    with opened_console(daemon_factory, browser, tmp_path, "phone", PHONE, UTC_BROWSER) as opened:
        yield opened


def finished(daemon: Daemon, task_id: str, **params: str) -> dict[str, Any]:
    """A run of the task, once it has ended."""
    return daemon.wait_run(daemon.start_task(task_id, params or None), timeout=20)


def go(watched: Watched, hash_: str, heading: str | re.Pattern[str]) -> None:
    watched.page.evaluate(f"location.hash = {json.dumps(hash_)}")
    expect(watched.page.get_by_role("heading", name=heading, exact=True)).to_be_visible()


def settled(page: Any) -> None:
    """The view has drawn what it reads after its heading: the cards, the charts."""
    expect(page.locator("main").get_by_text(re.compile(r"^Reading "))).to_have_count(0)
    if page.locator("ul.cards").count():
        expect(page.locator(".card").first).to_be_visible()


def toolbar(page: Any) -> Any:
    return page.get_by_role("group", name="Actions")


def test_a_task_page_shows_how_its_runs_went_and_starts_stops_and_deletes_it(
    console: tuple[Daemon, Watched],
) -> None:
    daemon, watched = console
    page = watched.page
    for code in ("0", "0", "1"):
        finished(daemon, "flaky", code=code)
    sign_in(watched, ADMIN)
    expect(page.locator("#who")).to_have_text("signed in as carol (admin)")
    go(watched, "#/task/flaky", "Task flaky")

    # Two of its three finished runs completed; the median and 95th percentile of their durations.
    expect(fact(page, "Success rate")).to_have_text("67% of the last 3 finished")
    expect(fact(page, "Duration")).to_contain_text("median ")
    expect(fact(page, "Duration")).to_contain_text("95% within ")
    expect(fact(page, "Active runs")).to_have_text("none")
    chart = page.get_by_role("img", name=re.compile(r"^Durations of the last 3 finished runs of flaky"))
    expect(chart).to_have_attribute("aria-label", re.compile(r": 3 runs, 2 completed, 1 failed$"))
    expect(page.locator("figure.chart rect")).to_have_count(3)
    expect(page.locator("figure.chart rect.series-failed")).to_have_count(1)
    expect(page.locator("figure.chart figcaption")).to_contain_text("completed 2")
    expect(page.locator("figure.chart figcaption")).to_contain_text("failed 1")
    # Its pipeline as written.
    expect(page.locator("ol.steps")).to_contain_text("shell")
    expect(page.locator("ol.steps")).to_contain_text("TASKD_PARAM_CODE")

    # Nothing to stop: Stop is disabled. Started with other params, the run shows up live.
    actions = toolbar(page)
    expect(actions.get_by_role("button", name="Stop")).to_be_disabled()
    actions.get_by_role("button", name="Start with params").click()
    page.get_by_label("code").fill("2")
    page.get_by_role("button", name="Start run").click()
    latest = page.get_by_role("table", name="Latest runs")
    expect(latest.locator("tbody tr")).to_have_count(4, timeout=10_000)
    expect(page.locator("figure.chart rect")).to_have_count(4, timeout=10_000)
    expect(fact(page, "Success rate")).to_have_text("50% of the last 4 finished")
    watched.shot("task-flaky")

    # A run of slow makes Stop live; stopping it disables Stop again.
    go(watched, "#/task/slow", "Task slow")
    stop = toolbar(page).get_by_role("button", name="Stop")
    expect(stop).to_be_disabled()
    toolbar(page).get_by_role("button", name="Start", exact=True).click()
    expect(stop).to_be_enabled(timeout=5000)
    expect(fact(page, "Active runs")).to_contain_text(re.compile("running|queued"))
    watched.shot("task-slow-running")
    stop.click()
    expect(fact(page, "Active runs")).to_have_text("none", timeout=10_000)
    expect(stop).to_be_disabled()
    expect(page.get_by_role("table", name="Latest runs").locator("tbody tr").first).to_contain_text("stopped")

    # Delete asks first; once deleted, the tasks are shown, without it.
    toolbar(page).get_by_role("button", name="Delete").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_contain_text("Delete the task slow?")
    dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    expect(task_row(page, "slow")).to_have_count(0)
    assert daemon.request("GET", "/task/slow").status == 404
    assert watched.problems == []


def test_a_run_is_stopped_and_run_again_with_its_params(console: tuple[Daemon, Watched]) -> None:
    daemon, watched = console
    page = watched.page
    run_id = daemon.start_task("slow", {"seconds": "31"})
    daemon.wait_run(run_id, states=("running",))
    sign_in(watched, OPERATOR)
    expect(page.locator("#who")).to_have_text("signed in as bob (operator)")
    go(watched, f"#/run/{run_id}", f"Run {run_id}")
    stop = toolbar(page).get_by_role("button", name="Stop")
    expect(stop).to_be_enabled()
    watched.shot("run-active")
    stop.click()
    expect(page.locator("#run-end")).to_contain_text("The run ended: stopped", timeout=10_000)
    expect(fact(page, "State")).to_have_text("stopped")
    expect(stop).to_be_disabled()

    # Re-run: a new run of the same task with the same params, and its page.
    toolbar(page).get_by_role("button", name="Re-run").click()
    heading = page.get_by_role("heading", name=re.compile(r"^Run "))
    expect(heading).not_to_have_text(f"Run {run_id}")
    again = heading.inner_text().removeprefix("Run ").strip()
    expect(fact(page, "Params")).to_have_text('{"seconds":"31"}')
    expect(fact(page, "Task")).to_have_text("slow")
    expect(toolbar(page).get_by_role("button", name="Stop")).to_be_enabled(timeout=5000)
    assert daemon.run(again)["params"] == {"seconds": "31"}
    toolbar(page).get_by_role("button", name="Stop").click()
    expect(fact(page, "State")).to_have_text("stopped", timeout=10_000)
    # Upstream and downstream links stay (none here); an operator is offered no Delete anywhere.
    page.get_by_role("link", name="Tasks", exact=True).click()
    expect(task_row(page, "flaky").get_by_role("button", name="Start", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    assert watched.problems == []


def test_the_overview_charts_the_last_hour_the_next_day_and_the_daemons_health(
    console: tuple[Daemon, Watched],
) -> None:
    daemon, watched = console
    page = watched.page
    for task_id, code in (("flaky", "0"), ("flaky", "1"), ("nightly", None)):
        finished(daemon, task_id, **({"code": code} if code else {}))
    sign_in(watched, ADMIN)

    # The last hour: runs per minute, stacked by outcome, with a legend of the totals.
    minutes = page.get_by_role("img", name=re.compile(r"^Runs finished per minute, the last 60 minutes"))
    expect(minutes).to_have_attribute("aria-label", re.compile(r": 2 completed, 1 failed, 0 stopped, 0 interrupted$"))
    legend = page.locator("figure.chart").first.locator("figcaption")
    expect(legend).to_contain_text("completed 2")
    expect(legend).to_contain_text("failed 1")

    # The next 24 hours: a lane per scheduled task, a tick per fire, each with its instant.
    nightly = page.get_by_role("img", name=re.compile(r"^nightly: [45] fires, the first at "))
    expect(nightly.locator("rect.tick")).to_have_count(
        int(re.findall(r"\d+", nightly.get_attribute("aria-label") or "")[0])
    )
    expect(page.get_by_role("img", name=re.compile(r"^hello: 1 fire, the first at "))).to_be_visible()
    tick = nightly.locator("rect.tick title").first.text_content() or ""
    assert re.fullmatch(rf"nightly: {ISO} UTC", tick), tick

    # The daemon: its version, how long it has been up, new runs accepted, no fault.
    health = daemon.request("GET", "/health").json()
    expect(fact(page, "Version")).to_have_text(health["version"])
    expect(fact(page, "Status")).to_have_text("ok")
    expect(fact(page, "New runs")).to_have_text("accepted")
    expect(fact(page, "Faults")).to_have_text("none")
    expect(fact(page, "Up for")).to_contain_text(re.compile(rf"since {ISO} UTC"))
    # One node: no table of nodes.
    expect(page.get_by_role("heading", name="Nodes")).to_have_count(0)
    watched.shot("overview")

    # Dark when the system is: the charts take the dark palette.
    light = page.locator("figure.chart rect.series-completed").first.evaluate("e => getComputedStyle(e).fill")
    page.emulate_media(color_scheme="dark")
    dark = page.locator("figure.chart rect.series-completed").first.evaluate("e => getComputedStyle(e).fill")
    assert (light, dark) == ("rgb(21, 128, 61)", "rgb(74, 222, 128)")
    watched.shot("overview-dark")
    page.emulate_media(color_scheme="light")

    # Several nodes: a table of them, with the one that drains and the one whose configuration differs.
    nodes = daemon.request("GET", "/nodes").json()["nodes"]
    other = {**nodes[0], "name": "b", "this": False, "draining": True, "config_differs": True, "labels": {"zone": "b"}}
    page.route("**/nodes", lambda route: route.fulfill(json={"nodes": [nodes[0], other]}))
    page.reload()
    table = page.get_by_role("table", name="Nodes")
    expect(table.locator("tbody tr")).to_have_count(2)
    row = table.locator('tr[data-node="b"]')
    expect(row).to_contain_text("draining")
    expect(row).to_contain_text("differs from most")
    expect(row).to_contain_text("zone=b")
    expect(row.locator("code[title]")).to_have_text(nodes[0]["config_digest"][:12])
    watched.shot("overview-nodes")
    assert watched.problems == []


def test_times_are_written_in_the_chosen_zone_and_the_choice_is_kept(new_york: tuple[Daemon, Watched]) -> None:
    daemon, watched = new_york
    page = watched.page
    run = finished(daemon, "flaky")
    sign_in(watched, ADMIN)
    zone = page.get_by_label("Times in")
    expect(zone).to_have_value("browser")
    expect(zone.locator("option:checked")).to_have_text("this browser's (America/New_York)")

    # hello fires at 01:30 in Tokyo: its next ten fires, in the browser's zone, then UTC, then its own.
    go(watched, "#/task/hello", "Task hello")
    fires = page.get_by_role("list", name="Next fires").locator("li")
    expect(fires).to_have_count(10)
    instant = datetime.fromisoformat(daemon.request("GET", "/task/hello").json()["next_runs"][0])
    for choice, name in (("browser", "America/New_York"), ("utc", "UTC"), ("task", "Asia/Tokyo")):
        zone.select_option(choice)
        written = instant.astimezone(ZoneInfo(name)).strftime("%Y-%m-%d %H:%M:%S")
        expect(fires.first.locator("time").first).to_have_text(f"{written} {name}")
    expect(fires.first.locator("time").first).to_have_text(re.compile(r" 01:30:00 Asia/Tokyo$"))
    # Relative times say the exact instant when pointed at.
    relative = fires.first.locator("time[data-relative]")
    expect(relative).to_have_text(re.compile(r"^in \d+ (s|min|h)$"))
    expect(relative).to_have_attribute("title", re.compile(rf"^{ISO} Asia/Tokyo$"))
    watched.shot("task-hello-tokyo")

    # Kept across a reload; each task's rows in its own zone (hello's in Tokyo, flaky's in UTC).
    page.reload()
    expect(page.get_by_label("Times in")).to_have_value("task")
    page.get_by_role("link", name="Tasks", exact=True).click()
    expect(task_row(page, "hello").locator("time").first).to_have_attribute(
        "title", re.compile(r" 01:30:00 Asia/Tokyo$")
    )
    expect(task_row(page, "flaky").locator("time[data-relative]")).to_have_attribute(
        "title", re.compile(rf"^{ISO} UTC$")
    )
    page.get_by_role("link", name="Runs", exact=True).click()
    runs = page.get_by_role("table", name="Runs")
    expect(runs.locator("tbody td time").first).to_have_text(re.compile(rf"^{ISO} UTC$"))
    # With runs of any task, Since and Until are read in the browser's zone.
    queued = datetime.fromisoformat(run["queued_at"])
    since = page.get_by_label("Since (America/New_York)")
    for moved, count in ((-1, 1), (2, 0)):
        wall = (queued + timedelta(minutes=moved)).astimezone(ZoneInfo("America/New_York"))
        since.fill(wall.strftime("%Y-%m-%d %H:%M"))
        page.get_by_role("button", name="Apply").click()
        instant = wall.replace(second=0, microsecond=0).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00.000Z")
        expect(page).to_have_url(re.compile(re.escape(f"since={quote(instant, safe='')}")))
        expect(runs.locator("tbody tr")).to_have_count(count)
        expect(since).to_have_value(wall.strftime("%Y-%m-%d %H:%M"))
    # The overview has no task in context: the browser's zone.
    page.get_by_role("link", name="Overview", exact=True).click()
    expect(page.locator("#daemon + div time").first).to_have_text(re.compile(rf"^{ISO} America/New_York$"))
    assert page.evaluate("localStorage.getItem('taskd-zone')") == "task"
    assert watched.problems == []


def test_each_role_sees_what_it_may_do_and_a_refusal_names_the_role_needed(console: tuple[Daemon, Watched]) -> None:
    daemon, watched = console
    page = watched.page
    done = finished(daemon, "flaky")
    page.goto(watched.origin + "/")
    expect(page.locator("form.login")).to_be_visible()
    assert "null" not in page.locator("main").inner_text()
    page.get_by_label("Token").fill("wrong-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("That token was refused")
    assert "null" not in page.locator("body").inner_text()

    # A viewer: no Start, Stop, Delete or Re-run anywhere.
    sign_in(watched, VIEWER)
    expect(page.locator("#who")).to_have_text("signed in as alice (viewer)")
    page.get_by_role("link", name="Tasks", exact=True).click()
    expect(task_row(page, "flaky")).to_be_visible()
    for name in ("Start", "Stop", "Delete", "Start with params"):
        expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)
    expect(page.get_by_role("columnheader", name="Actions")).to_have_count(0)
    go(watched, "#/task/flaky", "Task flaky")
    expect(toolbar(page)).to_have_count(0)
    go(watched, f"#/run/{done['id']}", f"Run {done['id']}")
    expect(page.get_by_role("button", name="Re-run")).to_have_count(0)
    watched.shot("viewer-run")

    # The page thinks alice may start (her role was lowered since): the API refuses, the page says
    # which role it needs, asks again who she is, and keeps her signed in.
    page.route("**/whoami", lambda route: route.fulfill(json={"name": "alice", "role": "operator", "auth": True}))
    page.get_by_role("link", name="Tasks", exact=True).click()
    page.reload()
    start = task_row(page, "flaky").get_by_role("button", name="Start", exact=True)
    expect(start).to_be_visible()
    page.unroute("**/whoami")
    start.click()
    refusal = page.locator("#notice").get_by_role("alert")
    expect(refusal).to_contain_text("Not allowed: this needs the operator role; signed in as alice (viewer).")
    expect(page.locator("#who")).to_have_text("signed in as alice (viewer)")
    expect(task_row(page, "flaky").get_by_role("button", name="Start", exact=True)).to_have_count(0)
    expect(page.locator("form.login")).to_have_count(0)
    watched.shot("viewer-refused")

    # An operator: Start and Stop, no Delete.
    page.get_by_role("button", name="Sign out").click()
    sign_in(watched, OPERATOR, heading="Tasks")
    row = task_row(page, "flaky")
    expect(row.get_by_role("button", name="Start", exact=True)).to_be_visible()
    expect(row.get_by_role("button", name="Stop")).to_be_disabled()
    expect(row.get_by_role("button", name="Delete")).to_have_count(0)
    row.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#notice")).to_contain_text("of flaky")

    # An admin: Delete too; and the audit trail of it all, filtered by action and by actor.
    page.get_by_role("button", name="Sign out").click()
    sign_in(watched, ADMIN, heading="Tasks")
    expect(task_row(page, "flaky").get_by_role("button", name="Delete")).to_be_enabled()
    page.get_by_role("link", name="Audit", exact=True).click()
    trail = page.get_by_role("table", name="Audit trail")
    expect(trail.locator('tr[data-action="forbidden"]')).to_contain_text("alice (viewer)")
    expect(trail.locator('tr[data-action="start"]').filter(has_text="bob (operator)")).to_have_count(1)
    page.get_by_label("Action").select_option("forbidden")
    page.get_by_role("button", name="Apply").click()
    expect(trail.locator("tbody tr")).to_have_count(1)
    expect(trail.locator("tbody tr td").first).to_have_text(re.compile(rf"^{ISO} UTC$"))
    expect(trail).to_contain_text("403")
    page.get_by_role("button", name="Clear").click()
    expect(page).to_have_url(re.compile(r"#/audit$"))
    expect(page.get_by_label("Action")).to_have_value("")  # the view drawn again, its filters cleared
    page.get_by_label("Actor").fill("bob")
    page.get_by_role("button", name="Apply").click()
    bobs = daemon.request("GET", "/audit?actor=bob").json()["total"]
    assert bobs >= 1
    expect(page).to_have_url(re.compile(r"#/audit\?actor=bob$"))
    expect(trail.locator("tbody tr td:nth-child(3)")).to_have_text(["bob (operator)"] * bobs)
    matches = "1 entry matches." if bobs == 1 else f"{bobs} entries match."
    expect(page.get_by_role("status").filter(has_text="match")).to_have_text(matches)
    watched.shot("audit")
    # The browser reports the request the API refused alice, and nothing else.
    assert [p for p in watched.problems if "status of 403" not in p] == []


def test_every_view_fits_a_phone(phone: tuple[Daemon, Watched]) -> None:
    daemon, watched = phone
    page = watched.page
    done = finished(daemon, "flaky")
    finished(daemon, "flaky", code="1")
    page.goto(watched.origin + "/")
    expect(page.locator("form.login")).to_be_visible()
    fits(page, PHONE["width"])
    sign_in(watched, ADMIN)
    expect(page.locator("figure.chart").first).to_be_visible()
    # The header wraps: every link of the nav is on the screen.
    for link in page.get_by_role("navigation").get_by_role("link").all():
        box = link.bounding_box()
        assert box and box["x"] + box["width"] <= PHONE["width"], box
    views = [
        ("#/", "Overview", "overview"),
        ("#/tasks", "Tasks", "tasks"),
        ("#/task/flaky", "Task flaky", "task"),
        ("#/runs", "Runs", "runs"),
        (f"#/run/{done['id']}", f"Run {done['id']}", "run"),
        ("#/audit", "Audit", "audit"),
    ]
    for hash_, heading, name in views:
        go(watched, hash_, heading)
        settled(page)
        fits(page, PHONE["width"])
        watched.shot(name)
    # The tasks' rows stack their cells: Start is on the screen without scrolling sideways.
    go(watched, "#/tasks", "Tasks")
    start = task_row(page, "flaky").get_by_role("button", name="Start", exact=True)
    box = start.bounding_box()
    assert box and box["x"] + box["width"] <= PHONE["width"], box
    page.emulate_media(color_scheme="dark")
    go(watched, "#/task/flaky", "Task flaky")
    fits(page, PHONE["width"])
    watched.shot("task-dark")
    assert watched.problems == []


README_TASKS = """
- {id: backup, name: Nightly backup, schedule: '0 2 * * *', time_zone: Europe/Berlin, pipeline: work,
   params: {fail: "0.1"}}
- {id: report, name: Sales report, schedule: '*/30 * * * *', pipeline: work, params: {fail: "0.25"}}
- {id: sync, name: Sync the catalogue, schedule: '*/20 * * * *', pipeline: work, params: {fail: "0.05"}}
- {id: cleanup, schedule: '15 */4 * * *', pipeline: work, params: {fail: "0"}}
- {id: invoices, schedule: '0 9 * * 1-5', time_zone: America/New_York, pipeline: work, params: {fail: "0"}}
"""
# A step that takes a while, and fails as often as its param `fail` says.
WORK = (
    "import os, random, sys, time; time.sleep(random.uniform(0.05, 0.6));"
    " sys.exit(random.random() < float(os.environ['TASKD_PARAM_FAIL']))"
)
README_MINUTES = 6
README_PIPELINES = f"""
- {{name: work, processors: [{{shell: {{argv: {json.dumps([sys.executable, "-c", WORK])}}}}}]}}
"""


def test_the_readme_screenshots(daemon_factory: Callable[..., Daemon], browser: Any, tmp_path: Path) -> None:
    """The overview and a task's page of a daemon whose tasks have run a while, at 1280x800; with
    TASKD_README_SCREENSHOTS set, written to docs/screenshots/ for the README, the runs then spread
    over a few minutes so that the chart of the last hour has several."""
    readme = bool(os.environ.get("TASKD_README_SCREENSHOTS"))
    spread_s = README_MINUTES * 60 if readme else 0
    with served(
        daemon_factory, browser, tmp_path, README_TASKS, 4, README_PIPELINES, api=API, prefix="readme", viewport=DESKTOP
    ) as (daemon, watched):

        def runs(task_id: str, count: int) -> None:
            for _ in range(count):
                finished(daemon, task_id)
                time.sleep(spread_s / count)

        threads = [threading.Thread(target=runs, args=args) for args in (("report", 24), ("sync", 14), ("backup", 6))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        page = watched.page
        sign_in(watched, OPERATOR)
        expect(page.get_by_role("img", name=re.compile(r"^Runs finished per minute"))).to_be_visible()
        expect(page.get_by_role("img", name=re.compile(r"^report: "))).to_be_visible()
        settled(page)
        overview = watched.shot("overview", full_page=False)
        go(watched, "#/task/report", "Task report")
        expect(
            page.get_by_role("img", name=re.compile(r"^Durations of the last \d+ finished runs of report"))
        ).to_be_visible()
        settled(page)
        task = watched.shot("task", full_page=False)
        assert watched.problems == []
        if readme:
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copy(overview, DOCS / "overview.png")
            shutil.copy(task, DOCS / "task.png")
