"""Exponential backoff, shared by attempt-level retries (the task's `retry:`) and step retries."""

from __future__ import annotations

import math
import random


def backoff_delay(
    backoff_s: float,
    retry: int,
    max_backoff_s: float = math.inf,
    jitter: bool = False,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number `retry` (1-based): `backoff_s * 2**(retry-1)`, capped
    at `max_backoff_s`, and with full jitter (uniform between 0 and that) when asked."""
    exponent = min(retry - 1, 1024)  # 2.0**1024 overflows; the cap applies long before
    delay = min(max_backoff_s, backoff_s * 2.0**exponent) if backoff_s > 0 else 0.0
    if jitter:
        delay = (rng or random).uniform(0, delay)
    return delay
