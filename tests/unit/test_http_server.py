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


def test_the_loops_own_errors_are_logged_once_a_second_with_a_count() -> None:
    """A flood of accept() failures (descriptors exhausted) is one line a second, not one each."""
    import asyncio

    from structlog.testing import capture_logs

    from taskd.http import server

    loop = asyncio.new_event_loop()
    try:
        server.quiet_loop_errors(loop)
        server.THROTTLE._last.clear()
        with capture_logs() as lines:
            for _ in range(1000):
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(24, "Too many open files"),
                    }
                )
        assert len(lines) == 1 and lines[0]["event"] == "event_loop_error" and "Too many" in lines[0]["error"]
    finally:
        loop.close()
