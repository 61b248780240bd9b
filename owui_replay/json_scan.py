"""Byte-level checks the C parser does not make, and exact offsets for the errors it reports.

ijson (yajl) neither limits nesting (its memory grows with the square of the depth: 50,000
nested brackets take gigabytes) nor says where it stopped, and it turns a lone high surrogate
escape into '?' while it refuses a lone low one. A string-aware scan of every byte costs more
than the parse itself in Python, so:

- Depth: a record cannot nest deeper than the number of '[' and '{' bytes it holds. Counting
  them (bytes.count, C speed) since the last record boundary is a sound bound; only when it
  passes the limit are the bytes since that boundary scanned exactly (a few percent of real
  records, which hold up to several hundred brackets each).
- Surrogates: '\\ud8'..'\\udf' is searched for in each chunk (cheap) and checked when found.
- Offsets: when the parser fails, the last chunk is lexed once to find the first bad byte.

The exact scans start in the middle of the stream, where it is not known whether a string is
open. Both possibilities are followed; the one whose text outside strings has letters JSON
never has there (anything but true, false, null and exponents) is ruled out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

DEPTH_LIMIT = 512  # levels of nesting inside one record; real ones have a dozen or so

STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
STRING_TAIL = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.S)
OUTSIDE_OK = b" \t\r\n[]{},:0123456789+-.eEtrufalsn"
_ALL = bytes(range(256))
NOT_SKELETON = _ALL.translate(None, b'[]{}"')
OPENS = frozenset(b"[{")
NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
SURROGATE_START = re.compile(rb"\\u[dD][89a-fA-F]")
ESCAPES = re.compile(rb"\\.", re.S)  # a backslash and the byte it escapes: string content
INT64 = (-(2**63), 2**63 - 1)


class ScanError(Exception):
    """Found by a scan: what is wrong (words) and the absolute offset of the first bad byte."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


@dataclass
class _Hypothesis:
    """Following the stream from a point where a string may or may not be open."""

    in_string: bool
    escape: bool = False  # the last byte was a backslash that escapes the next one
    valid: bool = True
    rise: int = 0  # nesting relative to the start
    highest: int = 0
    lowest: int = 0
    highest_rise: int = 0  # max over t of rise(t) - min over s<=t of rise(s)

    def outside(self, data: bytes) -> list[tuple[int, bytes]]:
        """The (offset, bytes) runs of DATA that lie outside strings; updates the state."""
        runs: list[tuple[int, bytes]] = []
        position = 0
        if self.in_string:
            start = 1 if self.escape else 0
            match = STRING_TAIL.match(data, start) if start <= len(data) else None
            if match is None:
                self._end_inside(data)
                return runs
            position, self.in_string, self.escape = match.end(), False, False
        while position < len(data):
            quote = data.find(b'"', position)
            if quote < 0:
                runs.append((position, data[position:]))
                break
            runs.append((position, data[position:quote]))
            match = STRINGS.match(data, quote)
            if match is None:  # a string that goes on in the next chunk
                self.in_string = True
                self._end_inside(data)
                break
            position = match.end()
        return runs

    def _end_inside(self, data: bytes) -> None:
        trailing = len(data) - len(data.rstrip(b"\\"))
        if trailing == len(data) and self.escape:
            trailing -= 1  # the first of them was escaped by the previous chunk
        self.escape = trailing % 2 == 1

    def feed_brackets(self, data: bytes, ceiling: int | None = None) -> None:
        """Follow the nesting through DATA with bytes operations only (C speed): escaped
        backslashes and quotes are string content, every other byte but []{}" is dropped,
        and splitting on the quotes leaves what is outside strings."""
        body = data[1:] if self.escape and data else data
        trailing = len(body) - len(body.rstrip(b"\\"))
        skeleton = ESCAPES.sub(b"", body).translate(None, NOT_SKELETON)
        parts = skeleton.split(b'"')
        outside = b"".join(parts[1::2] if self.in_string else parts[0::2])
        if len(parts) % 2 == 0:
            self.in_string = not self.in_string
        self.escape = self.in_string and trailing % 2 == 1
        self.count(outside, ceiling)

    def count(self, brackets: bytes, ceiling: int | None = None) -> None:
        """Follow the nesting through BRACKETS. With CEILING (the child's absolute limit),
        pieces that cannot reach it are summed with bytes.count instead of walked."""
        if ceiling is not None:
            for start in range(0, len(brackets), 256):
                piece = brackets[start : start + 256]
                opens = piece.count(b"[") + piece.count(b"{")
                if self.rise + opens <= ceiling:  # cannot pass it: only the sum matters
                    self.rise += 2 * opens - len(piece)
                else:
                    self.count(piece)
            return
        for byte in brackets:
            self.rise += 1 if byte in OPENS else -1
            if self.rise > self.highest:
                self.highest = self.rise
            if self.rise < self.lowest:
                self.lowest = self.rise
            elif self.rise - self.lowest > self.highest_rise:
                self.highest_rise = self.rise - self.lowest

    def check_text(self, data: bytes) -> None:
        """Rule this possibility out when DATA's text outside strings is not JSON-like."""
        probe = _copy(self)
        for _, run in probe.outside(data):
            if run.translate(None, OUTSIDE_OK):
                self.valid = False
                return


class DepthGuard:
    """Raises ScanError once a record nests deeper than DEPTH_LIMIT."""

    def __init__(self, limit: int = DEPTH_LIMIT) -> None:
        self.limit = limit
        self._since = 0  # '[' and '{' bytes read since the last record boundary
        self._chunks: list[tuple[int, bytes]] = []  # what was read since then
        self._last_opens = 0
        self._exact: list[_Hypothesis] | None = None

    def record_boundary(self) -> None:
        """A record just ended in the last chunk read: the next starts there, or later."""
        if len(self._chunks) > 1 or self._exact is not None:
            self._chunks = self._chunks[-1:]
            self._exact = None
        self._since = self._last_opens

    def feed(self, offset: int, data: bytes) -> None:
        self._chunks.append((offset, data))
        self._last_opens = len(data) - len(data.translate(None, b"[{"))
        self._since += self._last_opens
        if self._since <= self.limit:
            return
        if self._exact is None:
            self._exact = [_Hypothesis(False), _Hypothesis(True)]
            pending = self._chunks
        else:
            pending = self._chunks[-1:]
        for chunk_offset, chunk in pending:
            before = [_copy(h) for h in self._exact]
            for hypothesis in self._exact:
                hypothesis.feed_brackets(chunk)
            for index, hypothesis in enumerate(self._exact):
                if hypothesis.valid and hypothesis.highest_rise > self.limit:
                    before[index].check_text(chunk)  # the slow look, from the chunk's start
                    hypothesis.valid = before[index].valid
                    if hypothesis.valid:
                        raise ScanError(
                            f"nested deeper than {self.limit} levels inside one record "
                            "(memory would grow with the square of the depth)",
                            chunk_offset + _where_too_deep(before[index], chunk, self.limit),
                        )


def _copy(h: _Hypothesis) -> _Hypothesis:
    return _Hypothesis(h.in_string, h.escape, h.valid, h.rise, h.highest, h.lowest, h.highest_rise)


def _where_too_deep(state: _Hypothesis, chunk: bytes, limit: int) -> int:
    """The offset in CHUNK of the bracket that first went past the limit (the slow path)."""
    probe = _copy(state)
    for start, run in probe.outside(chunk):
        for i, byte in enumerate(run):
            if byte in b"[{]}":
                state.rise += 1 if byte in OPENS else -1
                state.lowest = min(state.lowest, state.rise)
                if state.rise - state.lowest > limit:
                    return start + i
    return len(chunk) - 1


def lone_surrogate(data: bytes, base: int, before: bytes = b"") -> ScanError | None:
    """A \\uD800-\\uDFFF escape without its other half. Both halves are refused alike: the
    parser would turn a lone high one into '?' and fail on a lone low one."""
    if SURROGATE_START.search(data) is None:  # a regex: faster than `in` where \\ abounds
        return None
    text = before + data
    shift = base - len(before)
    for match in SURROGATE_ESCAPE.finditer(text):
        start = match.start()
        if (start - len(text[:start].rstrip(b"\\"))) % 2 == 1:
            continue  # the backslash is itself escaped: literal text, not an escape
        value = int(match.group()[2:], 16)
        if value < 0xDC00:  # a high half must be followed by a low half
            after = text[match.end() : match.end() + 6]
            if len(after) < 6 and match.end() + 6 > len(text):
                continue  # decided with the next chunk
            if SURROGATE_ESCAPE.fullmatch(after) and int(after[2:], 16) >= 0xDC00:
                continue
        else:  # a low half must follow a high half
            previous = text[max(0, start - 6) : start]
            if SURROGATE_ESCAPE.fullmatch(previous) and int(previous[2:], 16) < 0xDC00:
                continue
        half = "high" if value < 0xDC00 else "low"
        return ScanError(
            f"the escape \\u{value:04x} is the {half} half of a UTF-16 surrogate pair without "
            "its other half: not text (lone surrogates are refused)",
            shift + start,
        )
    return None


def first_bad_number(chunk: bytes, base: int, kind: str) -> int | None:
    """Offset of the first number the parser cannot hold: an integer outside 64 bits
    (kind 'integer') or a float that overflows (kind 'float')."""
    for hypothesis in _plausible(chunk):
        for start, run in hypothesis.outside(chunk):
            for match in NUMBER.finditer(run):
                token = match.group()
                if kind == "integer" and not re.search(rb"[.eE]", token):
                    if not INT64[0] <= int(token) <= INT64[1]:
                        return base + start + match.start()
                elif (
                    kind == "float"
                    and re.search(rb"[.eE]", token)
                    and float(token) in (float("inf"), float("-inf"))
                ):
                    return base + start + match.start()
    return None


def _plausible(chunk: bytes) -> list[_Hypothesis]:
    """The string states at CHUNK's start that leave only JSON-like text outside strings."""
    found = []
    for in_string in (False, True):
        probe = _Hypothesis(in_string)
        probe.check_text(chunk)
        if probe.valid:
            found.append(_Hypothesis(in_string))
    return found or [_Hypothesis(False), _Hypothesis(True)]


def utf16_offset(head: bytes) -> int | None:
    """Where UTF-16 (or UTF-32) text shows itself at the start: its first NUL byte."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return 0
    zero = head[:4].find(b"\x00")
    return zero if zero >= 0 else None


def _where_deeper(state: _Hypothesis, chunk: bytes, limit: int) -> int:
    """The offset in CHUNK of the bracket that takes the depth past LIMIT (the slow path)."""
    probe = _copy(state)
    rise = state.rise
    for start, run in probe.outside(chunk):
        for i, byte in enumerate(run):
            if byte in b"[{]}":
                rise += 1 if byte in OPENS else -1
                if rise > limit:
                    return start + i
    return len(chunk) - 1


def vet_stream(blocks: Iterator[bytes], report: Callable[[str], None]) -> None:
    """Check a whole JSON text from its first byte (so no string is open there): nesting
    and lone surrogates. Reports 'ok OFFSET' after each block, 'problem OFFSET REASON' once."""
    state = _Hypothesis(False)
    offset, tail = 0, b""
    limit = DEPTH_LIMIT + 2  # the top-level array, and a page's {"items": [...]} around it
    for text in blocks:
        before = _copy(state)
        state.feed_brackets(text, limit)
        if state.highest > limit:
            at = offset + _where_deeper(before, text, limit)
            report(f"problem {at} nested deeper than {DEPTH_LIMIT} levels inside one record "
                   "(memory would grow with the square of the depth)")  # fmt: skip
            return
        found = lone_surrogate(text, offset, tail)
        if found is not None:
            report(f"problem {found.offset} {found.reason}")
            return
        offset += len(text)
        tail = text[-12:]
        report(f"ok {offset}")


def child_main(path: str) -> None:
    """The hashing child: sha256 of the file as stored, and vet_stream over its text (gunzipped
    when it is gzip), both on the second core while the parent parses."""
    import hashlib
    import sys
    import zlib

    digest = hashlib.sha256()
    size = 0

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def blocks() -> Iterator[bytes]:
        nonlocal size
        inflate = None
        while block := handle.read(1 << 20):
            digest.update(block)
            if size == 0 and block.startswith(b"\x1f\x8b"):
                inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            size += len(block)
            yield block if inflate is None else inflate.decompress(block)

    with open(path, "rb") as handle:
        feed = blocks()
        try:
            vet_stream(feed, say)
        except Exception:  # damaged input: the parent reports it in its own words
            say(f"ok {2**62}")
        for _ in feed:  # vetting stopped early: hash the rest
            pass
    say(f"sha256 {digest.hexdigest()} {size}")
