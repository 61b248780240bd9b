"""replay against a real HTTP stand-in for Portkey on 127.0.0.1, with injected faults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from owui_replay.delivery_state import DeliveryState, rating_of
from owui_replay.errors import ExitCode
from tests.helpers import REAL_EXPORT, read_jsonl, run_cli
from tests.portkey_stub import API_KEY, Fault, portkey_stub
from tests.replay_helpers import journal_events, make_feedback, replay_in_process


def assert_each_stored_once(stub, count: int) -> None:
    counts = stub.state.feedback_counts()
    assert sorted(counts) == [f"fb-{i:04d}" for i in range(count)]
    assert set(counts.values()) == {1}


def test_every_line_is_posted_once_and_journaled(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 40)
    with portkey_stub() as stub:
        result = replay_in_process(feedback, stub.url, "--concurrency", "4")
        assert result.code == ExitCode.OK, result.stderr
        assert_each_stored_once(stub, 40)
        stored_ids = {fid for fid, _ in stub.state.stored}
    acks = [e for e in journal_events(tmp_path / "feedback.journal.jsonl") if e["t"] == "ack"]
    journal_ids = {i for e in acks for i in e["ids"]}
    acked_lines = sorted(line for e in acks for line in e["lines"])
    assert journal_ids == stored_ids and acked_lines == list(range(40))


def test_the_payload_bytes_sent_are_the_lines_as_stored(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 5)
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url).code == 0
        assert sorted(json.dumps(p, sort_keys=True) for _, p in stub.state.stored) == sorted(
            json.dumps(p, sort_keys=True) for p in read_jsonl(feedback)
        )


def test_converted_fixture_end_to_end_with_manifest(tmp_path: Path) -> None:
    out = tmp_path / "feedback.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(out), "-q").code == 0
    with portkey_stub() as stub:
        assert replay_in_process(out, stub.url).code == 0
        assert len(stub.state.stored) == 8
        assert set(stub.state.auth_headers_seen) == {API_KEY}


def test_batches_use_the_array_form(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 10)
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url, "--batch-size", "4").code == 0
        assert stub.state.requests == 3
        assert_each_stored_once(stub, 10)
    acks = [e for e in journal_events(tmp_path / "feedback.journal.jsonl") if e["t"] == "ack"]
    assert all(len(e["ids"]) == len(e["lines"]) for e in acks)


def test_a_refused_batch_is_split_to_find_the_bad_line(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 6)
    with portkey_stub(faults=[Fault("400")]) as stub:
        result = replay_in_process(feedback, stub.url, "--batch-size", "3", "--concurrency", "1")
        assert result.code == ExitCode.OK, result.stderr
        assert_each_stored_once(stub, 6)


@pytest.mark.parametrize(
    "fault",
    [Fault("429", retry_after="0.1"), Fault("429"),
     Fault("429", retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
     Fault("500"), Fault("502"), Fault("503")],
    ids=["429-retry-after", "429-bare", "429-http-date", "500", "502", "503"],
)  # fmt: skip
def test_retryable_statuses_are_retried_without_duplicates(tmp_path: Path, fault: Fault) -> None:
    feedback = make_feedback(tmp_path, 8)
    with portkey_stub(faults=[fault, fault]) as stub:
        result = replay_in_process(feedback, stub.url, "--concurrency", "2")
        assert result.code == ExitCode.OK, result.stderr
        assert_each_stored_once(stub, 8)
        assert stub.state.statuses[int(fault.kind)] == 2
    retries = [e for e in journal_events(tmp_path / "feedback.journal.jsonl") if e["t"] == "retry"]
    assert len(retries) == 2 and not any(e["ambiguous"] for e in retries)


def test_a_dropped_connection_before_storing_is_retried(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 5)
    with portkey_stub(faults=[Fault("drop-before")]) as stub:
        result = replay_in_process(feedback, stub.url, "--concurrency", "1", quiet=False)
        assert result.code == ExitCode.OK, result.stderr
        assert_each_stored_once(stub, 5)
    assert "extra copies Portkey may hold: 1" in result.stderr  # it could not know


@pytest.mark.parametrize("drops", [1, 2, 3])
def test_every_unanswered_attempt_counts_as_a_possible_extra_copy(
    tmp_path: Path, drops: int
) -> None:
    """A line whose connection drops twice after storing is stored three times: 2 extra."""
    feedback = make_feedback(tmp_path, 5)
    with portkey_stub(faults=[Fault("drop-after")] * drops) as stub:
        result = replay_in_process(feedback, stub.url, "--concurrency", "1", quiet=False)
        assert result.code == ExitCode.OK, result.stderr
        counts = stub.state.feedback_counts()
    assert counts["fb-0000"] == drops + 1 and sum(counts.values()) == 5 + drops
    assert f"extra copies Portkey may hold: {drops}," in result.stderr


def test_a_read_timeout_is_retried_and_reported(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 3)
    with portkey_stub(faults=[Fault("slow", seconds=1.5)]) as stub:
        result = replay_in_process(
            feedback, stub.url, "--concurrency", "1", "--timeout", "0.3", quiet=False
        )
        assert result.code == ExitCode.OK, result.stderr
        counts = stub.state.feedback_counts()
    assert counts["fb-0000"] == 2 and "extra copies Portkey may hold: 1," in result.stderr


def test_latency_is_absorbed_by_concurrency(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 24)
    with portkey_stub(latency=0.05) as stub:
        assert replay_in_process(feedback, stub.url, "--concurrency", "6").code == 0
        assert stub.state.max_in_flight > 1
        assert_each_stored_once(stub, 24)


@pytest.mark.parametrize("kind", ["401", "403"])
def test_auth_failure_stops_after_the_first_request(tmp_path: Path, kind: str) -> None:
    feedback = make_feedback(tmp_path, 50)
    with portkey_stub(faults=[Fault(kind)] * 50) as stub:
        result = replay_in_process(feedback, stub.url, "--concurrency", "1")
        assert stub.state.requests == 1
    assert result.code == ExitCode.AUTH
    assert "refused the API key" in result.stderr and "stopped at once" in result.stderr
    assert not (tmp_path / "feedback.failed.jsonl").exists()


def test_auth_failure_with_concurrency_stops_within_one_request_per_worker(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 200)
    with portkey_stub(api_key="a-different-key") as stub:
        result = replay_in_process(feedback, stub.url, "--concurrency", "4")
        assert stub.state.requests <= 4
    assert result.code == ExitCode.AUTH


def test_a_wrong_key_then_the_right_one_resumes_everything(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 12)
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url, key="wrong").code == ExitCode.AUTH
        assert replay_in_process(feedback, stub.url).code == ExitCode.OK
        assert_each_stored_once(stub, 12)


def test_a_refused_payload_goes_to_the_failed_file_and_the_run_goes_on(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 6)
    with portkey_stub(faults=[Fault("400")]) as stub:
        result = replay_in_process(feedback, stub.url, "--concurrency", "1")
        assert len(stub.state.stored) == 5
    assert result.code == ExitCode.DELIVERY_FAILED
    (failed,) = read_jsonl(tmp_path / "feedback.failed.jsonl")
    assert failed["line"] == 0 and failed["status"] == 400
    assert failed["payload"]["metadata"]["feedback_id"] == "fb-0000"
    assert "rejected by fault injection" in failed["response"]
    assert "delivered now: 5 posted, 0 updated, already delivered: 0, refused: 1 (see" in (
        result.stderr
    )


def test_real_validation_errors_are_refused_by_the_server(tmp_path: Path) -> None:
    """The stand-in rejects what Portkey documents as invalid (checked here directly)."""
    from tests.portkey_stub import payload_problem

    assert payload_problem({"trace_id": "t", "value": 11}) is not None
    assert payload_problem({"trace_id": "t", "value": True}) is not None
    assert payload_problem({"trace_id": "t", "value": 1, "weight": 1.5}) is not None
    assert payload_problem({"value": 1}) is not None
    assert payload_problem({"trace_id": "t", "value": -10, "weight": 0}) is None


def test_retries_exhausted_stop_the_run_without_writing_lines_off(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 4)
    with portkey_stub(faults=[Fault("503")] * 3) as stub:
        first = replay_in_process(feedback, stub.url, "--concurrency", "1", "--retries", "2")
        assert first.code == ExitCode.DELIVERY_FAILED
        assert "gave up after 3 attempts on line 1: " in first.stderr  # lines count from 1
        assert "retries: 2" in first.stderr
        assert not (tmp_path / "feedback.failed.jsonl").exists()
        second = replay_in_process(feedback, stub.url)
        assert second.code == ExitCode.OK
        assert_each_stored_once(stub, 4)


def test_resume_skips_acknowledged_lines(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 10)
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url).code == 0
        again = replay_in_process(feedback, stub.url, "--resume", quiet=False)
        assert again.code == 0 and stub.state.requests == 10
    assert "delivered now: 0 posted, 0 updated, already delivered: 10" in again.stderr


def test_start_offset_skips_the_first_lines(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 10)
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url, "--start-offset", "7").code == 0
        assert sorted(stub.state.feedback_counts()) == ["fb-0007", "fb-0008", "fb-0009"]


def test_restart_sets_the_journal_aside_and_still_sends_no_duplicate(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 3)
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url).code == 0
        assert replay_in_process(feedback, stub.url, "--restart").code == 0
        assert_each_stored_once(stub, 3)  # the delivery state, not the journal, decides
    assert len(list(tmp_path.glob("feedback.journal.jsonl.*"))) == 1


def test_a_regenerated_file_gets_a_new_journal_and_sends_only_what_is_new(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 3)
    with portkey_stub() as stub:
        assert replay_in_process(feedback, stub.url).code == 0
        make_feedback(tmp_path, 4)  # the file is regenerated under the same name
        result = replay_in_process(feedback, stub.url)
        assert result.code == ExitCode.OK, result.stderr
        assert_each_stored_once(stub, 4)
    assert len(list(tmp_path.glob("feedback.journal.jsonl.*"))) == 1  # the old history kept


def test_uncertain_lines_are_resent_or_skipped_as_asked(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 3)
    state_file = tmp_path / "state.sqlite3"
    with portkey_stub() as stub:
        endpoint = stub.url
        with DeliveryState(state_file, endpoint) as state:  # a run died with line 1 in flight
            state.intend([rating_of(read_jsonl(feedback)[1], b"")], "POST")
        args = ("--ledger", str(state_file))
        skipped = replay_in_process(feedback, stub.url, *args, "--uncertain", "skip", quiet=False)
        assert skipped.code == ExitCode.DELIVERY_FAILED and "uncertain skipped: 1" in skipped.stderr
        assert sorted(stub.state.feedback_counts()) == ["fb-0000", "fb-0002"]
        resent = replay_in_process(feedback, stub.url, *args, quiet=False)
        assert resent.code == 0, resent.stderr
        announced = resent.stderr.splitlines()[1]  # after the no-manifest warning
        assert announced.startswith(
            f"owui-replay: {endpoint}: uncertain resent: 1 ratings whose earlier POST got no answer"
        )  # said before anything was sent
        assert "up to 1 extra copies" in resent.stderr
        assert_each_stored_once(stub, 3)


def test_manifest_mismatch_is_refused_unless_no_verify(tmp_path: Path) -> None:
    out = tmp_path / "feedback.jsonl"
    assert run_cli("convert", str(REAL_EXPORT), "-o", str(out), "-q").code == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-1]))  # someone removed a line after review
    with portkey_stub() as stub:
        refused = replay_in_process(out, stub.url)
        assert refused.code == ExitCode.MISMATCH and "does not match" in refused.stderr
        assert stub.state.requests == 0
        assert replay_in_process(out, stub.url, "--no-verify").code == 0


def test_an_invalid_line_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    feedback = make_feedback(tmp_path, 3)
    with open(feedback, "a") as handle:
        handle.write('{"trace_id": "t", "value": 42}\n')
    with portkey_stub() as stub:
        result = replay_in_process(feedback, stub.url)
        assert stub.state.requests == 0
    assert result.code == ExitCode.BAD_INPUT
    assert "line 4: not a Portkey feedback payload: /value" in result.stderr


def test_dry_run_sends_nothing_and_needs_no_key(tmp_path: Path, monkeypatch) -> None:
    feedback = make_feedback(tmp_path, 5)
    monkeypatch.delenv("PORTKEY_API_KEY", raising=False)
    with portkey_stub() as stub:
        result = run_cli(
            "replay", str(feedback), "--base-url", stub.url, "--dry-run", "--samples", "1"
        )
        assert stub.state.requests == 0
    assert result.code == 0 and '"trace_id": "chat-0:msg-0"' in result.stdout
    assert f"dry run: {stub.url}: 5 lines, would POST 5, PUT 0, already delivered: 0" in (
        result.stderr
    )
    assert not (tmp_path / "feedback.journal.jsonl").exists()


def test_missing_key_is_a_usage_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("PORTKEY_API_KEY", raising=False)
    result = run_cli("replay", str(make_feedback(tmp_path, 1)))
    assert result.code == ExitCode.USAGE and "PORTKEY_API_KEY is not set" in result.stderr


def test_api_key_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("PORTKEY_API_KEY", raising=False)
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    feedback = make_feedback(tmp_path, 2)
    with portkey_stub() as stub:
        result = run_cli(
            "replay", str(feedback), "--base-url", stub.url, "--api-key-file", str(key_file)
        )
        assert result.code == 0 and len(stub.state.stored) == 2


@pytest.mark.parametrize(
    "url", ["http://example.com/v1", "http://10.1.2.3/v1", "ftp://127.0.0.1/v1"]
)
def test_plain_http_to_another_host_is_refused(tmp_path: Path, url: str) -> None:
    result = replay_in_process(make_feedback(tmp_path, 1), url)
    assert result.code == ExitCode.USAGE
    assert "--allow-insecure-http" in result.stderr or "not an http(s) URL" in result.stderr


def test_base_url_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    feedback = make_feedback(tmp_path, 2)
    with portkey_stub() as stub:
        monkeypatch.setenv("PORTKEY_BASE_URL", stub.url + "/")
        monkeypatch.setenv("PORTKEY_API_KEY", API_KEY)
        assert run_cli("replay", str(feedback), "-q").code == 0
        assert len(stub.state.stored) == 2
