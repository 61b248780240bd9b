"""Backoff, judging replies, pacing and the audit journal, without a network."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from owui_replay.backoff import backoff_delay, parse_retry_after
from owui_replay.delivery import Outcome, StopReason, judge_reply, stop_outcome
from owui_replay.errors import ExitCode, InputError
from owui_replay.journal import JOURNAL_VERSION, Journal, journal_header
from owui_replay.portkey_client import Reply, error_message
from owui_replay.ratelimit import RateLimiter
from owui_replay.urls import checked_base_url, is_loopback
from tests.helpers import FakeClock


@pytest.mark.parametrize(
    ("method", "status", "body", "outcome", "reason"),
    [("POST", 200, '{"status":"success","feedback_ids":["a"]}', Outcome.ACKED, None),
     ("POST", 201, '{"status":"success"}', Outcome.ACKED, None),
     ("POST", 200, "<html>hello</html>", Outcome.STOP, StopReason.WRONG_URL),
     ("POST", 408, "", Outcome.RETRY, None), ("POST", 429, "", Outcome.RETRY, None),
     ("POST", 500, "", Outcome.RETRY, None), ("POST", 501, "", Outcome.RETRY, None),
     ("POST", 503, "", Outcome.RETRY, None), ("POST", 504, "", Outcome.RETRY, None),
     ("POST", 401, "", Outcome.STOP, StopReason.AUTH),
     ("POST", 403, "", Outcome.STOP, StopReason.AUTH),
     ("POST", 404, '{"status":"failure","message":"gone"}', Outcome.STOP, StopReason.WRONG_URL),
     ("POST", 405, "", Outcome.STOP, StopReason.WRONG_URL),
     ("PUT", 405, "", Outcome.STOP, StopReason.WRONG_URL),
     ("PUT", 404, "<html>Not Found</html>", Outcome.STOP, StopReason.WRONG_URL),
     ("PUT", 404, '{"status":"failure","message":"feedback not found"}', Outcome.REFUSED, None),
     ("POST", 307, "", Outcome.STOP, StopReason.REDIRECT),
     ("POST", 301, "", Outcome.STOP, StopReason.REDIRECT),
     ("POST", 400, "", Outcome.REFUSED, None), ("POST", 422, "", Outcome.REFUSED, None)],
)  # fmt: skip
def test_judge_reply(method: str, status: int, body: str, outcome: Outcome, reason) -> None:
    reply = Reply(status, body)
    if 200 <= status < 300:
        reply.portkey_shaped = body.startswith("{")
    assert judge_reply(reply, method) == (outcome, reason)


def test_no_answer_is_retried_and_a_tls_failure_stops() -> None:
    assert judge_reply(Reply(None, error="reset"), "POST") == (Outcome.RETRY, None)
    tls = Reply(None, error="TLS", sent=False, tls_failure=True)
    assert judge_reply(tls, "POST") == (Outcome.STOP, StopReason.TLS)


@pytest.mark.parametrize("reason", list(StopReason))
def test_every_stop_reason_has_an_exit_code_and_a_message(reason: StopReason) -> None:
    code, message = stop_outcome(reason, "detail", "http://127.0.0.1:9")
    assert code != ExitCode.OK and message
    if reason is StopReason.WRONG_URL:
        # called from Python: the setting's argument name (a command names its own flag)
        assert code == ExitCode.ENDPOINT and "base_url=http://127.0.0.1:9/v1" in message


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("https://gw.example.com", "https://gw.example.com/v1"),
        ("https://gw.example.com/v1/feedback", "https://gw.example.com/v1"),
        ("https://gw.example.com/portkey/v1/feedback/", "https://gw.example.com/portkey/v1"),
        ("https://gw.example.com/feedback", "https://gw.example.com/v1"),
        ("https://gw.example.com/api", "https://gw.example.com/api/v1"),
    ],
)
def test_the_suggested_url_is_computed_from_the_one_given(given: str, meant: str) -> None:
    _, message = stop_outcome(StopReason.WRONG_URL, "detail", given)
    assert f"base_url={meant}." in message


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412500.0) == 0.0


@given(st.integers(0, 30), st.one_of(st.none(), st.floats(0, 10_000)))
def test_backoff_is_bounded_and_honours_retry_after(
    attempt: int, retry_after: float | None
) -> None:
    delay = backoff_delay(attempt, base=0.25, cap=20, retry_after=retry_after, max_retry_after=60,
                          rng=random.Random(attempt))  # fmt: skip
    if retry_after is None:
        assert 0 <= delay <= 20
    else:
        assert min(retry_after, 60) <= delay <= min(retry_after, 60) + 0.25


def test_token_bucket_holds_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, burst=1, clock=clock, sleep=clock.sleep)
    for _ in range(51):
        assert limiter.acquire()
    assert clock.now - 100.0 == pytest.approx(5.0, abs=0.11)


def test_the_first_429_pauses_everyone_for_retry_after_and_sets_the_rate_under_the_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, burst=1, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.throttle(2.0, window_count=10.0)
    assert limiter.rate == pytest.approx(9.7)
    start = clock.now
    limiter.acquire()
    assert clock.now - start >= 2.0
    for _ in range(10_000):
        limiter.succeeded()
    assert limiter.rate == 10.0  # recovers, never above the user's ceiling


def test_a_later_429_is_only_a_short_breath() -> None:
    """Once the limit is known, a 429 means one step over it: the sliding window frees a slot
    every 1/limit seconds, so waiting the whole Retry-After would waste a second."""
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.throttle(1.0, window_count=100.0)
    clock.now += 30
    limiter.throttle(1.0, window_count=100.0)
    start = clock.now
    limiter.acquire()
    assert 0.09 <= clock.now - start <= 0.12


def test_429s_in_the_same_second_do_not_compound() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.throttle(None, window_count=100.0)
    limiter.throttle(None, window_count=90.0)  # another in-flight request's 429
    assert limiter.rate == pytest.approx(97.0) and limiter.throttled == 2
    clock.now += 1.0
    limiter.throttle(None, window_count=90.0)
    assert limiter.rate == pytest.approx(87.3)


def test_only_a_429_for_a_request_sent_after_the_last_slow_down_slows_again() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.throttle(None, window_count=200.0, sent_at=clock.now - 0.01)
    assert limiter.rate == pytest.approx(194.0)
    clock.now += 0.05
    limiter.throttle(None, window_count=150.0, sent_at=clock.now - 0.06)  # sent before it
    assert limiter.rate == pytest.approx(194.0)
    limiter.throttle(None, window_count=150.0, sent_at=clock.now - 0.01)  # sent after it
    assert limiter.rate == pytest.approx(145.5)


def test_429_without_retry_after_does_not_pause() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.throttle(None, window_count=1000.0)
    start = clock.now
    limiter.acquire()
    assert clock.now - start <= 0.002


def test_unbounded_limiter_learns_a_rate_from_429_and_probes_slowly() -> None:
    limiter = RateLimiter(None)
    assert limiter.acquire() and limiter.rate is None
    limiter.throttle(None, window_count=40.0)
    assert limiter.rate == pytest.approx(38.8)
    for _ in range(39):  # a second's worth of successes at that rate
        limiter.succeeded()
    assert limiter.rate == pytest.approx(38.8 * 1.002, rel=1e-3)  # +0.2% a second


def test_acquire_returns_false_when_stopped() -> None:
    limiter = RateLimiter(0.01)
    limiter.acquire()
    stop = threading.Event()
    stop.set()
    assert limiter.acquire(stop) is False


def test_error_message_shapes() -> None:
    assert error_message(
        '{"success":false,"data":{"message":"Invalid API Key","errorCode":"AB01"}}'
    ) == ("Invalid API Key (AB01)")
    assert (
        error_message('{"status":"failure","message":"value out of range"}') == "value out of range"
    )
    assert error_message("<html>bad gateway</html>") == "<html>bad gateway</html>"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("[::1]", True),
     ("10.0.0.1", False), ("example.com", False), ("api.portkey.ai", False)],
)  # fmt: skip
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_checked_base_url() -> None:
    assert checked_base_url("https://api.portkey.ai/v1/", allow_insecure_http=False, name="u") == (
        "https://api.portkey.ai/v1"
    )
    assert checked_base_url("http://10.0.0.5/v1", allow_insecure_http=True, name="u")


def test_journal_is_an_audit_log_with_a_checked_version(tmp_path: Path) -> None:
    path = tmp_path / "f.journal.jsonl"
    journal = Journal(path, input_name="f.jsonl", input_sha256="abc", lines=6)
    journal.start_run({"endpoint": "x"})
    journal.send([0, 1], "POST")
    journal.ack([0, 1], ["id0", "id1"])
    journal.close()
    header = journal_header(path)
    assert header["version"] == JOURNAL_VERSION and header["input_sha256"] == "abc"
    again = Journal(path, input_name="f.jsonl", input_sha256="def", lines=6)  # regenerated
    again.close()
    assert again.set_aside_as is not None and again.set_aside_as.exists()
    assert journal_header(path)["input_sha256"] == "def"


def test_a_damaged_or_newer_journal_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text('{"t":"send","lines":[0]}\n')
    with pytest.raises(InputError, match="not an owui-replay journal"):
        journal_header(path)
    path.write_text('{"t":"header","version":99,"input_sha256":"abc"}\n')
    with pytest.raises(InputError, match="journal format 99"):
        Journal(path, input_name="f", input_sha256="abc", lines=1)
