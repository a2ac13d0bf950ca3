"""How long computing the next fire of N schedules takes (target: 10,000 well under a second).

Run: python -m bench.schedule_next
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

from taskd.schedule import parse

EXPRESSIONS = ["*/5 * * * *", "0 2 * * *", "30 9 * * 1-5", "0 0 1,15 * 5", "* * * * * *", "@every 90s", "@hourly"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]


def main(count: int = 10_000, repeats: int = 5) -> None:
    schedules = [parse(EXPRESSIONS[i % len(EXPRESSIONS)], ZONES[i % len(ZONES)]) for i in range(count)]
    now = datetime.now(UTC)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        for schedule in schedules:
            schedule.next_after(now)
        timings.append(time.perf_counter() - started)
    print(
        f"next fire of {count:,} schedules: min {min(timings) * 1000:.1f} ms, "
        f"median {statistics.median(timings) * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms "
        f"(target < 1000 ms)"
    )


if __name__ == "__main__":
    main()
