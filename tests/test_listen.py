"""listen: the live mirror, against the live Open WebUI stand-in and the Portkey stand-in.

The listener runs in this process (its HTTP server and worker on threads) except where it is
killed for real (test_listen_kill.py). Open WebUI posts events from its own threads 20-60 ms
after each change, without retry; Portkey's stand-in records every POST and PUT.
"""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from owui_replay.errors import ExitCode
from owui_replay.listen import Running, start
from owui_replay.mapping import MappingOptions
from owui_replay.replaying import ReplaySettings
from owui_replay.secrets import Secret
from owui_replay.settings import ListenSettings
from tests.helpers import REAL_EXPORT, descriptors_open_on, environment, run_cli
from tests.openwebui_live_stub import (
    ACTOR,
    RECORD,
    LiveServer,
    event_body,
    live_openwebui,
    new_rating,
)
from tests.openwebui_stub import ADMIN_TOKEN
from tests.portkey_stub import API_KEY, StubServer, portkey_stub


def thumbs() -> list[dict[str, Any]]:
    """The real export's records that convert writes (8 of them)."""
    return [r for r in json.loads(REAL_EXPORT.read_text()) if r.get("snapshot")]


@dataclass
class Mirror:
    running: Running
    owui: LiveServer
    portkey: StubServer
    lines: list[str] = field(default_factory=list)

    @property
    def events_url(self) -> str:
        return self.running.listener.events_url()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.running.server.port}"

    def health(self) -> tuple[int, dict[str, Any]]:
        answer = requests.get(self.base + "/healthz", timeout=5)
        return answer.status_code, answer.json()

    def holds(self) -> dict[str, list[dict[str, Any]]]:
        return self.portkey.state.holdings()


def settings_for(tmp: Path, owui: LiveServer, pk: StubServer, **extra: Any) -> ListenSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "openwebui_url": owui.url,
        "replay": ReplaySettings(base_url=pk.url, state_file=tmp / "ledger.sqlite3"),
        "mapping": MappingOptions(),
        "workdir": tmp / "work",
        "register": True,
        "reconcile_every": 600.0,
    }
    values.update(extra)
    return ListenSettings(**values)


@contextmanager
def stand_ins(
    records: list[dict[str, Any]], **portkey: Any
) -> Iterator[tuple[StubServer, LiveServer]]:
    with portkey_stub(**portkey) as pk, live_openwebui() as owui:
        for record in records:
            owui.owui.records[record["id"]] = copy.deepcopy(record)
        yield pk, owui


@contextmanager
def listening(tmp: Path, pk: StubServer, owui: LiveServer, **extra: Any) -> Iterator[Mirror]:
    lines: list[str] = []
    running = start(
        settings_for(tmp, owui, pk, **extra),
        Secret(ADMIN_TOKEN, "test"),
        Secret(API_KEY, "test"),
        lines.append,
    )
    try:
        yield Mirror(running, owui, pk, lines)
    finally:
        assert running.shutdown(grace=4.5)


@contextmanager
def mirror(tmp: Path, records: list[dict[str, Any]], **extra: Any) -> Iterator[Mirror]:
    with stand_ins(records) as (pk, owui), listening(tmp, pk, owui, **extra) as m:
        yield m


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def reconciled(m: Mirror, count: int = 1) -> Callable[[], bool]:
    return lambda: sum(line.startswith("reconciled:") for line in m.lines) >= count


def test_live_create_flip_delete_reach_portkey_within_a_second(tmp_path: Path) -> None:
    records = thumbs()
    with mirror(tmp_path, records[:6]) as m:
        wait_for(reconciled(m))
        assert len(m.portkey.state.stored) == 6  # the start-up reconcile sent what was there
        (hook,) = m.owui.owui.webhooks.values()
        assert hook["url"] == m.events_url and hook["events"] == ["feedback.*"]
        owui = m.owui.owui

        created = owui.create(new_rating(records[6], 1))
        began = time.monotonic()
        wait_for(lambda: created in m.holds(), 1.0)
        latency = time.monotonic() - began
        owui.update(created, -1)
        wait_for(lambda: m.holds()[created][0]["value"] == -1, 1.0)
        owui.delete(created)
        wait_for(lambda: m.holds()[created][0]["weight"] == 0, 1.0)
        (copy_,) = m.holds()[created]
        assert copy_["value"] == -1 and copy_["metadata"]["withdrawn"] == "true"
        wait_for(lambda: m.health()[1]["queue_depth"] == 0)
        status, doc = m.health()
    assert latency < 1.0
    assert status == 200 and doc["status"] == "ok" and doc["queue_depth"] == 0
    assert doc["sent"] == {"posted": 7, "updated": 1, "withdrawn": 1, "refused": 0}
    assert doc["counts"]["withdrawn"] == 1 and doc["counts"]["held"] == 6
    assert len(m.portkey.state.stored) == 7 and len(m.portkey.state.updates) == 2
    assert any(f"{created}: withdrawn" in line for line in m.lines)
    # the actor's name and email went nowhere: not to Portkey, not to disk, not to the log
    sent = json.dumps([m.portkey.state.stored, m.portkey.state.updates])
    on_disk = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    for secret in (ACTOR["name"], ACTOR["email"]):
        assert secret not in sent and secret.encode() not in on_disk
    secrets = (ADMIN_TOKEN, API_KEY, m.running.listener.events_secret.reveal())
    assert not any(secret in line for secret in secrets for line in m.lines)


def test_a_rating_recreated_after_its_withdrawal_is_new(tmp_path: Path) -> None:
    records = thumbs()
    with mirror(tmp_path, records[:1]) as m:
        wait_for(reconciled(m))
        m.owui.owui.delete(records[0]["id"])
        wait_for(lambda: m.running.listener.health.sent["withdrawn"] == 1)
        again = m.owui.owui.create(new_rating(records[0], 1))  # a new id, as Open WebUI makes
        wait_for(lambda: again in m.holds())
    assert len(m.portkey.state.stored) == 2 and m.holds()[again][0]["weight"] == 1


def test_a_second_change_within_the_same_second_is_not_missed(tmp_path: Path) -> None:
    """updated_at has one-second resolution: a flip in the second the listener fetched the
    record in looks unchanged in /ids; its event lost too, only a later fetch can see it."""
    records = thumbs()
    with stand_ins([]) as (pk, owui), listening(tmp_path, pk, owui) as m:
        wait_for(reconciled(m))
        (hook,) = owui.owui.webhooks.values()
        for _attempt in range(3):
            hook["enabled"] = True
            while time.time() % 1 > 0.3:  # start early in a second
                time.sleep(0.01)
            fid = owui.owui.create(new_rating(records[0], 1))
            first = owui.owui.records[fid]["updated_at"]
            wait_for(lambda fid=fid: fid in m.holds(), 1.0)  # fetched and POSTed as +1
            hook["enabled"] = False  # the flip's event is lost
            owui.owui.update(fid, -1)
            if owui.owui.records[fid]["updated_at"] == first:
                break
        assert owui.owui.records[fid]["updated_at"] == first, "no flip within one second"
        wait_for(lambda: m.holds()[fid][0]["value"] == -1, 4.0)
    assert [body["value"] for _, body in pk.state.updates] == [-1]


def test_forged_events_and_wrong_paths_send_nothing(tmp_path: Path) -> None:
    records = thumbs()
    with mirror(tmp_path, records) as m:
        wait_for(reconciled(m))
        requests_before = m.portkey.state.requests
        sample = event_body("feedback.updated", records[0]["id"], {"rating": 1})

        def forged(kind: str, subject: str, data: Any = None) -> dict[str, Any]:
            return event_body(kind, subject, {"rating": 1 if data is None else data})

        answers = [
            # real ids with lies about them: fetched, found unchanged, not sent
            requests.post(m.events_url, json=forged("feedback.updated", records[0]["id"], -9)),
            requests.post(m.events_url, json=forged("feedback.deleted", records[1]["id"])),
            requests.post(m.events_url, json=forged("feedback.created", "no-such-rating")),
            requests.post(m.events_url, json=forged("feedback.deleted_all", "all")),
        ]  # fmt: skip
        assert [a.status_code for a in answers] == [200] * 4
        refused = {
            "odd subject": requests.post(m.events_url, json=forged("feedback.updated", "../../x")),
            "not an event": requests.post(m.events_url, data=b"{not json"),
            "other event": requests.post(m.events_url, json=forged("chat.created", "x")),
            "wrong secret": requests.post(m.base + "/events/not-the-secret", json=sample),
            "no secret": requests.post(m.base + "/events/", json=sample),
            "other path": requests.post(m.base + "/", json=sample),
            "GET events": requests.get(m.events_url),
            "PUT events": requests.put(m.events_url, json=sample),
            "POST healthz": requests.post(m.base + "/healthz", json=sample),
            "oversized": requests.post(m.events_url, data=b" " * (64 * 1024 + 1)),
        }
        codes = {name: answer.status_code for name, answer in refused.items()}
        wait_for(lambda: m.running.listener.live.queue_depth() == 0)
        wait_for(reconciled(m, 2))  # the forged deleted_all made it reconcile: nothing gone
        time.sleep(0.3)
        fetched = {p[len(RECORD) :] for _, p in m.owui.owui.requests if p.startswith(RECORD)}
    assert codes == {
        "odd subject": 400, "not an event": 400, "other event": 400, "wrong secret": 404,
        "no secret": 404, "other path": 404, "GET events": 405, "PUT events": 405,
        "POST healthz": 405, "oversized": 413,
    }  # fmt: skip
    assert m.portkey.state.requests == requests_before  # nothing sent
    # what was refused was not fetched: only real ids and the well-formed unknown one were
    assert fetched == {r["id"] for r in records} | {"no-such-rating"}
    assert not any(": withdrawn" in line for line in m.lines)


def test_a_mass_deletion_over_the_cap_withdraws_nothing_and_says_so(tmp_path: Path) -> None:
    with stand_ins(thumbs()) as (pk, owui):
        with listening(tmp_path, pk, owui, max_withdraw=5) as m:
            wait_for(reconciled(m))
            assert len(pk.state.stored) == 8
            owui.owui.delete_all()
            wait_for(reconciled(m, 2))  # the deleted_all event made it reconcile
            status, doc = m.health()
            assert pk.state.updates == []
        refusal = doc["refusal"]
        assert status == 200 and refusal["would_withdraw"] == 8 and refusal["max_withdraw"] == 5
        assert "none withdrawn" in refusal["message"]
        (said,) = [line for line in m.lines if line.startswith("refused:")]
        assert "8 ratings disappeared" in said and "max_withdraw=5" in said  # start(): Python
        with listening(tmp_path, pk, owui, max_withdraw=5) as again:
            wait_for(reconciled(again))  # still over the cap after a restart: still nothing
        assert pk.state.updates == [] and any(x.startswith("refused:") for x in again.lines)
        with listening(tmp_path, pk, owui, max_withdraw=8) as person:  # a person raised it
            wait_for(reconciled(person))
            status, doc = person.health()
        assert len(pk.state.updates) == 8 and {b["weight"] for _, b in pk.state.updates} == {0}
        assert doc["refusal"] is None and doc["counts"]["withdrawn"] == 8


def test_a_hint_is_on_disk_before_200_and_health_fails_after_a_reconcile_period(
    tmp_path: Path,
) -> None:
    records = thumbs()
    with stand_ins(records[:2]) as (pk, owui):
        owui.owui.api_error = 500  # Open WebUI is failing from the start
        with listening(tmp_path, pk, owui, reconcile_every=0.3) as m:
            answer = requests.post(
                m.events_url, json=event_body("feedback.created", records[0]["id"], {"rating": 1})
            )
            assert answer.status_code == 200
            db = sqlite3.connect(tmp_path / "ledger.sqlite3")
            rows = db.execute("SELECT * FROM live_hints").fetchall()
            db.close()
            time.sleep(0.5)
            failing = m.health()
            owui.owui.api_error = None
            wait_for(lambda: len(pk.state.stored) == 2, 10.0)
            wait_for(lambda: m.health()[0] == 200 and m.health()[1]["queue_depth"] == 0)
            recovered = m.health()[1]
            (hook,) = owui.owui.webhooks.values()  # registered once Open WebUI answered
            assert hook["url"] == m.events_url
    (row,) = rows  # the hint: which rating and what happened to it, nothing of the actor
    assert row[3:5] == (records[0]["id"], "feedback.created")
    assert not any(ACTOR["email"] in str(v) or ACTOR["name"] == v for v in row)
    assert failing[0] == 503 and failing[1]["status"] == "failing: openwebui"
    assert (
        failing[1]["queue_depth"] == 1 and failing[1]["last_event"]["event"] == "feedback.created"
    )
    assert "HTTP 500" in failing[1]["last_error"]
    assert recovered["queue_depth"] == 0 and recovered["failing_since"]["openwebui"] is None
    assert any("Open WebUI failing" in line for line in m.lines)


def test_portkey_refusing_the_key_makes_health_fail_then_recover(tmp_path: Path) -> None:
    records = thumbs()
    with stand_ins(records[:2]) as (pk, owui):
        pk.state.api_key = "pk-a-rotated-key"  # every request now answers 401
        with listening(tmp_path, pk, owui, reconcile_every=0.3) as m:
            wait_for(lambda: m.health()[0] == 503, 5.0)
            failing = m.health()[1]
            pk.state.api_key = API_KEY
            wait_for(lambda: len(pk.state.stored) == 2, 10.0)
            wait_for(lambda: m.health()[0] == 200)
    assert failing["status"] == "failing: portkey" and "auth" in failing["last_error"]
    assert API_KEY not in json.dumps(failing)
    assert set(pk.state.feedback_counts().values()) == {1}
    assert any(line.startswith("Portkey answers again") for line in m.lines)


def test_no_withdraw_keeps_deleted_ratings_and_says_so(tmp_path: Path) -> None:
    records = thumbs()
    with mirror(tmp_path, records[:3], withdraw=False) as m:
        wait_for(reconciled(m))
        m.owui.owui.delete(records[0]["id"])
        wait_for(lambda: any("(withdraw=False)" in line for line in m.lines))
    assert m.portkey.state.updates == [] and len(m.portkey.state.stored) == 3


def test_register_is_idempotent_by_name_and_without_it_the_log_says_where_to_paste(
    tmp_path: Path,
) -> None:
    with stand_ins([]) as (pk, owui):
        owui.owui.webhooks["other"] = {"id": "other", "name": "someone else's", "url": "x",
                                       "enabled": True, "events": ["chat.*"]}  # fmt: skip
        with listening(tmp_path, pk, owui, port=0) as first:
            wait_for(reconciled(first))
        with listening(tmp_path, pk, owui, public_url=first.base) as second:
            wait_for(reconciled(second))  # the same URL as the first: nothing to change
        with listening(tmp_path, pk, owui, register=False) as manual:
            wait_for(reconciled(manual))
        hooks = [h for h in owui.owui.webhooks.values() if h["name"] == "owui-replay"]
    assert len(owui.owui.webhooks) == 2 and len(hooks) == 1
    assert any("webhook 'owui-replay' created for feedback.*" in x for x in first.lines)
    assert any("'owui-replay' unchanged" in line for line in second.lines)
    (said,) = [line for line in manual.lines if "Admin Panel > Settings > Events" in line]
    assert "/events/SECRET" in said and "events.secret" in said
    assert manual.running.listener.events_secret.reveal() not in said
    secret_file = tmp_path / "work" / "events.secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600


def test_events_are_received_under_the_public_url_path_too() -> None:
    from owui_replay.listen_server import Receiver

    receiver = Receiver(lambda s, e: None, lambda: (200, {}), "s" * 20, "/hooks/")
    assert receiver.route("/hooks/events/" + "s" * 20) == "events"
    assert receiver.route("/events/" + "s" * 20) == "events"  # a proxy that strips the prefix
    assert receiver.route("/hooks/healthz") == receiver.route("/healthz") == "healthz"
    for path in ("/hooks/events/" + "s" * 19, "/events/" + "s" * 21, "/other/events/" + "s" * 20):
        assert receiver.route(path) is None, path


def test_cli_refuses_a_bad_token_at_start_up(tmp_path: Path) -> None:
    with (
        portkey_stub() as pk,
        live_openwebui() as owui,
        environment(
            OPENWEBUI_BASE_URL=owui.url,
            OPENWEBUI_TOKEN="wrong-token",
            PORTKEY_API_KEY=API_KEY,
            PORTKEY_BASE_URL=pk.url,
        ),
    ):
        result = run_cli(
            "listen", "--listen", "127.0.0.1:0", "--workdir", str(tmp_path / "w"), "-q"
        )
    assert result.code == ExitCode.AUTH, result.stderr
    assert "refused the token" in result.stderr and "wrong-token" not in result.stderr
    assert result.stderr.count("\n") == 1  # -q: the error, and no log line before it


def test_the_listener_tables_are_a_separate_migration_beside_the_delivery_state(
    tmp_path: Path,
) -> None:
    import pytest

    from owui_replay.delivery_state import LISTENER_TABLES, DeliveryState, list_endpoints
    from owui_replay.errors import InputError
    from owui_replay.live_state import LiveState

    path = tmp_path / "ledger.sqlite3"
    with DeliveryState(path, "http://127.0.0.1:1/v1") as state:
        state.touch_endpoint()
    live = LiveState(path, "http://127.0.0.1:1/v1", "http://127.0.0.1:2")
    live.add_hint("a-rating", "feedback.created")
    live.close()
    assert [name for name, _ in list_endpoints(path)] == ["http://127.0.0.1:1/v1"]
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert tables == {"ratings", "endpoints", "option_sets"} | LISTENER_TABLES  # accepted
    again = LiveState(path, "http://127.0.0.1:1/v1", "http://127.0.0.1:2")  # migrated once
    assert [(h.subject, h.event) for h in again.hints()] == [("a-rating", "feedback.created")]
    again.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE live_meta SET value = '99' WHERE key = 'live_format'")
    db.commit()
    db.close()
    with pytest.raises(InputError, match="listener state format 99 is newer") as caught:
        LiveState(path, "http://127.0.0.1:1/v1", "http://127.0.0.1:2")
    assert caught.value is not None  # its traceback (and the refused object) is still alive
    assert descriptors_open_on(path) == 0  # the refused state closed its connection


def test_a_reconcile_reads_what_changed_not_the_history(tmp_path: Path) -> None:
    """10 changes in a 200-rating history, their events lost: the reconcile reads /ids and the
    10 records, a small part of what the export would be."""
    templates = thumbs()
    history = [new_rating(templates[i % len(templates)], 1) for i in range(200)]
    with stand_ins(history) as (pk, owui), listening(tmp_path, pk, owui) as m:
        wait_for(reconciled(m), 30)
        live = m.running.listener.live
        wait_for(lambda: all(s.settled for s in live.all_seen().values()), 10)
        (hook,) = owui.owui.webhooks.values()
        hook["enabled"] = False  # the changes' events are lost
        changed = [r["id"] for r in history[::20]]
        for fid in changed:
            owui.owui.update(fid, -1)
        with owui.owui.lock:
            owui.owui.bytes_served.clear()
            owui.owui.requests.clear()
        requests.post(m.events_url, json=event_body("feedback.deleted_all", "all", {}))
        wait_for(reconciled(m, 2), 10)
        with owui.owui.lock:
            read = dict(owui.owui.bytes_served)
            fetched = [p for _, p in owui.owui.requests if p.startswith(RECORD)]
        export = len(json.dumps(list(owui.owui.current().values())).encode())
    assert sorted(p[len(RECORD) :] for p in fetched) == sorted(changed)
    assert sorted(b["metadata"]["feedback_id"] for _, b in pk.state.updates) == sorted(changed)
    assert read["ids"] + read["record"] < 0.05 * export, (read, export)


def test_each_day_is_a_handoff_that_verify_and_inspect_accept(tmp_path: Path) -> None:
    from owui_replay.listen_audit import today

    records = thumbs()
    with mirror(tmp_path, records[:4]) as m:
        wait_for(reconciled(m))
        owui = m.owui.owui
        owui.update(records[0]["id"], -1)
        owui.delete(records[1]["id"])
        wait_for(lambda: m.running.listener.health.sent["withdrawn"] == 1)
        wait_for(lambda: m.health()[1]["queue_depth"] == 0)
        day = tmp_path / "work" / "audit" / today()
        with (day / "records.jsonl").open("ab") as records_file:
            records_file.write(b'{"id": "cut by a cra')  # a crash mid-line
        owui.update(records[2]["id"], -1)
        wait_for(lambda: m.holds()[records[2]["id"]][0]["value"] == -1)
        wait_for(lambda: m.health()[1]["queue_depth"] == 0)  # its outcome is recorded
        assert m.running.listener.audit.seal(day)
        assert not m.running.listener.audit.seal(day)  # sealed once
    verified = run_cli("verify", str(day / "feedback.jsonl"), "--export", str(day / "export.json"))
    assert verified.code == ExitCode.OK, verified.stdout + verified.stderr
    assert run_cli("inspect", str(day / "export.json")).code == ExitCode.OK
    payloads = [json.loads(line) for line in (day / "feedback.jsonl").read_text().splitlines()]
    values = {p["metadata"]["feedback_id"]: p["value"] for p in payloads}
    assert values == {records[0]["id"]: -1, records[1]["id"]: records[1]["data"]["rating"],
                      records[2]["id"]: -1,
                      records[3]["id"]: records[3]["data"]["rating"]}  # fmt: skip
    (withdrawal,) = [json.loads(x) for x in (day / "withdrawn.jsonl").read_text().splitlines()]
    assert withdrawal["feedback_id"] == records[1]["id"]
    assert withdrawal["payload"]["weight"] == 0
    # a day a stopped listener left open is sealed by the next start
    old = tmp_path / "work" / "audit" / "2000-01-01"
    old.mkdir()
    (old / "records.jsonl").write_bytes((day / "records.jsonl").read_bytes())
    with mirror(tmp_path, []) as again:
        wait_for(reconciled(again))
    assert (old / "feedback.manifest.json").is_file()
    assert any("audit: sealed" in line for line in again.lines)


def test_a_client_that_breaks_off_mid_body_records_nothing_and_prints_no_traceback(
    tmp_path: Path, capfd: Any
) -> None:
    import socket
    from urllib.parse import urlsplit

    with mirror(tmp_path, []) as m:
        wait_for(reconciled(m))
        path = urlsplit(m.events_url).path
        with socket.create_connection(("127.0.0.1", m.running.server.port)) as raw:
            raw.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 400\r\n\r\n".encode()
                + json.dumps(event_body("feedback.created", "abc", {"rating": 1})).encode()[:40]
            )
        time.sleep(0.3)
        depth = m.health()[1]["queue_depth"]
    assert depth == 0 and m.owui.owui.requests.count(("GET", RECORD + "abc")) == 0
    assert "Traceback" not in capfd.readouterr().err


def test_a_wildcard_listen_address_needs_a_public_url(tmp_path: Path) -> None:
    with environment(OPENWEBUI_BASE_URL="http://127.0.0.1:9", OPENWEBUI_TOKEN=ADMIN_TOKEN,
                     PORTKEY_API_KEY=API_KEY):  # fmt: skip
        result = run_cli("listen", "--listen", "0.0.0.0:8787", "--workdir", str(tmp_path))
    assert result.code == ExitCode.USAGE
    assert "pass --public-url" in result.stderr and not list(tmp_path.iterdir())


def test_a_second_listener_on_the_same_state_and_endpoint_refuses_to_start(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT

    with mirror(tmp_path, []) as m:
        wait_for(reconciled(m))
        second = subprocess.run(
            [sys.executable, "-m", "owui_replay", "listen", "--listen", "127.0.0.1:0",
             "--ledger", str(tmp_path / "ledger.sqlite3"), "--workdir", str(tmp_path / "w2")],
            capture_output=True, text=True, timeout=30,
            env={**os.environ, "PYTHONPATH": str(ROOT), "OPENWEBUI_BASE_URL": m.owui.url,
                 "OPENWEBUI_TOKEN": ADMIN_TOKEN, "PORTKEY_API_KEY": API_KEY,
                 "PORTKEY_BASE_URL": m.portkey.url},
        )  # fmt: skip
    assert second.returncode == ExitCode.BUSY, second.stderr
    assert "another owui-replay run is sending to" in second.stderr


def test_a_lost_state_is_refused_before_anything_is_sent_again(tmp_path: Path) -> None:
    import pytest

    from owui_replay.errors import ReplayError

    records = thumbs()
    with stand_ins(records[:3]) as (pk, owui):
        with listening(tmp_path, pk, owui) as m:
            wait_for(reconciled(m))
        for path in tmp_path.glob("ledger.sqlite3*"):
            path.unlink()  # the state is lost; the work directory's journal is not
        with pytest.raises(ReplayError) as refused:
            start(settings_for(tmp_path, owui, pk), Secret(ADMIN_TOKEN, "t"), Secret(API_KEY, "t"),
                  print)  # fmt: skip
        assert len(pk.state.stored) == 3  # nothing sent again
        replay = ReplaySettings(base_url=pk.url, state_file=tmp_path / "ledger.sqlite3",
                                new_state=True)  # fmt: skip
        with listening(tmp_path, pk, owui, replay=replay) as again:  # a person chose to
            wait_for(reconciled(again))
    assert refused.value.code == ExitCode.NO_STATE
    assert "listen.journal.jsonl records 3 deliveries" in str(refused.value)
    assert "new_state=True" in str(refused.value) and len(pk.state.stored) == 6


def test_a_listener_that_fails_to_start_closes_the_state_it_opened(tmp_path: Path) -> None:
    """A start-up failure after the state is open (here a CA bundle that does not exist, found
    when the Open WebUI client is made) leaves no descriptor on the state file behind, so a
    library caller that goes on can open it again."""
    import pytest

    from owui_replay.errors import UsageError
    from owui_replay.listen import Listener

    state = tmp_path / "ledger.sqlite3"
    settings = ListenSettings(
        host="127.0.0.1",
        port=0,
        openwebui_url="http://127.0.0.1:9",
        mapping=MappingOptions(),
        workdir=tmp_path / "work",
        replay=ReplaySettings(base_url="http://127.0.0.1:9/v1", state_file=state),
        verify_tls=str(tmp_path / "no-such-ca.pem"),
    )
    with pytest.raises(UsageError, match="no such file") as caught:
        Listener(settings, Secret(ADMIN_TOKEN, "test"), Secret(API_KEY, "test"), print)
    assert caught.value is not None  # the half-made listener is still referenced here
    assert state.exists()
    assert descriptors_open_on(state) == 0
