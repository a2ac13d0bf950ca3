"""The dashboard's page and files: served from the package without the token, with a policy that
keeps the page on this origin, and cached by ETag. Every ES module of the page is served, and
nothing else of the package is."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from conftest import Api, base_config

import taskd

CONFIG = base_config("- {id: t, pipeline: p}", "- {name: p, processors: [{sleep: {duration: 0}}]}").replace(
    "api: {listen: '127.0.0.1:{port}'}", "api: {listen: '127.0.0.1:{port}', token: secret}"
)
DASHBOARD = Path(taskd.__file__).parent / "dashboard"
IMPORT = re.compile(r"""^import\s[^;]*?\sfrom\s+"\./([^"]+)";""", re.MULTILINE)


def modules() -> list[str]:
    return sorted(path.name for path in DASHBOARD.glob("*.js"))


def test_every_module_the_page_imports_is_a_file_of_the_package() -> None:
    """The entry module reaches every other module, and imports only modules that exist."""
    reached, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        imported = IMPORT.findall((DASHBOARD / name).read_text())
        assert set(imported) <= set(modules()), (name, imported)
        todo.extend(imported)
    assert sorted(reached) == modules()


async def test_the_page_and_its_files_need_no_token_and_stay_on_this_origin(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    api = await api_factory(CONFIG)
    page = await api.request("GET", "/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.js">' in page.text
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    assert len(modules()) > 1
    served = [(name, "text/javascript") for name in modules()]
    for name, kind in [*served, ("style.css", "text/css"), ("favicon.svg", "image/svg+xml")]:
        resp = await api.request("GET", f"/ui/{name}")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith(kind), name
        assert resp.headers["Content-Security-Policy"] == policy, name
        again = await api.request("GET", f"/ui/{name}", headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304
    for path in ("/ui/..%2Ftaskd.yml", "/ui/..%2F..%2Fpyproject.toml", "/ui/%2E%2E%2Fhttp%2Fapp.py", "/ui/app"):
        missing = await api.request("GET", path)
        assert missing.status == 404 and missing.json()["error"]["code"] == "not_found", path
    for name in ("secrets.txt", "jsconfig.json", "index.html", "missing.js", ".js"):
        assert (await api.request("GET", f"/ui/{name}")).status == 404, name
    assert (await api.request("GET", "/ui/views/app.js")).status == 404
    assert (await api.request("GET", "/tasks")).status == 401  # the data still needs the token


async def test_the_page_holds_no_data(api_factory: Callable[..., Awaitable[Api]]) -> None:
    """Whatever the daemon holds, the page is the same bytes: the data comes from the API."""
    api = await api_factory(CONFIG)
    before = (await api.request("GET", "/")).body
    api.token = "secret"
    await api.wait_run(await api.start_task("t"))
    assert (await api.request("GET", "/")).body == before
    assert b"secret" not in before
