"""The delivery state: per endpoint, across files, exports, mistakes and key rotations."""

from __future__ import annotations

import contextlib
import copy
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from owui_replay.delivery_state import (
    STATE_FORMAT,
    DeliveryState,
    LineState,
    Rating,
    default_state_path,
    judge,
    rating_of,
)
from owui_replay.errors import ExitCode, StateError
from owui_replay.urls import normalized_url
from tests.helpers import REAL_EXPORT, environment, read_jsonl, run_cli
from tests.portkey_stub import API_KEY, Fault, portkey_stub
from tests.replay_helpers import make_feedback, replay_in_process


def export_file(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(records), "utf-8")
    return path


def convert(export: Path, out: Path, *options: str) -> Path:
    assert run_cli("convert", str(export), "-o", str(out), "-q", *options).code == 0
    return out


def thumbs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("snapshot")]  # the 8 convertible records


def stored_once(stub, ids: list[str]) -> bool:
    counts = stub.state.feedback_counts()
    return sorted(counts) == sorted(ids) and set(counts.values()) == {1}


# -- successive exports -------------------------------------------------------------------


def test_second_export_posts_only_new_ratings_and_updates_flipped_ones(tmp_path: Path) -> None:
    records = thumbs(json.loads(REAL_EXPORT.read_text()))
    first, later = records[:5], copy.deepcopy(records[:5])
    flipped = later[1]
    flipped["data"]["rating"] = -flipped["data"]["rating"]  # the user changed their mind
    flipped["updated_at"] += 60
    later += records[5:]  # and rated three more answers
    ledger = tmp_path / "ledger.sqlite3"
    with portkey_stub() as stub:
        out1 = convert(export_file(tmp_path / "e1.json", first), tmp_path / "one" / "f.jsonl")
        assert replay_in_process(out1, stub.url, "--ledger", str(ledger)).code == 0
        assert len(stub.state.stored) == 5
        out2 = convert(export_file(tmp_path / "e2.json", later), tmp_path / "two" / "f.jsonl")
        result = replay_in_process(out2, stub.url, "--ledger", str(ledger), quiet=False)
        assert result.code == ExitCode.OK, result.stderr
        posted = stub.state.feedback_counts()
        updates = list(stub.state.updates)
        first_ids = {p["metadata"]["feedback_id"]: fid for fid, p in stub.state.stored}
    assert len(posted) == 8 and set(posted.values()) == {1}  # zero duplicate POSTs
    assert len(updates) == 1
    fid, body = updates[0]
    assert fid == first_ids[flipped["id"]]  # the feedback Portkey stored in the first run
    assert body["value"] == -(records[1]["data"]["rating"]) and "trace_id" not in body
    assert body["metadata"]["feedback_id"] == flipped["id"]
    assert "delivered now: 3 posted, 1 updated, already delivered: 4" in result.stderr
    with DeliveryState(ledger, stub.url) as state:
        known = state.lookup(flipped["id"])
    assert known is not None and known.updated_at == flipped["updated_at"]


def test_unchanged_export_sends_nothing_the_second_time(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    with portkey_stub() as stub:
        out1 = convert(REAL_EXPORT, tmp_path / "a" / "f.jsonl")
        out2 = convert(REAL_EXPORT, tmp_path / "b" / "f.jsonl")  # a fresh handoff, no journal
        assert replay_in_process(out1, stub.url, "--ledger", str(ledger)).code == 0
        again = replay_in_process(out2, stub.url, "--ledger", str(ledger), quiet=False)
        assert again.code == 0 and stub.state.requests == 8
    assert "already delivered: 8" in again.stderr


def test_an_older_export_does_not_undo_a_newer_rating(tmp_path: Path) -> None:
    records = thumbs(json.loads(REAL_EXPORT.read_text()))[:2]
    newer = copy.deepcopy(records)
    newer[0]["data"]["rating"] = -newer[0]["data"]["rating"]
    newer[0]["updated_at"] += 100
    ledger = tmp_path / "ledger.sqlite3"
    with portkey_stub() as stub:
        out_new = convert(export_file(tmp_path / "new.json", newer), tmp_path / "n" / "f.jsonl")
        out_old = convert(export_file(tmp_path / "old.json", records), tmp_path / "o" / "f.jsonl")
        assert replay_in_process(out_new, stub.url, "--ledger", str(ledger)).code == 0
        older = replay_in_process(out_old, stub.url, "--ledger", str(ledger), quiet=False)
        # no export time says which export is newer: not sent, and the run says so
        assert older.code == ExitCode.DELIVERY_FAILED
        assert stub.state.requests == 2 and not stub.state.updates
    assert "changed to an older updated_at, not sent: 1" in older.stderr
    assert "--send-older" in older.stderr


def test_an_ack_without_feedback_ids_still_prevents_a_duplicate(tmp_path: Path) -> None:
    records = thumbs(json.loads(REAL_EXPORT.read_text()))[:3]
    later = copy.deepcopy(records)
    later[0]["data"]["rating"] = -later[0]["data"]["rating"]
    later[0]["updated_at"] += 60
    ledger = tmp_path / "ledger.sqlite3"
    with portkey_stub(omit_feedback_ids=True) as stub:
        out1 = convert(export_file(tmp_path / "e1.json", records), tmp_path / "a" / "f.jsonl")
        assert replay_in_process(out1, stub.url, "--ledger", str(ledger)).code == 0
        out2 = convert(export_file(tmp_path / "e2.json", later), tmp_path / "b" / "f.jsonl")
        second = replay_in_process(out2, stub.url, "--ledger", str(ledger), quiet=False)
        assert second.code == 0 and len(stub.state.stored) == 3 and not stub.state.updates
    assert "changed but not updatable (Portkey returned no feedback id): 1" in second.stderr


def test_a_reconvert_with_another_thumbs_down_value_puts_exactly_the_changed_ratings(
    tmp_path: Path,
) -> None:
    """Same feedback ids, same updated_at, different payloads: the content decides."""
    with portkey_stub() as stub:
        first = convert(REAL_EXPORT, tmp_path / "a" / "f.jsonl")
        assert replay_in_process(first, stub.url).code == 0
        again = convert(REAL_EXPORT, tmp_path / "b" / "f.jsonl", "--thumbs-down-value", "0")
        result = replay_in_process(again, stub.url, quiet=False)
        assert result.code == 0, result.stderr
        downs = {
            p["metadata"]["feedback_id"]: fid for fid, p in stub.state.stored if p["value"] == -1
        }
        updates = list(stub.state.updates)
        assert len(stub.state.stored) == 8  # nothing posted twice
    assert downs and sorted(fid for fid, _ in updates) == sorted(downs.values())
    assert {body["value"] for _, body in updates} == {0}
    assert f"delivered now: 0 posted, {len(downs)} updated" in result.stderr


def test_default_state_location(private_state_dir: Path, tmp_path: Path) -> None:
    assert default_state_path() == private_state_dir / "owui-replay" / "ledger.sqlite3"
    with portkey_stub() as stub:
        assert replay_in_process(convert(REAL_EXPORT, tmp_path / "f.jsonl"), stub.url).code == 0
        with DeliveryState(default_state_path(), stub.url) as state:
            assert state.counts()["delivered"] == 8


# -- endpoints -------------------------------------------------------------------------------


def test_staging_then_production_delivers_everything_to_both(tmp_path: Path) -> None:
    out = convert(REAL_EXPORT, tmp_path / "f.jsonl")
    with portkey_stub() as staging, portkey_stub() as production:
        assert replay_in_process(out, staging.url).code == 0
        again = replay_in_process(out, production.url, quiet=False)  # same file, same journal
        assert again.code == 0, again.stderr
        assert len(staging.state.stored) == 8 and len(production.state.stored) == 8
    assert again.stderr.startswith(f"owui-replay: replay: {production.url}: 8 lines")


@pytest.mark.parametrize(
    ("one", "other"),
    [("http://127.0.0.1:{p}/v1", "http://127.0.0.1:{p}/v1/"),
     ("http://127.0.0.1:{p}/v1", "HTTP://127.0.0.1:{p}/v1//"),
     ("https://API.Portkey.ai:443/v1", "https://api.portkey.ai/v1"),
     ("http://LOCALHOST:80/v1/", "http://localhost/v1")],
)  # fmt: skip
def test_one_endpoint_has_one_identity(one: str, other: str) -> None:
    assert normalized_url(one.format(p=9), name="u") == normalized_url(other.format(p=9), name="u")


def test_another_spelling_of_the_url_sends_nothing_again(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 6)
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url).code == 0
        assert replay_in_process(feedback, stub.url.upper().replace("/V1", "/v1") + "/").code == 0
        assert stored_once(stub, [f"fb-{i:04d}" for i in range(6)])


def test_a_key_rotation_resends_nothing(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 6)
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url).code == 0
        stub.state.api_key = "pk-rotated-key-0123456789"
        make_feedback(tmp_path, 8)  # and two new ratings arrived
        assert replay_in_process(feedback, stub.url, key="pk-rotated-key-0123456789").code == 0
        assert stored_once(stub, [f"fb-{i:04d}" for i in range(8)])


@pytest.mark.parametrize("unknown_path", ["json-404", "html-200", "405"])
def test_a_wrong_base_url_uses_up_nothing_and_the_right_one_delivers_everything(
    tmp_path: Path, unknown_path: str
) -> None:
    feedback = make_feedback(tmp_path, 10)
    with portkey_stub(unknown_path=unknown_path) as stub:
        root = stub.url.removesuffix("/v1")
        wrong = replay_in_process(feedback, root, "--concurrency", "4")
        assert wrong.code == ExitCode.ENDPOINT, wrong.stderr
        assert stub.state.requests <= 4 and not stub.state.stored
        (error,) = [line for line in wrong.stderr.splitlines() if "error:" in line]
        assert f"POST {root}/feedback answered HTTP" in error
        assert f"--portkey-url {root}/v1" in error and "no line was used up" in error
        right = replay_in_process(feedback, stub.url)
        assert right.code == ExitCode.OK, right.stderr
        assert stored_once(stub, [f"fb-{i:04d}" for i in range(10)])


def test_a_redirect_to_another_host_is_not_followed_and_the_key_stays_home(
    tmp_path: Path,
) -> None:
    feedback = make_feedback(tmp_path, 5)
    with portkey_stub() as elsewhere:
        target = elsewhere.url.replace("127.0.0.1", "localhost")
        with portkey_stub(redirect_to=target + "/feedback") as stub:
            result = replay_in_process(feedback, stub.url)
            assert result.code == ExitCode.ENDPOINT
            assert elsewhere.state.requests == 0 and not stub.state.stored
        port = target.split(":")[2].split("/")[0]
        assert f"a redirect to localhost:{port}" in result.stderr
        assert "redirects are not followed" in result.stderr
        with portkey_stub() as fixed:
            assert replay_in_process(feedback, fixed.url).code == 0
            assert len(fixed.state.stored) == 5


def test_refused_lines_stay_refused_until_retry_refused(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 4)
    with portkey_stub(faults=[Fault("400")]) as stub:
        first = replay_in_process(feedback, stub.url, "--concurrency", "1")
        assert first.code == ExitCode.DELIVERY_FAILED and len(stub.state.stored) == 3
        second = replay_in_process(feedback, stub.url, quiet=False)
        assert second.code == ExitCode.OK and stub.state.requests == 4
        assert "refused earlier: 1 (--retry-refused sends them again)" in second.stderr
        third = replay_in_process(feedback, stub.url, "--retry-refused")
        assert third.code == ExitCode.OK
        assert stored_once(stub, [f"fb-{i:04d}" for i in range(4)])


def test_a_dry_run_prints_the_endpoint_and_the_plan(tmp_path: Path) -> None:
    records = thumbs(json.loads(REAL_EXPORT.read_text()))
    later = copy.deepcopy(records)
    later[0]["data"]["rating"] = -later[0]["data"]["rating"]
    later[0]["updated_at"] += 60
    with portkey_stub() as stub:
        out1 = convert(export_file(tmp_path / "e1.json", records[:6]), tmp_path / "a" / "f.jsonl")
        assert replay_in_process(out1, stub.url).code == 0
        out2 = convert(export_file(tmp_path / "e2.json", later), tmp_path / "b" / "f.jsonl")
        plan = run_cli("replay", str(out2), "--base-url", stub.url, "--dry-run", "--samples", "0")
        assert plan.code == 0 and stub.state.requests == 6
    assert (
        f"dry run: {stub.url}: 8 lines, would POST 2, PUT 1, already delivered: 5, "
        "uncertain resent: 0"
    ) in plan.stderr


def test_two_runs_to_one_endpoint_cannot_overlap(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 3)
    with portkey_stub() as stub:
        state = DeliveryState(default_state_path(), stub.url)
        state.lock()  # as another process would hold it (fcntl locks are per process, so a
        # second process is simulated by a child holding the lock)
        state.close()
        import subprocess
        import sys

        with subprocess.Popen(
            [sys.executable, "-c",
             "import sys,time; from pathlib import Path; "
             "from owui_replay.delivery_state import DeliveryState; "
             "s = DeliveryState(Path(sys.argv[1]), sys.argv[2]); s.lock(); "
             "print('held', flush=True); time.sleep(30)",
             str(default_state_path()), stub.url],
            stdout=subprocess.PIPE, text=True,
        ) as holder:  # fmt: skip
            try:
                assert holder.stdout is not None and holder.stdout.readline() == "held\n"
                busy = replay_in_process(feedback, stub.url)
                other = make_feedback(tmp_path / ".." / tmp_path.name, 3, name="other.jsonl")
                with portkey_stub() as elsewhere:  # another endpoint is not held
                    assert replay_in_process(other, elsewhere.url).code == 0
            finally:
                holder.kill()  # leaving the with block waits for it and closes its pipe
        assert busy.code == ExitCode.BUSY and "another owui-replay run is sending" in busy.stderr
        assert stub.state.requests == 0
        assert replay_in_process(feedback, stub.url).code == 0


# -- the store itself ------------------------------------------------------------------------


def rating(key: str = "fb-1", updated_at: int = 10, content: str = "c1") -> Rating:
    return Rating(key, updated_at, content, "chat:msg")


def test_judge_covers_every_state() -> None:
    from owui_replay.delivery_state import Known

    assert judge(rating(), None) is LineState.NEW
    delivered = Known("pk1", 10, "c1", 0, None)
    assert judge(rating(), delivered) is LineState.DELIVERED
    assert judge(rating(content="c2"), delivered) is LineState.CHANGED
    assert judge(rating(updated_at=11, content="c2"), delivered) is LineState.CHANGED
    assert judge(rating(updated_at=9, content="c0"), delivered) is LineState.BACKWARDS
    assert judge(rating(updated_at=9, content="c0"), delivered, send_older=True) is (
        LineState.CHANGED
    )
    taken = Known("pk1", 10, "c1", 0, None, taken_at=500)  # its export's time is known
    assert judge(Rating("fb-1", 9, "c0", "t", 600), taken) is LineState.CHANGED  # taken later
    assert judge(Rating("fb-1", 11, "c0", "t", 400), taken) is LineState.STALE  # taken earlier
    assert judge(Rating("fb-1", 9, "c0", "t", 500), taken) is LineState.BACKWARDS  # same export
    assert judge(rating(content="c2"), Known("", 10, "c1", 0, None)) is LineState.NOT_UPDATABLE
    assert judge(rating(), Known(None, None, None, 1, None)) is LineState.UNCERTAIN
    refused = Known(None, None, None, 0, "c1")
    assert judge(rating(), refused) is LineState.REFUSED
    assert judge(rating(), refused, retry_refused=True) is LineState.NEW
    assert judge(rating(content="c2"), refused) is LineState.NEW  # a corrected payload
    migrated = Known("pk1", 10, None, 0, None)  # a 0.1.0 row has no content hash
    assert judge(rating(), migrated) is LineState.DELIVERED
    assert judge(rating(updated_at=11), migrated) is LineState.CHANGED


def test_an_older_version_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    with DeliveryState(tmp_path / "s.sqlite3", "http://x/v1") as state:
        newer, older = rating(updated_at=20, content="new"), rating(updated_at=10, content="old")
        state.intend([newer], "POST")
        state.acknowledged([newer], ["pk1"], "POST")
        state.intend([older], "PUT")
        state.acknowledged([older], ["pk1"], "PUT")  # a late answer for an older version
        known = state.lookup("fb-1")
    assert known is not None and (known.updated_at, known.content) == (20, "new")


def test_intent_and_outcome_are_counted_per_attempt(tmp_path: Path) -> None:
    with DeliveryState(tmp_path / "s.sqlite3", "http://x/v1") as state:
        r = rating()
        state.intend([r], "POST")
        assert state.lookup(r.key).unknown == 1  # type: ignore[union-attr]
        state.answered([r], "POST")  # a 503: known not stored
        assert state.lookup(r.key).unknown == 0  # type: ignore[union-attr]
        state.intend([r], "POST")  # no answer: stays unknown
        state.intend([r], "POST")
        assert state.acknowledged([r], ["pk9"], "POST") == 1  # one copy may be extra
        assert state.counts() == {
            "ratings": 1, "delivered": 1, "uncertain": 0, "refused": 0, "extra_copies": 1
        }  # fmt: skip


def test_a_0_1_0_ledger_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE delivered (endpoint TEXT NOT NULL, feedback_id TEXT NOT NULL, "
        "portkey_id TEXT NOT NULL, updated_at INTEGER NOT NULL, value INTEGER NOT NULL, "
        "trace_id TEXT NOT NULL, recorded_at TEXT NOT NULL, PRIMARY KEY (endpoint, feedback_id))"
    )
    db.execute("INSERT INTO delivered VALUES ('http://x/v1', 'fb-1', 'pk1', 10, 1, 't', 'now')")
    db.commit()
    db.close()
    with DeliveryState(path, "http://x/v1") as state:
        assert judge(rating(), state.lookup("fb-1")) is LineState.DELIVERED
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (STATE_FORMAT,)


def test_a_newer_or_foreign_state_file_is_a_clear_error_and_stays_unchanged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE ratings (x)")
    db.execute("CREATE TABLE endpoints (x)")
    db.execute(f"PRAGMA user_version = {STATE_FORMAT + 1}")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match=f"format {STATE_FORMAT + 1} is newer"):
        DeliveryState(path, "http://x/v1")
    assert path.read_bytes() == before
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StateError, match="not an owui-replay delivery state"):
        DeliveryState(garbage, "http://x/v1")
    for version, name in ((0, "someone-else"), (1, "ratings"), (7, "ratings")):
        foreign = tmp_path / f"foreign-{version}.sqlite3"
        db = sqlite3.connect(foreign)
        db.execute(f"CREATE TABLE {name.replace('-', '_')} (x)")
        db.execute(f"PRAGMA user_version = {version}")
        db.commit()
        db.close()
        before = foreign.read_bytes()
        with pytest.raises(StateError, match=f"{foreign}: not an owui-replay delivery state"):
            DeliveryState(foreign, "http://x/v1")
        assert foreign.read_bytes() == before  # not a byte changed: not even WAL mode
        assert not Path(str(foreign) + "-wal").exists()


def test_lines_without_a_feedback_id_are_keyed_by_their_bytes(tmp_path: Path) -> None:
    payload = {"trace_id": "t", "value": 1, "weight": 1}
    raw = json.dumps(payload).encode()
    assert rating_of(payload, raw) == rating_of(payload, raw + b"\n")
    assert rating_of(payload, raw).key != rating_of({**payload, "value": -1}, raw + b" ").key
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps(payload) + "\n" + json.dumps({**payload, "trace_id": "u"}) + "\n")
    with portkey_stub() as stub:
        assert replay_in_process(path, stub.url).code == 0
        assert replay_in_process(path, stub.url).code == 0
        assert len(stub.state.stored) == 2


def test_state_command_lists_and_forgets_an_endpoint(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 4)
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url).code == 0
        listing = run_cli("state", "--json")
        doc = json.loads(listing.stdout)
        assert doc["endpoints"][stub.url]["delivered"] == 4
        forgot = run_cli("state", "--forget", stub.url + "/")
        assert forgot.code == 0
        assert f"forgot {stub.url}: 4 delivered, 0 uncertain, 0 refused" in forgot.stderr
        assert replay_in_process(feedback, stub.url).code == 0  # starts over
        assert len(stub.state.stored) == 8
        typo = run_cli("state", "--forget", "http://127.0.0.1:9/v1")
        assert typo.code == 0 and "nothing was delivered, uncertain or refused there" in typo.stderr


def test_state_prune_drops_only_endpoints_that_hold_nothing(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 2)
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url).code == 0
        typo = stub.url + "/typo"  # 404 on its /feedback: a configuration failure, nothing sent
        assert replay_in_process(feedback, typo).code == ExitCode.ENDPOINT
    before = json.loads(run_cli("state", "--json").stdout)["endpoints"]
    pruned = run_cli("state", "--prune")
    after = json.loads(run_cli("state", "--json").stdout)["endpoints"]
    assert pruned.code == 0
    assert set(before) == {stub.url, typo}, before
    assert set(after) == {stub.url}, pruned.stderr
    assert f"{typo}: nothing was delivered, uncertain or refused there" in pruned.stderr


def test_every_request_reaches_the_server_after_its_intent_is_committed(tmp_path: Path) -> None:
    """Deterministic, not by chance: while the server handles each request, a separate
    connection must already see the rating as possibly sent."""
    state_file = tmp_path / "state.sqlite3"
    feedback = make_feedback(tmp_path, 30)
    seen: list[tuple[str, int, str | None]] = []

    def check(phase: str, body: Any) -> None:
        if phase != "received":
            return
        items = json.loads(body)
        db = sqlite3.connect(f"file:{state_file}?mode=ro", uri=True)
        try:
            for item in items if isinstance(items, list) else [items]:
                key = item["metadata"]["feedback_id"]
                row = db.execute(
                    "SELECT unknown, last_attempt FROM ratings WHERE rating_key = ?", (key,)
                ).fetchone()
                seen.append((key, row[0] if row else 0, row[1] if row else None))
        finally:
            db.close()

    with portkey_stub(hook=check) as stub:
        args = ("--ledger", str(state_file), "--concurrency", "4")
        assert replay_in_process(feedback, stub.url, *args, "--batch-size", "3").code == 0
    assert len(seen) == 30
    assert all(
        unknown >= 1 and attempt and attempt.startswith("POST") for _, unknown, attempt in seen
    )


def test_the_approvers_are_recorded_with_each_rating(tmp_path: Path) -> None:
    with DeliveryState(tmp_path / "s.sqlite3", "http://x/v1") as state:
        state.intend([rating()], "POST", approved_by="auditor@example.com")
    with contextlib.closing(sqlite3.connect(tmp_path / "s.sqlite3")) as db:
        row = db.execute("SELECT approved_by FROM ratings").fetchone()
    assert row == ("auditor@example.com",)


def test_the_api_key_is_in_no_state_file(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 3)
    with portkey_stub(faults=[Fault("400-echo-key")]) as stub, environment(PORTKEY_API_KEY=API_KEY):
        run_cli("replay", str(feedback), "--base-url", stub.url, "-q", "--concurrency", "1")
    for path in [*default_state_path().parent.iterdir(), *tmp_path.iterdir()]:
        assert API_KEY.encode() not in path.read_bytes(), path
    assert read_jsonl(tmp_path / "feedback.failed.jsonl")[0]["status"] == 400


# Gaps found by mutation testing (dev/mutate.py owui_replay/delivery_state.py ...).


def _rating(key: str, updated_at: int = 1, content: str = "c1") -> Rating:
    return Rating(key, updated_at, content, f"trace-{key}")


def test_only_a_post_can_leave_a_copy_behind(tmp_path: Path) -> None:
    """A PUT replaces the one stored rating: sending it makes nothing uncertain, and its
    answer (stored, refused or not) uncounts nothing a POST counted."""
    with DeliveryState(tmp_path / "s.sqlite3", "http://127.0.0.1:1/v1") as state:
        a, b = _rating("a"), _rating("b")
        state.intend([a, b], "POST")
        state.acknowledged([a, b], ["pk-a", "pk-b"], "POST")
        changed = _rating("a", 2, "c2")
        state.intend([changed], "PUT")
        assert state.lookup("a") is not None and state.lookup("a").unknown == 0  # type: ignore[union-attr]
        state.refused(changed, "PUT", 422, "no")
        state.intend([_rating("c")], "POST")
        state.intend([_rating("c")], "POST")  # sent twice, no answer the first time
        state.refused(_rating("c"), "PUT", 422, "no")  # a PUT's refusal is not the POST's answer
        assert state.lookup("c").unknown == 2  # type: ignore[union-attr]
        state.refused(_rating("c"), "POST", 422, "no")
        assert state.lookup("c").unknown == 1  # type: ignore[union-attr]
        assert state.acknowledged([changed], ["pk-a"], "PUT") == 0
        assert state.counts()["extra_copies"] == 0


def test_extra_copies_add_up_over_a_batch(tmp_path: Path) -> None:
    with DeliveryState(tmp_path / "s.sqlite3", "http://127.0.0.1:1/v1") as state:
        ratings = [_rating("a"), _rating("b"), _rating("c")]
        for _ in range(3):  # three attempts each, the first two unanswered
            state.intend(ratings, "POST")
        assert state.acknowledged(ratings, ["1", "2", "3"], "POST") == 6
        assert state.counts() == {
            "ratings": 3, "delivered": 3, "uncertain": 0, "refused": 0, "extra_copies": 6,
        }  # fmt: skip


def test_a_line_with_an_empty_feedback_id_is_keyed_by_its_bytes() -> None:
    raw = b'{"trace_id":"t","value":1,"metadata":{"feedback_id":"","updated_at":"5"}}\n'
    rating = rating_of(json.loads(raw), raw)
    assert rating.key.startswith("sha256:") and rating.updated_at == 0
    named = rating_of({"trace_id": "t", "value": 1, "metadata": {"feedback_id": "f"}}, raw)
    assert (named.key, named.updated_at) == ("f", 0)


def test_without_xdg_state_home_the_state_lives_under_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_path() == tmp_path / ".local" / "state" / "owui-replay" / "ledger.sqlite3"


@pytest.mark.parametrize(
    "change",
    [lambda p: p.__setitem__("value", -1), lambda p: p.__setitem__("weight", 0.5),
     lambda p: p["metadata"].__setitem__("comment", "changed")],
    ids=["value", "weight", "metadata"],
)  # fmt: skip
def test_what_a_put_can_change_changes_the_content(change) -> None:
    payload = {"trace_id": "t", "value": 1, "metadata": {"feedback_id": "f", "comment": "c"}}
    edited = copy.deepcopy(payload)
    change(edited)
    raw = json.dumps(payload).encode()
    assert rating_of(payload, raw).content != rating_of(edited, raw).content
    same = {**payload, "weight": 1, "trace_id": "another"}  # weight 1 is the default
    assert rating_of(same, raw).content == rating_of(payload, raw).content
