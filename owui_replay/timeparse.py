"""--since / --until values: epoch seconds or an ISO 8601 date or date-time (UTC unless given)."""

from __future__ import annotations

import re
from datetime import datetime, timezone


def parse_instant(text: str) -> int:
    """Epoch seconds for TEXT; ValueError with a message that shows the accepted forms."""
    raw = text.strip()
    if re.fullmatch(r"-?\d+", raw):
        value = int(raw)
        if value > 99_999_999_999:
            raise ValueError(f"{text!r} looks like milliseconds; give epoch seconds")
        return value
    candidate = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither epoch seconds nor an ISO date "
            "(2026-11-01 or 2026-11-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())
