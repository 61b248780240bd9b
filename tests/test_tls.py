"""replay over real TLS on 127.0.0.1: verification is on, --ca-bundle trusts a private CA."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from owui_replay.errors import ExitCode
from tests.portkey_stub import API_KEY, StubServer, tls_portkey_stub
from tests.replay_helpers import make_feedback, replay_in_process
from tests.serving import serving


def https(server: StubServer) -> str:
    return server.url.replace("http://", "https://")


def test_a_private_ca_is_trusted_with_ca_bundle(tmp_path: Path) -> None:
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    feedback = make_feedback(tmp_path, 5)
    with tls_portkey_stub(ca) as server:
        result = replay_in_process(feedback, https(server), "--ca-bundle", str(bundle))
        assert result.code == ExitCode.OK, result.stderr
        assert len(server.state.stored) == 5


def test_an_untrusted_certificate_stops_at_once_without_sending(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 50)
    with tls_portkey_stub(trustme.CA()) as server:
        result = replay_in_process(feedback, https(server), "--concurrency", "1", quiet=False)
        assert server.state.requests == 0
    assert result.code == ExitCode.DELIVERY_FAILED
    assert "TLS error" in result.stderr and "--ca-bundle" in result.stderr
    assert "retries: 0" in result.stderr and API_KEY not in result.stderr


def test_download_over_tls_with_a_private_ca(tmp_path: Path) -> None:
    from tests.helpers import REAL_EXPORT, environment, run_cli
    from tests.openwebui_stub import ADMIN_TOKEN, OwuiServer, OwuiState

    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    server = OwuiServer(OwuiState(export_file=REAL_EXPORT))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    url = server.url.replace("http://", "https://")
    out = tmp_path / "export.json"
    with serving(server), environment(OPENWEBUI_BASE_URL=url, OPENWEBUI_TOKEN=ADMIN_TOKEN):
        untrusted = run_cli("download", "-o", str(out))
        trusted = run_cli("download", "-o", str(out), "--ca-bundle", str(bundle))
    assert untrusted.code != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert ADMIN_TOKEN not in untrusted.stderr
    assert trusted.code == 0 and out.read_bytes() == REAL_EXPORT.read_bytes()
