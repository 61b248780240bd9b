"""Open WebUI's small admin calls the listener needs: the /ids list, one record, webhooks.

Built on download.OpenWebUI's session (same identity, TLS and timeout settings). Unlike the
export download, a 404 is an answer here (a deleted record), so every call returns what the
server said and raises only when it cannot be told: OpenWebUIDown for no answer or a 5xx (the
listener retries later and reports it in /healthz), ReplayError(AUTH) for a refused token.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from owui_replay.download import OpenWebUI, _reason
from owui_replay.errors import ExitCode, InputError, ReplayError

IDS_PATH = "/api/v1/evaluations/feedbacks/all/ids"
RECORD_PATH = "/api/v1/evaluations/feedback/"
WEBHOOKS_PATH = "/api/events/webhooks"
FEEDBACK_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class OpenWebUIDown(ReplayError):
    """No usable answer from Open WebUI (unreachable, timeout, 5xx): try again later."""

    code = ExitCode.NETWORK


@dataclass(frozen=True)
class IdEntry:
    """One row of /feedbacks/all/ids: a rating's id and when it last changed."""

    id: str
    updated_at: int


class LiveOpenWebUI:
    """The calls the live mirror makes to Open WebUI: /ids, one record, webhooks."""

    def __init__(self, client: OpenWebUI) -> None:
        self.client = client
        self.bytes_read = 0  # response bodies received, for sync's --json
        self.skew: float | None = None  # a lower bound of (Open WebUI's clock - ours), seconds
        self._count = threading.Lock()

    def _call(self, method: str, path: str, body: Any = None) -> requests.Response:
        client = self.client
        # Open WebUI compresses any answer over ~500 bytes for a client that accepts it: /ids
        # is a few MB of ids and times for a large history, a third of that compressed
        headers = {"Authorization": f"Bearer {client.token.reveal()}", "Accept-Encoding": "gzip"}
        try:
            response = client.session.request(
                method,
                client.base + path,
                headers=headers,
                json=body,
                timeout=client.timeout,
                verify=client.verify,
            )
        except requests.exceptions.RequestException as exc:
            raise OpenWebUIDown(
                f"{client.host}: {method} {path}: {client.token.redact(_reason(exc))}"
            ) from None
        if response.status_code in (401, 403):
            raise ReplayError(
                f"{client.host}: {method} {path} refused the token (HTTP "
                f"{response.status_code}): OPENWEBUI_TOKEN must be an admin's token or API key",
                ExitCode.AUTH,
            )
        if "html" in response.headers.get("Content-Type", "").lower():
            raise InputError(
                f"{client.base}{path} answered a web page, not Open WebUI's API: "
                "OPENWEBUI_BASE_URL should be the address you open Open WebUI at (and the "
                "server 0.12 or later for events, 0.6.42 or later for /ids)"
            )
        if response.status_code >= 500:
            raise OpenWebUIDown(
                f"{client.host}: {method} {path} answered HTTP {response.status_code}"
            )
        self._note(response)
        return response

    def _note(self, response: requests.Response) -> None:
        """Count the body's bytes as they came over the wire (compressed, when they were);
        tighten the clock bound from the Date header (whole seconds,
        stamped before the answer arrived, so the server's clock was at least this far ahead)."""
        received = time.time()
        try:
            date = parsedate_to_datetime(response.headers.get("Date", "")).timestamp()
        except (TypeError, ValueError):
            date = None
        with self._count:
            self.bytes_read += _wire_bytes(response)
            if date is not None:
                bound = date - received
                self.skew = bound if self.skew is None else max(self.skew, bound)

    def ids_if_supported(self) -> list[IdEntry] | None:
        """/ids, or None from a server that has none (404/405 before 0.6.42, or a web page)."""
        try:
            response = self._call("GET", IDS_PATH)
        except InputError:
            return None  # an HTML 200: the web app's catch-all route
        if response.status_code in (404, 405):
            return None
        return self._ids(response)

    def ids(self) -> list[IdEntry]:
        """Every feedback record's id and updated_at, in one response."""
        return self._ids(self._call("GET", IDS_PATH))

    def _ids(self, response: requests.Response) -> list[IdEntry]:
        if response.status_code != 200:
            raise OpenWebUIDown(
                f"{self.client.host}: GET {IDS_PATH} answered HTTP {response.status_code}"
            )
        body = _json(response, IDS_PATH)
        if not isinstance(body, list):
            raise OpenWebUIDown(f"{self.client.host}: GET {IDS_PATH}: not a JSON list")
        out = []
        for i, item in enumerate(body):
            ok = isinstance(item, dict) and isinstance(item.get("id"), str)
            updated = item.get("updated_at") if ok else None
            if not ok or isinstance(updated, bool) or not isinstance(updated, (int, float)):
                raise OpenWebUIDown(
                    f"{self.client.host}: GET {IDS_PATH}: entry {i} has no id and updated_at"
                )
            out.append(IdEntry(item["id"], int(updated)))
        return out

    def record(self, feedback_id: str) -> Any | None:
        """The record as in the export, or None when the server says it does not exist."""
        raw = self.record_bytes(feedback_id)
        return None if raw is None else _json_bytes(raw, RECORD_PATH + feedback_id)

    def record_bytes(self, feedback_id: str) -> bytes | None:
        """The record's JSON exactly as the server sent it, or None."""
        if not FEEDBACK_ID.fullmatch(feedback_id):
            return None  # never put an odd id into a URL path; no such record can exist
        path = RECORD_PATH + feedback_id
        response = self._call("GET", path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise OpenWebUIDown(
                f"{self.client.host}: GET {path} answered HTTP {response.status_code}"
            )
        return bytes(response.content)

    # -- webhooks -------------------------------------------------------------------------

    def register(self, name: str, url: str, events: list[str]) -> str:
        """Create or update the webhook called NAME; returns created, updated or unchanged."""
        listed = _json(self._ok(self._call("GET", WEBHOOKS_PATH), WEBHOOKS_PATH), WEBHOOKS_PATH)
        mine = [w for w in listed if isinstance(w, dict) and w.get("name") == name]
        wanted = {"name": name, "url": url, "enabled": True, "events": events}
        if not mine:
            self._ok(self._call("POST", WEBHOOKS_PATH, wanted), WEBHOOKS_PATH)
            return "created"
        hook = mine[0]
        if all(hook.get(k) == v for k, v in wanted.items()):
            return "unchanged"
        path = f"{WEBHOOKS_PATH}/{hook.get('id')}"
        self._ok(self._call("PUT", path, {k: v for k, v in wanted.items() if k != "name"}), path)
        return "updated"

    def _ok(self, response: requests.Response, path: str) -> requests.Response:
        if response.status_code != 200:
            raise ReplayError(
                f"{self.client.host}: {path} answered HTTP {response.status_code}: event "
                "webhooks need Open WebUI 0.12 or later (or add it by hand: Admin Panel > "
                "Settings > Events)",
                ExitCode.ERROR,
            )
        return response


def _json(response: requests.Response, path: str) -> Any:
    return _json_bytes(response.content, path)


def _json_bytes(content: bytes, path: str) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        raise OpenWebUIDown(f"{path}: the answer is not JSON") from None


def _wire_bytes(response: requests.Response) -> int:
    """The body's size as received: urllib3 counts the raw (still compressed) bytes it read."""
    body = response.content  # read it all first
    raw = getattr(response.raw, "tell", None)
    counted = raw() if callable(raw) else None
    return counted if isinstance(counted, int) and counted > 0 else len(body)
