"""The listener's pure parts: the throttle that keeps a flood of bad clients from flooding the log."""

from __future__ import annotations

from taskd.http.server import Throttle


def test_the_throttle_lets_one_line_a_second_per_kind_and_counts_the_rest() -> None:
    now = [100.0]
    throttle = Throttle(1.0, clock=lambda: now[0])
    assert throttle.allow("bad_request") == 0
    assert [throttle.allow("bad_request") for _ in range(5)] == [None] * 5
    assert throttle.allow("header_timeout") == 0  # kinds are counted apart
    now[0] += 1.0
    assert throttle.allow("bad_request") == 5
    assert throttle.allow("bad_request") is None
