"""Pacing shared by all workers: a token bucket that learns the server's limit (AIMD).

With --rate the bucket never exceeds it. A 429 lowers the rate to just under what the server
was accepting (once per generation of requests) and, when the server sent Retry-After, pauses every
worker that long; successes raise the rate again by about 1% a second. Without --rate the
limit starts unbounded and is learnt from the first 429s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_EPSILON = 1e-9
_MIN_WAIT = 0.001  # a shorter sleep may not move the clock at all
_DECREASE = 0.95
_DECREASE_INTERVAL = 1.0
_INCREASE = 0.01
_MIN_RATE = 0.5


class RateLimiter:
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
        self, pause: float | None, accepted_rate: float | None, sent_at: float | None = None
    ) -> None:
        """The server said 429. Pause everyone only if it said for how long (Retry-After);
        slow down to just under the rate it was accepting, but only for a request sent after
        the last slow-down (or, without a send time, at most once a second): the 429s of
        requests already in flight at the last cut say nothing new."""
        with self._lock:
            self.throttled += 1
            now = self._clock()
            if pause:
                self._paused_until = max(self._paused_until, now + pause)
            if sent_at is not None:
                if sent_at <= self._last_decrease:
                    return  # sent before the last slow-down: it says nothing new
            elif now - self._last_decrease < _DECREASE_INTERVAL:
                return
            self._last_decrease = now
            base = accepted_rate if accepted_rate else self.rate
            if base:
                self.rate = max(_MIN_RATE, base * _DECREASE)
                if self.ceiling is not None:
                    self.rate = min(self.rate, self.ceiling)
                self._tokens = 0.0
                self._last = max(now, self._paused_until)

    def succeeded(self) -> None:
        """Additive increase: +0.01 req/s per success is +1% of the rate per second, so a
        learnt limit is probed again every few seconds, never above the user's ceiling."""
        with self._lock:
            if self.rate is None:
                return
            self.rate += _INCREASE
            if self.ceiling is not None:
                self.rate = min(self.ceiling, self.rate)
