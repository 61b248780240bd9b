"""Fetch a feedback export from Open WebUI to disk: streamed, hashed, atomic.

Admin scope: GET /api/v1/evaluations/feedbacks/all/export (a JSON array, no paging, possibly
gigabytes) is written to disk as it arrives. User scope: GET /api/v1/evaluations/feedbacks/user
returns {"items": [...], "total": N} pages of 30 on current servers (a plain list on older
ones); every page is followed and the items written as one JSON array.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests

from owui_replay import __version__
from owui_replay.atomic import HashedWriter, missing_folders, remove_empty, write_bytes_atomic
from owui_replay.errors import ExitCode, InputError, ReplayError
from owui_replay.export_reader import open_export
from owui_replay.progress import byte_bar
from owui_replay.secrets import Secret, openwebui_token
from owui_replay.urls import checked_base_url

EXPORT_PATH = "/api/v1/evaluations/feedbacks/all/export"
USER_PATH = "/api/v1/evaluations/feedbacks/user"
CHUNK = 1 << 20
MAX_PAGES = 100_000


@dataclass
class Downloaded:
    path: Path
    sha256: str
    bytes: int
    records: int
    auth: str  # "bearer" or "cookie"


class OpenWebUI:
    """A session that authenticates as Open WebUI's own frontend and API clients do."""

    def __init__(self, base_url: str, token: Secret, *, timeout: float, verify: bool | str) -> None:
        self.base = base_url
        self.token = token
        self.timeout = (10.0, timeout)
        self.session = requests.Session()
        self.verify = verify  # per request: a Session.verify would lose to REQUESTS_CA_BUNDLE
        self.session.headers["User-Agent"] = f"owui-replay/{__version__}"
        self.auth = "bearer"

    def get(self, path: str, **params: Any) -> requests.Response:
        """GET with `Authorization: Bearer`, then `Cookie: token=` on 401, as the cookbook does."""
        url = self.base + path
        response = self._get(url, params, {"Authorization": f"Bearer {self.token.reveal()}"})
        if response.status_code == 401:
            response.close()
            cookie = {"Cookie": f"token={self.token.reveal()}"}
            retry = self._get(url, params, cookie)
            if retry.status_code != 401:
                self.auth = "cookie"
            response = retry
        if response.status_code in (401, 403):
            response.close()
            raise ReplayError(self._refusal(path, response.status_code), ExitCode.AUTH)
        if response.status_code != 200:
            text = self.token.redact(response.text[:200])
            response.close()
            raise ReplayError(f"{url}: HTTP {response.status_code}: {text}")
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
        except requests.exceptions.RequestException as exc:
            raise ReplayError(f"{url}: {self.token.redact(str(exc))}") from None

    def _refusal(self, path: str, status: int) -> str:
        if path == EXPORT_PATH:
            return (
                f"Open WebUI refused the token for the admin export (HTTP {status}): it needs an "
                "admin account's token or API key (non-admins get 401 there); use --user-scope "
                "to download your own ratings"
            )
        return (
            f"Open WebUI refused the token (HTTP {status}): check OPENWEBUI_TOKEN; the user "
            "endpoint needs a signed-in user's token or API key"
        )

    def close(self) -> None:
        self.session.close()


def download(
    client: OpenWebUI,
    output: Path,
    *,
    user_scope: bool = False,
    stderr: IO[str] | None = None,
    progress: bool | None = False,
) -> Downloaded:
    """Stream the export to OUTPUT.partial, check it parses as a complete array, then rename
    it and write OUTPUT.sha256. A failure leaves nothing that it created."""
    created = missing_folders(output.parent)
    writer = HashedWriter(output)
    try:
        chunks = _user_pages(client) if user_scope else _admin_export(client, stderr, progress)
        for chunk in chunks:
            writer.write_chunk(chunk)
        writer.close()
        records = _count_records(writer.partial, output)
    except BaseException:
        writer.abort()
        remove_empty(created)
        raise
    writer.commit()
    digest = writer.sha256.hexdigest()
    sidecar = output.with_name(output.name + ".sha256")
    write_bytes_atomic(sidecar, f"{digest}  {output.name}\n".encode())
    return Downloaded(output, digest, writer.bytes, records, client.auth)


def download_export(
    base_url: str,
    token: Secret | str | None,
    output: str | Path,
    *,
    user_scope: bool = False,
    timeout: float = 300.0,
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
                raise ReplayError(
                    f"{client.base}{EXPORT_PATH}: the connection broke after {received}"
                    f"{expected} bytes ({type(exc).__name__}); nothing was written, run it again"
                ) from None


def _body_bytes_read(response: requests.Response) -> int:
    """Bytes of the body received so far, including a chunk still being filled."""
    try:
        return int(response.raw.tell())
    except (AttributeError, TypeError, ValueError, OSError):
        return 0


def _user_pages(client: OpenWebUI) -> Iterator[bytes]:
    """Follow {"items", "total"} pages (or take an old server's plain list) into one array."""
    yield b"["
    seen: set[str] = set()
    first = True
    for page in range(1, MAX_PAGES):
        with client.get(USER_PATH, page=page) as response:
            body = _json(response, USER_PATH)
        items = (
            body
            if isinstance(body, list)
            else body.get("items")
            if isinstance(body, dict)
            else None
        )
        if not isinstance(items, list):
            raise InputError(f"{USER_PATH}: unexpected response shape (no items list)")
        fresh = [i for i in items if not (isinstance(i, dict) and i.get("id") in seen)]
        for item in fresh:
            if isinstance(item, dict) and item.get("id"):
                seen.add(item["id"])
            yield (b"" if first else b",\n") + json.dumps(item, ensure_ascii=False).encode()
            first = False
        total = body.get("total") if isinstance(body, dict) else None
        if isinstance(body, list) or not items or (isinstance(total, int) and len(seen) >= total):
            break
    yield b"]\n"


def _json(response: requests.Response, path: str) -> Any:
    try:
        return response.json()
    except requests.exceptions.RequestException as exc:
        raise ReplayError(
            f"{path}: the connection broke while reading a page ({type(exc).__name__}); "
            "nothing was written, run it again"
        ) from None
    except ValueError:
        raise InputError(
            f"{path}: the server did not answer JSON (is OPENWEBUI_BASE_URL the Open WebUI "
            "address, not a login page or proxy?)"
        ) from None


def _count_records(partial: Path, output: Path) -> int:
    """Stream the file once through the parser: it must be a complete JSON array."""
    try:
        stream = open_export(str(partial))
    except InputError as exc:
        raise InputError(f"the download of {output.name} is not an export: {exc}") from None
    try:
        if stream.shape != "array":
            raise InputError(f"the download of {output.name} is a JSON object, not an array")
        return sum(1 for _ in stream.records())
    except InputError as exc:
        raise InputError(f"the download of {output.name} is incomplete or damaged: {exc}") from None
    finally:
        stream.close()
