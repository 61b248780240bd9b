"""A failed connection in words a person can act on, for Open WebUI and Portkey alike.

requests and urllib3 describe a refused connection as "HTTPConnectionPool(host=..., port=...):
Max retries exceeded with url: ... (Caused by NewConnectionError(...))": true, and no help.
"""

from __future__ import annotations

from owui_replay.option_names import option

# the setting that bounds each server's wait for data (option_names.py)
TIMEOUTS = {"Portkey": "portkey_timeout", "Open WebUI": "openwebui_timeout"}


def in_words(exc: BaseException, server: str) -> str:
    """What failed: refused, unknown host, timed out, reset; SERVER names who should answer."""
    text = str(exc)
    for marker, words in (
        ("Unable to connect to proxy", "the proxy refused the connection (check HTTPS_PROXY)"),
        ("Tunnel connection failed", "the proxy refused the tunnel (check HTTPS_PROXY)"),
        ("Connection refused", f"connection refused (is {server} running at this address?)"),
        ("Name or service not known", "the host name does not resolve"),
        ("Temporary failure in name resolution", "the host name does not resolve"),
        ("Failed to resolve", "the host name does not resolve"),
        ("No route to host", "no route to that host"),
        ("Network is unreachable", "the network is unreachable"),
        ("Read timed out", f"no data within the time allowed ({option(TIMEOUTS[server])})"),
        ("timed out", "the connection timed out"),
        ("Connection reset", "the connection was reset"),
        ("RemoteDisconnected", "the server closed the connection"),
        ("WRONG_VERSION_NUMBER", f"the server does not speak TLS here: is {server} on http://?"),
        ("wrong version number", f"the server does not speak TLS here: is {server} on http://?"),
    ):
        if marker in text:
            return words
    return f"{type(exc).__name__}: {text[:200]}"
