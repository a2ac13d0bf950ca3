"""The dashboard's page and files: served from the package without the token, with a policy that
keeps the page on this origin, and cached by ETag."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from conftest import Api, base_config

CONFIG = base_config("- {id: t, pipeline: p}", "- {name: p, processors: [{sleep: {duration: 0}}]}").replace(
    "api: {listen: '127.0.0.1:{port}'}", "api: {listen: '127.0.0.1:{port}', token: secret}"
)


async def test_the_page_and_its_files_need_no_token_and_stay_on_this_origin(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    api = await api_factory(CONFIG)
    page = await api.request("GET", "/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.js">' in page.text
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        resp = await api.request("GET", f"/ui/{name}")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith(kind), name
        again = await api.request("GET", f"/ui/{name}", headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304
    missing = await api.request("GET", "/ui/..%2Ftaskd.yml")
    assert missing.status == 404 and missing.json()["error"]["code"] == "not_found"
    assert (await api.request("GET", "/ui/secrets.txt")).status == 404
    assert (await api.request("GET", "/tasks")).status == 401  # the data still needs the token


async def test_the_page_holds_no_data(api_factory: Callable[..., Awaitable[Api]]) -> None:
    """Whatever the daemon holds, the page is the same bytes: the data comes from the API."""
    api = await api_factory(CONFIG)
    before = (await api.request("GET", "/")).body
    api.token = "secret"
    await api.wait_run(await api.start_task("t"))
    assert (await api.request("GET", "/")).body == before
    assert b"secret" not in before
