"""The outbox's SNS email rate: at most EMAILS_PER_SECOND deliveries in any one-second window."""

from __future__ import annotations

from orderpipe_local.sources.email_outbox import EMAILS_PER_SECOND, EmailRateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_gets_the_rate_and_no_more_within_the_second() -> None:
    clock = Clock()
    limit = EmailRateLimit(EMAILS_PER_SECOND, clock)

    allowed = [limit.allow() for _ in range(EMAILS_PER_SECOND + 5)]

    assert allowed == [True] * EMAILS_PER_SECOND + [False] * 5


def test_the_window_slides_one_delivery_frees_a_place_a_second_after_it() -> None:
    # Given deliveries spread over 0.9 s up to the rate
    clock = Clock()
    limit = EmailRateLimit(EMAILS_PER_SECOND, clock)
    for step in range(EMAILS_PER_SECOND):
        clock.now = 100.0 + step * 0.1
        assert limit.allow()

    # When time moves on
    clock.now = 100.95
    refused_before_the_first_is_a_second_old = limit.allow()
    clock.now = 101.0
    allowed_once_it_is = limit.allow()

    # Then a place frees only as the oldest delivery leaves the window
    assert not refused_before_the_first_is_a_second_old
    assert allowed_once_it_is
    assert not limit.allow()
