"""How long to wait before trying again: full-jitter exponential backoff, or the server's
Retry-After. Which answers are retried at all is delivery.py's judgement (judge_reply)."""

from __future__ import annotations

import email.utils
import random
import time

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.25,
    cap: float = 20.0,
    retry_after: float | None = None,
    max_retry_after: float = 60.0,
    rng: random.Random | None = None,
) -> float:
    """Full-jitter exponential backoff; a server's Retry-After (capped at max_retry_after)
    replaces it, plus a little jitter so that workers told the same do not return at once."""
    uniform = (rng or random).uniform
    delay = uniform(0, min(cap, base * (2**attempt)))
    if retry_after is not None:
        delay = min(retry_after, max_retry_after) + uniform(0, base)
    return delay
