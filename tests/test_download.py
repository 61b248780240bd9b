"""download against an Open WebUI stand-in serving the real 0.12.4 shapes."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from owui_replay.errors import ExitCode
from tests.helpers import FIXTURES, REAL_EXPORT, Run, environment, run_cli
from tests.openwebui_stub import (
    ADMIN_API_KEY,
    ADMIN_TOKEN,
    PENDING_TOKEN,
    USER_API_KEY,
    USER_ID,
    USER_TOKEN,
    openwebui_stub,
)

PAGE1 = FIXTURES / "openwebui-0.12.4" / "user-page1.json"


def run_download(url: str, token: str, *args: str) -> Run:
    with environment(OPENWEBUI_BASE_URL=url, OPENWEBUI_TOKEN=token):
        return run_cli("download", *args)


def user_items(count: int) -> list[dict[str, Any]]:
    """COUNT ratings of the page-1 user, shaped like the real user endpoint's items."""
    template = json.loads(PAGE1.read_text())["items"][1]
    items = []
    for i in range(count):
        item = copy.deepcopy(template)
        item["id"] = f"00000000-0000-4000-8000-{i:012d}"
        item["meta"]["message_id"] = f"msg-{i}"
        items.append(item)
    return items


@pytest.mark.parametrize("token", [ADMIN_TOKEN, ADMIN_API_KEY], ids=["jwt", "sk-api-key"])
def test_admin_export_is_streamed_to_disk_with_its_hash(tmp_path: Path, token: str) -> None:
    out = tmp_path / "export.json"
    with openwebui_stub(export_file=REAL_EXPORT) as server:
        result = run_download(server.url, token, "-o", str(out))
        assert server.state.log == [("/api/v1/evaluations/feedbacks/all/export", "bearer")]
    assert result.code == 0, result.stderr
    assert out.read_bytes() == REAL_EXPORT.read_bytes()
    digest = hashlib.sha256(REAL_EXPORT.read_bytes()).hexdigest()
    assert (tmp_path / "export.json.sha256").read_text() == f"{digest}  export.json\n"
    assert result.stdout == f"{digest}  export.json\n"
    assert "downloaded 9 records" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "export.json", "export.json.sha256", "export.json.taken-at.json"
    ]  # fmt: skip
    taken = json.loads((tmp_path / "export.json.taken-at.json").read_text())
    assert taken["sha256"] == digest and taken["taken_at"].endswith("Z")


def test_cookie_fallback_on_401(tmp_path: Path) -> None:
    with openwebui_stub(export_file=REAL_EXPORT, bearer_enabled=False) as server:
        result = run_download(server.url, ADMIN_TOKEN, "-o", str(tmp_path / "e.json"))
        assert [kind for _, kind in server.state.log] == ["none", "cookie"]
    assert result.code == 0 and "auth: cookie" in result.stderr


def test_non_admin_on_the_export_is_told_what_is_missing(tmp_path: Path) -> None:
    with openwebui_stub(export_file=REAL_EXPORT) as server:
        result = run_download(server.url, USER_TOKEN, "-o", str(tmp_path / "e.json"))
    assert result.code == ExitCode.AUTH
    assert "this account is not an admin" in result.stderr and "--user-scope" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_user_scope_follows_every_page(tmp_path: Path) -> None:
    out = tmp_path / "mine.json"
    with openwebui_stub(user_items=user_items(65)) as server:
        result = run_download(server.url, USER_TOKEN, "-o", str(out), "--user-scope")
        pages = [path for path, _ in server.state.log]
    assert result.code == 0, result.stderr
    assert pages == [f"/api/v1/evaluations/feedbacks/user?page={n}" for n in (1, 2, 3)]
    records = json.loads(out.read_text())
    assert len(records) == 65 and len({r["id"] for r in records}) == 65
    assert all(r["user_id"] == USER_ID for r in records)


def test_user_scope_on_an_older_server_takes_the_plain_list(tmp_path: Path) -> None:
    out = tmp_path / "mine.json"
    with openwebui_stub(user_items=user_items(40), legacy_user_list=True) as server:
        result = run_download(server.url, USER_TOKEN, "-o", str(out), "--user-scope")
        assert len(server.state.log) == 1
    assert result.code == 0 and len(json.loads(out.read_text())) == 40


def test_user_scope_download_converts(tmp_path: Path) -> None:
    out = tmp_path / "mine.json"
    with openwebui_stub(user_items=user_items(3)) as server:
        assert run_download(server.url, USER_TOKEN, "-o", str(out), "--user-scope").code == 0
    assert run_cli("convert", str(out), "-o", str(tmp_path / "f.jsonl"), "-q").code == 0
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) == 3


def test_a_truncated_download_leaves_nothing_under_the_final_name(tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    with openwebui_stub(export_file=REAL_EXPORT, truncate_to=100_000) as server:
        result = run_download(server.url, ADMIN_TOKEN, "-o", str(out))
    assert result.code == ExitCode.NETWORK and result.stderr.count("\n") == 1
    assert "the connection broke after 100000 of 232888 bytes" in result.stderr
    assert "unexpected" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'[{"id": "a"}, {"id": "b", "x": "]',
            "the body ends at byte offset 33 inside a string, "
            "after 1 complete element: it was cut short",
        ),
        (
            b'[{"id": "a"}, {"id": "b"}',
            "the body ends at byte offset 25 with 1 bracket still open, after 1 complete element",
        ),
        (
            b'[{"id": "a"}] {"id": "b"}',
            "byte offset 14: more data after the array closed at byte offset 12",
        ),
        (b'{"detail": "Not Found"}', "byte offset 0: the body starts with a JSON object"),
    ],
    ids=["cut-in-a-string", "cut-between-records", "more-after", "an-object"],
)
def test_a_body_that_is_not_one_whole_array_is_refused(
    tmp_path: Path, body: bytes, expected: str
) -> None:
    """The HTTP framing is complete here (a chunked body with its last chunk): only the
    shape of the body tells that the export was cut short or is something else."""
    out = tmp_path / "new" / "e.json"
    with openwebui_stub(export_chunks=lambda: iter([body[:10], body[10:]])) as server:
        result = run_download(server.url, ADMIN_TOKEN, "-o", str(out))
    assert result.code == ExitCode.BAD_INPUT, result.stderr
    assert result.stderr.startswith(f"owui-replay: error: the download of e.json: {expected}")
    assert result.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_login_page_instead_of_json_is_refused(tmp_path: Path) -> None:
    with openwebui_stub(export_file=REAL_EXPORT, html_instead=True) as server:
        result = run_download(server.url, ADMIN_TOKEN, "-o", str(tmp_path / "e.json"))
    assert result.code == ExitCode.BAD_INPUT and "answered a web page" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_token_is_never_shown_or_written(tmp_path: Path) -> None:
    with openwebui_stub(export_file=REAL_EXPORT) as server:
        ok = run_download(server.url, ADMIN_TOKEN, "-o", str(tmp_path / "e.json"))
        refused = run_download(server.url, USER_TOKEN, "-o", str(tmp_path / "x.json"))
    unreachable = run_download("http://127.0.0.1:9", ADMIN_TOKEN, "-o", str(tmp_path / "y.json"))
    assert unreachable.code != 0
    for run in (ok, refused, unreachable):
        assert ADMIN_TOKEN not in run.stdout + run.stderr
        assert USER_TOKEN not in run.stdout + run.stderr
    for path in tmp_path.iterdir():
        assert ADMIN_TOKEN.encode() not in path.read_bytes()


def test_configuration_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OPENWEBUI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENWEBUI_TOKEN", raising=False)
    missing = run_cli("download", "-o", str(tmp_path / "e.json"))
    assert missing.code == ExitCode.USAGE and "OPENWEBUI_BASE_URL" in missing.stderr
    insecure = run_download("http://example.com", ADMIN_TOKEN, "-o", str(tmp_path / "e.json"))
    assert insecure.code == ExitCode.USAGE and "--allow-insecure-http" in insecure.stderr
    no_token = run_download("http://127.0.0.1:9", "", "-o", str(tmp_path / "e.json"))
    assert no_token.code == ExitCode.USAGE and "OPENWEBUI_TOKEN is not set" in no_token.stderr


def test_a_large_export_is_streamed(tmp_path: Path) -> None:
    """A chunked body of many records is written as it comes (memory is measured in
    benchmarks/bench_download.py)."""
    record = json.dumps(json.loads(REAL_EXPORT.read_text())[6]).encode()

    def chunks():
        yield b"["
        for i in range(300):
            yield (b"," if i else b"") + record
        yield b"]"

    out = tmp_path / "big.json"
    with openwebui_stub(export_chunks=chunks) as server:
        result = run_download(server.url, ADMIN_TOKEN, "-o", str(out))
        as_json = run_download(
            server.url, ADMIN_TOKEN, "-o", str(tmp_path / "again.json"), "--json"
        )
    assert result.code == 0 and "downloaded 300 records" in result.stderr
    assert out.stat().st_size == 2 + 300 * len(record) + 299
    reported = json.loads(as_json.stdout)
    assert (reported["bytes"], reported["records"]) == (out.stat().st_size, 300)


@pytest.mark.parametrize(
    ("token", "expected"),
    [("garbage", "it is invalid, expired or revoked"),
     ("sk-00000000000000000000000000000000", "it is invalid, expired or revoked"),
     ("eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.expired", "it is invalid, expired or revoked"),
     (USER_TOKEN, "this account is not an admin"),
     (USER_API_KEY, "this key's account is not an admin (or still pending)"),
     (PENDING_TOKEN, "this account is still pending")],
    ids=["garbage", "wrong-sk-key", "expired-jwt", "non-admin", "non-admin-sk-key", "pending"],
)  # fmt: skip
def test_each_refusal_is_told_apart(tmp_path: Path, token: str, expected: str) -> None:
    with openwebui_stub(export_file=REAL_EXPORT) as server:
        result = run_download(server.url, token, "-o", str(tmp_path / "d" / "e.json"))
    assert result.code == ExitCode.AUTH and expected in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and token not in result.stderr
    assert list(tmp_path.iterdir()) == []  # not even the folder it would have made


def test_a_pending_account_on_the_user_scope_is_told_so(tmp_path: Path) -> None:
    with openwebui_stub(user_items=user_items(3)) as server:
        result = run_download(server.url, PENDING_TOKEN, "-o", str(tmp_path / "e.json"),
                              "--user-scope")  # fmt: skip
    assert result.code == ExitCode.AUTH and "still pending" in result.stderr


@pytest.mark.parametrize("scope", [[], ["--user-scope"]], ids=["admin", "user"])
@pytest.mark.parametrize("prefix", ["/openwebui", "/api"])
def test_a_base_url_that_answers_the_web_page_is_not_the_api(
    tmp_path: Path, scope: list[str], prefix: str
) -> None:
    with openwebui_stub(export_file=REAL_EXPORT, user_items=user_items(3)) as server:
        token = ADMIN_TOKEN if not scope else USER_TOKEN
        result = run_download(server.url + prefix, token, "-o", str(tmp_path / "e.json"), *scope)
    assert result.code == ExitCode.BAD_INPUT, result.stderr
    assert "answered a web page, not Open WebUI's API" in result.stderr
    assert result.stderr.count("\n") == 1 and ".partial" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_network_failures_are_one_line_naming_the_host(tmp_path: Path) -> None:
    refused = run_download("http://127.0.0.1:9", ADMIN_TOKEN, "-o", str(tmp_path / "e.json"))
    assert refused.code == ExitCode.NETWORK and refused.stderr.count("\n") == 1
    assert "127.0.0.1:9: connection refused" in refused.stderr
    assert "HTTPConnectionPool" not in refused.stderr and "Max retries" not in refused.stderr
    with openwebui_stub(export_file=REAL_EXPORT) as server:  # an API path the server lacks
        missing = run_download(server.url, ADMIN_TOKEN, "-o", str(tmp_path / "e.json"),
                               "--user-scope")  # fmt: skip
    assert missing.code != ExitCode.ERROR


def test_an_api_404_is_a_network_class_error_naming_the_host(tmp_path: Path) -> None:
    from owui_replay.download import OpenWebUI, download
    from owui_replay.errors import ReplayError
    from owui_replay.secrets import Secret

    with openwebui_stub(export_file=REAL_EXPORT) as server:
        client = OpenWebUI(server.url, Secret(ADMIN_TOKEN, "t"), timeout=5, verify=True)
        with pytest.raises(ReplayError) as failed:
            client.get("/api/v1/evaluations/nothing-here")
        client.close()
    assert failed.value.code == ExitCode.NETWORK
    assert "answered HTTP 404 (Not Found)" in str(failed.value)
    assert server.url.removeprefix("http://") in str(failed.value)
    assert download is not None


def test_the_export_is_asked_for_uncompressed(tmp_path: Path) -> None:
    """Open WebUI compresses the whole export before its first byte when gzip is allowed."""
    with openwebui_stub(export_file=REAL_EXPORT) as server:
        result = run_download(server.url, ADMIN_TOKEN, "-o", str(tmp_path / "e.json"))
        assert server.state.encodings == ["identity"]
    assert result.code == 0 and (tmp_path / "e.json").read_bytes() == REAL_EXPORT.read_bytes()


def shift_once(state, page: int) -> None:
    """After page 1 is served, the oldest rating is updated: it moves to the front."""
    if page == 1 and not getattr(state, "shifted", False):
        state.shifted = True
        with state.lock:
            moved = state.user_items.pop()
            moved["updated_at"] += 1000
            state.user_items.insert(0, moved)


def test_user_scope_pages_that_shift_while_read_lose_nothing(tmp_path: Path) -> None:
    items = user_items(37)
    out = tmp_path / "mine.json"
    with openwebui_stub(user_items=items, on_page=shift_once) as server:
        result = run_download(server.url, USER_TOKEN, "-o", str(out), "--user-scope")
        pages = [path for path, _ in server.state.log]
    assert result.code == 0, result.stderr
    records = json.loads(out.read_text())
    assert len(records) == 37 and len({r["id"] for r in records}) == 37
    assert len(pages) > 2  # it read again rather than trust one pass


def test_user_scope_pages_that_never_settle_are_refused(tmp_path: Path) -> None:
    extra = iter(user_items(2000)[100:])

    def new_rating_every_page(state, page: int) -> None:
        with state.lock:  # ratings arrive faster than the pages are read
            state.user_items.insert(0, next(extra))

    with openwebui_stub(
        user_items=user_items(95), on_page=new_rating_every_page, page_size=10
    ) as server:
        result = run_download(server.url, USER_TOKEN, "-o", str(tmp_path / "e.json"),
                              "--user-scope")  # fmt: skip
    assert result.code == ExitCode.BAD_INPUT, result.stderr
    assert "ratings kept changing while the pages were read" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_name_that_does_not_resolve_is_said_in_words() -> None:
    """Not resolved for real: a DNS query could leave this machine. The words come from the
    exception urllib3 raises for it."""
    import requests
    from urllib3.exceptions import MaxRetryError, NameResolutionError

    from owui_replay.download import _reason

    cause = NameResolutionError("owui.example", None, "Name or service not known")  # type: ignore
    failed = requests.exceptions.ConnectionError(MaxRetryError(None, "/", cause))  # type: ignore
    assert _reason(failed) == "the host name does not resolve"


def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    """Writes happen on a second thread: its failure must reach the user, whole."""
    if not Path("/dev/full").exists():
        pytest.fail("this test needs /dev/full (Linux)")
    out = tmp_path / "e.json"
    (tmp_path / "e.json.partial").symlink_to("/dev/full")  # where the download is written
    with openwebui_stub(export_file=REAL_EXPORT) as server:
        result = run_download(server.url, ADMIN_TOKEN, "-o", str(out))
    assert result.code == ExitCode.ERROR
    assert result.stderr == f"owui-replay: error: {out}.partial: No space left on device\n"
    assert list(tmp_path.iterdir()) == []
