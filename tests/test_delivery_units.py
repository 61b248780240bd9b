"""Backoff, classification, pacing and journal reading, without a network."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from owui_replay.backoff import Verdict, backoff_delay, classify, parse_retry_after
from owui_replay.errors import InputError
from owui_replay.journal import Journal, read_journal
from owui_replay.portkey_client import error_message
from owui_replay.ratelimit import RateLimiter
from owui_replay.replay import make_plan
from owui_replay.urls import checked_base_url, is_loopback


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(200, Verdict.OK), (201, Verdict.OK), (408, Verdict.RETRY), (429, Verdict.RETRY),
     (500, Verdict.RETRY), (502, Verdict.RETRY), (503, Verdict.RETRY), (504, Verdict.RETRY),
     (401, Verdict.AUTH), (403, Verdict.AUTH), (400, Verdict.FAIL), (404, Verdict.FAIL),
     (422, Verdict.FAIL), (501, Verdict.FAIL)],
)  # fmt: skip
def test_classify(status: int, verdict: Verdict) -> None:
    assert classify(status) is verdict


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


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_token_bucket_holds_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, burst=1, clock=clock, sleep=clock.sleep)
    for _ in range(51):
        assert limiter.acquire()
    assert clock.now - 100.0 == pytest.approx(5.0, abs=0.11)


def test_429_with_retry_after_pauses_everyone_and_slows_down() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, burst=1, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.throttle(2.0, accepted_rate=10.0)
    assert limiter.rate == pytest.approx(9.5)
    start = clock.now
    limiter.acquire()
    assert clock.now - start >= 2.0
    for _ in range(10_000):
        limiter.succeeded()
    assert limiter.rate == 10.0  # recovers, never above the user's ceiling


def test_429s_in_the_same_second_do_not_compound() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.throttle(None, accepted_rate=100.0)
    limiter.throttle(None, accepted_rate=90.0)  # another in-flight request's 429
    assert limiter.rate == pytest.approx(95.0) and limiter.throttled == 2
    clock.now += 1.0
    limiter.throttle(None, accepted_rate=90.0)
    assert limiter.rate == pytest.approx(85.5)


def test_only_a_429_for_a_request_sent_after_the_last_slow_down_slows_again() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.throttle(None, accepted_rate=200.0, sent_at=clock.now - 0.01)
    assert limiter.rate == pytest.approx(190.0)
    clock.now += 0.05
    limiter.throttle(None, accepted_rate=150.0, sent_at=clock.now - 0.06)  # sent before it
    assert limiter.rate == pytest.approx(190.0)
    limiter.throttle(None, accepted_rate=150.0, sent_at=clock.now - 0.01)  # sent after it
    assert limiter.rate == pytest.approx(142.5)


def test_429_without_retry_after_does_not_pause() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.throttle(None, accepted_rate=1000.0)
    start = clock.now
    limiter.acquire()
    assert clock.now - start <= 0.002


def test_unbounded_limiter_learns_a_rate_from_429() -> None:
    limiter = RateLimiter(None)
    assert limiter.acquire() and limiter.rate is None
    limiter.throttle(None, accepted_rate=40.0)
    assert limiter.rate == pytest.approx(38.0)
    for _ in range(100):
        limiter.succeeded()
    assert limiter.rate == pytest.approx(39.0)  # +1% of the rate per second at that rate


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


def test_journal_round_trip_and_uncertain_lines(tmp_path: Path) -> None:
    path = tmp_path / "f.journal.jsonl"
    journal = Journal(path, input_name="f.jsonl", input_sha256="abc", lines=6)
    journal.start_run({})
    journal.send([0, 1])
    journal.ack([0, 1], ["id0", "id1"])
    journal.send([2])
    journal.retry([2], "HTTP 429", ambiguous=False)  # answered: not stored
    journal.send([3])
    journal.retry([3], "read timeout", ambiguous=True)  # unanswered: maybe stored
    journal.send([4])
    journal.fail([4], 400)
    journal.send([5])  # then the process died
    journal.close()
    state = read_journal(path, "abc")
    assert state.acked == {0: "id0", 1: "id1"} and state.failed == {4}
    assert state.uncertain == {3, 5} and state.runs == 1
    plan = make_plan(6, state, 0, "resend")
    assert plan.send == [2, 3, 5] and plan.uncertain == {3, 5}
    assert make_plan(6, state, 0, "skip").send == [2]


def test_a_torn_last_journal_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path, input_name="f", input_sha256="abc", lines=2)
    journal.send([0])
    journal.ack([0], ["x"])
    journal.close()
    with open(path, "ab") as handle:
        handle.write(b'{"t":"ack","lines":[1],"ids"')  # power cut mid-write
    assert read_journal(path, "abc").acked == {0: "x"}


def test_a_damaged_or_foreign_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text('{"t":"send","lines":[0]}\n')
    with pytest.raises(InputError, match="not an owui-replay journal"):
        read_journal(path, "abc")
    path.write_text('{"t":"header","input_sha256":"abc"}\nnot json\n{"t":"end"}\n')
    with pytest.raises(InputError, match="line 2 is not JSON"):
        read_journal(path, "abc")
