"""timeparse, atomic and handoff: the small modules, tested directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from owui_replay.atomic import HashedWriter, hash_file, sha256_file, write_json_atomic
from owui_replay.handoff import HandoffPaths
from owui_replay.timeparse import parse_instant


@pytest.mark.parametrize(
    ("text", "epoch"),
    [("1795417826", 1795417826), ("0", 0), ("2026-11-23", 1795392000),
     ("2026-11-23T07:10:26Z", 1795417826), ("2026-11-23T08:10:26+01:00", 1795417826),
     ("2026-11-23 07:10:26", 1795417826)],
)  # fmt: skip
def test_parse_instant(text: str, epoch: int) -> None:
    assert parse_instant(text) == epoch


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "1795417826000", ""])
def test_parse_instant_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(bad)


def test_hashed_writer_is_invisible_until_committed(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "deeper" / "out.jsonl"  # two folders that do not exist yet
    writer = HashedWriter(final)
    writer.write_line(b'{"a":1}\n')
    writer.write_line(b'{"b":2}\n')
    assert not final.exists() and writer.partial.exists()
    writer.commit()
    assert final.read_bytes() == b'{"a":1}\n{"b":2}\n' and not writer.partial.exists()
    summary = writer.summary()
    assert summary == {"file": "out.jsonl", "sha256": sha256_file(final), "lines": 2, "bytes": 16}


def test_hash_file_counts_lines_across_blocks(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"n":1}\n' * 1000)
    assert hash_file(path, chunk=1000) == (sha256_file(path), 1000)


def test_write_json_atomic_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_json_atomic(path, {"b": 1, "a": "é"})
    write_json_atomic(path, {"c": 2})
    assert json.loads(path.read_text("utf-8")) == {"c": 2}
    assert list(tmp_path.iterdir()) == [path]


def test_handoff_names() -> None:
    paths = HandoffPaths.for_output("dir/feedback.jsonl")
    assert [p.name for p in (paths.output, paths.rejects, paths.manifest, paths.journal,
                             paths.failed)] == [
        "feedback.jsonl", "feedback.rejects.jsonl", "feedback.manifest.json",
        "feedback.journal.jsonl", "feedback.failed.jsonl",
    ]  # fmt: skip
    assert HandoffPaths.for_output("out.ndjson").rejects.name == "out.ndjson.rejects.jsonl"


def test_hashed_writer_blocks_lose_no_line_and_hash_them_all(tmp_path: Path) -> None:
    """Lines are written and hashed ~64 kB at a time: across block edges, at close, and
    for a summary asked for before the close, nothing is lost or counted twice."""
    final = tmp_path / "out.jsonl"
    writer = HashedWriter(final)
    lines = [(f'{{"n":{i},"pad":"' + "x" * (i % 500) + '"}\n').encode() for i in range(600)]
    for line in lines:
        writer.write_line(line)
    early = writer.summary()
    writer.commit()
    data = b"".join(lines)
    assert final.read_bytes() == data
    assert early == writer.summary() == {
        "file": "out.jsonl", "sha256": sha256_file(final), "lines": 600, "bytes": len(data),
    }  # fmt: skip


def test_hashed_writer_holds_at_most_a_block(tmp_path: Path) -> None:
    """Memory stays flat: held lines reach the file once they make a block (64 kB)."""
    writer = HashedWriter(tmp_path / "out.jsonl")
    line = b'{"pad":"' + b"x" * 989 + b'"}\n'  # 1000 bytes
    for _ in range(65):
        writer.write_line(line)
    assert writer.partial.stat().st_size == 0  # 65,000 bytes: not yet a block
    for _ in range(100):
        writer.write_line(line)
    assert writer.partial.stat().st_size >= 1 << 16
    assert writer.partial.stat().st_size % 1000 == 0  # whole lines only
    writer.abort()
