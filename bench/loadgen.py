"""A loopback HTTP load generator (aiohttp client), run as its own process by the benchmarks.

Open loop: request i is due at start + i / rate and its latency counts from that moment, so a slow
server cannot hide its queueing (no coordinated omission). Prints one JSON object.

    python -m bench.loadgen URL_TEMPLATE --rate 500 --seconds 5 [--method POST] [--ids 10000]

URL_TEMPLATE may contain {i}, replaced by the request number modulo --ids (zero-padded to 5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


async def run(url: str, method: str, rate: float, seconds: float, ids: int) -> dict[str, object]:
    total = int(rate * seconds)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        start = time.perf_counter() + 0.1

        async def one(i: int) -> None:
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            target = url.replace("{i}", f"{i % ids:05d}")
            try:
                async with session.request(method, target) as response:
                    await response.read()
                    if response.status >= 400:
                        errors[str(response.status)] = errors.get(str(response.status), 0) + 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            latencies.append(time.perf_counter() - due)

        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "requests": total,
        "ok": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": pick(50),
        "p99_ms": pick(99),
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--ids", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.method, args.rate, args.seconds, args.ids))))


if __name__ == "__main__":
    main()
