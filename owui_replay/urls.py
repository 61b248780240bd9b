"""Endpoint URLs: plain http only to this machine unless the user insists."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from owui_replay.errors import UsageError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def checked_base_url(url: str, *, allow_insecure_http: bool, name: str) -> str:
    """The base URL without a trailing slash; refuses http:// to another host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{name} {url!r} is not an http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not allow_insecure_http:
        raise UsageError(
            f"{name} {url!r} is plain http to another host: the key would cross the network in "
            "clear text; use https, or --allow-insecure-http if you really mean it"
        )
    return url.rstrip("/")
