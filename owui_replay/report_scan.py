"""report's one pass over a big JSONL, split by byte ranges across the CPU cores.

Parsing each line (json.loads) and counting it cost ~90% of a report, and both are per line,
so a file of N bytes is cut at line ends into one range per core: each worker process checks
its lines exactly as verify does (the same canonical-line and parse helpers, the same
validator) and counts them in its own `Leaving`; the parts are merged in file order, which
gives the counts and the first rows a single pass gives. Meanwhile this process hashes the
file and counts its lines. The file's identity, size and change time (ctime, which any write
or touch sets to now) are the same before and after, or the single pass is made: the page
counts the bytes whose sha256 the checks compare. (Hashing each range as well, to prove it,
hashed every byte twice more: ~2.4 µs of CPU a line.)

Anything unusual in a part (a bad line, a worker that died) returns None: the caller then
makes the ordinary single pass, whose error names the line exactly as verify does.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from owui_replay.errors import InputError
from owui_replay.feedback_file import (  # verify's own line checks, not a copy of them
    FeedbackFile,
    _check_canonical,
    _parse_line,
)
from owui_replay.report_data import Leaving
from owui_replay.schemas import PORTKEY_SCHEMA, RecordValidator

MIN_PARALLEL_BYTES = 64 * 1024 * 1024  # below this, starting workers costs more than it saves
MAX_WORKERS = 4  # each worker holds a few tens of MB; more cores than this rarely help
_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Part:
    """What one worker found in bytes [start, end): its lines, counted."""

    leaving: Leaving
    lines: int


def workers_available() -> int:
    """The cores this process may run on, at most MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def split(path: Path, parts: int) -> list[tuple[int, int]]:
    """Byte ranges [start, end) that cover PATH, each ending just after a newline (the last at
    the end of the file); fewer than PARTS when the lines are few and long."""
    size = path.stat().st_size
    bounds = [0]
    with open(path, "rb") as handle:
        for i in range(1, parts):
            handle.seek(max(size * i // parts, bounds[-1]))
            handle.readline()  # to the end of the line the cut falls in
            cut = handle.tell()
            if bounds[-1] < cut < size:
                bounds.append(cut)
    bounds.append(size)
    return list(itertools.pairwise(bounds))


def scan_parallel(
    path: Path, up_value: int, down_value: int, rows: int, workers: int
) -> tuple[FeedbackFile, Leaving] | None:
    """Check and count PATH in WORKERS processes: what scan_feedback returns with a `Leaving`
    visiting every line, merged and finished; None when a part is not clean (then make the
    single pass, which says what is wrong and where). A stop signal (KeyboardInterrupt)
    ends the workers at once."""
    before = _identity(path)
    ranges = split(path, workers)
    context = multiprocessing.get_context("spawn")  # fork is unsafe in a threaded process
    started: list[tuple[BaseProcess, Connection]] = []
    try:
        with _ctrl_c_ignored():  # from their first instruction: Ctrl-C is the parent's
            for start, end in ranges:
                receiver, sender = context.Pipe(duplex=False)
                args = (sender, str(path), start, end, up_value, down_value, rows)
                process = context.Process(target=_work, args=args, daemon=True)
                process.start()
                sender.close()
                started.append((process, receiver))
        whole, size, lines = _hash(path)
        parts = [_receive(receiver) for _process, receiver in started]
    finally:
        for worker, receiver in started:
            if worker.is_alive():  # stopped before it sent its part: end it now
                worker.terminate()
            worker.join()
            receiver.close()
    if any(p is None for p in parts) or _identity(path) != before:
        return None  # a bad line, a worker that died, or the file changed while it was read
    merged = Leaving(up_value, down_value, rows)
    for part in parts:
        assert part is not None  # checked above
        merged.absorb(part.leaving)
    if merged.lines != lines or merged.byte_count != size:
        return None
    return FeedbackFile(path, whole, lines, size), merged.finish()


@contextlib.contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """SIGINT ignored while workers start, so they inherit it ignored (a spawned process
    would otherwise print a traceback for a Ctrl-C that comes while it imports); only the
    main thread may change it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _receive(receiver: Connection) -> _Part | None:
    """A worker's part; None when it died before sending one."""
    try:
        part: _Part | None = receiver.recv()
    except (EOFError, OSError):
        return None
    return part


def _work(sender: Connection, *args: Any) -> None:
    """A worker's whole life: its part (None on any error) sent back."""
    try:
        part = _scan_part(*args)
    except Exception:  # the parent's single pass reports what is wrong
        part = None
    with contextlib.suppress(OSError):
        sender.send(part)
    sender.close()


def _identity(path: Path) -> tuple[int, int, int, int, int]:
    """What changes when the file is written, replaced or touched."""
    stat = path.stat()
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def _hash(path: Path) -> tuple[str, int, int]:
    """The file's sha256, its size and its lines, in one read."""
    digest = hashlib.sha256()
    size = lines = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
    return digest.hexdigest(), size, lines


def _scan_part(
    path: str, start: int, end: int, up_value: int, down_value: int, rows: int
) -> _Part | None:
    """In a worker: check and count the lines of bytes [start, end) as scan_feedback does;
    None at the first line that is not a valid, canonical payload."""
    validator = RecordValidator(PORTKEY_SCHEMA)
    leaving = Leaving(up_value, down_value, rows)
    where = Path(path)
    offset = start
    number = 0
    with open(path, "rb") as handle:
        handle.seek(start)
        while offset < end:
            raw = handle.readline()
            if not raw:
                return None
            number += 1
            try:
                _check_canonical(where, number, offset, raw)
                payload = _parse_line(where, number, raw)
            except InputError:
                return None
            if not validator.is_valid(payload):
                return None
            offset += len(raw)
            leaving.visit(number - 1, payload, raw)
    if offset != end:
        return None
    leaving.forget_cache()
    return _Part(leaving, number)
