"""Pacing shared by all workers: a token bucket that learns the server's limit.

With --rate the bucket never exceeds it. Without it the rate starts unbounded and is learnt
from 429s, as servers that limit requests over a sliding window expect:

- the limit is the number of requests the server acknowledged over the last second (on a full
  window that count is its capacity, where a rate measured over a start-up burst overshoots),
  and the pacer sends at 97% of it, once per generation of requests;
- the first 429 means a burst filled the window: every worker waits the server's Retry-After
  (capped by --max-retry-after). A later one means the pacer stepped just over the limit: a
  0.1 s breath is enough, since the window frees a slot every 1/limit seconds; pausing for the
  full Retry-After every time cost about a second of capacity per 429. (The request that got
  the 429 itself always waits the full Retry-After before it is sent again.)
- successes raise the rate by 0.2% a second, so the limit is probed again without 429 storms.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_EPSILON = 1e-9
_MIN_WAIT = 0.001  # a shorter sleep may not move the clock at all
_BELOW_LIMIT = 0.97
_DECREASE_INTERVAL = 1.0
_INCREASE = 0.002  # req/s per success: 0.2% of the rate per second, whatever the rate
_BREATH = 0.1  # seconds: the pause for a 429 once the limit is known
_MIN_RATE = 0.5


class RateLimiter:
    """A token bucket shared by the workers, learning the server's limit from 429s."""

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ceiling = rate  # None: no user limit
        self.rate = rate  # current rate; None while unbounded
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._paused_until = 0.0
        self._last_decrease = float("-inf")
        self._lock = threading.Lock()
        self.throttled = 0  # 429s seen

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for a slot; False if `stop` was set while waiting."""
        while True:
            with self._lock:
                now = self._clock()
                wait = self._paused_until - now
                if wait <= 0:
                    if self.rate is None:
                        return True
                    self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                    self._last = now
                    if self._tokens >= 1 - _EPSILON:  # float sums can stop just short of 1
                        self._tokens = max(0.0, self._tokens - 1)
                        return True
                    wait = max(_MIN_WAIT, (1 - self._tokens) / self.rate)
            if stop is not None:
                if stop.wait(min(wait, 0.25)):
                    return False
            else:
                self._sleep(min(wait, 0.25))

    def throttle(
        self, pause: float | None, window_count: float | None, sent_at: float | None = None
    ) -> None:
        """The server said 429. WINDOW_COUNT is how many requests it acknowledged over the
        last second. Only a request sent after the last slow-down (or, without a send time,
        at most once a second) slows down again: the 429s of requests already in flight at
        the last cut say nothing new."""
        with self._lock:
            self.throttled += 1
            now = self._clock()
            first = self.throttled == 1
            if pause:
                breath = pause if first else min(pause, _BREATH)
                self._paused_until = max(self._paused_until, now + breath)
            if sent_at is not None:
                if sent_at <= self._last_decrease:
                    return  # sent before the last slow-down: it says nothing new
            elif now - self._last_decrease < _DECREASE_INTERVAL:
                return
            self._last_decrease = now
            base = window_count if window_count else self.rate
            if base:
                self.rate = max(_MIN_RATE, base * _BELOW_LIMIT)
                if self.ceiling is not None:
                    self.rate = min(self.rate, self.ceiling)
                self._tokens = 0.0
                self._last = max(now, self._paused_until)

    def succeeded(self) -> None:
        """Additive increase: +0.002 req/s per success is +0.2% of the rate per second, so a
        learnt limit is probed again about every 15 s, never above the user's ceiling."""
        with self._lock:
            if self.rate is None:
                return
            self.rate += _INCREASE
            if self.ceiling is not None:
                self.rate = min(self.ceiling, self.rate)
