"""The API under load: 10,000 tasks defined, 1,000 of them firing every second (1,000 runs/s),
while a separate load-generator process sends requests at a fixed rate. The reference is an
aiohttp hello-world handler measured the same way."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bench.common import Daemon, free_port, tasks_config

HELLO = textwrap.dedent(
    """
    import sys
    from aiohttp import web
    async def hello(request):
        return web.json_response({"hello": "world"})
    app = web.Application()
    app.router.add_get("/hello", hello)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)


def load(url: str, rate: float, seconds: float, method: str = "GET", ids: int = 1) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", url, "--rate", str(rate), "--seconds", str(seconds),
         "--method", method, "--ids", str(ids)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(result.stdout))


def measure(tasks: int = 10_000, firing: int = 1_000, rate: float = 500, seconds: float = 5) -> dict[str, Any]:
    out: dict[str, Any] = {}
    port = free_port()
    hello = subprocess.Popen([sys.executable, "-c", HELLO, str(port)])
    try:
        time.sleep(1.0)
        out["hello_world"] = load(f"http://127.0.0.1:{port}/hello", rate, seconds)
    finally:
        hello.terminate()
        hello.wait()
    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        daemon = Daemon(Path(tmp), "")
        daemon.config = tasks_config(
            daemon.port, tasks, "* * * * * *", slots=tasks, concurrency="allow", scheduled_count=firing
        )
        daemon.start()
        try:
            time.sleep(2)  # let the per-second fires settle in
            base = f"http://127.0.0.1:{daemon.port}"
            out["GET /tasks?limit=100"] = load(f"{base}/tasks?limit=100", rate, seconds)
            out["GET /task/{id}"] = load(f"{base}/task/t{{i}}", rate, seconds, ids=tasks)
            out["POST /task/{id}/_start"] = load(f"{base}/task/t{{i}}/_start", rate, seconds, "POST", ids=tasks)
            with daemon.db() as db:
                window = db.execute(
                    "SELECT count(*) FROM runs WHERE trigger = 'schedule' AND scheduled_at > ?", (time.time() - 5,)
                ).fetchone()[0]
            out["scheduled_runs_per_s_during_load"] = window / 5
        finally:
            daemon.stop()
    return out


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
