"""The HTTP session for one server, with the two rules no request may break.

Proxies: requests takes them from the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY,
NO_PROXY), which is right for https: a proxy sees `CONNECT host:port` and TLS bytes, never
the key or the token. A plain-http request through a proxy hands the proxy the whole request,
credential header included. So plain http never goes through a proxy: to this machine it
goes direct, and to another host (only with --allow-insecure-http) it is refused when the
environment names a proxy for it.

CA bundle: a --ca-bundle that cannot be loaded is a usage error found before anything is
sent, not an exception in the middle of a request.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

import requests
from requests.utils import get_environ_proxies, select_proxy

from owui_replay.errors import UsageError
from owui_replay.option_names import option
from owui_replay.urls import is_loopback


def environment_proxy(url: str) -> str | None:
    """The proxy requests would take from the environment for URL (None: direct)."""
    return select_proxy(url, get_environ_proxies(url))


def session_for(url: str, name: str) -> requests.Session:
    """A session for URL that never sends a credential over plain http to a proxy."""
    session = requests.Session()
    parts = urlsplit(url)
    if parts.scheme != "http":
        return session  # https: the environment's proxies and REQUESTS_CA_BUNDLE apply
    if is_loopback(parts.hostname or ""):
        session.trust_env = False  # direct: no proxy between this process and this machine
        return session
    try:
        refuse_proxied_plain_http(url, name)
    except UsageError:
        session.close()
        raise
    return session


def refuse_proxied_plain_http(url: str, name: str) -> None:
    """A UsageError when a plain-http request to URL would go through a proxy."""
    parts = urlsplit(url)
    if parts.scheme != "http" or is_loopback(parts.hostname or ""):
        return
    if environment_proxy(url) is not None:
        raise UsageError(
            f"{name} {url} is plain http and the environment names a proxy for it "
            "(HTTP_PROXY or ALL_PROXY): the proxy would read the credential in clear text; "
            "use https, or add the host to NO_PROXY"
        )


def checked_ca_bundle(path: str | None) -> str | None:
    """PATH when it is a CA bundle that loads; a UsageError naming it otherwise."""
    if not path:
        return None
    where = Path(path)
    try:
        if where.is_dir():
            ssl.create_default_context(capath=path)
        else:
            ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise UsageError(f"{option('ca_bundle', path)}: no such file") from None
    except ssl.SSLError as exc:
        raise UsageError(
            f"{option('ca_bundle', path)}: not a PEM bundle of CA certificates "
            f"({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"{option('ca_bundle', path)}: cannot read: {exc.strerror or exc}"
        ) from None
    return path
