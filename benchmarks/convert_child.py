"""One measured job in a fresh interpreter; prints a JSON line with seconds and peak RSS.

Run by bench_convert.py; each job gets its own process so peak RSS is its own.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def bare(path: str, out: str) -> int:
    """The floor: ijson's C backend building every record, nothing else."""
    import ijson

    count = 0
    with open(path, "rb") as handle:
        for _ in ijson.get_backend("yajl2_c").items(handle, "item", use_float=True):
            count += 1
    return count


def bare_hashed(path: str, out: str) -> int:
    """The floor plus the input's sha256 computed in line: what hashing costs on one core."""
    import hashlib

    import ijson

    class Hashing:
        def __init__(self, raw: Any) -> None:
            self.raw, self.sha = raw, hashlib.sha256()

        def read(self, n: int) -> bytes:
            data = self.raw.read(n)
            self.sha.update(data)
            return data

    count = 0
    with open(path, "rb") as handle:
        for _ in ijson.get_backend("yajl2_c").items(Hashing(handle), "item", use_float=True):
            count += 1
    return count


def convert(path: str, out: str) -> int:
    from owui_replay.converting import convert as run
    from owui_replay.mapping import MappingOptions

    return run(path, out, MappingOptions(), progress=False).records


def convert_dry(path: str, out: str) -> int:
    from owui_replay.converting import convert as run
    from owui_replay.mapping import MappingOptions

    return run(path, None, MappingOptions(), progress=False).records


def cookbook(path: str, out: str) -> int:
    """The cookbook's approach: json.load the whole export, then map each record."""
    with open(path, encoding="utf-8") as handle:
        feedbacks = json.load(handle)
    mapped = [m for item in feedbacks if (m := _cookbook_map_item(item))]
    with open(out, "w", encoding="utf-8") as handle:
        for payload in mapped:
            handle.write(json.dumps(payload) + "\n")
    return len(feedbacks)


def _cookbook_map_item(feedback: dict[str, Any]) -> dict[str, Any] | None:
    """map_item from the Portkey cookbook, as published (seeds/000)."""
    data = feedback.get("data") or {}
    meta = feedback.get("meta") or {}
    try:
        rating = int(data.get("rating"))
    except (TypeError, ValueError):
        return None
    if rating not in (1, -1):
        return None
    chat_id = meta.get("chat_id") or "unknown_chat"
    message_id = meta.get("message_id") or feedback.get("id") or "unknown_msg"
    metadata: dict[str, Any] = {**data, **meta}
    snapshot_chat = (feedback.get("snapshot") or {}).get("chat")
    if isinstance(snapshot_chat, dict) and snapshot_chat.get("id"):
        metadata["snapshot_chat_id"] = snapshot_chat["id"]
    for key in ("message_index", "user_id", "version"):
        if key in feedback and feedback[key] is not None:
            metadata[key] = feedback[key]
    return {
        "trace_id": f"{chat_id}:{message_id}",
        "value": rating,
        "weight": 1,
        "metadata": metadata,
    }


def peak_rss_kib() -> int:
    """This process's own peak resident set (VmHWM). Not ru_maxrss: Linux carries the
    parent's peak over a fork and exec into it, so a child of a big benchmark would report
    its parent's memory."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


JOBS = {f.__name__: f for f in (bare, bare_hashed, convert, convert_dry, cookbook)}

if __name__ == "__main__":
    job, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import ijson  # noqa: F401 - imports are not throughput: load them before the clock starts

    import owui_replay.converting  # noqa: F401

    start = time.perf_counter()
    records = JOBS[job](path, out)
    seconds = time.perf_counter() - start
    peak_kib = peak_rss_kib()
    print(
        json.dumps({"job": job, "seconds": seconds, "records": records, "peak_rss_kib": peak_kib})
    )
