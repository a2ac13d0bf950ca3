"""The web dashboard: `GET /` and its files under `/ui/`, shipped inside the package.

The page holds no data (it asks the API for everything, with the token the operator typed), so it
is served without the token. Nothing is fetched from anywhere else: the Content-Security-Policy
allows this origin only, and the files are read once and kept in memory.
"""

from __future__ import annotations

import functools
import hashlib
from importlib.resources import files

from aiohttp import web

FILES = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@functools.cache
def _read(name: str) -> bytes:
    return (files("taskd") / "dashboard" / name).read_bytes()


def _answer(request: web.Request, body: bytes, content_type: str) -> web.Response:
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    headers = {**HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)


async def page(request: web.Request) -> web.Response:
    return _answer(request, _read("index.html"), "text/html")


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = FILES.get(name)
    if content_type is None:
        raise web.HTTPNotFound(text=f"no dashboard file {name!r}")
    return _answer(request, _read(name), content_type)


def is_public(path: str) -> bool:
    """The page and its files need no token: they hold no data."""
    return path == "/" or path.startswith("/ui/")


def setup(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_get("/ui/{name}", asset)
