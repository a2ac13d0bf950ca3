"""The web dashboard: `GET /` and its files under `/ui/`, shipped inside the package.

The page holds no data (it asks the API for everything, with the token the operator typed), so it
is served without the token. Nothing is fetched from anywhere else: the Content-Security-Policy
allows this origin only, and the files are read once and kept in memory.

The files served are those of the package's `dashboard` directory with a known extension: the
entry module `app.js` and the ES modules it imports, the stylesheet and the icon. A name is looked
up in that listing, never joined to a path, so nothing outside the directory can be asked for.
"""

from __future__ import annotations

import functools
import hashlib
from importlib.resources import files
from pathlib import PurePosixPath

from aiohttp import web

TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
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
def served() -> dict[str, str]:
    """Each file served under /ui/, with its content type."""
    found = {}
    for entry in (files("taskd") / "dashboard").iterdir():
        kind = TYPES.get(PurePosixPath(entry.name).suffix)
        if kind is not None and entry.is_file():
            found[entry.name] = kind
    return found


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
    content_type = served().get(name)
    if content_type is None:
        raise web.HTTPNotFound(text=f"no dashboard file {name!r}")
    return _answer(request, _read(name), content_type)


def is_public(path: str) -> bool:
    """The page and its files need no token: they hold no data."""
    return path == "/" or path.startswith("/ui/")


def setup(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_get("/ui/{name}", asset)
