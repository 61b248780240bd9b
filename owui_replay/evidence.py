"""Evidence of earlier deliveries that the delivery state does not hold.

A state that is missing, empty, or another one (cron with another HOME, a container without
its volume, a typo in --state-file) must not be a silent fresh start: every rating would be posted
again. The journals beside a handoff, and those of sync's earlier runs, record each
acknowledgement with the endpoint and the state the run used; and another endpoint in the
same state may reach the same server under another name (localhost and 127.0.0.1). These are
read only when the state has no record of the endpoint, so a normal run pays nothing.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from owui_replay.handoff import HandoffPaths


@dataclass(frozen=True)
class Deliveries:
    """What journals say an endpoint acknowledged."""

    acks: int  # lines acknowledged, over every journal
    journal: Path  # the journal with the latest of them
    state: str | None  # the delivery state that run recorded it in


def journals_beside(feedback: Path) -> list[Path]:
    """FEEDBACK.journal.jsonl and the journals set aside beside it (--restart, regenerated)."""
    journal = HandoffPaths.for_output(feedback).journal
    if not journal.parent.is_dir():
        return []
    return sorted(journal.parent.glob(journal.name + "*"))


def journals_under(workdir: Path) -> list[Path]:
    """The journals of sync's earlier runs (WORKDIR/runs/*/)."""
    runs = workdir / "runs"
    return sorted(runs.glob("*/*.journal.jsonl*")) if runs.is_dir() else []


@dataclass(frozen=True)
class Run:
    """What a journal's `run` event says about the acknowledgements that follow it."""

    endpoint: str | None
    state: str | None  # the delivery state the run used
    started: datetime | None


ACK = re.compile(rb'\{"t":"ack","lines":\[([0-9,]*)\]')  # as journal.py writes it


def recorded_deliveries(journals: Iterable[Path], endpoint: str) -> Deliveries | None:
    """Acknowledgements by ENDPOINT in these journals; None when there are none."""
    acks, latest, state = 0, None, None
    for path in journals:
        found = 0
        for run, lines in _acks(path, lambda run: run.endpoint == endpoint):
            found += lines.count(b",") + 1 if lines else 0
            state = run.state or state
        if found:
            acks, latest = acks + found, path
    return Deliveries(acks, latest, state) if latest is not None else None


def acked_lines(
    journals: Iterable[Path], endpoint: str, sha256: str, since: str | None, wanted: set[int]
) -> tuple[set[int], Path | None]:
    """Which of the WANTED line numbers ENDPOINT acknowledged, in the journals written for
    this very file (header input_sha256), by runs started after SINCE (the last `state
    --forget`); and the journal with the latest of them. A state that calls them new is
    behind. Streams: only the hits are kept, whatever the journal's size."""
    after = _instant(since) if since else None

    def counts(run: Run) -> bool:
        late = after is None or (run.started is not None and run.started > after)
        return run.endpoint == endpoint and late

    numbers = {str(n).encode(): n for n in wanted}  # compared as written: no int() per ack
    found: set[int] = set()
    latest = None
    for path in journals:
        if _header(path).get("input_sha256") != sha256:
            continue  # another version of the file: its line numbers mean other lines
        for _run, lines in _acks(path, counts):
            hits = [numbers[n] for n in lines.split(b",") if n in numbers]
            if hits:
                found.update(hits)
                latest = path
    return found, latest


def _header(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            header = _event(handle.readline())
    except OSError:
        return {}
    return header if header.get("t") == "header" else {}


def _acks(path: Path, wanted: Callable[[Run], bool]) -> Iterator[tuple[Run, bytes]]:
    """The line numbers (b"3,4") of each acknowledgement by a run WANTED accepts. Fast on
    journals of millions of events: only `run` lines are parsed as JSON, `ack`s by a pattern."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return
    with handle:
        run, keep = Run(None, None, None), False
        for line in handle:
            if line.startswith(b'{"t":"ack"'):
                if keep and (match := ACK.match(line)):
                    yield run, match.group(1)
            elif line.startswith(b'{"t":"run"'):
                event = _event(line)
                options = event.get("options") or {}
                run = Run(
                    options.get("endpoint"), options.get("state"), _instant(event.get("started"))
                )
                keep = wanted(run)


def _event(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}  # a line cut by a kill
    return event if isinstance(event, dict) else {}


def _instant(text: object) -> datetime | None:
    """An ISO 8601 time with its zone (older journals give runs to the second)."""
    try:
        instant = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return instant if instant.tzinfo is not None else None


def same_server(one: str, other: str) -> str | None:
    """'ADDRESS port P' when two endpoint URLs name one server: the same scheme, port and
    path, and hosts that resolve to a common address where one of them is an address or
    `localhost`. Two host names on one address are left alone: a shared load balancer can
    serve two different sites (and only names that cannot be virtual hosts are resolved, so
    an offline machine never waits for DNS here)."""
    a, b = urlsplit(one), urlsplit(other)
    if (a.scheme, a.path) != (b.scheme, b.path) or a.hostname == b.hostname:
        return None
    port_a, port_b = _port(a.scheme, a.port), _port(b.scheme, b.port)
    if port_a != port_b or a.hostname is None or b.hostname is None:
        return None
    if not (_literal(a.hostname) or _literal(b.hostname)):
        return None
    shared = _addresses(a.hostname, port_a) & _addresses(b.hostname, port_b)
    return f"{min(shared)} port {port_a}" if shared else None


def _literal(host: str) -> bool:
    """An IP address, or localhost: a name for this machine, never a virtual host."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)


def _addresses(host: str, port: int) -> set[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return set()
    return {str(info[4][0]) for info in infos}
