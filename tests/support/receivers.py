"""Real receivers on loopback for what taskd sends: a webhook endpoint and an SMTP server."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Webhook:
    """An HTTP endpoint that keeps every JSON body POSTed to it and answers with the statuses
    queued in `answers` (200 once they are used up)."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    tries: int = 0
    answers: list[int] = field(default_factory=list)

    def events(self, task_id: str | None = None) -> list[str]:
        return [body["event"] for body in self.received if task_id is None or body["task"]["id"] == task_id]


@contextlib.asynccontextmanager
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()

    async def receive(request: web.Request) -> web.Response:
        hook.tries += 1
        status = hook.answers.pop(0) if hook.answers else 200
        if status == 200:
            hook.received.append(json.loads(await request.read()))
        return web.Response(status=status, text="ok" if status == 200 else "refused")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    port = server.sockets[0].getsockname()[1]
    hook.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield hook
    finally:
        await runner.cleanup()


@dataclass
class Mailbox:
    port: int
    messages: list[Any] = field(default_factory=list)


@contextlib.contextmanager
def smtp_server() -> Iterator[Mailbox]:
    """A plain SMTP server (aiosmtpd) on loopback that keeps every message."""
    from aiosmtpd.controller import Controller

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        box = Mailbox(int(sock.getsockname()[1]))

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.messages.append(envelope)
            return "250 accepted"

    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@contextlib.contextmanager
def webhook_thread() -> Iterator[Webhook]:
    """The webhook receiver in a thread of its own, for tests that drive daemons synchronously."""
    hook = Webhook()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                hook.tries += 1
                status = hook.answers.pop(0) if hook.answers else 200
                if status == 200:
                    hook.received.append(json.loads(body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
