"""The web dashboard in a real browser: Playwright driving Debian's chromium against the real daemon
with a token. Every console error and every request to another origin fails the test; each view
is saved as a screenshot (set TASKD_SCREENSHOTS=DIR to keep them). The browser, the watched page
and the daemon behind it are in support/browser.py."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, wait_for
from support.browser import TOKEN, Watched, chromium, expect, fact, served, task_row  # noqa: F401  # chromium: the browser fixture

TASKS = """
- {id: hello, name: Say hello, schedule: '30 1 * * 1-5', time_zone: Asia/Tokyo, pipeline: talk}
- {id: failing, pipeline: bad}
- {id: greet, pipeline: greet, params: {who: world}}
- {id: doomed, pipeline: quick}
- {id: stale, pipeline: quick, expect: {success_within: 0.3s}}
"""
PIPELINES = r"""
- {name: talk, processors: [{shell: {command: 'for i in 1 2 3 4 5 6; do echo "line $i"; sleep 0.4; done'}}]}
- {name: bad, processors: [{shell: {command: 'echo broken >&2; exit 3'}}]}
- {name: greet, processors: [{shell: {command: 'echo "hello $TASKD_PARAM_WHO"'}}]}
- {name: quick, processors: [{sleep: {duration: 0}}]}
"""
# A chain (b after a), a task whose fires are spread, and three tasks due in the same minute with
# two slots: the forecast finds that minute crowded once a day.
CHAINED = """
- {id: a, pipeline: quick}
- {id: b, pipeline: quick, after: a}
- {id: staggered, pipeline: quick, schedule: '0 * * * *', spread: 10m}
- {id: night1, pipeline: quick, schedule: '15 3 * * *'}
- {id: night2, pipeline: quick, schedule: '15 3 * * *'}
- {id: night3, pipeline: quick, schedule: '15 3 * * *'}
"""
# A pool of one unit (a mutex) that hold keeps for 3 s while next waits, and a task whose process
# holds 150 MiB: what runs hold and what they used. next's step runs inside taskd: its use is unknown.
POOLED = """
- {id: hold, pipeline: hold, pools: [db]}
- {id: next, pipeline: inside, pools: {db: 1}}
- {id: hungry, pipeline: hungry}
"""
HUNGRY = f'["{sys.executable}", "-c", "x = bytearray(150 * 1024 * 1024)"]'
POOLED_PIPELINES = f"""{PIPELINES}
- {{name: hold, processors: [{{shell: {{argv: [sleep, "3"]}}}}]}}
- {{name: hungry, processors: [{{shell: {{argv: {HUNGRY}}}}}]}}
- {{name: inside, processors: [{{python: {{function: "builtins:id"}}}}]}}
"""


@pytest.fixture
def dashboard(daemon_factory: Callable[..., Daemon], browser: Any, tmp_path: Path) -> Iterator[tuple[Daemon, Watched]]:
    with served(daemon_factory, browser, tmp_path, TASKS, 4, PIPELINES) as opened:
        yield opened


@pytest.fixture
def chained(daemon_factory: Callable[..., Daemon], browser: Any, tmp_path: Path) -> Iterator[tuple[Daemon, Watched]]:
    with served(daemon_factory, browser, tmp_path, CHAINED, 2, PIPELINES) as opened:
        yield opened


@pytest.fixture
def pooled(daemon_factory: Callable[..., Daemon], browser: Any, tmp_path: Path) -> Iterator[tuple[Daemon, Watched]]:
    with served(daemon_factory, browser, tmp_path, POOLED, 4, POOLED_PIPELINES, "pools: {db: 1}\n") as opened:
        yield opened


def sign_in(watched: Watched) -> None:
    """A wrong token is refused, and the form asks again; the right one opens the overview."""
    page = watched.page
    page.goto(watched.origin + "/")
    token = page.get_by_label("Token")
    token.fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("That token was refused")
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def test_an_operator_signs_in_runs_a_task_and_follows_it(dashboard: tuple[Daemon, Watched]) -> None:
    _, watched = dashboard
    page = watched.page
    sign_in(watched)
    expect(page.get_by_text("Slots in use")).to_be_visible()
    expect(page.locator(".card").first).to_contain_text("0 of 4")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    page.get_by_role("link", name="Tasks", exact=True).click()
    row = task_row(page, "hello")
    expect(row).to_contain_text("at 01:30 on Monday to Friday, Asia/Tokyo")
    expect(row).to_contain_text("30 1 * * 1-5")
    expect(row).to_contain_text("scheduled")
    # A task that has gone without a success for longer than it may says so, in red.
    stale = task_row(page, "stale").locator("td").first
    expect(stale).to_contain_text("overdue")
    expect(stale.locator(".state-overdue")).to_have_css("color", "rgb(185, 28, 28)")
    watched.shot("tasks-fresh")

    # Start from the row: the status changes live, without reloading the page.
    row.get_by_role("button", name="Start", exact=True).click()
    expect(row.locator("td").first).to_contain_text("running", timeout=5000)
    started = page.locator("#notice a").first
    run_id = started.inner_text()
    assert run_id in (started.get_attribute("href") or "")

    # Open the run while it runs: the log arrives line by line, then the final state.
    started.click()
    expect(page.get_by_role("heading", name=f"Run {run_id}")).to_be_visible()
    log = page.get_by_label("Log")
    expect(log).to_contain_text("line 1", timeout=5000)
    assert "The run ended" not in page.locator("#run-end").inner_text()  # the log came before the end
    expect(page.locator("#run-end")).to_contain_text("The run ended: completed", timeout=10_000)
    expect(log).to_contain_text("line 6")
    expect(page.locator("dl.facts")).to_contain_text("completed")
    expect(page.get_by_role("table", name="Attempts and steps")).to_contain_text("shell")
    watched.shot("run")

    page.get_by_role("link", name="Tasks", exact=True).click()
    expect(task_row(page, "hello").locator("td").first).to_contain_text("completed")
    page.locator("#notice p").first.wait_for(state="detached", timeout=10_000)
    watched.shot("tasks")
    assert page.evaluate("window.__sameDocument") is True
    assert watched.problems == []


def test_the_runs_view_filters_and_links_each_run(dashboard: tuple[Daemon, Watched]) -> None:
    daemon, watched = dashboard
    page = watched.page
    failed = daemon.wait_run(daemon.start_task("failing"))
    done = daemon.wait_run(daemon.start_task("doomed"))
    assert (failed["state"], done["state"]) == ("failed", "completed")
    sign_in(watched)
    watched.shot("overview")
    page.get_by_role("link", name="Runs", exact=True).click()
    table = page.get_by_role("table", name="Runs")
    expect(table.locator("tbody tr")).to_have_count(2)
    page.get_by_label("State").select_option("failed")
    page.get_by_role("button", name="Apply").click()
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table).to_contain_text("failing")
    expect(table).to_contain_text("step 1 (shell): command failed: exit code 3; stderr: broken")
    link = table.get_by_role("link", name=failed["id"])
    assert failed["id"] in (link.get_attribute("href") or "")
    watched.shot("runs")
    # Sorting by a column is a button in its header; the order turns over.
    page.get_by_label("State").select_option("")
    page.get_by_role("button", name="Apply").click()
    expect(table.locator("tbody tr")).to_have_count(2)
    page.get_by_role("button", name="Task").click()
    expect(table.locator("tbody tr").first).to_contain_text("doomed")
    expect(page.locator('th[aria-sort="ascending"]')).to_contain_text("Task")
    page.get_by_role("button", name="Task ▲").click()
    expect(table.locator("tbody tr").first).to_contain_text("failing")
    # A new run shows up without a reload.
    daemon.start_task("doomed")
    expect(table.locator("tbody tr")).to_have_count(3, timeout=5000)
    link.click()
    expect(page.locator("#run-end")).to_contain_text("The run ended: failed")
    expect(page.get_by_label("Log")).to_contain_text("broken")
    assert watched.problems == []


def test_params_delete_and_the_keyboard(dashboard: tuple[Daemon, Watched]) -> None:
    daemon, watched = dashboard
    page = watched.page
    sign_in(watched)
    page.get_by_role("link", name="Tasks", exact=True).click()
    # Every input has a label and every header cell a scope.
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input, select')]"
        ".filter(e => !e.labels.length && !e.getAttribute('aria-label')).length"
    )
    assert unlabelled == 0
    assert page.locator("table th:not([scope])").count() == 0

    greet = task_row(page, "greet")
    greet.get_by_role("button", name="Start with params").click()
    who = page.get_by_label("who")
    expect(who).to_have_value("world")
    who.fill("dashboard")
    page.get_by_role("button", name="Start run").click()
    page.locator("#notice a").first.click()
    expect(page.locator("#run-end")).to_contain_text("completed", timeout=10_000)
    expect(page.get_by_label("Log")).to_contain_text("hello dashboard")
    expect(page.locator("dl.facts")).to_contain_text('{"who":"dashboard"}')

    page.get_by_role("link", name="Tasks", exact=True).click()
    doomed = task_row(page, "doomed")
    doomed.get_by_role("button", name="Delete").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_contain_text("Delete the task doomed?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(doomed).to_be_visible()
    doomed.get_by_role("button", name="Delete").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(doomed).to_have_count(0)
    assert daemon.request("GET", "/task/doomed").status == 404

    # Dark when the operating system is dark.
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.emulate_media(color_scheme="dark")
    dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (light, dark) == ("rgb(255, 255, 255)", "rgb(17, 21, 28)")
    watched.shot("tasks-dark")

    # By keyboard alone: tab to the first Start button and press Enter.
    page.locator("body").focus()
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Start":
            break
    else:
        raise AssertionError("no Start button is reachable with Tab")
    row_id = page.evaluate("document.activeElement.closest('tr').dataset.task")
    page.keyboard.press("Enter")
    expect(page.locator("#notice")).to_contain_text(f"of {row_id}")
    assert watched.problems == []


def written(seconds: float) -> str:
    """A duration as the dashboard writes a spread: 3m12s, 10m."""
    hours, rest = divmod(int(seconds), 3600)
    parts = [(hours, "h"), (rest // 60, "m"), (rest % 60, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


def test_dependencies_spread_and_the_forecast(chained: tuple[Daemon, Watched]) -> None:
    daemon, watched = chained
    page = watched.page
    upstream = daemon.wait_run(daemon.start_task("a"))["id"]
    (run,) = wait_for(lambda: daemon.runs("b"), timeout=15, what="the dependency run of b")
    assert run["trigger"] == "dependency"
    downstream = daemon.wait_run(run["id"])["id"]
    sign_in(watched)

    # The next 7 days, hour by hour; the minute 03:15 has three tasks due for two slots, every day.
    hours = page.get_by_role("group", name="Next 7 days")
    expect(hours.locator("span")).to_have_count(7 * 24)
    crowded = hours.locator("span.crowded")
    expect(crowded).to_have_count(7)
    expect(crowded.first).to_have_css("background-color", "rgb(185, 28, 28)")
    title = crowded.first.get_attribute("title") or ""
    assert "3 tasks due, 1 over: night1, night2, night3" in title, title
    expect(hours.get_by_role("img").first).to_have_attribute("aria-label", title)  # reached by keyboard too
    expect(page.locator(".plan .legend")).to_contain_text("7 hours have a minute with more tasks due than the 2 slots")
    watched.shot("overview-plan")

    # b's page: it runs after a; a's page: b runs after it.
    task_row(page, "b").get_by_role("link", name="b", exact=True).click()
    expect(page.get_by_role("heading", name="Task b")).to_be_visible()
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("after a (when success, mode all)")
    expect(facts).to_contain_text("runs after its upstream tasks")
    expect(facts).to_contain_text("its next run waits for a run of a")  # it took the one a had
    watched.shot("task-b")
    facts.get_by_role("link", name="a", exact=True).first.click()
    expect(page.get_by_role("heading", name="Task a")).to_be_visible()
    expect(facts.get_by_role("link", name="b", exact=True)).to_have_attribute("href", "#/task/b")
    watched.shot("task-a")

    # a's run says which run it triggered, and that run which run triggered it.
    page.get_by_role("link", name=upstream).click()
    expect(page.get_by_role("heading", name=f"Run {upstream}")).to_be_visible()
    triggered = page.get_by_role("list", name="Triggered", exact=True).get_by_role("link", name="run of b")
    expect(triggered).to_have_attribute("href", f"#/run/{downstream}")
    watched.shot("run-a")
    triggered.click()
    expect(page.get_by_role("heading", name=f"Run {downstream}")).to_be_visible()
    expect(facts).to_contain_text("dependency")
    by = page.get_by_role("list", name="Triggered by")
    expect(by.get_by_role("link", name="run of a")).to_have_attribute("href", f"#/run/{upstream}")
    expect(by).to_contain_text("completed")
    watched.shot("run-b")

    # A spread task's fires are shifted by its offset.
    spread = daemon.request("GET", "/task/staggered").json()["spread"]
    assert spread["spread_s"] == 600
    page.evaluate("location.hash = '#/task/staggered'")
    expect(facts).to_contain_text(f"fires shifted by {written(spread['offset_s'])}, spread 10m")
    watched.shot("task-staggered")

    # With a deleted, b waits on it, and says so in amber.
    assert daemon.request("DELETE", "/task/a").status == 200
    page.get_by_role("link", name="Tasks", exact=True).click()
    status = task_row(page, "b").locator(".state-waiting")
    expect(status).to_have_text("waiting on a")
    expect(status).to_have_css("color", "rgb(161, 98, 7)")
    expect(task_row(page, "b")).to_contain_text("after a")  # its schedule column: no schedule, but a
    watched.shot("tasks-waiting")
    task_row(page, "b").get_by_role("link", name="b", exact=True).click()
    expect(facts.locator(".state-waiting")).to_have_text("waiting on a")
    watched.shot("task-b-waiting")
    assert watched.problems == []

    # The forecast failing leaves the rest of the overview as it was, and says so.
    page.route(
        "**/plan?*",
        lambda route: route.fulfill(
            status=500, content_type="application/json", body='{"error": {"code": "internal", "message": "no plan"}}'
        ),
    )
    page.get_by_role("link", name="Overview", exact=True).click()
    expect(page.locator(".plan")).to_contain_text("The forecast is not available: no plan")
    expect(page.locator(".card").first).to_contain_text("0 of 2")
    expect(task_row(page, "night1")).to_be_visible()
    watched.shot("overview-no-plan")
    # The browser reports the refused request, and nothing else.
    assert [p for p in watched.problems if "status of 500" not in p] == []


def test_capacity_pools_and_what_runs_used(pooled: tuple[Daemon, Watched]) -> None:
    daemon, watched = pooled
    page = watched.page
    hungry = daemon.wait_run(daemon.start_task("hungry"), timeout=30)
    assert hungry["state"] == "completed"
    sign_in(watched)
    # This node's capacity always shows; the pool, free.
    capacity = page.locator('dl[aria-label="Capacity"]')
    expect(capacity).to_contain_text("Node")
    expect(capacity).to_contain_text(re.compile(r"Memory0 B of [\d.]+ [KMGT]iB \([\d.]+ [KMGT]iB free\), waiting 0"))
    expect(capacity).to_contain_text(re.compile(r"CPU0 of [\d.]+ cores? \([\d.]+ free\), waiting 0"))
    pool = page.locator('tr[data-pool="db"]')
    expect(pool.locator("td")).to_have_text(["0 of 1", "0", "0"])

    # hold takes the pool's one unit; next waits for it, and its page says so.
    hold = daemon.start_task("hold")
    daemon.wait_run(hold, states=("running",))
    waiting = daemon.start_task("next")
    page.evaluate(f"location.hash = '#/run/{waiting}'")
    expect(fact(page, "Waiting for")).to_have_text("pool db")
    expect(fact(page, "State")).to_have_text("queued")
    watched.shot("run-waiting")
    page.get_by_role("link", name="Overview", exact=True).click()
    expect(pool.locator("td")).to_have_text(["1 of 1", "1", "1"])
    expect(pool.locator("td").last).to_have_css("color", "rgb(161, 98, 7)")  # amber: a run waits
    watched.shot("overview-pools")
    # Once hold ends, next takes the pool and ends too; the overview follows without a reload.
    for run_id in (hold, waiting):
        ended = daemon.wait_run(run_id)
        assert ended["state"] == "completed", (ended["task_id"], ended["error"])
    expect(pool.locator("td")).to_have_text(["0 of 1", "0", "0"])

    # Sorted by peak memory, largest first: hungry's 150 MiB array puts it first, in MiB. hold's
    # sleep is small: a figure, or (measured by rusage, which counts from taskd's own size) unknown
    # and how large it could have been; never 0.
    page.get_by_role("link", name="Runs", exact=True).click()
    table = page.get_by_role("table", name="Runs")
    expect(table.locator("tbody tr")).to_have_count(3)
    page.get_by_role("button", name="Memory").click()
    page.get_by_role("button", name="Memory ▲").click()
    expect(page.locator('th[aria-sort="descending"]')).to_contain_text("Memory")
    first = table.locator("tbody tr").first
    expect(first).to_contain_text("hungry")
    cpu, memory = first.locator("td.figure").all_inner_texts()
    assert re.fullmatch(r"\d+\.\d+ s", cpu), cpu
    assert (found := re.fullmatch(r"(\d+(?:\.\d+)?) MiB", memory)) and 140 <= float(found[1]) <= 220, memory
    small = daemon.run(hold)["usage"]
    bound = small["peak_memory_bytes"] is None
    assert not bound or small["peak_memory_at_most"], small
    peak = table.locator(f'tr[data-run="{hold}"] td.figure').last
    expect(peak).to_have_text(re.compile(r"^≤ [\d.]+ MiB$" if bound else r"^[\d.]+ [KM]iB$"))
    expect(peak.locator(".muted")).to_have_count(1 if bound else 0)
    # next's step ran inside taskd: unknown, and why, never 0.
    inside = table.locator(f'tr[data-run="{waiting}"] td.figure .muted')
    expect(inside).to_have_text(["unknown", "unknown"])
    expect(inside.first).to_have_attribute("title", "python builtins:id runs inside taskd")
    watched.shot("runs-by-memory")

    first.get_by_role("link", name=hungry["id"]).click()
    expect(page.get_by_role("heading", name=f"Run {hungry['id']}")).to_be_visible()
    source = daemon.run(hungry["id"])["usage"]["source"]
    assert source in ("rusage", "cgroup")
    expect(fact(page, "Used")).to_have_text(f"{cpu} CPU · {memory} peak · 1 process ({source})")
    expect(fact(page, "Waiting for")).to_have_count(0)
    watched.shot("run-used")
    fact(page, "Task").get_by_role("link", name="hungry").click()
    latest = page.get_by_role("table", name="Latest runs")
    expect(latest.locator("thead")).to_contain_text("CPUMemory")
    expect(latest.locator("tbody td.figure")).to_have_text([cpu, memory])
    watched.shot("task-used")
    page.evaluate(f"location.hash = '#/run/{waiting}'")
    expect(fact(page, "Used")).to_have_text("CPU and memory unknown: python builtins:id runs inside taskd")
    watched.shot("run-unknown")
    assert watched.problems == []
