"""Where convert's time goes, per record, on one export: the profile behind the ratios.

    python benchmarks/profile_convert.py [EXPORT]     # default benchmarks/out/export-50mb.json

Times each stage separately, in one process, best of 3, and prints microseconds per record
next to the bare parse of the same record (ijson.items with yajl2_c).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import ijson  # noqa: E402

from owui_replay.converting import dumps_line  # noqa: E402
from owui_replay.mapping import Mapper, Skip  # noqa: E402
from owui_replay.schemas import OPENWEBUI_SCHEMA, PORTKEY_SCHEMA, RecordValidator  # noqa: E402


def best(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "out" / "export-50mb.json"
    backend = ijson.get_backend("yajl2_c")

    def parse() -> None:
        with open(path, "rb") as handle:
            for _ in backend.items(handle, "item", use_float=True):
                pass

    def sha256() -> None:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(1 << 16):
                digest.update(block)

    with open(path, "rb") as handle:
        records = list(backend.items(handle, "item", use_float=True))
    validator, payload_validator = (
        RecordValidator(OPENWEBUI_SCHEMA),
        RecordValidator(PORTKEY_SCHEMA),
    )
    valid = [r for r in records if validator.is_valid(r)]
    invalid = [r for r in records if not validator.is_valid(r)]
    mapper = Mapper()
    payloads = [p for p in (_map(mapper, r) for r in valid) if p is not None]
    n = len(records)
    stages = {
        "parse (bare ijson.items)": best(parse),
        "sha256 of the input": best(sha256),
        "schema verdict (jsonschema-rs)": best(lambda: [validator.is_valid(r) for r in records]),
        "errors of rejected records": best(lambda: [validator.errors(r) for r in invalid]),
        "mapping": best(lambda: [_map(mapper, r) for r in valid]),
        "payload verdict": best(lambda: [payload_validator.is_valid(p) for p in payloads]),
        "payload JSON": best(lambda: [dumps_line(p) for p in payloads]),
        "rejects JSON (whole record)": best(
            lambda: [dumps_line({"record": r}, sort_keys=False) for r in invalid]
        ),
    }
    floor = stages["parse (bare ijson.items)"]
    size = path.stat().st_size
    print(f"{path.name}: {n} records, {size / n / 1e3:.0f} kB average, {len(invalid)} rejected")
    print(f"{'stage':<32} {'us/record':>10} {'vs parse':>9}")
    for name, seconds in stages.items():
        print(f"{name:<32} {seconds / n * 1e6:10.1f} {seconds / floor:9.0%}")
    extra = sum(stages.values()) - floor
    print(f"{'all but parsing':<32} {extra / n * 1e6:10.1f} {extra / floor:9.0%}")
    print(f"ceiling for convert vs bare parse: {floor / (floor + extra):.0%}")
    print("\nin the streaming loop (caches cold after each parse), stages added one at a time:")
    staged(path, validator, payload_validator, mapper, n)


def staged(
    path: Path, validator: RecordValidator, payload_validator: RecordValidator, mapper: Mapper,
    n: int,
) -> None:  # fmt: skip
    """The same stages inside one parsing loop, each round adding one: what they cost where
    convert runs them, right after the parser has filled the caches with a record."""
    backend = ijson.get_backend("yajl2_c")
    names = ["parse", "+ record verdict", "+ mapping", "+ payload verdict", "+ payload JSON"]

    def run(upto: int) -> None:
        with open(path, "rb") as handle:
            for record in backend.items(handle, "item", use_float=True, buf_size=1 << 16):
                if upto >= 1 and not validator.is_valid(record):
                    continue
                if upto >= 2:
                    payload = _map(mapper, record)
                    if payload is None:
                        continue
                    if upto >= 3:
                        payload_validator.is_valid(payload)
                    if upto >= 4:
                        dumps_line(payload)  # type: ignore[arg-type]

    times = {i: best(lambda i=i: run(i), repeat=2) for i in range(len(names))}
    for i, name in enumerate(names):
        added = (times[i] - times[i - 1]) / n * 1e6 if i else times[0] / n * 1e6
        print(f"{name:<32} {added:10.1f} us/record   loop at {times[0] / times[i]:.0%} of parse")


def _map(mapper: Mapper, record: object) -> object:
    try:
        return mapper.map(record)  # type: ignore[arg-type]
    except Skip:
        return None


if __name__ == "__main__":
    main()
