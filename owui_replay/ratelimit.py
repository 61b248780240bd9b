"""Pacing shared by all workers: a token bucket, a global pause after 429, and AIMD.

With --rate the bucket never exceeds it. A 429 pauses every worker (so one refusal does not
become a storm) and lowers the rate multiplicatively; successes raise it again slowly, never
above --rate. Without --rate the limit starts unbounded and is learnt from 429s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_EPSILON = 1e-9
_MIN_WAIT = 0.001  # a shorter sleep may not move the clock at all


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

    def throttle(self, pause: float, observed_rate: float | None) -> None:
        """The server said 429: pause everyone and slow down."""
        with self._lock:
            self.throttled += 1
            now = self._clock()
            self._paused_until = max(self._paused_until, now + pause)
            base = self.rate if self.rate is not None else observed_rate
            if base:
                self.rate = max(0.5, base * 0.85)
                self._tokens = 0.0
                self._last = now + pause

    def succeeded(self) -> None:
        """Additive increase after a success, up to the user's ceiling."""
        with self._lock:
            if self.rate is None:
                return
            step = max(0.05, self.rate * 0.002)
            self.rate = (
                self.rate + step if self.ceiling is None else min(self.ceiling, self.rate + step)
            )
