"""POST /feedback (and PUT /feedback/{id}) to Portkey over one keep-alive session.

Built on requests directly: the official SDK sets no timeout, retries 5xx at once (which
duplicates feedback) and never retries 429. Retrying is the caller's job (delivery.py).
Redirects are never followed: the key must not reach another host, and a redirected POST
is a configuration problem to fix, not to work around. Plain http never crosses a proxy
(http_session.py). A request that surely never left (`Reply.sent` False) is not an uncertain
attempt: the caller takes back the intent it recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.exceptions import ProxyError as UrllibProxyError

from owui_replay._version import __version__
from owui_replay.http_session import checked_ca_bundle, session_for
from owui_replay.net_words import in_words
from owui_replay.option_names import option
from owui_replay.secrets import Secret

BODY_LIMIT = 2000


@dataclass
class Reply:
    """One HTTP exchange; status None means no response (see `sent`)."""

    status: int | None
    body: str = ""
    retry_after: str | None = None
    feedback_ids: list[str] | None = None
    error: str | None = None
    sent: bool = True  # False only when the request surely never reached the server
    tls_failure: bool = False  # certificate or handshake failure: retrying will not help
    unreachable: bool = False  # refused, no such host, no route: no connection was made
    location: str | None = None  # a 3xx's Location header
    portkey_shaped: bool = True  # a 2xx body is Portkey's JSON object, not a web page

    @property
    def ambiguous(self) -> bool:
        """No answer to a request that may have been stored: a retry may duplicate."""
        return self.status is None and self.sent

    def describe(self) -> str:
        if self.status is None:
            return self.error or "no response"
        message = error_message(self.body)
        return f"HTTP {self.status}" + (f": {message}" if message else "")


def error_message(body: str) -> str:
    """Portkey's two error shapes ({success:false,data:{message}} and {status,message})."""
    parsed = _json_object(body)
    if parsed is None:
        return body[:200]
    data = parsed.get("data")
    if isinstance(data, dict) and data.get("message"):
        code = f" ({data['errorCode']})" if data.get("errorCode") else ""
        return f"{data['message']}{code}"
    if parsed.get("message"):
        return str(parsed["message"])
    return body[:200]


def is_portkey_error(body: str) -> bool:
    """True for one of Portkey's JSON error bodies (not an HTML page or a proxy's text)."""
    parsed = _json_object(body)
    return parsed is not None and ("data" in parsed or "message" in parsed)


def _json_object(body: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


class PortkeyClient:
    """POST and PUT /feedback over one keep-alive session; never follows a redirect."""

    def __init__(
        self,
        base_url: str,
        api_key: Secret,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        verify: bool | str = True,
        pool_size: int = 10,
    ) -> None:
        self.url = base_url.rstrip("/") + "/feedback"
        self._key = api_key
        self.timeout = (connect_timeout, timeout)
        if isinstance(verify, str):
            checked_ca_bundle(verify)
        self.session = session_for(self.url, "Portkey base URL")
        # passed with every request: a Session.verify would lose to REQUESTS_CA_BUNDLE
        self.verify = verify
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update(
            {
                "x-portkey-api-key": api_key.reveal(),
                "Content-Type": "application/json",
                "User-Agent": f"owui-replay/{__version__}",
            }
        )

    def post(self, body: bytes, expected_ids: int) -> Reply:
        return self._send("POST", self.url, body, expected_ids)

    def put_url(self, feedback_id: str) -> str:
        return f"{self.url}/{quote(feedback_id, safe='')}"

    def put(self, feedback_id: str, body: bytes) -> Reply:
        return self._send("PUT", self.put_url(feedback_id), body, 0)

    def _send(self, method: str, url: str, body: bytes, expected_ids: int) -> Reply:
        try:
            response = self.session.request(
                method,
                url,
                data=body,
                timeout=self.timeout,
                verify=self.verify,
                allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout:
            return Reply(None, error="connect timeout", sent=False)
        except requests.exceptions.SSLError as exc:
            plain = "does not speak TLS" in (words := in_words(exc, "Portkey"))
            error = self._key.redact(f"TLS error: {words if plain else _short(exc)}")
            return Reply(None, error=error, sent=False, tls_failure=True)
        except requests.exceptions.ConnectionError as exc:
            never = never_connected(exc)
            error = self._key.redact(in_words(exc, "Portkey"))
            return Reply(None, error=error, sent=not never, unreachable=never)
        except requests.exceptions.Timeout:
            return Reply(
                None,
                error=f"read timeout: no answer within {self.timeout[1]:g} s "
                f"({option('portkey_timeout')}); the server may have stored it",
            )
        except requests.exceptions.RequestException as exc:
            return Reply(None, error=self._key.redact(_short(exc)))
        except OSError as exc:  # raised before the connection is used (a CA file that went away)
            error = self._key.redact(f"TLS setup failed: {_short(exc)}")
            return Reply(None, error=error, sent=False, tls_failure=True)
        text = self._key.redact(response.text[:BODY_LIMIT])
        reply = Reply(response.status_code, text, response.headers.get("Retry-After"))
        if 300 <= response.status_code < 400:
            reply.location = response.headers.get("Location")
        elif 200 <= response.status_code < 300:
            parsed = _json_object(response.text)
            reply.portkey_shaped = parsed is not None and (
                "feedback_ids" in parsed or "status" in parsed or "success" in parsed
            )
            reply.feedback_ids = _feedback_ids(parsed, expected_ids)
        return reply

    def close(self) -> None:
        self.session.close()


def _feedback_ids(parsed: dict[str, Any] | None, expected: int) -> list[str]:
    ids = parsed.get("feedback_ids") if parsed is not None else None
    if not isinstance(ids, list):
        return []
    return [str(i) for i in ids][: expected or None]


def never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection to the server was never established (refused, no route, DNS,
    a proxy that refused the connection or the tunnel), so no byte of the request left:
    urllib3 raises NewConnectionError (NameResolutionError is one) before sending, ProxyError
    only while it has not yet connected through the proxy, and ProtocolError or a reset only
    after."""
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, (NewConnectionError, UrllibProxyError))


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:299] + "…"
