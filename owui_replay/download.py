"""Fetch a feedback export from Open WebUI to disk: streamed, hashed, atomic.

Admin scope: GET /api/v1/evaluations/feedbacks/all/export (a JSON array, no paging, possibly
gigabytes) is written to disk as it arrives. User scope: GET /api/v1/evaluations/feedbacks/user
returns {"items": [...], "total": N} pages of 30 on current servers (a plain list on older
ones); every page is followed and the items written as one JSON array.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import requests

from owui_replay._version import __version__
from owui_replay.array_shape import ArrayShape
from owui_replay.atomic import (
    HashedWriter,
    missing_folders,
    remove_empty,
    write_bytes_atomic,
    write_json_atomic,
)
from owui_replay.errors import ExitCode, InputError, ReplayError
from owui_replay.http_session import checked_ca_bundle, session_for
from owui_replay.net_words import in_words
from owui_replay.option_names import option
from owui_replay.progress import byte_bar
from owui_replay.secrets import Secret, openwebui_token
from owui_replay.settings import DOWNLOAD_TIMEOUT
from owui_replay.urls import checked_base_url
from owui_replay.write_behind import WriteBehind

EXPORT_PATH = "/api/v1/evaluations/feedbacks/all/export"
USER_PATH = "/api/v1/evaluations/feedbacks/user"
CHUNK = 1 << 20
MAX_PAGES = 100_000
MAX_PASSES = 5


@dataclass
class Downloaded:
    """A finished download: the file, its sha256 and size, how many records, which scope."""

    path: Path
    sha256: str
    bytes: int
    records: int
    auth: str  # "bearer" or "cookie"
    taken_at: str = ""  # ISO 8601 UTC: when the server was asked (also in OUT.taken-at.json)


def taken_now() -> str:
    """The moment an export is taken, as its sidecar records it (ISO 8601 UTC, milliseconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def taken_at_path(export: Path) -> Path:
    """OUT.taken-at.json beside a download: when it was taken, tied to its sha256. convert
    carries it into the manifest; replay then knows which of two handoffs is newer."""
    return export.with_name(export.name + ".taken-at.json")


INVALID_TOKEN = "session has expired or the token is invalid"
NO_PERMISSION = "do not have permission"
AUTHS_PATH = "/api/v1/auths/"


class NetworkError(ReplayError):
    """The server could not be reached, or broke off: nothing was written; run it again."""

    code = ExitCode.NETWORK


class OpenWebUI:
    """A session that authenticates as Open WebUI's own frontend and API clients do."""

    def __init__(self, base_url: str, token: Secret, *, timeout: float, verify: bool | str) -> None:
        self.base = base_url
        self.token = token
        self.timeout = (10.0, timeout)
        if isinstance(verify, str):
            checked_ca_bundle(verify)
        self.session = session_for(base_url, "Open WebUI URL")  # plain http: never a proxy
        self.verify = verify  # per request: a Session.verify would lose to REQUESTS_CA_BUNDLE
        # identity: Open WebUI compresses the whole export before sending its first byte
        # (14-22 s of silence for 317 MB), and the progress bar counts the bytes it is sent
        self.session.headers.update(
            {"User-Agent": f"owui-replay/{__version__}", "Accept-Encoding": "identity"}
        )
        self.auth = "bearer"
        self.host = urlsplit(base_url).netloc

    def get(self, path: str, **params: Any) -> requests.Response:
        """GET with `Authorization: Bearer`, then `Cookie: token=` on 401, as the cookbook does."""
        response = self._authenticated(path, params)
        if response.status_code in (401, 403):
            detail = _detail(response)
            response.close()
            raise ReplayError(self._refusal(path, response.status_code, detail), ExitCode.AUTH)
        if _is_web_page(response):
            response.close()
            raise InputError(
                f"{self.base}{path} answered a web page, not Open WebUI's API: "
                "OPENWEBUI_BASE_URL should be the address you open Open WebUI at, without a "
                "path such as /api or /openwebui"
            )
        if response.status_code != 200:
            text = self.token.redact(_detail(response) or response.text[:200])
            response.close()
            raise NetworkError(
                f"{self.host}: GET {path} answered HTTP {response.status_code} ({text}); "
                "nothing was written"
            )
        return response

    def _authenticated(self, path: str, params: dict[str, Any]) -> requests.Response:
        url = self.base + path
        response = self._get(url, params, {"Authorization": f"Bearer {self.token.reveal()}"})
        if response.status_code == 401:
            response.close()
            cookie = {"Cookie": f"token={self.token.reveal()}"}
            retry = self._get(url, params, cookie)
            if retry.status_code != 401:
                self.auth = "cookie"
            response = retry
        return response

    def _get(self, url: str, params: dict[str, Any], headers: dict[str, str]) -> requests.Response:
        try:
            return self.session.get(
                url,
                params=params,
                headers=headers,
                stream=True,
                timeout=self.timeout,
                verify=self.verify,
            )
        except requests.exceptions.SSLError as exc:
            found = re.search(r"\[SSL: ([A-Z_]+)\] ([^'\")(]+)", str(exc))
            why = f"{found.group(1)}: {found.group(2).strip()}" if found else _reason(exc)
            raise NetworkError(
                f"{self.host}: TLS verification failed ({why}); pass "
                f"{option('ca_bundle', 'PATH')} for a private CA"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise NetworkError(
                f"{self.host}: {self.token.redact(_reason(exc))}; nothing was written"
            ) from None

    def _refusal(self, path: str, status: int, detail: str) -> str:
        """Tell a bad token from a missing permission, as the server's words allow."""
        said = f" (Open WebUI: {detail!r})" if detail else ""
        if INVALID_TOKEN in detail or detail == "401 Unauthorized" or not detail:
            return (
                f"Open WebUI rejected the token (HTTP {status}){said}: it is invalid, expired "
                "or revoked; sign in again, or create a new API key, and set OPENWEBUI_TOKEN"
            )
        role = self._role()
        if role == "pending":
            return (
                f"Open WebUI refused the download (HTTP {status}){said}: this account is still "
                "pending; an administrator must approve it first"
            )
        if path == EXPORT_PATH:
            whose = "this account is not an admin" if role == "user" else (
                "this key's account is not an admin (or still pending)"
            )  # fmt: skip
            return (
                f"Open WebUI refused the admin export (HTTP {status}){said}: {whose}; use an "
                f"admin account's token or API key, or {option('user_scope')} to download your own "
                "ratings"
            )
        return f"Open WebUI refused the token (HTTP {status}){said}"

    def _role(self) -> str | None:
        """The caller's role from GET /api/v1/auths/ ('admin', 'user', 'pending'); None when
        it cannot be told (an sk- API key gets 403 there)."""
        try:
            response = self._authenticated(AUTHS_PATH, {})
        except NetworkError:
            return None
        with response:
            if response.status_code != 200:
                return None
            try:
                role = response.json().get("role")
            except (ValueError, AttributeError):
                return None
        return role if isinstance(role, str) else None

    def close(self) -> None:
        self.session.close()


def _detail(response: requests.Response) -> str:
    """Open WebUI's {"detail": ...} message, or ''."""
    try:
        body = json.loads(response.content[:4000] or b"null")
    except ValueError:
        return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else ""


def _is_web_page(response: requests.Response) -> bool:
    return "html" in response.headers.get("Content-Type", "").lower()


def _reason(exc: Exception) -> str:
    return in_words(exc, "Open WebUI")


def download(
    client: OpenWebUI,
    output: Path,
    *,
    user_scope: bool = False,
    stderr: IO[str] | None = None,
    progress: bool | None = False,
) -> Downloaded:
    """Stream the export to OUTPUT.partial, check that the whole array arrived (array_shape),
    then rename it and write OUTPUT.sha256 and OUTPUT.taken-at.json. A failure leaves nothing
    that it created."""
    taken_at = taken_now()
    created = missing_folders(output.parent)
    writer = HashedWriter(output)
    shape = ArrayShape(f"the download of {output.name}")
    try:
        chunks = _user_pages(client) if user_scope else _admin_export(client, stderr, progress)
        with WriteBehind(writer) as behind:
            for chunk in chunks:
                behind.put(chunk)
                shape.feed(chunk)
        records = shape.finish()
        writer.close()
    except BaseException:
        writer.abort()
        remove_empty(created)
        raise
    writer.commit()
    digest = writer.sha256.hexdigest()
    write_sidecars(output, digest, taken_at, origin(client.base, user_scope, "full"))
    return Downloaded(output, digest, writer.bytes, records, client.auth, taken_at)


def origin(base_url: str, user_scope: bool, mode: str) -> dict[str, Any]:
    """Where an export came from, for OUT.taken-at.json and then the manifest: the Open WebUI
    address (checked_base_url refuses one with credentials), the scope, and whether it holds
    every rating (an admin export read whole) or only what changed (sync's incremental read)."""
    return {
        "source": base_url,
        "scope": "user" if user_scope else "admin",
        "mode": mode,
        "complete": not user_scope and mode == "full",
    }


def write_sidecars(output: Path, digest: str, taken_at: str, came_from: dict[str, Any]) -> None:
    """OUT.sha256 and OUT.taken-at.json beside an export this tool wrote."""
    sidecar = output.with_name(output.name + ".sha256")
    write_bytes_atomic(sidecar, f"{digest}  {output.name}\n".encode())
    write_json_atomic(taken_at_path(output), {"sha256": digest, "taken_at": taken_at, **came_from})


def download_export(
    base_url: str,
    token: Secret | str | None,
    output: str | Path,
    *,
    user_scope: bool = False,
    timeout: float = DOWNLOAD_TIMEOUT,
    verify_tls: bool | str = True,
    allow_insecure_http: bool = False,
    stderr: IO[str] | None = None,
    progress: bool | None = False,
) -> Downloaded:
    """download() for library callers: token None reads $OPENWEBUI_TOKEN."""
    base = checked_base_url(
        base_url, allow_insecure_http=allow_insecure_http, name="Open WebUI URL"
    )
    if not isinstance(token, Secret):
        token = Secret(token, "argument") if token else openwebui_token()
    client = OpenWebUI(base, token, timeout=timeout, verify=verify_tls)
    try:
        return download(
            client, Path(output), user_scope=user_scope, stderr=stderr, progress=progress
        )
    finally:
        client.close()


def _admin_export(
    client: OpenWebUI, stderr: IO[str] | None, progress: bool | None
) -> Iterator[bytes]:
    received = 0
    with client.get(EXPORT_PATH) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        show = progress if stderr is not None else False
        with byte_bar(total, "download", stderr=stderr or sys.stderr, enabled=show) as bar:
            try:
                for chunk in response.iter_content(CHUNK):
                    received += len(chunk)
                    bar.update(len(chunk))
                    yield chunk
            except requests.exceptions.RequestException as exc:
                received = max(received, _body_bytes_read(response))
                expected = f" of {total}" if total else ""
                raise NetworkError(
                    f"{client.host}: the connection broke after {received}{expected} bytes of "
                    f"the export ({_reason(exc)}); nothing was written, run it again"
                ) from None


def _body_bytes_read(response: requests.Response) -> int:
    """Bytes of the body received so far, including a chunk still being filled."""
    try:
        return int(response.raw.tell())
    except (AttributeError, TypeError, ValueError, OSError):
        return 0


def _user_pages(client: OpenWebUI) -> Iterator[bytes]:
    """Every rating of the caller, as one JSON array."""
    items = _user_items(client)
    yield b"["
    for i, item in enumerate(items):
        yield (b",\n" if i else b"") + json.dumps(item, ensure_ascii=False).encode()
    yield b"]\n"


def _user_items(client: OpenWebUI) -> list[Any]:
    """Offset paging over a list kept newest-updated first is not a snapshot: a rating updated
    while the pages are read moves to page 1 and pushes the others down a place, so a pass can
    miss one. Read passes (keeping each rating's newest version) until one pass alone, or all
    passes together, hold as many ratings as the server's `total`; never return fewer. A
    rating read in two passes keeps the later read's version, even when its updated_at went
    back (a restored database): the later read is what the server holds now."""
    union: dict[str, Any] = {}
    got, total = 0, None
    for _ in range(MAX_PASSES):
        one, total, legacy = _one_pass(client)
        if legacy or total is None:  # an older server's plain list: one response, complete
            return list(one.values())
        union.update(one)  # a later pass was read later: its version wins, whatever the clock
        if len(one) == total:
            return [union[key] for key in one]
        got = len(union)
        if got == total:
            return list(union.values())
    raise InputError(
        f"{USER_PATH}: ratings kept changing while the pages were read: {got} of the {total} "
        f"the server counts after {MAX_PASSES} passes; nothing was written, run it again"
    )


def _one_pass(client: OpenWebUI) -> tuple[dict[str, Any], int | None, bool]:
    """(ratings by id, the server's last total, whether it answered a plain list)."""
    found: dict[str, Any] = {}
    total: int | None = None
    for page in range(1, MAX_PAGES):
        with client.get(USER_PATH, page=page) as response:
            body = _json(response, USER_PATH)
        if isinstance(body, list):
            for i, item in enumerate(body):
                _keep_newest(found, _key(item, i), item)
            return found, None, True
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise InputError(f"{USER_PATH}: unexpected response shape (no items list)")
        total = body["total"] if isinstance(body.get("total"), int) else None
        for i, item in enumerate(items):
            _keep_newest(found, _key(item, f"{page}:{i}"), item)
        if not items or (total is not None and len(found) >= total):
            break
    return found, total, False


def _key(item: Any, fallback: object) -> str:
    return str(item.get("id")) if isinstance(item, dict) and item.get("id") else f"#{fallback}"


def _keep_newest(found: dict[str, Any], key: str, item: Any) -> None:
    def updated(record: Any) -> float:
        value = record.get("updated_at") if isinstance(record, dict) else None
        return float(value) if isinstance(value, (int, float)) else float("-inf")

    if key not in found or updated(item) >= updated(found[key]):
        found[key] = item


def _json(response: requests.Response, path: str) -> Any:
    try:
        return response.json()
    except ValueError:  # first: requests' JSONDecodeError is a RequestException too
        raise InputError(
            f"{path}: the server did not answer JSON: not Open WebUI's API (is "
            "OPENWEBUI_BASE_URL the Open WebUI address, not a login page or proxy?)"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise NetworkError(
            f"{path}: the connection broke while reading a page ({_reason(exc)}); "
            "nothing was written, run it again"
        ) from None
