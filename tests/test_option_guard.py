"""The option-change guard: a rewrite caused only by the mapping options is named, and an
unattended sync or listen refuses it until it is accepted once (issue 21)."""

from __future__ import annotations

import copy
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from owui_replay.errors import ExitCode
from owui_replay.mapping import MappingOptions
from tests.helpers import REAL_EXPORT, Run, environment, run_cli
from tests.openwebui_stub import ADMIN_TOKEN
from tests.portkey_stub import API_KEY
from tests.replay_helpers import chain, serve
from tests.test_listen import listening, reconciled, stand_ins, wait_for

DROPPED = "drop_metadata ['comment'] -> []"  # delivered with --drop-comments, now without


def commented(count: int) -> list[dict[str, Any]]:
    """COUNT ratings shaped like a real one, each with its user's free-text comment."""
    real = [r for r in json.loads(REAL_EXPORT.read_text()) if r.get("snapshot")]
    template = next(r for r in real if r["data"].get("comment"))
    records = []
    for i in range(count):
        record = copy.deepcopy(template)
        record["id"] = str(uuid.uuid4())
        record["meta"]["message_id"] = str(uuid.uuid4())
        record["data"]["comment"] = f"private remark number {i}"
        records.append(record)
    return records


def sync(workdir: Path, *args: str) -> Run:
    return run_cli("sync", "--workdir", str(workdir), *args)


def no_comment_text(*texts: str) -> bool:
    return not any("private remark" in text for text in texts)


def test_sync_refuses_a_rewrite_that_only_options_cause_until_it_is_accepted_once(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "work"
    with chain(tmp_path, commented(35)) as (pk, _owui, _export):
        first = sync(workdir, "--drop-comments")  # as the chain's example delivered them
        assert first.code == ExitCode.OK, first.stderr
        assert len(pk.state.stored) == 35 and pk.state.requests == 35
        refused = sync(workdir)  # the cron example, without --drop-comments
        assert pk.state.requests == 35  # nothing sent
        accepted = sync(workdir, "--accept-option-change")
        updates = list(pk.state.updates)
        again = sync(workdir)
        requests_after = pk.state.requests
    assert refused.code == ExitCode.OPTION_CHANGE == 14
    (line,) = refused.stderr.splitlines()  # one line under cron
    assert "35 delivered ratings would change only because the mapping options" in line
    assert DROPPED in line and "--accept-option-change" in line and "nothing was sent" in line
    assert no_comment_text(refused.stderr, refused.stdout)
    assert accepted.code == ExitCode.OK, accepted.stderr
    assert len(updates) == 35  # PUT with the comments, as the options now say
    assert all(body["metadata"]["comment"].startswith("private remark") for _, body in updates)
    assert again.code == ExitCode.NOTHING_NEW, again.stderr  # the new options were recorded
    assert requests_after == 70


def test_a_rating_changed_in_openwebui_is_sent_and_counted_apart_from_option_changes(
    tmp_path: Path,
) -> None:
    records = commented(3)
    records[2]["data"]["comment"] = None  # the options do not change this one's payload
    workdir = tmp_path / "work"
    with chain(tmp_path, records) as (pk, _owui, export):
        assert sync(workdir, "--drop-comments").code == ExitCode.OK
        later = copy.deepcopy(records)
        later[0]["data"]["rating"] = -later[0]["data"]["rating"]  # changed in Open WebUI
        later[0]["updated_at"] += 600
        serve(export, [later[0], later[2]])
        # changed there, and the options changed too: sent (record 1 is away, not deleted)
        alone = sync(workdir, "--json", "--no-withdraw")
        later[0]["data"]["rating"] = -later[0]["data"]["rating"]  # changed again
        later[0]["updated_at"] += 600
        serve(export, later)  # and record 1, which only the options would change, is back
        plan = sync(workdir, "--dry-run", "--json")
        talk = sync(workdir, "--dry-run", "--verbose", "--samples", "0")
        refused = sync(workdir)
        assert pk.state.requests == 4
        handoff = str(sorted((workdir / "runs").iterdir())[-1] / "feedback.jsonl")
        target = ("--portkey-url", pk.url, "--state-file", str(workdir / "ledger.sqlite3"))
        blind = run_cli("replay", handoff, *target, "--no-verify", "--dry-run", "--json")
        hand = run_cli("replay", handoff, *target, "--json")
        puts = len(pk.state.updates)
    done = json.loads(alone.stdout)["replay"]
    assert alone.code == ExitCode.OK, alone.stderr
    assert done["updated"] == 1 and done["changed_in_openwebui"] == 1
    assert done["changed_only_by_options"] == 0 and done["by_state"]["delivered"] == 1
    replay = json.loads(plan.stdout)["replay"]
    assert plan.code == ExitCode.OK and replay["to_put"] == 2
    assert replay["changed_in_openwebui"] == 1 and replay["changed_only_by_options"] == 1
    assert replay["by_state"]["changed"] == 1 and replay["by_state"]["changed-by-options"] == 1
    assert replay["option_changes"] == [DROPPED]
    assert "changed in Open WebUI: 1" in talk.stderr
    assert f"would change only because of options: 1 ({DROPPED}; a real run refuses them)" in (
        talk.stderr
    )
    assert refused.code == ExitCode.OPTION_CHANGE and "1 delivered rating would" in refused.stderr
    # without the manifest the handoff's options are unknown: nothing is put down to them
    unknown = json.loads(blind.stdout)
    assert unknown["changed_only_by_options"] == 0 and unknown["by_state"]["changed"] == 2
    # a person running replay is not refused, but told, on stderr and in the summary
    assert hand.code == ExitCode.OK, hand.stderr
    said = f"1 delivered rating changes only because of options (not in Open WebUI): {DROPPED}"
    assert said in hand.stderr
    assert json.loads(hand.stdout)["changed_only_by_options"] == 1 and puts == 3
    assert no_comment_text(alone.stdout, plan.stdout, talk.stderr, refused.stderr, hand.stderr)


def test_accept_option_change_is_refused_in_the_configuration_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[replay]\naccept_option_change = true\n")
    with environment(OPENWEBUI_BASE_URL="http://127.0.0.1:9"):
        refused = run_cli("--config", str(config), "sync", "--dry-run")
    assert refused.code == ExitCode.USAGE
    assert "give --accept-option-change on the command line" in refused.stderr


FORMAT_3 = """
CREATE TABLE ratings (
    endpoint TEXT NOT NULL, rating_key TEXT NOT NULL, portkey_id TEXT, updated_at INTEGER,
    content TEXT, trace_id TEXT, delivered_at TEXT, unknown INTEGER NOT NULL DEFAULT 0,
    extra_copies INTEGER NOT NULL DEFAULT 0, refused_content TEXT, refused_status INTEGER,
    refused_detail TEXT, last_attempt TEXT, approved_by TEXT, taken_at INTEGER,
    PRIMARY KEY (endpoint, rating_key)
) WITHOUT ROWID;
CREATE TABLE endpoints (endpoint TEXT PRIMARY KEY, first_seen TEXT NOT NULL, forgotten_at TEXT);
PRAGMA user_version = 3;
"""


def test_a_format_3_state_is_upgraded_keeping_every_row_with_options_unknown(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(FORMAT_3)
    rows = [
        ("http://127.0.0.1:9/v1", f"fb-{i}", f"pk-{i}", 10 + i, f"c{i}", f"t{i}", "2026-01-01",
         i % 2, 0, None, None, None, "POST x", None, None)
        for i in range(5)
    ]  # fmt: skip
    rows.append(("http://127.0.0.1:9/v1", "fb-u", None, None, None, None, None, 1, 0,
                 "r", 422, "no", "POST y", "alice", 5))  # fmt: skip
    db.executemany(f"INSERT INTO ratings VALUES ({', '.join('?' * 15)})", rows)
    db.execute("INSERT INTO endpoints VALUES ('http://127.0.0.1:9/v1', '2026-01-01', NULL)")
    db.commit()
    db.close()
    listing = run_cli("state", "--state-file", str(path), "--json")
    assert listing.code == ExitCode.OK, listing.stderr
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (4,)
        upgraded = db.execute("SELECT * FROM ratings ORDER BY rating_key").fetchall()
        assert db.execute("SELECT COUNT(*) FROM option_sets").fetchone() == (0,)
    finally:
        db.close()
    assert [row[:-1] for row in upgraded] == sorted(rows, key=lambda r: r[1])
    assert {row[-1] for row in upgraded} == {None}  # delivered with unknown options
    counts = json.loads(listing.stdout)["endpoints"]["http://127.0.0.1:9/v1"]
    assert counts["ratings"] == 6 and counts["delivered"] == 5 and counts["uncertain"] == 1


def test_listen_skips_option_only_changes_says_so_in_healthz_and_sends_them_once_accepted(
    tmp_path: Path,
) -> None:
    records = commented(4)
    dropping = MappingOptions(drop_metadata=("comment",))
    with stand_ins(records) as (pk, owui):
        with listening(tmp_path, pk, owui, mapping=dropping) as m:
            wait_for(reconciled(m))
        assert len(pk.state.stored) == 4
        with listening(tmp_path, pk, owui) as m:  # comments kept now, not accepted
            wait_for(reconciled(m))
            _status, skipped = m.health()
            owui.owui.update(records[0]["id"], -1)  # a change made in Open WebUI is still sent
            wait_for(lambda: len(pk.state.updates) == 1)
            lines = list(m.lines)
        assert pk.state.updates[0][1]["value"] == -1
        with listening(tmp_path, pk, owui, accept_option_change=True) as m:
            wait_for(reconciled(m))
            wait_for(lambda: len(pk.state.updates) == 4)
            _status, accepted = m.health()
        with listening(tmp_path, pk, owui) as m:  # quiet: the new options were recorded
            wait_for(reconciled(m))
            quiet = m.health()[1]
        requests = pk.state.requests
        with environment(OPENWEBUI_TOKEN=ADMIN_TOKEN, PORTKEY_API_KEY=API_KEY):
            shared = ("--openwebui-url", owui.url, "--portkey-url", pk.url, "--state-file",
                      str(tmp_path / "ledger.sqlite3"), "--allow-insecure-http")  # fmt: skip
            same = sync(tmp_path / "sync", *shared)  # what listen recorded, sync reads alike
            other = sync(tmp_path / "sync", *shared, "--drop-metadata", "comment")
    option_change = skipped["option_change"]
    assert option_change["skipped"] == 4 and option_change["changes"] == [DROPPED]
    assert skipped["sent"]["updated"] == 0
    refusals = [line for line in lines if line.startswith("refused:")]
    assert refusals and DROPPED in refusals[0] and no_comment_text(*lines)
    assert accepted["option_change"] is None and accepted["sent"]["updated"] == 3
    assert quiet["option_change"] is None and quiet["sent"] == {
        "posted": 0, "updated": 0, "withdrawn": 0, "refused": 0,
    }  # fmt: skip
    assert requests == 4 + 1 + 3
    assert same.code == ExitCode.NOTHING_NEW, same.stderr
    assert other.code == ExitCode.OPTION_CHANGE and "drop_metadata [] -> ['comment']" in (
        other.stderr
    )


def test_ratings_delivered_before_options_were_recorded_are_guarded_too(tmp_path: Path) -> None:
    """The first unattended run after an upgrade from state format 3 (no options recorded)
    must not rewrite the delivered ratings silently: Open WebUI did not change them."""
    workdir = tmp_path / "work"
    with chain(tmp_path, commented(5)) as (pk, _owui, _export):
        first = sync(workdir, "--drop-comments")
        assert first.code == ExitCode.OK, first.stderr
        db = sqlite3.connect(workdir / "ledger.sqlite3")
        with db:
            db.execute("UPDATE ratings SET options = NULL")  # as a format-3 row migrates
        db.close()
        refused = sync(workdir)
        requests_after_refusal = pk.state.requests
    assert refused.code == ExitCode.OPTION_CHANGE, refused.stderr
    assert requests_after_refusal == 5  # nothing sent
    assert "5 delivered ratings would change only because" in refused.stderr
    assert "options not recorded" in refused.stderr
    assert no_comment_text(refused.stderr, refused.stdout)
