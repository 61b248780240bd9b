"""The live Open WebUI stand-in behaves as OPENWEBUI-FACTS says a real 0.12.4 server does."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from tests.openwebui_live_stub import (
    EXPORT,
    IDS,
    NOT_FOUND,
    RECORD,
    WEBHOOKS,
    live_openwebui,
    new_rating,
)
from tests.openwebui_stub import ADMIN_TOKEN, INVALID, NO_PERMISSION, USER_TOKEN
from tests.serving import serving
from tests.test_listen import thumbs

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Catcher(BaseHTTPRequestHandler):
    """A webhook receiver that keeps what it is sent."""

    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.got.append((time.monotonic(), dict(self.headers), json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def catcher() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Catcher)
    server.got = []  # type: ignore[attr-defined]
    return serving(server)


def test_ids_record_and_export_answer_as_0_12_4_does() -> None:
    records = thumbs()
    with live_openwebui() as owui:
        for record in records[:3]:
            owui.owui.records[record["id"]] = record
        ids = requests.get(owui.url + IDS, headers=ADMIN).json()
        one = requests.get(owui.url + RECORD + records[0]["id"], headers=ADMIN)
        export = requests.get(owui.url + EXPORT, headers=ADMIN).json()
        owui.owui.delete(records[0]["id"])
        gone = requests.get(owui.url + RECORD + records[0]["id"], headers=ADMIN)
    assert [set(i) for i in ids] == [{"id", "user_id", "created_at", "updated_at"}] * 3
    assert [i["updated_at"] for i in ids] == sorted((i["updated_at"] for i in ids), reverse=True)
    assert one.json() == export[0] == records[0]  # the export's element, as it is
    assert gone.status_code == 404 and gone.json() == {"detail": NOT_FOUND}


def test_a_change_is_posted_20_to_60_ms_later_once_and_lost_when_nobody_listens() -> None:
    template = thumbs()[0]
    with live_openwebui() as owui, catcher() as hook:
        url = f"http://127.0.0.1:{hook.server_address[1]}/in"
        made = requests.post(
            owui.url + WEBHOOKS,
            headers=ADMIN,
            json={"name": "t", "url": url, "enabled": True, "events": ["feedback.*"]},
        ).json()
        began = time.monotonic()
        fid = owui.owui.create(new_rating(template, 1))
        owui.owui.settle()
        when, headers, event = hook.got[0]
        hook.shutdown()
        hook.server_close()
        owui.owui.update(fid, -1)  # the receiver is down: dropped, not retried
        owui.owui.settle()
        time.sleep(0.2)
        listed = requests.get(owui.url + WEBHOOKS, headers=ADMIN).json()
        deleted = requests.delete(f"{owui.url}{WEBHOOKS}/{made['id']}", headers=ADMIN)
    assert 0.02 <= when - began < 0.2 and len(hook.got) == 1
    assert event["event"] == "feedback.created" and event["subject"] == {
        "type": "feedback",
        "id": fid,
    }
    assert event["data"] == {"rating": 1} and {"name", "email"} <= set(event["actor"])
    assert "aiohttp" in headers["User-Agent"] and not any("signature" in h.lower() for h in headers)
    assert owui.owui.posted == {"ok": 1, "dropped": 1}
    assert listed[0]["url"] == url and deleted.status_code == 200 and not owui.owui.webhooks


def test_refusals_are_401_with_the_real_details_and_unknown_paths_the_web_page() -> None:
    with live_openwebui() as owui:
        bad = requests.get(owui.url + IDS, headers={"Authorization": "Bearer nope"})
        user = requests.get(owui.url + IDS, headers={"Authorization": f"Bearer {USER_TOKEN}"})
        cookie = requests.get(owui.url + IDS, headers={"Cookie": f"token={ADMIN_TOKEN}"})
        page = requests.get(owui.url + "/api/api/v1/evaluations/feedbacks/all/ids")
        wrong_method = requests.post(owui.url + IDS, headers=ADMIN)
    assert (bad.status_code, bad.json()) == (401, {"detail": INVALID})
    assert (user.status_code, user.json()) == (401, {"detail": NO_PERMISSION})
    assert cookie.status_code == 200
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert wrong_method.status_code == 405


def test_two_changes_within_one_second_share_their_updated_at() -> None:
    template = thumbs()[0]
    with live_openwebui() as owui:
        while time.time() % 1 > 0.5:  # early in a second
            time.sleep(0.01)
        fid = owui.owui.create(new_rating(template, 1))
        owui.owui.update(fid, -1)
        (entry,) = requests.get(owui.url + IDS, headers=ADMIN).json()
    assert entry["updated_at"] == entry["created_at"] == int(entry["updated_at"])
    assert isinstance(entry["updated_at"], int)
