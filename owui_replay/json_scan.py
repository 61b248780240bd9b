"""Byte-level checks the C parser does not make, exact whatever the blocks the text comes in.

ijson (yajl) neither limits nesting (its memory grows with the square of the depth: 50,000
nested brackets take gigabytes) nor refuses lone surrogates (it turns a lone high escape into
'?' and fails on a lone low one without saying where). Vetter follows the text from its first
byte, block by block, with bytes methods (C speed):

- Depth: escaped backslashes and quotes are dropped, every byte but []{}" is dropped, and
  splitting on the quotes leaves the brackets outside strings. The string and escape state
  at a block's end is carried into the next block.
- Surrogates: '\\ud8'..'\\udf' is searched for in each block (cheap) and checked when found;
  an escape that the block's end cuts, or a high half whose other half is not yet read, is
  carried into the next block (a few bytes) and decided there.
- UTF-8-encoded surrogates (CESU-8, 0xED 0xA0..0xBF), which the parser would pass through.

So the verdict and the offset of the first bad byte depend on the bytes only, never on where
the blocks begin and end (tests feed blocks of a few bytes: see BLOCK_SIZES).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

DEPTH_LIMIT = 512  # levels of nesting inside one record; real ones have a dozen or so
CHILD_BLOCK = 1 << 20  # what the checking child reads at a time
# The sizes of the blocks the child reads, in turn; tests set tiny ones so that block
# boundaries fall everywhere (the child is another process: they travel on its command line).
BLOCK_SIZES: tuple[int, ...] = (CHILD_BLOCK,)

_ALL = bytes(range(256))
NOT_SKELETON = _ALL.translate(None, b'[]{}"')
OPENS = frozenset(b"[{")
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
SURROGATE_START = re.compile(rb"\\u[dD][89a-fA-F]")
# what may still become a surrogate escape when the next block comes: \ \u \uD \uD8 \uD83
SURROGATE_PREFIX = re.compile(rb"\\(?:u(?:[dD](?:[89a-fA-F][0-9a-fA-F]?)?)?)?\Z")
LOW_PREFIX = re.compile(rb"(?:\\(?:u(?:[dD](?:[c-fC-F][0-9a-fA-F]?)?)?)?)?\Z")
# an escaped backslash or quote, read from the left as the parser does (a backslash, a
# backslash and a quote are an escaped backslash and the end of the string)
ESCAPED_PAIR = re.compile(rb'\\[\\"]')
RAW_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")  # U+D800..U+DFFF encoded in UTF-8 (CESU-8)


class ScanError(Exception):
    """Found by a scan: what is wrong (words) and the absolute offset of the first bad byte."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


@dataclass
class _Nesting:
    """The string state and bracket depth of the text read so far."""

    in_string: bool = False
    escape: bool = False  # the last byte was a backslash that escapes the next one
    rise: int = 0  # nesting depth
    highest: int = 0

    def feed_brackets(self, data: bytes, ceiling: int) -> None:
        """Follow the nesting through DATA with bytes operations only (C speed): escaped
        backslashes and quotes are dropped (ESCAPED_PAIR), then every byte but []{}", and
        splitting on the quotes leaves what is outside strings."""
        body = data[1:] if self.escape and data[:1] in (b'"', b"\\") else data
        self.escape = (len(body) - len(body.rstrip(b"\\"))) % 2 == 1
        if b'\\"' in body:  # else no quote here is escaped (most blocks of most exports)
            body = ESCAPED_PAIR.sub(b"", body)
        parts = body.translate(None, NOT_SKELETON).split(b'"')
        outside = b"".join(parts[1::2] if self.in_string else parts[0::2])
        if len(parts) % 2 == 0:
            self.in_string = not self.in_string
        self.count(outside, ceiling)

    def count(self, brackets: bytes, ceiling: int) -> None:
        """Follow the nesting through BRACKETS; pieces that cannot pass CEILING are summed
        with bytes.count instead of walked (HIGHEST is exact only where it passes CEILING)."""
        for start in range(0, len(brackets), 256):
            piece = brackets[start : start + 256]
            opens = piece.count(b"[") + piece.count(b"{")
            if self.rise + opens <= ceiling:  # cannot pass it: only the sum matters
                self.rise += 2 * opens - len(piece)
                continue
            for byte in piece:
                self.rise += 1 if byte in OPENS else -1
                self.highest = max(self.highest, self.rise)

    def where_deeper(self, data: bytes, limit: int) -> int:
        """The offset in DATA of the bracket that takes the depth past LIMIT, walked byte by
        byte from this state as feed_brackets reads it (the slow path, taken once)."""
        in_string, escape, rise = self.in_string, self.escape, self.rise
        for i, byte in enumerate(data):
            if escape:
                escape = False
                if byte in b'"\\':
                    continue
            if byte == 0x5C:  # a backslash
                escape = True
            elif byte == 0x22:  # a quote
                in_string = not in_string
            elif not in_string and byte in b"[]{}":
                rise += 1 if byte in OPENS else -1
                if rise > limit:
                    return i
        return len(data) - 1


class _Surrogates:
    """Lone \\uD800-\\uDFFF escapes. Both halves are refused alike: the parser would turn a
    lone high one into '?' and fail on a lone low one.

    Between blocks only CARRY is kept: the bytes from a backslash that may still begin a
    surrogate escape, or from a high half whose other half is not complete yet. It always
    starts with a backslash that is not itself escaped, and when it is empty the next block
    starts with a byte that no backslash escapes: the state is exact in a few bytes."""

    def __init__(self) -> None:
        self.carry = b""
        self.carry_at = 0  # the offset of CARRY's first byte

    def feed(self, offset: int, data: bytes) -> ScanError | None:
        text, base = (self.carry + data, self.carry_at) if self.carry else (data, offset)
        cut = len(text)
        if SURROGATE_START.search(text) is not None:  # a regex: faster than `in` where \\ abounds
            found, cut = _first_lone(text)
            if found is not None:
                value = int(text[found + 2 : found + 6], 16)
                half = "high" if value < 0xDC00 else "low"
                return ScanError(
                    f"the escape \\u{value:04x} is the {half} half of a UTF-16 surrogate pair "
                    "without its other half: not text (lone surrogates are refused)",
                    base + found,
                )
        backslash = text.rfind(b"\\", max(0, len(text) - 5))  # only the last can begin one
        cut_escape = 0 <= backslash < cut and SURROGATE_PREFIX.match(text, backslash)
        if cut_escape and not _escaped(text, backslash):  # an escape the block's end cuts
            cut = backslash
        self.carry, self.carry_at = text[cut:], base + cut
        return None


def _escaped(text: bytes, position: int) -> bool:
    """Whether the byte at POSITION is escaped by the backslashes before it (TEXT starts at
    a byte no backslash escapes)."""
    run = 0
    while run < position and text[position - run - 1] == 0x5C:  # a backslash
        run += 1
    return run % 2 == 1


def _first_lone(text: bytes) -> tuple[int | None, int]:
    """(offset of the first lone surrogate escape in TEXT or None, where the undecided part
    at its end begins: a high half whose follower is cut, else len(TEXT))."""
    for match in SURROGATE_ESCAPE.finditer(text):
        start = match.start()
        if _escaped(text, start):
            continue  # the backslash is itself escaped: literal text, not an escape
        if int(text[start + 2 : start + 6], 16) < 0xDC00:  # a high half needs a low one next
            after = text[start + 6 : start + 12]
            if len(after) < 6 and LOW_PREFIX.match(after):
                return None, start  # decided with the next block
            if SURROGATE_ESCAPE.fullmatch(after) and int(after[2:], 16) >= 0xDC00:
                continue
            return start, len(text)
        previous = text[max(0, start - 6) : start]  # a low half must follow a high half
        if (
            SURROGATE_ESCAPE.fullmatch(previous)
            and int(previous[2:], 16) < 0xDC00
            and not _escaped(text, start - 6)
        ):
            continue
        return start, len(text)
    return None, len(text)


class Vetter:
    """Depth, lone surrogates and UTF-8-encoded surrogates over a JSON text fed from its first
    byte in blocks of any size. feed() returns the first problem, at its exact offset."""

    def __init__(self, offset: int = 0, depth_limit: int = DEPTH_LIMIT) -> None:
        self.offset = offset  # the text's offset of the next block
        self._nesting = _Nesting()
        self._surrogates = _Surrogates()
        self._raw_carry = False  # the last block ended with 0xED
        self._depth_limit = depth_limit
        # the top-level array, and a page's {"items": [...]} around it
        self._limit = depth_limit + 2

    @property
    def settled(self) -> int:
        """Every byte before this offset is decided (the rest waits for the next block)."""
        return self._surrogates.carry_at if self._surrogates.carry else self.offset

    def feed(self, data: bytes) -> ScanError | None:
        start, self.offset = self.offset, self.offset + len(data)
        problems = [self._surrogates.feed(start, data), self._raw_surrogate(start, data)]
        before = _Nesting(self._nesting.in_string, self._nesting.escape, self._nesting.rise)
        self._nesting.feed_brackets(data, self._limit)
        if self._nesting.highest > self._limit:
            problems.append(
                ScanError(
                    f"nested deeper than {self._depth_limit} levels inside one record (memory "
                    "would grow with the square of the depth)",
                    start + before.where_deeper(data, self._limit),
                )
            )
        found = [p for p in problems if p is not None]
        return min(found, key=lambda p: p.offset) if found else None

    def _raw_surrogate(self, start: int, data: bytes) -> ScanError | None:
        if not data:  # (gzip may inflate a block to nothing)
            return None
        carried, self._raw_carry = self._raw_carry, data.endswith(b"\xed")
        if carried and data[:1] and 0xA0 <= data[0] <= 0xBF:
            at = start - 1
        elif b"\xed" in data and (match := RAW_SURROGATE.search(data)) is not None:
            at = start + match.start()
        else:
            return None
        return ScanError(
            "invalid UTF-8: byte 0xED (a UTF-16 surrogate encoded in UTF-8, as CESU-8 does; "
            "not text)",
            at,
        )


def utf16_offset(head: bytes) -> int | None:
    """Where UTF-16 (or UTF-32) text shows itself at the start: its first NUL byte."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return 0
    zero = head[:4].find(b"\x00")
    return zero if zero >= 0 else None


def vet_stream(blocks: Iterator[bytes], report: Callable[[str], None]) -> None:
    """Check a whole JSON text from its first byte (so no string is open there). Reports
    'ok OFFSET' after each block (every byte before OFFSET is decided), 'problem OFFSET
    REASON' once."""
    vetter = Vetter()
    for text in blocks:
        found = vetter.feed(text)
        if found is not None:
            report(f"problem {found.offset} {found.reason}")
            return
        report(f"ok {vetter.settled}")
    report(f"ok {vetter.offset}")  # a cut escape at the very end: the parser says 'truncated'


def _blocks_of(handle: BinaryIO, sizes: tuple[int, ...]) -> Iterator[bytes]:
    """HANDLE's bytes in blocks of SIZES[0], SIZES[1], ... in turn."""
    turn = 0
    while block := handle.read(sizes[turn % len(sizes)]):
        turn += 1
        yield block


def child_main(path: str, sizes: str = "") -> None:
    """The hashing child: sha256 of the file as stored, and vet_stream over its text (gunzipped
    when it is gzip, every member), both on the second core while the parent parses. SIZES:
    the block sizes to read, comma-separated (tests); production reads CHILD_BLOCK."""
    import hashlib
    import itertools
    import sys
    import zlib

    block_sizes = tuple(int(s) for s in sizes.split(",") if s) or BLOCK_SIZES
    digest = hashlib.sha256()
    size = 0

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def blocks() -> Iterator[bytes]:
        nonlocal size
        magic = handle.read(2)  # gzip or not, whatever the size of the first block
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if magic == b"\x1f\x8b" else None
        for block in itertools.chain([magic], _blocks_of(handle, block_sizes)):
            digest.update(block)
            size += len(block)
            while inflate is not None and block:
                text = inflate.decompress(block)
                block = inflate.unused_data if inflate.eof else b""
                if inflate.eof:  # the next gzip member, if any (as GzipFile reads them)
                    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                yield text
            if inflate is None:
                yield block

    with open(path, "rb") as handle:
        feed = blocks()
        try:
            vet_stream(feed, say)
        except Exception:  # damaged input: the parent reports it in its own words
            say(f"ok {2**62}")
        for _ in feed:  # vetting stopped early: hash the rest
            pass
    say(f"sha256 {digest.hexdigest()} {size}")
