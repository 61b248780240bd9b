"""Stream feedback records out of an Open WebUI export without holding it in memory.

Accepts the export array (GET .../feedbacks/all/export) and {"items": [...]} pages (the
list and user endpoints), plain or gzip-compressed, from a path or stdin. The raw bytes are
hashed and counted as they stream past, so the manifest can name exactly what was read.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import ijson

import owui_replay.json_scan as json_scan
from owui_replay.errors import InputError
from owui_replay.json_scan import ScanError, Vetter, utf16_offset
from owui_replay.words import plural

CHUNK = 64 * 1024
# The sizes of the reads handed to the parser, in turn; empty: what the parser asks for (CHUNK).
# Tests set tiny ones (and json_scan.BLOCK_SIZES for the checking child) so that block
# boundaries fall everywhere.
READ_SIZES: tuple[int, ...] = ()
_CONTEXT_KEEP = 64
UTF8_BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"
ALLOW_SLOW_ENV = "OWUI_REPLAY_ALLOW_SLOW_PARSER"


def fast_backend() -> Any:
    """ijson's C backend; the pure-Python one is ~18x slower, so refuse it unless told."""
    try:
        return ijson.get_backend("yajl2_c")
    except ImportError as exc:
        if os.environ.get(ALLOW_SLOW_ENV) == "1":
            return ijson.get_backend("python")
        raise InputError(
            "ijson's C backend (yajl2_c) is not available, and the pure-Python parser is ~18x "
            f"slower: reinstall ijson from a binary wheel, or set {ALLOW_SLOW_ENV}=1 to accept it"
        ) from exc


_CHILD = (  # `python -I -S -c _CHILD FILE JSON_SCAN_PY SIZES`: no site, and no package import
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('json_scan', sys.argv[2])\n"
    "scan = sys.modules['json_scan'] = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(scan)\n"
    "scan.child_main(sys.argv[1], sys.argv[3])\n"
)


class InputDigest:
    """sha256 of the input as stored, for the manifest, and the byte-level checks the parser
    does not make (nesting depth, lone surrogates: see json_scan).

    For a regular file a child process does both on the second core while this one parses:
    the hash costs ~20% of parse time in line, the checks more, and a thread cannot help
    because the parser holds the GIL. The child reports how far it has vetted the text, and
    the parser is never handed a byte beyond that; it reports how many bytes it hashed, and a
    file that changed between the two reads is refused. Pipes (stdin) are hashed in line and
    checked here, by the same json_scan.Vetter.
    """

    def __init__(self, path: str | None) -> None:
        self._inline = hashlib.sha256() if path is None else None
        self._child: subprocess.Popen[str] | None = None
        if path is not None:
            sizes = ",".join(map(str, json_scan.BLOCK_SIZES))
            self._child = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _CHILD, path, json_scan.__file__, sizes],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        self._hex: str | None = None
        self._vetted = 0  # the child has checked the text up to this offset
        self._problem: ScanError | None = None
        self._final: list[str] | None = None  # ["sha256", hex, size]

    @property
    def inline(self) -> bool:
        """True when this process hashes the input itself (stdin): no child reads it."""
        return self._inline is not None

    def update(self, data: bytes) -> None:
        if self._inline is not None:
            self._inline.update(data)

    def vet(self, upto: int) -> None:
        """Wait until the child has checked the text up to offset UPTO; raise what it found."""
        while self._vetted < upto and self._problem is None and self._final is None:
            if not self._next_line():
                break
        if self._problem is not None and self._problem.offset < upto:
            raise self._problem

    def _next_line(self) -> bool:
        assert self._child is not None and self._child.stdout is not None
        line = self._child.stdout.readline()
        if not line:
            return False
        kind, _, rest = line.rstrip("\n").partition(" ")
        if kind == "ok":
            self._vetted = int(rest)
        elif kind == "problem":
            offset, _, reason = rest.partition(" ")
            self._problem = ScanError(reason, int(offset))
        elif kind == "sha256":
            self._final = rest.split()
        return True

    def hexdigest(self, name: str, bytes_read: int) -> str:
        if self._hex is not None:
            return self._hex
        if self._inline is not None:
            self._hex = self._inline.hexdigest()
            return self._hex
        assert self._child is not None
        while self._final is None and self._next_line():
            pass
        _, err = self._child.communicate()
        if self._child.returncode != 0 or self._final is None or len(self._final) != 2:
            raise InputError(f"{name}: could not hash the input: {err.strip()[-200:]}")
        if self._problem is not None:  # found past the point where the parser stopped
            raise InputError(
                f"{name}: malformed JSON at byte offset {self._problem.offset}: "
                f"{self._problem.reason}"
            )
        if int(self._final[1]) != bytes_read:
            raise InputError(
                f"{name}: the file changed while it was being read ({bytes_read} bytes parsed, "
                f"{self._final[1]} hashed); convert it again once it is complete"
            )
        self._hex = self._final[0]
        return self._hex

    def cancel(self) -> None:
        """Stop the child if it still runs, reap it and close its pipes (a child that has
        exited on its own still holds them until communicate)."""
        child = self._child
        if child is None or child.stdout is None or child.stdout.closed:
            return  # stdin, or collected by hexdigest or an earlier cancel
        if child.poll() is None:
            child.kill()
        child.communicate()


class RawCounter:
    """Counts (and, for pipes, hashes) the bytes of the file as stored."""

    def __init__(self, raw: IO[bytes], digest: InputDigest) -> None:
        self._raw = raw
        self.digest = digest
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            self.digest.update(data)
            self.bytes_read += len(data)
        return data

    def drain(self) -> None:
        """Read to the end so the hash covers the whole file even after trailing whitespace."""
        while self.read(1 << 20):
            pass


class TextStream:
    """The decoded JSON byte stream handed to ijson: strips a UTF-8 BOM, tracks offsets.

    Keeps the last read (the parser's buffer), 64 bytes before it, and where the run of token
    bytes (a number, a word) that ends at its start begins, so that a parse error is placed at
    an exact byte offset whatever the reads' sizes.
    """

    def __init__(self, source: Any, initial: bytes) -> None:
        self._source = source
        self._pending = initial
        self.offset = 0  # bytes of the JSON text handed out so far
        self.bom = initial.startswith(UTF8_BOM)
        if self.bom:
            self._pending = initial[len(UTF8_BOM) :]
            self.offset = len(UTF8_BOM)
        self.last_chunk = b""  # the last read, after up to 64 bytes of what came before it
        self.last_chunk_start = self.offset
        self.buffer_start = self.offset  # where the last read begins
        self.run_before = self.offset  # where the run of token bytes ending there begins
        self._run_start = self.offset  # the same for the run ending at self.offset
        self.vetter = Vetter(self.offset)  # used when no child vets the text (stdin)
        self.vet: Callable[[int], None] | None = None
        self._error: ScanError | None = None
        self._turn = 0
        self._ahead = b""  # read past the last read, to name a bad token

    def read(self, size: int = -1) -> bytes:
        if self._error is not None:  # the parser has had every byte before it: now stop
            raise self._error
        if size == 0:
            return b""
        size = size if size > 0 else CHUNK
        if READ_SIZES:
            size = min(size, READ_SIZES[self._turn % len(READ_SIZES)])
            self._turn += 1
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
        else:
            data = self._source.read(size)
        if data:
            problem = self._check(self.offset, data)
            if problem is not None:
                # hand over what comes before the bad byte first, so that every record that
                # ends before it is counted, and stop at the next read
                data = data[: max(0, problem.offset - self.offset)]
                self._error = problem
                if not data:
                    raise problem
            self._keep(data)
        return data

    def _keep(self, data: bytes) -> None:
        """Remember DATA (the parser's next buffer) and what is needed to place an error."""
        # keep a little of the previous read: yajl's error context may straddle the two
        tail = self.last_chunk[-_CONTEXT_KEEP:]
        self.last_chunk_start = self.offset - len(tail)
        self.last_chunk = tail + data
        self.buffer_start, self.run_before = self.offset, self._run_start
        kept = len(data.rstrip(_TOKEN_CHARS))
        if kept:
            self._run_start = self.offset + kept
        self.offset += len(data)

    def _check(self, start: int, data: bytes) -> ScanError | None:
        """Nesting and lone surrogates in DATA: vetted by the child, or here for stdin."""
        try:
            if self.vet is not None:  # the child checks, on the other core
                self.vet(start + len(data))
                return None
        except ScanError as exc:
            return exc
        return self.vetter.feed(data)

    @property
    def buffer(self) -> bytes:
        """The last read: the buffer the parser was given last."""
        return self.last_chunk[self.buffer_start - self.last_chunk_start :]

    def bytes_at(self, offset: int, count: int) -> bytes:
        """Up to COUNT bytes of the text from OFFSET (at most 64 bytes before the last read),
        reading ahead of the parser if needed: only used once the parse has failed."""
        if offset < self.last_chunk_start:
            return b""
        known = self.last_chunk + self._ahead
        while len(known) < offset - self.last_chunk_start + count:
            more, self._pending = self._pending or self._source.read(count), b""
            if not more:
                break
            self._ahead += more
            known += more
        return known[offset - self.last_chunk_start :][:count]

    def peek_first_byte(self) -> bytes:
        """The first non-whitespace byte of the JSON text ('' for an empty input)."""
        while True:
            stripped = self._pending.lstrip(b" \t\r\n")
            if stripped:
                return stripped[:1]
            more = self._source.read(CHUNK)
            if not more:
                return b""
            self._pending += more


@dataclass
class ExportStream:
    """An opened export: iterate records(); the counters fill in as it is read."""

    name: str
    raw: RawCounter
    text: TextStream
    size: int | None
    shape: str  # "array" or "page"
    compressed: bool
    page_total: int | None = None
    records_seen: int = 0
    _closers: list[Any] = field(default_factory=list)

    @property
    def bom(self) -> bool:
        return self.text.bom

    def records(self) -> Iterator[Any]:
        """Yield each record in file order; raise InputError naming where the file broke."""
        backend = fast_backend()
        try:
            if self.shape == "array":
                items = backend.items(self.text, "item", use_float=True, buf_size=CHUNK)
            else:
                items = backend.items(self._page_events(backend), "items.item", use_float=True)
            for record in items:
                self.records_seen += 1
                yield record
        except ScanError as exc:
            raise InputError(self._where(exc.reason, exc.offset)) from None
        except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError) as exc:
            raise InputError(self._describe_break(exc)) from None
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise InputError(
                f"{self.name}: corrupt gzip data (the compressed stream is damaged) at "
                f"uncompressed byte offset {self.text.offset} in record index "
                f"{self.records_seen} ({plural(self.records_seen, 'complete record')} before "
                f"it): {exc}"
            ) from None
        except EOFError:
            raise InputError(
                f"{self.name}: gzip stream ends early (truncated file) after "
                f"{self.records_seen} complete records"
            ) from None
        if self.shape == "page" and not self._saw_items:
            raise InputError(
                f"{self.name}: top-level object has no 'items' array; expected the export array "
                'or an {"items": [...]} page'
            )
        self.raw.drain()

    _saw_items: bool = False

    def _page_events(self, backend: Any) -> Iterator[tuple[str, str, Any]]:
        for prefix, event, value in backend.parse(self.text, buf_size=CHUNK, use_float=True):
            if prefix == "items" and event == "start_array":
                self._saw_items = True
            elif prefix == "total" and event == "number":
                self.page_total = int(value)
            yield prefix, event, value

    def _describe_break(self, exc: Exception) -> str:
        if isinstance(exc, UnicodeDecodeError):
            reason, offset = _invalid_utf8(self.text)
        else:
            reason, offset = locate_parse_error(str(exc), self.text)
        return self._where(reason, offset)

    def _where(self, reason: str, offset: int) -> str:
        where = "uncompressed byte offset" if self.compressed else "byte offset"
        return (
            f"{self.name}: malformed JSON at {where} {offset} in record index "
            f"{self.records_seen} ({plural(self.records_seen, 'complete record')} before it): "
            f"{reason}"
        )

    def sha256(self) -> str:
        """The input's sha256, once every record has been read."""
        return self.raw.digest.hexdigest(self.name, self.raw.bytes_read)

    def close(self) -> None:
        """Release the file and stop the hashing child (safe to call more than once)."""
        self.raw.digest.cancel()  # a no-op once the digest was collected
        for closer in reversed(self._closers):
            closer.close()

    def __enter__(self) -> ExportStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_CARET_COLUMN = 40  # yajl pads its context line so the error sits under column 40
_TOKEN_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_TOKEN_CHARS = bytes(sorted(_TOKEN_BYTES))
_CONTINUATION = bytes(range(0x80, 0xC0))


def locate_parse_error(message: str, text: TextStream) -> tuple[str, int]:
    """Turn yajl's verbose message into (one-line reason, offset of the first bad byte)."""
    lines = _message_bytes(message).split(b"\n")
    reason = lines[0].decode("utf-8", "replace").strip() or "malformed JSON"
    if "premature EOF" in reason:
        return "the file ends in the middle of a record (truncated?)", text.offset
    if "invalid bytes in UTF8" in reason:
        return _invalid_utf8(text)
    at = _caret_offset(text.buffer, lines[1] if len(lines) > 1 else b"")
    caret = text.offset if at is None else text.buffer_start + at
    offset = _token_start(text, caret, "overflow" in reason)
    if "integer overflow" in reason:
        return "integer too large (more than 64 bits)", offset
    if "floating point) overflow" in reason:
        return "number too large for a float (e.g. 1e400)", offset
    if text.bytes_at(offset, 9).lstrip(b"-+").startswith((b"NaN", b"Inf")):
        reason = "NaN and Infinity are not JSON numbers"
    elif "trailing garbage" in reason:
        reason = "unexpected data after the end of the top-level value (trailing garbage)"
    return reason, offset


def _message_bytes(message: str) -> bytes:
    """yajl's message as the bytes it wrote (ijson gives a bytes repr when they are not
    UTF-8, e.g. when its context cuts a character)."""
    if message.startswith(("b'", 'b"')):
        text = message[2:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        return text.encode("latin-1", "replace")
    return message.encode("utf-8", "surrogateescape")


def _caret_offset(buffer: bytes, context: bytes) -> int | None:
    """Where yajl stopped in BUFFER, from its context line: 30 bytes either side of that
    point (CR and LF shown as spaces), padded so that the point sits under column 40."""
    flat = buffer.replace(b"\n", b" ").replace(b"\r", b" ")
    for at in range(min(_CARET_COLUMN - 10, len(flat) + 1)):  # near the start: wider padding
        if context == b" " * (_CARET_COLUMN - at) + flat[: at + 30]:
            return at
    shown = context[10:]
    if context[:10] != b" " * 10 or not shown:
        return None
    start = flat.find(shown)
    while start >= 0:
        at = start + 30
        if at <= len(flat) and min(len(flat), at + 30) == start + len(shown):
            return at
        start = flat.find(shown, start + 1)
    return None


def _token_start(text: TextStream, caret: int, number: bool) -> int:
    """The first byte of the token yajl stopped at. Its caret (CARET, absolute) stands one
    byte past the bad byte, which may be inside a token ("tra|iling", "N|aN"); for a number
    too large, on the number's first byte, or at its buffer's start when the number began
    earlier. The token may begin in an earlier read: TEXT knows where its run began."""
    buffer, start = text.buffer, text.buffer_start
    i = caret - start
    if not (number and i < len(buffer) and buffer[i] in _TOKEN_BYTES):
        i -= 1
    if i < 0:  # the last byte before this buffer
        return text.run_before if text.run_before < start else start + i
    if i >= len(buffer) or buffer[i] not in _TOKEN_BYTES:
        return start + i
    while i > 0 and buffer[i - 1] in _TOKEN_BYTES:
        i -= 1
    return text.run_before if i == 0 else start + i


def _invalid_utf8(text: TextStream) -> tuple[str, int]:
    """The first byte of the last chunk that is not UTF-8, in words."""
    chunk = text.last_chunk
    skip = min(3, len(chunk) - len(chunk.lstrip(_CONTINUATION)))  # a character the tail cut
    end = len(chunk)
    while True:
        try:
            chunk[skip:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            if skip + exc.end == end and exc.reason == "unexpected end of data":
                end = skip + exc.start  # a character cut by the chunk's end: not the error
                continue
            bad = chunk[skip + exc.start]
            return (
                f"invalid UTF-8: byte 0x{bad:02X} ({exc.reason}; an overlong or damaged "
                "sequence, or text in another encoding)",
                text.last_chunk_start + skip + exc.start,
            )
        return "invalid UTF-8", text.offset


def open_export(path: str) -> ExportStream:
    """Open PATH ('-' for stdin; gzip detected by its magic bytes) and detect its shape."""
    closers: list[Any] = []
    if path == "-":
        raw_file: IO[bytes] = sys.stdin.buffer
        name, size, regular = "<stdin>", None, False
    else:
        try:
            raw_file = open(path, "rb")  # noqa: SIM115 - closed by ExportStream.close
        except OSError as exc:
            raise InputError(f"{path}: cannot open: {exc.strerror}") from None
        closers.append(raw_file)
        name = path
        try:
            info = os.fstat(raw_file.fileno())
            size = info.st_size
            regular = stat.S_ISREG(info.st_mode)
        except OSError:
            size, regular = None, False
    digest: InputDigest | None = None
    try:
        digest = InputDigest(path if path != "-" and regular else None)
        return _sniff(name, RawCounter(raw_file, digest), size, closers)
    except BaseException:  # every path releases the child hasher and the file handles
        if digest is not None:
            digest.cancel()
        _close_all(closers)
        raise


def _sniff(name: str, raw: RawCounter, size: int | None, closers: list[Any]) -> ExportStream:
    """Gzip or not, array or page: read just enough of the start to tell."""
    head = raw.read(CHUNK)
    while 0 < len(head) < 4 and (more := raw.read(CHUNK)):  # a pipe may give a byte at a time
        head += more
    compressed = head.startswith(GZIP_MAGIC)
    source: Any = raw
    if compressed:
        gz = gzip.GzipFile(fileobj=_Prefixed(head, raw), mode="rb")  # type: ignore[call-overload]
        closers.append(gz)
        source = gz
        try:
            head = gz.read(CHUNK)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(
                f"{name}: corrupt gzip data (the compressed stream is damaged) at uncompressed "
                f"byte offset 0 in record index 0 (0 complete records before it): {exc}"
            ) from None
    utf16 = utf16_offset(head)
    if utf16 is not None:
        raise InputError(
            f"{name}: byte offset {utf16}: UTF-16 text, not UTF-8 (a NUL byte or a UTF-16 "
            "byte-order mark); save the export as UTF-8"
        )
    text = TextStream(source, head)
    if not raw.digest.inline:
        text.vet = raw.digest.vet
    first = text.peek_first_byte()
    if first == b"":
        raise InputError(f"{name}: the file is empty (no JSON value), expected a feedback export")
    if first == b"[":
        shape = "array"
    elif first == b"{":
        shape = "page"
    else:
        shown = first.decode("utf-8", "replace")
        raise InputError(
            f"{name}: byte offset {text.offset}: top-level JSON value starts with {shown!r}; "
            'expected an array of feedback records or an {"items": [...]} page'
        )
    return ExportStream(name, raw, text, size, shape, compressed, _closers=closers)


class _Prefixed:
    """Replays bytes already read (to sniff the format) before the rest of the stream."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            data: bytes = self._rest.read(size)
            return data
        if 0 <= size < len(self._head):
            data, self._head = self._head[:size], self._head[size:]
            return data
        data, self._head = self._head, b""
        more: bytes = self._rest.read(-1 if size < 0 else size - len(data))
        return data + more


def _close_all(closers: list[Any]) -> None:
    for closer in reversed(closers):
        closer.close()
