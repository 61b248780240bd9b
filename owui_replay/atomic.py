"""Files that appear under their final name only once complete (write, fsync, rename)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

PARTIAL_SUFFIX = ".partial"
_BLOCK = 1 << 16


def partial_path(final: Path) -> Path:
    """Where FINAL is written until it is complete."""
    return final.with_name(final.name + PARTIAL_SUFFIX)


def fsync_dir(path: Path) -> None:
    """Make a rename durable; some filesystems do not support it, which is fine."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class HashedWriter:
    """Writes lines to NAME.partial, hashing and counting them; commit() renames to NAME."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.partial = partial_path(final)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.partial, "wb")  # noqa: SIM115 - closed in commit()/close()
        self.sha256 = hashlib.sha256()
        self.lines = 0
        self.bytes = 0
        self._held: list[bytes] = []  # lines not yet written
        self._held_bytes = 0

    def write_chunk(self, data: bytes) -> None:
        """Bytes that need not end on a line boundary (a download); lines are not counted."""
        self._write_held()
        try:
            self._file.write(data)
        except OSError as exc:
            raise self._named(exc) from None
        self.sha256.update(data)
        self.bytes += len(data)

    def close_quietly(self) -> None:
        """Close after a failure, keeping what was written, without raising: an error here
        (a full disk again) would hide the one being reported."""
        with contextlib.suppress(OSError):
            self._write_held()
        with contextlib.suppress(OSError):
            self._file.close()

    def abort(self) -> None:
        """Give up: close (without the fsync a kept file needs) and remove the partial file.
        Errors here would hide the one that made us give up, so they are not raised."""
        self._held.clear()  # nothing left to write to a file about to go
        self.close_quietly()
        self.partial.unlink(missing_ok=True)

    def _named(self, exc: OSError) -> OSError:
        """The error with the file's name: 'No space left on device' alone does not say where."""
        return OSError(exc.errno, exc.strerror, str(self.partial))

    def write_line(self, data: bytes) -> None:
        """One line; lines are gathered into blocks of ~64 kB, which are written and hashed
        at once (hashing a block at a time costs a fraction of hashing each line)."""
        self._held.append(data)
        self._held_bytes += len(data)
        self.lines += 1
        self.bytes += len(data)
        if self._held_bytes >= _BLOCK:
            self._write_held()

    def _write_held(self) -> None:
        if not self._held:
            return
        block = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        try:
            self._file.write(block)
        except OSError as exc:
            raise self._named(exc) from None
        self.sha256.update(block)

    def close(self) -> None:
        if not self._file.closed:
            self._write_held()
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
            except OSError as exc:
                raise self._named(exc) from None

    def commit(self) -> None:
        self.close()
        os.replace(self.partial, self.final)
        fsync_dir(self.final.parent)

    def summary(self) -> dict[str, Any]:
        self._write_held()
        return {
            "file": self.final.name,
            "sha256": self.sha256.hexdigest(),
            "lines": self.lines,
            "bytes": self.bytes,
        }


def write_json_atomic(path: Path, document: Any) -> None:
    """Replace PATH with DOCUMENT as pretty JSON, atomically."""
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace PATH with DATA: write NAME.partial, fsync, rename, fsync the folder."""
    partial = partial_path(path)
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    fsync_dir(path.parent)


def missing_folders(folder: Path) -> list[Path]:
    """The folders that creating FOLDER would create, innermost first (to undo it)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (someone else's files), or gone


def hash_file(path: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """(sha256, number of lines) of a file, read in blocks."""
    digest = hashlib.sha256()
    lines = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            lines += block.count(b"\n")
    return digest.hexdigest(), lines


def sha256_file(path: Path) -> str:
    return hash_file(path)[0]
