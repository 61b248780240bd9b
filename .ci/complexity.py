"""Fail when a function or method in the package is above cyclomatic complexity 15 (radon's
measure, the one the codebase is held to); prints each offender as PATH:LINE NAME (N)."""

from __future__ import annotations

import sys
from pathlib import Path

from radon.complexity import cc_visit

LIMIT = 15


def main() -> int:
    package = Path(__file__).resolve().parent.parent / "owui_replay"
    over = []
    for path in sorted(package.rglob("*.py")):
        for block in cc_visit(path.read_text("utf-8")):
            if block.complexity > LIMIT:
                over.append(f"{path}:{block.lineno} {block.fullname} ({block.complexity})")
    for line in over:
        print(line)
    if over:
        print(f"{len(over)} functions above cyclomatic complexity {LIMIT}", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
