"""tqdm bars on stderr, shown only on a terminal, so logs and CI output stay clean."""

from __future__ import annotations

from typing import IO, Any

from tqdm import tqdm


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def byte_bar(total: int | None, name: str, *, stderr: IO[str], enabled: bool | None) -> Any:
    """A bytes-read bar for a file of `total` bytes (None when unknown, as for stdin)."""
    show = is_terminal(stderr) if enabled is None else enabled
    return tqdm(
        total=total,
        desc=name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=stderr,
        disable=not show,
        leave=False,
        dynamic_ncols=True,
    )
