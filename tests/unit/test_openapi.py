"""GET /openapi.json describes every route and nothing else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from conftest import Api, base_config
from support.openapi import PIPELINES, TASKS

from taskd.http.openapi import document


async def test_the_document_describes_every_route_and_nothing_else(api_factory: Callable[..., Awaitable[Api]]) -> None:
    api = await api_factory(base_config(TASKS, PIPELINES))
    resp = await api.request("GET", "/openapi.json", headers={"Authorization": ""})
    assert resp.status == 200 and resp.json()["openapi"] == "3.1.0"
    routes = set()
    app = api.client.app
    assert app is not None
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD":
            routes.add((route.method.lower(), path))
    documented = {(method, path) for path, item in document(secured=True)["paths"].items() for method in item}
    assert routes == documented
