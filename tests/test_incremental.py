"""Incremental sync and withdrawal in the batch chain, through the command line, against the
live Open WebUI stand-in (with /ids, one-second updated_at, 404 after delete) or the older
stand-in without /ids, and the Portkey stand-in. Bytes are counted by the stand-in."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from owui_replay.errors import ExitCode
from tests.helpers import REAL_EXPORT, Run, environment, run_cli
from tests.openwebui_live_stub import LiveServer, live_openwebui, new_rating
from tests.openwebui_stub import ADMIN_TOKEN, USER_ID, openwebui_stub
from tests.portkey_stub import API_KEY, StubServer, portkey_stub
from tests.replay_helpers import chain, serve


def thumbs() -> list[dict[str, Any]]:
    """The real export's records that convert writes (8 of them)."""
    return [r for r in json.loads(REAL_EXPORT.read_text()) if r.get("snapshot")]


class Clock:
    """Open WebUI's clock for updated_at: whole seconds, set by the test."""

    def __init__(self) -> None:
        self.now = time.time() - 100  # long past: a full read sees these versions as final

    def __call__(self) -> float:
        return self.now


@contextmanager
def mirror(count: int) -> Iterator[tuple[LiveServer, StubServer, Clock]]:
    """COUNT ratings shaped like the real ones in the live stand-in, and Portkey's."""
    clock = Clock()
    with (
        live_openwebui(clock=clock) as owui,
        portkey_stub() as pk,
        environment(
            OPENWEBUI_BASE_URL=owui.url,
            OPENWEBUI_TOKEN=ADMIN_TOKEN,
            PORTKEY_API_KEY=API_KEY,
            PORTKEY_BASE_URL=pk.url,
        ),
    ):
        real = thumbs()
        for i in range(count):
            owui.owui.create(new_rating(real[i % len(real)], 1 if i % 3 else -1))
        yield owui, pk, clock


def sync(workdir: Path, *args: str) -> Run:
    return run_cli("sync", "--workdir", str(workdir), "--json", *args)


def assert_mirrors(pk: StubServer, current: dict[str, Any], deleted: set[str]) -> None:
    """Portkey holds one copy of every current rating with its value, and every deleted one
    withdrawn (weight 0, metadata.withdrawn)."""
    held = pk.state.holdings()
    assert set(held) == set(current) | deleted
    for fid, copies in held.items():
        assert len(copies) == 1, fid
        (one,) = copies
        if fid in deleted:
            assert one["weight"] == 0 and one["metadata"]["withdrawn"] == "true", fid
        else:
            assert one["value"] == current[fid]["data"]["rating"], fid
            assert one.get("weight", 1) != 0 and "withdrawn" not in one["metadata"], fid


def test_incremental_sync_fetches_only_changes_and_ends_holding_open_webuis_ratings(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    with mirror(120) as (server, pk, clock):
        owui = server.owui
        first = sync(work)
        assert first.code == ExitCode.OK, first.stderr
        doc = json.loads(first.stdout)
        assert doc["mode"] == "full" and doc["withdrawals"]["recorded"] == 120
        export_bytes = owui.bytes_served["export"]
        owui.bytes_served.clear()

        clock.now += 50  # still in the past: these versions are final when read
        ids = list(owui.current())
        created = owui.create(new_rating(thumbs()[0], -1))
        owui.update(ids[5], -owui.current()[ids[5]]["data"]["rating"])  # a flip
        owui.delete(ids[7])
        clock.now = time.time() + 30  # a second that is not over when the next run reads
        owui.update(ids[9], -1)
        second = sync(work)
        assert second.code == ExitCode.OK, second.stderr
        read = sum(owui.bytes_served.values())
        doc = json.loads(second.stdout)
        assert doc["mode"] == "incremental", doc["openwebui"]
        assert doc["openwebui"]["fetched"] == 3  # created, flipped, ids[9]
        assert doc["openwebui"]["bytes_read"] == read  # the tool counts what was served
        assert doc["withdrawals"]["withdrawn"] == 1
        assert read < 0.05 * export_bytes, (read, export_bytes)
        assert created in (Path(doc["run_dir"]) / "export.json").read_text()

        owui.update(ids[9], 1)  # a second change within the same second: /ids looks alike
        third = sync(work)
        assert third.code == ExitCode.OK, third.stderr
        assert json.loads(third.stdout)["replay"]["updated"] == 1
        assert_mirrors(pk, owui.current(), {ids[7]})
        run = Path(json.loads(second.stdout)["run_dir"])
        taken = json.loads((run / "export.json.taken-at.json").read_text())
        assert taken["mode"] == "incremental" and taken["complete"] is False
        manifest = json.loads((run / "feedback.manifest.json").read_text())
        assert manifest["input"]["mode"] == "incremental" and manifest["manifest_version"] == 2
        withdrawn = (run / "feedback.withdrawn.jsonl").read_text().splitlines()
        assert [json.loads(w)["feedback_id"] for w in withdrawn] == [ids[7]]
        export = str(run / "export.json")
        verified = run_cli("verify", str(run / "feedback.jsonl"), "--export", export)
        assert verified.code == ExitCode.OK, verified.stderr


def test_a_mass_deletion_over_the_cap_withdraws_nothing_and_says_so(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with mirror(14) as (server, pk, _clock):
        owui = server.owui
        assert sync(work).code == ExitCode.OK
        for fid in list(owui.current())[:12]:
            owui.delete(fid)
        refused = run_cli("sync", "--workdir", str(work))
        assert refused.code == ExitCode.NOTHING_NEW, refused.stderr
        assert refused.stderr.count("\n") == 1, refused.stderr  # one line, even under cron
        assert (
            "refused: 12 ratings disappeared from Open WebUI, more than --max-withdraw 10: none "
            "withdrawn" in refused.stderr
        )
        planned = sync(work, "--dry-run", "--max-withdraw", "12")
        assert json.loads(planned.stdout)["withdrawals"]["gone"] == 12
        kept = sync(work, "--no-withdraw")
        assert "12 ratings gone from Open WebUI; not withdrawn (--no-withdraw)" in kept.stderr
        assert pk.state.updates == []
        meant = sync(work, "--max-withdraw", "12")
        assert meant.code == ExitCode.OK, meant.stderr
        assert json.loads(meant.stdout)["withdrawals"]["withdrawn"] == 12
        deleted = set(pk.state.holdings()) - set(owui.current())
        assert len(deleted) == 12
        assert_mirrors(pk, owui.current(), deleted)


def test_without_ids_sync_reads_the_whole_export_and_user_scope_never_withdraws(
    tmp_path: Path,
) -> None:
    records, work = thumbs(), tmp_path / "work"
    with chain(tmp_path, records) as (pk, owui, export):
        first = sync(work)
        assert first.code == ExitCode.OK, first.stderr
        assert "no /ids" in json.loads(first.stdout)["openwebui"]["why_full"]
        serve(export, records[2:])  # two deleted
        owui.state.user_items = [{**r, "user_id": USER_ID} for r in records[2:]]
        mine = sync(work, "--user-scope")
        assert mine.code in (ExitCode.OK, ExitCode.NOTHING_NEW), mine.stderr
        assert json.loads(mine.stdout)["withdrawals"]["gone"] == 0
        assert not [body for _, body in pk.state.updates if body.get("weight") == 0]
        admin = sync(work)
        assert admin.code == ExitCode.OK, admin.stderr
        doc = json.loads(admin.stdout)
        assert doc["mode"] == "full" and doc["withdrawals"]["withdrawn"] == 2
    current = {r["id"]: r for r in records[2:]}
    assert_mirrors(pk, current, {r["id"] for r in records[:2]})


def handoff(folder: Path, *convert: str, user: bool = False) -> Path:
    folder.mkdir()
    scope = ["--user-scope"] if user else []
    assert run_cli("download", "-o", str(folder / "export.json"), "-q", *scope).code == 0
    out = folder / "feedback.jsonl"
    assert run_cli("convert", str(folder / "export.json"), "-o", str(out), "-q", *convert).code == 0
    return out


def test_replay_withdraw_missing_withdraws_from_a_complete_handoff_and_refuses_others(
    tmp_path: Path,
) -> None:
    records = thumbs()
    state = ["--state-file", str(tmp_path / "ledger.sqlite3")]
    with chain(tmp_path, records) as (pk, owui, export):
        first = run_cli("replay", str(handoff(tmp_path / "a")), "--withdraw-missing", *state)
        assert first.code == ExitCode.OK, first.stderr
        serve(export, records[1:])
        owui.state.user_items = [{**r, "user_id": USER_ID} for r in records[1:]]
        refusals = {
            "--since": handoff(tmp_path / "b", "--since", "1"),
            "--user-scope": handoff(tmp_path / "c", user=True),
            "feedback_id": handoff(tmp_path / "f", "--drop-metadata", "feedback_id"),
        }
        for why, feedback in refusals.items():
            refused = run_cli("replay", str(feedback), "--withdraw-missing", "--json", *state)
            assert refused.code == ExitCode.USAGE, refused.stderr
            assert refused.stderr.count("\n") == 1 and why in refused.stderr, refused.stderr
        assert pk.state.updates == []
        with openwebui_stub(export_file=export) as other, environment(OPENWEBUI_BASE_URL=other.url):
            elsewhere = handoff(tmp_path / "d")
        refused = run_cli("replay", str(elsewhere), "--withdraw-missing", *state)
        assert refused.code == ExitCode.USAGE and "never crosses" in refused.stderr
        second = run_cli(
            "replay", str(handoff(tmp_path / "e")), "--withdraw-missing", "--json", "-q", *state
        )
        assert second.code == ExitCode.OK, second.stderr
        assert json.loads(second.stdout)["withdrawals"]["withdrawn"] == 1
        assert second.stderr == ""  # -q: a withdrawal that went as planned is not a line
    assert_mirrors(pk, {r["id"]: r for r in records[1:]}, {records[0]["id"]})


def test_an_older_handoff_does_not_withdraw_ratings_created_after_it_was_taken(
    tmp_path: Path,
) -> None:
    """Monday's export lacks the ratings made on Tuesday: replaying it after Tuesday's must
    not withdraw them (its absences prove nothing about what was rated later)."""
    records = thumbs()
    state = ["--state-file", str(tmp_path / "ledger.sqlite3")]
    with chain(tmp_path, records[:5]) as (pk, _owui, export):
        monday = handoff(tmp_path / "monday")
        serve(export, records)
        tuesday = handoff(tmp_path / "tuesday")
        sent = run_cli("replay", str(tuesday), "--withdraw-missing", *state)
        assert sent.code == ExitCode.OK, sent.stderr
        again = run_cli("replay", str(monday), "--withdraw-missing", "--json", *state)
        assert again.code == ExitCode.OK, again.stderr
        assert json.loads(again.stdout)["withdrawals"]["gone"] == 0
        assert pk.state.updates == []
    assert_mirrors(pk, {r["id"]: r for r in records}, set())


def test_a_withdrawn_rating_that_comes_back_is_sent_again_and_withdrawn_again_when_deleted(
    tmp_path: Path,
) -> None:
    """A database restored with a deleted rating (same id, same updated_at) brings it back to
    Portkey at full weight; deleted once more, it is withdrawn once more."""
    work = tmp_path / "work"
    with mirror(3) as (server, pk, _clock):
        owui = server.owui
        assert sync(work).code == ExitCode.OK
        fid = next(iter(owui.current()))
        saved = owui.current()[fid]
        owui.delete(fid)
        assert sync(work).code == ExitCode.OK
        assert_mirrors(pk, owui.current(), {fid})
        with owui.lock:
            owui.records[fid] = saved  # restored from a backup: the same version
        restored = sync(work)
        assert restored.code == ExitCode.OK, restored.stderr
        assert_mirrors(pk, owui.current(), set())
        owui.delete(fid)
        deleted = sync(work)
        assert deleted.code == ExitCode.OK, deleted.stderr
        assert json.loads(deleted.stdout)["withdrawals"]["withdrawn"] == 1
        assert_mirrors(pk, owui.current(), {fid})


def test_a_rating_received_under_another_address_is_not_withdrawn_but_counted(
    tmp_path: Path,
) -> None:
    """The same server spelled `localhost` instead of 127.0.0.1 is another source to the state:
    a rating deleted there is not withdrawn (never across sources), and the run says how many
    such ratings it leaves in Portkey."""
    work = tmp_path / "work"
    with mirror(4) as (server, pk, _clock):
        assert sync(work).code == ExitCode.OK
        fid = next(iter(server.owui.current()))
        server.owui.delete(fid)
        other = server.url.replace("127.0.0.1", "localhost")
        with environment(OPENWEBUI_BASE_URL=other):
            run = sync(work, "-v")
        assert run.code == ExitCode.NOTHING_NEW, run.stderr
        withdrawals = json.loads(run.stdout)["withdrawals"]
        assert withdrawals["unattributed"] == 1 and withdrawals["withdrawn"] == 0
        assert "1 ratings Portkey holds are missing from" in run.stderr
        assert server.url in run.stderr  # where they were received from
        assert pk.state.updates == []
