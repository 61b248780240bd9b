"""The pacer's pause after the first 429 (owui_replay/ratelimit.py), on a controlled clock."""

from __future__ import annotations

import pytest

from owui_replay.ratelimit import RateLimiter
from tests.helpers import FakeClock


@pytest.mark.parametrize("second_pause", [5.0, 1.0, None])
def test_a_second_429_during_the_first_full_pause_does_not_shorten_it(
    second_pause: float | None,
) -> None:
    """The first 429 pauses every worker for the server's Retry-After; a second 429 from a
    request that was in flight says nothing that ends the pause sooner (its own short breath
    is for a limit already learnt, after the pause)."""
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.throttle(5.0, window_count=50.0, sent_at=clock.now - 0.01)
    clock.now += 1.0
    limiter.throttle(second_pause, window_count=40.0, sent_at=clock.now - 0.5)
    assert limiter.acquire()
    assert clock.now >= 105.0 - 1e-9, clock.now - 100.0


def test_a_longer_retry_after_during_the_first_pause_extends_it() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.throttle(2.0, window_count=50.0)
    limiter.throttle(None, window_count=50.0)  # no Retry-After: no pause of its own
    assert limiter.acquire() and clock.now >= 102.0 - 1e-9
