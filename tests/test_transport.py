"""How requests reach the servers: proxies from the environment, and requests that never left.

Everything runs against real servers on 127.0.0.1: the Portkey and Open WebUI stand-ins, a TLS
stand-in, and a logging proxy that forwards CONNECT tunnels and absolute-form requests and
records every byte it was sent.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import trustme

from owui_replay.errors import ExitCode
from tests.helpers import REAL_EXPORT, environment, run_cli
from tests.openwebui_stub import ADMIN_TOKEN, OwuiServer, OwuiState
from tests.portkey_stub import API_KEY, portkey_stub, tls_portkey_stub
from tests.proxy_stub import closed_port, logging_proxy
from tests.replay_helpers import make_feedback, replay_in_process, uncertain_resent
from tests.serving import serving


def proxies(url: str) -> dict[str, str]:
    """Every variable requests reads a proxy from, set to URL; NO_PROXY empty."""
    return {
        "HTTP_PROXY": url, "http_proxy": url, "HTTPS_PROXY": url, "https_proxy": url,
        "ALL_PROXY": url, "all_proxy": url, "NO_PROXY": "", "no_proxy": "",
    }  # fmt: skip


def ca_bundle(ca: trustme.CA, directory: Path) -> Path:
    path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def uncertain_rows(state: Path) -> int:
    """Ratings the delivery state counts as maybe stored (an unanswered POST)."""
    if not state.exists():
        return 0
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM ratings WHERE unknown > 0").fetchone()[0])
    finally:
        db.close()


# -- proxies --------------------------------------------------------------------------------


def test_plain_http_to_this_machine_never_goes_through_the_environments_proxy(
    tmp_path: Path,
) -> None:
    feedback = make_feedback(tmp_path, 12)
    with logging_proxy() as proxy, portkey_stub() as stub, environment(**proxies(proxy.url)):
        result = replay_in_process(feedback, stub.url, "--concurrency", "4")
        stored = len(stub.state.stored)
    assert result.code == ExitCode.OK, result.stderr
    assert stored == 12
    assert API_KEY.encode() not in proxy.log.seen
    assert proxy.log.requests == []


def test_https_goes_through_the_environments_proxy_as_a_tunnel(tmp_path: Path) -> None:
    ca = trustme.CA()
    bundle = ca_bundle(ca, tmp_path)
    feedback = make_feedback(tmp_path, 6)
    with logging_proxy() as proxy, tls_portkey_stub(ca) as stub, environment(**proxies(proxy.url)):
        url = stub.url.replace("http://", "https://")
        result = replay_in_process(feedback, url, "--ca-bundle", str(bundle))
        stored = len(stub.state.stored)
    assert result.code == ExitCode.OK, result.stderr
    assert stored == 6
    seen = proxy.log.requests
    assert seen and all(r.startswith("CONNECT 127.0.0.1:") for r in seen), seen
    assert API_KEY.encode() not in proxy.log.seen  # the proxy saw only TLS bytes


def test_plain_http_to_another_host_with_a_proxy_is_refused_before_sending(
    tmp_path: Path,
) -> None:
    feedback = make_feedback(tmp_path, 3)
    url = "http://portkey.internal.test/v1"
    with logging_proxy() as proxy, environment(**proxies(proxy.url)):
        result = replay_in_process(feedback, url, "--allow-insecure-http", quiet=False)
    assert result.code == ExitCode.USAGE, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "proxy" in lines[0] and "NO_PROXY" in lines[0], lines
    assert proxy.log.seen == b"" and API_KEY not in result.stderr


def test_download_over_plain_http_to_this_machine_bypasses_the_proxy(tmp_path: Path) -> None:
    out = tmp_path / "export.json"
    with (
        logging_proxy() as proxy,
        serving(OwuiServer(OwuiState(export_file=REAL_EXPORT))) as owui,
        environment(OPENWEBUI_BASE_URL=owui.url, OPENWEBUI_TOKEN=ADMIN_TOKEN),
        environment(**proxies(proxy.url)),
    ):
        result = run_cli("download", "-o", str(out), "-q")
    assert result.code == ExitCode.OK, result.stderr
    assert out.read_bytes() == REAL_EXPORT.read_bytes()
    assert ADMIN_TOKEN.encode() not in proxy.log.seen and proxy.log.requests == []


# -- never sent is not uncertain ------------------------------------------------------------


def test_a_missing_ca_bundle_is_a_usage_error_before_anything_else(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 5)
    state = tmp_path / "ledger.sqlite3"
    missing = tmp_path / "no-such-ca.pem"
    ca = trustme.CA()
    with tls_portkey_stub(ca) as stub:
        url = stub.url.replace("http://", "https://")
        result = replay_in_process(
            feedback, url, "--ca-bundle", str(missing), "--ledger", str(state), quiet=False
        )
        requests_seen = stub.state.requests
    assert result.code == ExitCode.USAGE, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"owui-replay: error: --ca-bundle {missing}: no such file"
    ]
    assert requests_seen == 0 and uncertain_rows(state) == 0
    assert not (tmp_path / "feedback.journal.jsonl").exists()


def test_a_missing_requests_ca_bundle_stops_the_run_without_an_uncertain_rating(
    tmp_path: Path,
) -> None:
    """REQUESTS_CA_BUNDLE naming a missing file fails inside requests before it connects."""
    feedback = make_feedback(tmp_path, 4)
    state = tmp_path / "ledger.sqlite3"
    with (
        tls_portkey_stub(trustme.CA()) as stub,
        environment(REQUESTS_CA_BUNDLE=str(tmp_path / "x")),
    ):
        url = stub.url.replace("http://", "https://")
        result = replay_in_process(feedback, url, "--ledger", str(state), quiet=False)
        assert stub.state.requests == 0
    assert uncertain_rows(state) == 0
    assert result.code == ExitCode.DELIVERY_FAILED, result.stderr
    assert "TLS setup failed" in result.stderr and "Traceback" not in result.stderr


def test_a_refused_proxy_is_not_an_uncertain_attempt(tmp_path: Path) -> None:
    ca = trustme.CA()
    bundle = ca_bundle(ca, tmp_path)
    feedback = make_feedback(tmp_path, 4)
    state = tmp_path / "ledger.sqlite3"
    dead_proxy = f"http://127.0.0.1:{closed_port()}"
    with tls_portkey_stub(ca) as stub:
        url = stub.url.replace("http://", "https://")
        common = ("--ca-bundle", str(bundle), "--ledger", str(state), "--concurrency", "2")
        with environment(**proxies(dead_proxy)):
            first = replay_in_process(feedback, url, *common, "--retries", "1", quiet=False)
        assert first.code == ExitCode.NETWORK, first.stderr  # at once, no retries
        assert "the proxy refused the connection" in first.stderr
        assert "run again" not in first.stderr.lower()
        assert stub.state.requests == 0
        assert uncertain_rows(state) == 0
        again = replay_in_process(feedback, url, *common, quiet=False)
        stored = stub.state.feedback_counts()
    assert again.code == ExitCode.OK, again.stderr
    assert uncertain_resent(again.stderr) == 0
    assert "extra copies Portkey may hold: 0" in again.stderr
    assert set(stored.values()) == {1} and len(stored) == 4


def test_a_tls_handshake_failure_is_not_an_uncertain_attempt(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 4)
    state = tmp_path / "ledger.sqlite3"
    with tls_portkey_stub(trustme.CA()) as stub:  # a certificate this machine does not trust
        url = stub.url.replace("http://", "https://")
        result = replay_in_process(feedback, url, "--ledger", str(state))
    assert result.code == ExitCode.DELIVERY_FAILED
    assert uncertain_rows(state) == 0


# -- lines are what convert writes ----------------------------------------------------------


def test_a_bom_or_crlf_handoff_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    canonical = make_feedback(tmp_path, 5).read_bytes()
    lines = canonical.splitlines(keepends=True)
    bom = tmp_path / "bom" / "feedback.jsonl"
    crlf = tmp_path / "crlf" / "feedback.jsonl"
    for path in (bom, crlf):
        path.parent.mkdir()
    bom.write_bytes(b"\xef\xbb\xbf" + canonical)
    crlf.write_bytes(b"".join(lines[:2]) + lines[2].replace(b"\n", b"\r\n") + b"".join(lines[3:]))
    third = len(lines[0]) + len(lines[1]) + len(lines[2]) - 1  # where its CR is
    state = tmp_path / "ledger.sqlite3"
    with portkey_stub() as stub:
        refused_bom = replay_in_process(bom, stub.url, "--ledger", str(state), quiet=False)
        refused_crlf = replay_in_process(crlf, stub.url, "--ledger", str(state), quiet=False)
        assert stub.state.requests == 0
    assert refused_bom.code == refused_crlf.code == ExitCode.BAD_INPUT
    assert refused_bom.stderr.strip().splitlines() == [
        f"owui-replay: error: {bom}: line 1 (byte 0) starts with a UTF-8 byte order mark: "
        "convert writes LF line ends and no byte order mark, and replay sends each line's "
        "bytes as they are; restore convert's file (or convert again)"
    ]
    assert f"{crlf}: line 3 (byte {third}) ends in CR LF" in refused_crlf.stderr
    assert uncertain_rows(state) == 0 and not (tmp_path / "bom" / "feedback.failed.jsonl").exists()


def test_the_portkey_stand_in_refuses_a_bom_as_nodes_json_parse_does() -> None:
    import requests

    with portkey_stub() as stub:
        body = b'{"trace_id":"t","value":1}'
        headers = {"x-portkey-api-key": API_KEY, "Content-Type": "application/json"}
        with_bom = requests.post(f"{stub.url}/feedback", data=b"\xef\xbb\xbf" + body,
                                 headers=headers, timeout=5)  # fmt: skip
        plain = requests.post(f"{stub.url}/feedback", data=body, headers=headers, timeout=5)
    assert with_bom.status_code == 400 and "Unexpected token" in with_bom.text
    assert plain.status_code == 200


# -- a definite answer is not an uncertain attempt ------------------------------------------


def test_a_5xx_or_429_answer_is_not_counted_as_a_possible_copy(tmp_path: Path) -> None:
    """The server answered: nothing was stored, so the retry that succeeds is the only copy."""
    from tests.portkey_stub import Fault

    feedback = make_feedback(tmp_path, 3)
    state = tmp_path / "ledger.sqlite3"
    faults = [Fault("500"), Fault("503"), Fault("429", retry_after="0"), Fault("502")]
    with portkey_stub(faults=faults) as stub:
        result = replay_in_process(
            feedback, stub.url, "--concurrency", "1", "--ledger", str(state), "--json"
        )
        counts = stub.state.feedback_counts()
    assert result.code == ExitCode.OK, result.stderr
    assert sum(stub.state.statuses[s] for s in (500, 502, 503, 429)) == 4
    doc = json.loads(result.stdout)
    assert doc["retries"] == 4 and doc["posted"] == 3 and doc["extra_copies"] == 0, doc
    assert set(counts.values()) == {1}
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT SUM(extra_copies), SUM(unknown) FROM ratings").fetchone()
    finally:
        db.close()
    assert tuple(row) == (0, 0)
