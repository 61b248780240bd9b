"""Follow the top level of a JSON array as it streams past, at the speed of bytes methods.

download uses it to prove that it received a whole export before renaming it into place: the
text opens an array, every string closes, the bracket that closes the array is the last thing
in the body. It also counts the array's elements. It does not check the grammar inside the
elements: a parse (ijson, ~350-400 MB/s on one core) is slower than a loopback or LAN link,
and convert parses every byte of the export anyway and names the offset of any error.

Inside strings only two escapes matter here, an escaped backslash and an escaped quote. A
chunk is never cut after a backslash (a trailing run waits for the next chunk), so removing
every escaped backslash and then every escaped quote leaves exactly the quotes that open and
close strings; what lies between them in pairs is outside strings.
"""

from __future__ import annotations

from owui_replay.errors import InputError
from owui_replay.words import plural

_NOT_SKELETON = bytes(range(256)).translate(None, b'[]{}",')
_NOT_ESCAPES = bytes(range(256)).translate(None, b'[]{}",\\/bfnrtu')
_WHITESPACE = b" \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1, ord(","): 0}


class ArrayShape:
    """feed() the body chunk by chunk, then finish(): the number of elements, or InputError."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.offset = 0  # bytes of the body fed so far
        self._held = b""  # a trailing run of backslashes, waiting for the next chunk
        self._head: bytes | None = b""  # the body's first bytes while they may be a BOM
        self._opened = False  # the array's '[' has been seen
        self._has_element = False  # something other than whitespace followed it
        self._depth = 0  # nesting outside strings, the array itself being 1
        self._in_string = False
        self._commas = 0  # at depth 1: elements - 1
        self._closed_at: int | None = None  # offset of the bracket that closed the array

    def feed(self, chunk: bytes) -> None:
        if self._head is not None:  # the first bytes, until they can be told from a BOM
            head = self._head + chunk
            if len(head) < len(_UTF8_BOM) and _UTF8_BOM.startswith(head):
                self._head, self.offset = head, len(head)
                return
            self._head, self.offset, chunk = None, 0, head
        start = self.offset - len(self._held)  # the offset of data[0]
        self.offset += len(chunk)
        data = self._held + chunk if self._held else chunk
        if self._closed_at is not None:
            self._nothing_after(data, start)
            return
        run = len(data) - len(data.rstrip(b"\\"))
        self._held = data[len(data) - run :] if run else b""
        body = data[: len(data) - run] if run else data
        skip = 0
        if not self._has_element:
            skip = self._open(body, start)
            if skip < 0 or self._closed_at is not None:
                return
        self._follow(body, start, skip)

    def _open(self, body: bytes, start: int) -> int:
        """Where the array's first element starts in BODY; -1 when BODY holds no more."""
        position = 0
        if not self._opened:
            if start == 0 and body.startswith(_UTF8_BOM):
                position = len(_UTF8_BOM)
            position = _skip_whitespace(body, position)
            if position == len(body):
                return -1
            first = body[position : position + 1]
            if first != b"[":
                what = "a JSON object" if first == b"{" else (
                    f"{first.decode('utf-8', 'replace')!r}"
                )  # fmt: skip
                raise InputError(
                    f"{self.name}: byte offset {start + position}: the body starts with {what}, "
                    "not the export's array"
                )
            self._opened, self._depth = True, 1
            position += 1
        position = _skip_whitespace(body, position)
        if position == len(body):
            return -1
        self._has_element = True
        if body[position : position + 1] == b"]":
            self._depth, self._closed_at = 0, start + position
            self._nothing_after(body[position + 1 :] + self._held, start + position + 1)
            self._held = b""
            self._has_element = False
        return position

    def _follow(self, body: bytes, start: int, skip: int) -> None:
        text = body[skip:] if skip else body
        if b"\\" in text:  # (memchr speed; searching for a two-byte escape is 30x slower)
            # keep the byte after each backslash (in valid JSON one of "\\/bfnrtu) so that the
            # escapes stay whole while most of the text goes
            text = text.translate(None, _NOT_ESCAPES).replace(b"\\\\", b"")
            text = text.replace(b'\\"', b"")
        # two quotes with nothing structural between them, a string's or not, change nothing:
        # dropping them first leaves a short list of parts for Python to walk
        parts = text.translate(None, _NOT_SKELETON).replace(b'""', b"").split(b'"')
        depth, commas = self._depth, 0
        outside = parts[1::2] if self._in_string else parts[0::2]
        for piece in outside:
            for index, byte in enumerate(piece):
                step = _STEP[byte]
                if step:
                    depth += step
                    if depth == 0:
                        end = len(body.rstrip(_WHITESPACE))
                        if (
                            piece is parts[-1]
                            and index == len(piece) - 1
                            and body[end - 1 : end] == b"]"
                        ):  # the usual end: the body's last byte closes the array
                            self._commas += commas
                            self._depth, self._closed_at = 0, start + end - 1
                            self._nothing_after(self._held, start + len(body))
                            self._held = b""
                        else:  # counted again, byte by byte, up to the close
                            self._closing(body, start, skip)
                        return
                elif depth == 1:
                    commas += 1
        if len(parts) % 2 == 0:
            self._in_string = not self._in_string
        self._depth, self._commas = depth, self._commas + commas

    def _closing(self, body: bytes, start: int, skip: int) -> None:
        """The array closes in BODY, not at its end: walk it byte by byte to find where."""
        depth, in_string, escaped = self._depth, self._in_string, False
        for index in range(skip, len(body)):
            byte = body[index]
            if in_string:
                if escaped:
                    escaped = False
                elif byte == 0x5C:  # backslash
                    escaped = True
                elif byte == 0x22:
                    in_string = False
            elif byte == 0x22:
                in_string = True
            elif byte in b"[{":
                depth += 1
            elif byte in b"]}":
                depth -= 1
                if depth == 0:
                    self._closed_at = start + index
                    self._nothing_after(body[index + 1 :] + self._held, start + index + 1)
                    self._held = b""
                    return
            elif byte == 0x2C and depth == 1:
                self._commas += 1
        raise AssertionError("the fast path saw the array close in this chunk")

    def _nothing_after(self, data: bytes, start: int) -> None:
        position = _skip_whitespace(data, 0)
        if position < len(data):
            raise InputError(
                f"{self.name}: byte offset {start + position}: more data after the array "
                f"closed at byte offset {self._closed_at}"
            )

    def finish(self) -> int:
        """The number of elements; InputError unless the whole array was received."""
        if self._closed_at is not None:
            return self._commas + 1 if self._has_element else 0
        if self._head:  # a body of one or two bytes that began like a BOM
            head, self._head, self.offset = self._head, None, 0
            self.feed(head)
            return self.finish()
        if not self._opened:
            raise InputError(f"{self.name}: the body is empty (no JSON value)")
        where = (
            "inside a string"
            if self._in_string or self._held
            else f"with {plural(self._depth, 'bracket')} still open"
        )
        raise InputError(
            f"{self.name}: the body ends at byte offset {self.offset} {where}, after "
            f"{plural(self._commas, 'complete element')}: it was cut short"
        )


def _skip_whitespace(data: bytes, position: int) -> int:
    return len(data) - len(data[position:].lstrip(_WHITESPACE))
