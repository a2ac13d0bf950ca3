"""A schedule in words, as the dashboard shows it beside the expression."""

from __future__ import annotations

import pytest

from taskd.schedule import parse
from taskd.schedule_words import describe


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("30 1 * * 1-5", "at 01:30 on Monday to Friday"),
        ("0 2 * * *", "at 02:00 every day"),
        ("@daily", "at 00:00 every day"),
        ("0 0,12 * * *", "at 00:00 and 12:00 every day"),
        ("15 10 * * 1,3,5", "at 10:15 on Monday, Wednesday and Friday"),
        ("0 0 * * 7", "at 00:00 on Sunday"),
        ("30 6 * jan-mar sat,sun", "at 06:30 on Saturday and Sunday in January to March"),
        ("0 0 1,15 * 5", "at 00:00 on day 1 and 15 of the month or on Friday"),
        ("0 3 1 * *", "at 03:00 on day 1 of the month"),
        ("*/15 * * * *", "every 15 minutes"),
        ("*/5 9-17 * * *", "every 5 minutes from 09:00 to 17:59"),
        ("5 * * * *", "every hour at minute 5"),
        ("@hourly", "every hour at minute 0"),
        ("10 */3 * * *", "every 3 hours at minute 10"),
        ("0 9-17 * * 1-5", "every hour at minute 0 from 09:00 to 17:59 on Monday to Friday"),
        ("* * * * *", "every minute"),
        ("* * * * * *", "every second"),
        ("*/2 * * * * *", "every 2 seconds"),
        ("30 * * * * *", "at second 30 of every minute"),
        ("@every 90s", "every 90 seconds"),
        ("@every 2h", "every 2 hours"),
        ("@every 1d", "every day"),
    ],
)
def test_schedules_read_as_sentences_ending_with_the_zone(expression: str, words: str) -> None:
    assert describe(parse(expression, "Asia/Tokyo"), "Asia/Tokyo") == f"{words}, Asia/Tokyo"
