"""The dashboard in a real browser: Playwright driving Debian's chromium against a real daemon. A
watched page collects every console error and every request to another origin; each test asserts
there were none. Screenshots are kept in TASKD_SCREENSHOTS=DIR when it is set."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import Daemon, base_config

CHROMIUM = "/usr/bin/chromium"
TOKEN = "s3cret-dashboard-token"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

try:
    from playwright import sync_api as playwright_api
except ImportError:
    if os.environ.get("TASKD_REQUIRE_BROWSER"):  # CI: never skip these
        raise
    pytest.skip("playwright is missing (pip install -e '.[test]')", allow_module_level=True)
expect = playwright_api.expect


@pytest.fixture(name="browser")
def chromium() -> Iterator[Any]:
    """Debian's chromium; a test module takes it by importing `chromium`."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("TASKD_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A page whose console errors and foreign requests are collected. `context` is the browser
    context's options (a time zone: timezone_id)."""

    def __init__(
        self,
        browser: Any,
        origin: str,
        shots: Path,
        viewport: dict[str, int] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        self.context = browser.new_context(viewport=viewport or {"width": 1400, "height": 900}, **(context or {}))
        self.page = self.context.new_page()
        self.origin = origin
        self.shots = shots
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("request", self._request)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.problems.append(f"console error: {message.text}")

    def _request(self, request: Any) -> None:
        parts = urlsplit(request.url)
        if f"{parts.scheme}://{parts.netloc}" != self.origin and parts.scheme not in ("data", "blob"):
            self.problems.append(f"request to another origin: {request.url}")

    def shot(self, name: str, full_page: bool = True) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def close(self) -> None:
        self.context.close()


@contextmanager
def served(
    daemon_factory: Callable[..., Daemon],
    browser: Any,
    tmp_path: Path,
    tasks: str,
    slots: int,
    pipelines: str,
    extra: str = "",
    api: str | None = None,
    prefix: str = "dashboard",
    viewport: dict[str, int] | None = None,
    context: dict[str, Any] | None = None,
) -> Iterator[tuple[Daemon, Watched]]:
    """A daemon running `tasks` (with `extra` top-level sections) and a watched page on it. Its
    API section is `api` (with {port} for the port), else one admin token, TOKEN; the daemon's own
    requests carry TOKEN either way, so `api` must keep it among its tokens."""
    section = api or f"api: {{listen: '127.0.0.1:{{port}}', token: {TOKEN}}}\n"
    plain = "api: {listen: '127.0.0.1:{port}'}\n"
    config = base_config(tasks, pipelines, slots=slots, extra=extra).replace(plain, section)
    daemon = daemon_factory(config)
    daemon.token = TOKEN
    daemon.start()
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    watched = Watched(browser, f"http://127.0.0.1:{daemon.port}", shots, viewport, context)
    try:
        yield daemon, watched
    finally:
        keep = os.environ.get("TASKD_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for shot in shots.iterdir():
                shutil.copy(shot, Path(keep) / f"{prefix}-{shot.name}")
        watched.close()
        daemon.stop()


def sign_in(watched: Watched, token: str = TOKEN, heading: str = "Overview") -> None:
    """Signs in with `token` from the sign-in form, and waits for the view."""
    page = watched.page
    if page.locator("form.login").count() == 0:
        page.goto(watched.origin + "/")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name=heading)).to_be_visible()


def task_row(page: Any, task_id: str) -> Any:
    return page.locator(f'tr[data-task="{task_id}"]')


def fact(page: Any, label: str) -> Any:
    """The value of a run's or a task's fact."""
    return page.locator(f"dl.facts dt:text-is('{label}') + dd")


def fits(page: Any, width: int) -> None:
    """The page does not scroll sideways: nothing is wider than the screen."""
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{page.url} is {scroll} px wide on a {width} px screen"
