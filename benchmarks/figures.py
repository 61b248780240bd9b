"""How every benchmark reports: min / median / max over its rounds, and the load average."""

from __future__ import annotations

import os
import statistics


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    """'min / median / max' of VALUES, each formatted with FMT."""
    picks = (min(values), statistics.median(values), max(values))
    return " / ".join(fmt.format(v) for v in picks)


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
