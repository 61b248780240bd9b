"""Endpoint URLs: plain http only to this machine unless the user insists; one identity each."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from owui_replay.errors import UsageError
from owui_replay.option_names import option

DEFAULT_PORTKEY_BASE = "https://api.portkey.ai/v1"
DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalized_url(url: str, *, name: str) -> str:
    """scheme://host[:port]/path: lower-case scheme and host, no default port, no trailing
    slash. Two spellings of one endpoint get one identity (and one delivery state)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise UsageError(f"{name} {url!r} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"{name}: credentials inside the URL are not accepted")
    if parts.query or parts.fragment:
        raise UsageError(f"{name} {url!r}: a base URL has no query or fragment")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{name} {url!r}: the port is not a number 0..65535") from None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def checked_base_url(url: str, *, allow_insecure_http: bool, name: str) -> str:
    """The normalised base URL; refuses http:// to another host, and http:// that the
    environment would send through a proxy (the credential would cross it in clear text)."""
    normal = normalized_url(url, name=name)
    parts = urlsplit(normal)
    assert parts.hostname is not None
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not allow_insecure_http:
        raise UsageError(
            f"{name} {url!r} is plain http to another host: the key would cross the network in "
            f"clear text; use https, or {option('allow_insecure_http')} if you really mean it"
        )
    if parts.scheme == "http":
        from owui_replay.http_session import refuse_proxied_plain_http  # imports requests

        refuse_proxied_plain_http(normal, name)
    return normal
