"""The tasks the live-stream tests run, and a server-sent events reader."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

TASKS = """
- {id: talk, pipeline: talk, concurrency: allow}
- {id: quiet, pipeline: quiet}
"""

PIPELINES = """
- {name: talk, processors: [{shell: {command: 'echo one; sleep 0.4; echo two; echo oops >&2; sleep 0.2'}}]}
- {name: quiet, processors: [{log: {message: done}}]}
"""


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The events of a stream as {event, id, data, received}; comments come as {"comment": text}."""
    event: dict[str, Any] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if event:
                event["received"] = time.time()
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value
