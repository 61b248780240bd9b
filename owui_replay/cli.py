"""Command-line parsing only: every command is a call into a library module."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import textwrap
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

from owui_replay._version import __version__
from owui_replay.errors import EXIT_CODE_HELP, ExitCode, InputError, ReplayError, UsageError
from owui_replay.mapping import (
    TRACE_FIELDS,
    MappingOptions,
    template_fields,
)
from owui_replay.option_names import naming
from owui_replay.settings import (
    DOWNLOAD_TIMEOUT,
    DRY_RUN_SAMPLES,
    DeliveryOptions,
    ListenSettings,
    ReplaySettings,
    SyncSettings,
)
from owui_replay.timeparse import parse_instant
from owui_replay.urls import DEFAULT_PORTKEY_BASE

if TYPE_CHECKING:
    from pathlib import Path

    from owui_replay.config import ConfigFile, Setting

PROG = "owui-replay"

CONVERT_EPILOG = """\
example:
  owui-replay convert feedback-export.json -o feedback.jsonl
  owui-replay convert export.json.gz -o feedback.jsonl --since 2026-11-01 --drop-comments
  curl -s ... | owui-replay convert - -o feedback.jsonl

Writes OUT.jsonl (one Portkey payload a line), OUT.rejects.jsonl (every record not written,
with the reason) and OUT.manifest.json (hashes, options, counts). Nothing appears under those
names unless the run finished; a failed run leaves OUT.jsonl.partial.
"""


def exit_codes_text() -> str:
    return "exit codes:\n" + "".join(
        f"  {int(code):<4} {text}\n" for code, text in EXIT_CODE_HELP.items()
    )


class _Formatter(argparse.HelpFormatter):
    """Wraps prose to the terminal; keeps indented lines (examples, tables) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        for block in text.split("\n\n"):
            lines = block.splitlines()
            if any(line.startswith(" ") or line.endswith(":") for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(textwrap.fill(" ".join(lines), width, initial_indent=indent,
                                         subsequent_indent=indent))  # fmt: skip
        return "\n\n".join(out) + ("\n" if text.endswith("\n") else "")


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() owns the exit code;
    no abbreviated options (a future option must never change what an old command means);
    every help ends with the exit codes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        kwargs["formatter_class"] = _Formatter
        epilog = kwargs.get("epilog") or ""
        kwargs["epilog"] = (epilog.rstrip("\n") + "\n\n" if epilog else "") + exit_codes_text()
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)", prog=self.prog)


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    return parse


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..1")
    return value


def _instant(text: str) -> int:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _template(text: str) -> str:
    try:
        template_fields(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Move Open WebUI thumbs feedback into Portkey's feedback API, auditably.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="show a Python traceback on errors (accepted anywhere on the command line; or "
        "set OWUI_REPLAY_TRACEBACK=1)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the configuration file (accepted anywhere on the command line; default "
        "$OWUI_REPLAY_CONFIG, else $XDG_CONFIG_HOME/owui-replay/config.toml)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    _add_download(commands)
    _add_convert(commands)
    _add_verify(commands)
    _add_approve(commands)
    _add_report(commands)
    _add_replay(commands)
    _add_inspect(commands)
    _add_state(commands)
    _add_sync(commands)
    _add_config(commands)
    _add_listen(commands)
    _add_completion(commands)
    return parser


def _add_convert(commands: Any) -> None:
    p = commands.add_parser(
        "convert",
        help="convert an Open WebUI feedback export to Portkey-ready JSONL",
        description="Stream an Open WebUI feedback export (array or {items} page; plain, .gz "
        "or '-' for stdin), validate every record, map thumbs to Portkey feedback payloads.",
        epilog=CONVERT_EPILOG,
    )
    p.add_argument("export", metavar="EXPORT", help="export file, '.gz' or '-' for stdin")
    p.add_argument(
        "-o", "--output", metavar="OUT.jsonl", help="output JSONL (required unless --dry-run)"
    )
    _add_mapping_options(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="read, validate and map everything, write nothing, print samples",
    )
    _add_samples(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(handler=run_convert)


def _add_openwebui_access(p: argparse.ArgumentParser, *, url_aliases: tuple[str, ...] = ()) -> None:
    """Where Open WebUI is and how to sign in: download, sync and listen."""
    p.add_argument(
        "--openwebui-url",
        *url_aliases,
        dest="openwebui_url",
        metavar="URL",
        help="Open WebUI address (default $OPENWEBUI_BASE_URL)",
    )
    p.add_argument(
        "--token-file", metavar="FILE", help="read the token from FILE instead of $OPENWEBUI_TOKEN"
    )


def _add_tls_options(p: argparse.ArgumentParser) -> None:
    """How a server is reached: shared by download, replay and sync."""
    p.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow plain http:// to a host other than this machine",
    )
    p.add_argument("--ca-bundle", metavar="PATH", help="CA bundle for TLS verification")


def _add_samples(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--samples",
        type=_int_range(0, 1000),
        default=DRY_RUN_SAMPLES,
        metavar="N",
        help="payloads to print with --dry-run (default %(default)s)",
    )


def _add_mapping_options(p: argparse.ArgumentParser) -> None:
    """How records become payloads: convert's options, shared with sync."""
    p.add_argument(
        "--trace-id",
        default=MappingOptions.trace_template,
        type=_template,
        metavar="TEMPLATE",
        help="trace_id template (default '%(default)s'); fields: "
        + ", ".join("{" + f + "}" for f in TRACE_FIELDS),
    )
    p.add_argument(
        "--missing-ids",
        choices=("reject", "feedback-id"),
        default=MappingOptions.missing_ids,
        help="a record lacks a field the trace id needs: reject it (default) or use the "
        "feedback id instead, noted in metadata.trace_id_fallback",
    )
    p.add_argument(
        "--thumbs-up-value",
        type=_int_range(-10, 10),
        default=MappingOptions.up_value,
        metavar="N",
        help="value for a thumbs up (default %(default)s)",
    )
    p.add_argument(
        "--thumbs-down-value",
        type=_int_range(-10, 10),
        default=MappingOptions.down_value,
        metavar="N",
        help="value for a thumbs down (default %(default)s; some Portkey pages use 0)",
    )
    p.add_argument(
        "--weight",
        type=_weight,
        default=MappingOptions.weight,
        help="weight 0..1 (default %(default)s)",
    )
    p.add_argument(
        "--since",
        type=_instant,
        metavar="WHEN",
        help="only records with updated_at >= WHEN (epoch seconds or ISO date)",
    )
    p.add_argument(
        "--until",
        type=_instant,
        metavar="WHEN",
        help="only records with updated_at < WHEN (epoch seconds or ISO date)",
    )
    p.add_argument(
        "--keep-metadata",
        action="append",
        default=[],
        metavar="GLOB",
        help="keep only metadata keys matching GLOB (repeatable)",
    )
    p.add_argument(
        "--drop-metadata",
        action="append",
        default=[],
        metavar="GLOB",
        help="drop metadata keys matching GLOB (repeatable), e.g. 'base_models.*'",
    )
    p.add_argument(
        "--drop-comments",
        action="store_true",
        help="drop the user's free-text comment (same as --drop-metadata comment)",
    )
    p.add_argument(
        "--metadata",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="add constant metadata, e.g. _environment=production (repeatable)",
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="accept an export with no records (by default that is an error)",
    )


def mapping_options(args: argparse.Namespace) -> MappingOptions:
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise UsageError(f"{args.command}: --since must be earlier than --until")
    drop = list(args.drop_metadata) + (["comment"] if args.drop_comments else [])
    return MappingOptions(
        trace_template=args.trace_id,
        up_value=args.thumbs_up_value,
        down_value=args.thumbs_down_value,
        weight=args.weight,
        missing_ids=args.missing_ids,
        keep_metadata=tuple(args.keep_metadata),
        drop_metadata=tuple(drop),
        extra_metadata=tuple(args.metadata),
        since=args.since,
        until=args.until,
    )


def run_convert(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> ExitCode:
    from owui_replay.converting import convert

    if not args.dry_run and not args.output:
        raise UsageError("convert: -o/--output is required (or use --dry-run)")
    options = mapping_options(args)
    output = None if args.dry_run else args.output
    try:
        result = convert(
            args.export,
            output,
            options,
            samples=args.samples if args.dry_run and not args.json else 0,
            stderr=stderr,
            progress=False if args.quiet else None,
            allow_empty=args.allow_empty,
        )
    except KeyboardInterrupt:
        raise ReplayError("interrupted", ExitCode.INTERRUPTED) from None
    if args.dry_run and not args.json:
        for payload in result.samples:
            stdout.write(json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
    if not args.quiet:
        prefix = "dry run: " if args.dry_run else ""
        stderr.write(f"{PROG}: {prefix}{result.summary()}\n")
    if args.json:
        stdout.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n")
    return ExitCode.OK


REPLAY_EPILOG = """\
example:
  export PORTKEY_API_KEY=...            # never printed, logged or written
  owui-replay replay feedback.jsonl --dry-run
  owui-replay replay feedback.jsonl --concurrency 8 --rate 50

What each endpoint already holds is kept in the delivery state (--state-file, an SQLite file
shared by every run and every file): run the same command again after an interruption, or
replay next week's export, and only what is new (POST) or changed (PUT) is sent. Ratings whose
earlier POST got no answer are 'uncertain' (Portkey may hold them): they are announced, then
resent unless --uncertain skip. Payloads Portkey refuses go to FEEDBACK.failed.jsonl.
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be more than 0")
    return value


def _add_replay(commands: Any) -> None:
    p = commands.add_parser(
        "replay",
        help="post a converted JSONL file to Portkey's feedback API, resumably",
        description="Post every line of FEEDBACK.jsonl that the endpoint does not hold yet to "
        "{PORTKEY_BASE_URL}/feedback, with retries, rate limiting and a delivery state that "
        "makes any interrupted run resumable without a lost or unannounced duplicate rating.",
        epilog=REPLAY_EPILOG,
    )
    p.add_argument("feedback", metavar="FEEDBACK.jsonl", help="output of owui-replay convert")
    _add_delivery_options(p, url_aliases=("--base-url",))
    _add_tls_options(p)
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="send even if FEEDBACK.jsonl does not match its manifest",
    )
    resume = p.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        action="store_true",
        help="continue where the last run stopped (always the default)",
    )
    resume.add_argument(
        "--restart",
        action="store_true",
        help="set this file's audit journal aside (renamed with a timestamp) and begin a new "
        "one; what the endpoint holds still decides what is sent",
    )
    p.add_argument(
        "--start-offset",
        type=_int_range(0, 10**12),
        default=ReplaySettings.start_offset,
        metavar="N",
        help="skip the first N lines (0-based line N is the first sent)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything and print what would be POSTed, PUT and skipped; send nothing",
    )
    _add_samples(p)
    _add_allowed_signers(p, "send only a handoff whose manifest enough principals in FILE signed")
    p.add_argument(
        "--min-approvals",
        type=_int_range(1, 100),
        default=ReplaySettings.min_approvals,
        metavar="N",
        help="distinct principals that must have signed, with --allowed-signers (default "
        "%(default)s)",
    )
    _add_skip_approvals(p)
    p.add_argument(
        "--withdraw-missing",
        action="store_true",
        help="after sending, withdraw (weight 0) the ratings the state received from the same "
        "Open WebUI that this complete admin export lacks (deleted there)",
    )
    _add_max_withdraw(
        p,
        SyncSettings.max_withdraw,
        "with --withdraw-missing: more than N to withdraw withdraws none and says so",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar; the summary only when something went wrong",
    )
    p.set_defaults(handler=run_replay)


def _add_delivery_options(p: argparse.ArgumentParser, *, url_aliases: tuple[str, ...] = ()) -> None:
    """How lines reach Portkey: replay's options, shared with sync."""
    p.add_argument(
        "--api-key-file",
        metavar="FILE",
        help="read the Portkey API key from FILE instead of $PORTKEY_API_KEY",
    )
    p.add_argument(
        "--portkey-url",
        *url_aliases,
        dest="base_url",
        metavar="URL",
        help="Portkey API base, /feedback is appended (default $PORTKEY_BASE_URL "
        f"or {DEFAULT_PORTKEY_BASE})",
    )
    p.add_argument(
        "--concurrency",
        type=_int_range(1, 64),
        default=DeliveryOptions.concurrency,
        metavar="N",
        help="requests in flight at once (default %(default)s)",
    )
    p.add_argument(
        "--rate",
        type=_positive_float,
        metavar="R",
        help="at most R requests per second (default: no limit, slow down on 429)",
    )
    p.add_argument(
        "--batch-size",
        type=_int_range(1, 1000),
        default=DeliveryOptions.batch_size,
        metavar="N",
        help="payloads per request, using Portkey's array form (default %(default)s)",
    )
    p.add_argument(
        "--retries",
        type=_int_range(0, 100),
        default=DeliveryOptions.retries,
        metavar="N",
        help="retries per request on timeouts, 408, 429 and 5xx (default %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=ReplaySettings.timeout,
        metavar="S",
        help="seconds to wait for Portkey's response (default %(default)s)",
    )
    p.add_argument(
        "--max-retry-after",
        type=_positive_float,
        default=DeliveryOptions.max_retry_after,
        metavar="S",
        help="cap on a server's Retry-After (default %(default)s)",
    )
    p.add_argument(
        "--uncertain",
        choices=("resend", "skip"),
        default=ReplaySettings.uncertain,
        help="ratings whose earlier POST got no answer: resend (default; announced, may "
        "duplicate) or skip (may lose; exit 4)",
    )
    p.add_argument(
        "--retry-refused",
        action="store_true",
        help="send again the payloads this endpoint refused before (after fixing something)",
    )
    p.add_argument(
        "--state-file",
        "--ledger",
        dest="state_file",
        metavar="PATH",
        help="the delivery state (default $XDG_STATE_HOME/owui-replay/ledger.sqlite3; for sync "
        "and listen with --workdir, WORKDIR/ledger.sqlite3; --ledger is the older name)",
    )
    p.add_argument(
        "--new-state",
        action="store_true",
        help="send although journals show deliveries to this endpoint that the delivery state "
        "has no record of (otherwise exit 12, nothing sent)",
    )
    p.add_argument(
        "--send-older",
        action="store_true",
        help="PUT changed ratings whose updated_at went back when no export time says which "
        "export is newer (otherwise not sent, exit 4)",
    )
    p.add_argument(
        "--power-safe",
        action="store_true",
        help="fsync the delivery state at every commit, so a power loss cannot cost an "
        "unannounced duplicate either (about two fsyncs per request)",
    )


def openwebui_base(given: str | None, flag: str) -> str:
    """The Open WebUI address from FLAG, else $OPENWEBUI_BASE_URL (download and sync)."""
    base = given or os.environ.get("OPENWEBUI_BASE_URL")
    if not base:
        raise UsageError(f"OPENWEBUI_BASE_URL is not set (export it, or pass {flag})")
    return base


def replay_settings(args: argparse.Namespace, **own: Any) -> ReplaySettings:
    """ReplaySettings from the delivery options replay and sync share; a command passes the
    options only it has by name (OWN)."""
    from pathlib import Path

    return ReplaySettings.from_environment(
        **({"base_url": args.base_url} if args.base_url else {}),
        allow_insecure_http=args.allow_insecure_http,
        delivery=DeliveryOptions(
            concurrency=args.concurrency,
            rate=args.rate,
            batch_size=args.batch_size,
            retries=args.retries,
            max_retry_after=args.max_retry_after,
        ),
        timeout=args.timeout,
        verify_tls=args.ca_bundle or True,
        uncertain=args.uncertain,
        retry_refused=args.retry_refused,
        state_file=Path(args.state_file) if args.state_file else None,
        new_state=args.new_state,
        send_older=args.send_older,
        power_safe=args.power_safe,
        **own,
    )


def run_replay(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> ExitCode:
    from pathlib import Path

    from owui_replay.replaying import complete_source, dry_run, replay
    from owui_replay.secrets import load_secret

    settings = replay_settings(
        args,
        verify_manifest=not args.no_verify,
        restart=args.restart,
        start_offset=args.start_offset,
        allowed_signers=Path(args.allowed_signers) if args.allowed_signers else None,
        min_approvals=args.min_approvals,
    )
    feedback = Path(args.feedback)
    source = complete_source(feedback, settings) if args.withdraw_missing else None
    if source is not None:
        from owui_replay.source_history import refuse_other_source

        refuse_other_source(settings, source)
    if args.dry_run:
        result = dry_run(feedback, settings, 0 if args.json else args.samples, stdout)
        gone = _withdraw_missing(args, feedback, settings, source, result, None, stderr)
        if not args.quiet:
            stderr.write(f"{PROG}: dry run: {result.summary()}{gone[0]}\n")
        if args.json:
            doc = {**result.as_dict(), **gone[1]}
            stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return result.exit_code
    api_key = load_secret("PORTKEY_API_KEY", args.api_key_file, "api_key_file")
    with _sigterm_as_interrupt():
        result = replay(
            feedback, settings, api_key, stderr=stderr, progress=False if args.quiet else None
        )
        gone = _withdraw_missing(args, feedback, settings, source, result, api_key, stderr)
    message = result.stop_message()
    if message is not None:  # an interrupted run says whether requests were left in flight
        said = "" if result.exit_code == ExitCode.INTERRUPTED else "error: "
        stderr.write(f"{PROG}: {said}{api_key.redact(message)}\n")
    if not args.quiet or result.exit_code != ExitCode.OK:
        stderr.write(f"{PROG}: replay: {api_key.redact(result.summary())}{gone[0]}\n")
    if args.json:
        doc = {**result.as_dict(), **gone[1]}
        stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return result.exit_code


def _withdraw_missing(
    args: argparse.Namespace,
    feedback: Any,
    settings: ReplaySettings,
    source: str | None,
    result: Any,
    api_key: Any,
    stderr: IO[str],
) -> tuple[str, dict[str, Any]]:
    """replay --withdraw-missing after the handoff was sent (or planned): the summary's tail
    and the --json key."""
    from owui_replay.source_history import Policy, withdraw_missing

    if source is None:
        return "", {}
    policy = Policy(True, args.max_withdraw, args.dry_run, "run replay again")

    def log(text: str) -> None:
        # -q: only what needs a person (a refusal over the cap, withdrawals left undone)
        if not args.quiet or text.startswith("refused:") or "not withdrawn" in text:
            stderr.write(f"{PROG}: replay: {text}\n")

    done = withdraw_missing(
        feedback, settings, source, policy, result.exit_code == ExitCode.OK, api_key, log
    )
    verb = "would withdraw" if args.dry_run else "withdrawn"
    count = done.gone if args.dry_run and not done.refused else done.withdrawn
    return f"; gone from {source}: {done.gone}, {verb}: {count}", {"withdrawals": done.as_dict()}


SYNC_EPILOG = """\
example:
  export OPENWEBUI_BASE_URL=https://openwebui.example.com OPENWEBUI_TOKEN=...
  export PORTKEY_API_KEY=...            # and PORTKEY_BASE_URL when self-hosted
  owui-replay sync --dry-run            # download, convert, verify; print the plan
  owui-replay sync                      # and deliver
  owui-replay sync --user-scope --since $(date -d '1 hour ago' +%s)

Each run keeps its export, JSONL, rejects, manifest and journal in WORKDIR/runs/<UTC time>/,
plus sync.json (the --json summary). Once the state holds this Open WebUI's history, a run
reads the /ids list and fetches only new and changed records (--full: the whole export), and
withdraws ratings deleted there (weight 0; at most --max-withdraw at once). A killed run is
resumed by running the same command again. With --workdir the delivery state is
WORKDIR/ledger.sqlite3 (one volume keeps both).
Exit 0: delivered; 10: nothing new; 8: another sync holds the work directory; 12: the state
has no record of deliveries the earlier runs' journals show (--new-state sends anyway); 14:
delivered ratings would change only because the mapping options differ from those of the
delivered version (--accept-option-change sends them, once).
"""


def _add_max_withdraw(p: argparse.ArgumentParser, default: int, what: str) -> None:
    """--max-withdraw for sync, replay and listen: the cap on withdrawals at once."""
    p.add_argument(
        "--max-withdraw",
        type=_int_range(0, 10**9),
        default=default,
        metavar="N",
        help=f"{what} (default %(default)s)",
    )


def _add_sync(commands: Any) -> None:
    p = commands.add_parser(
        "sync",
        help="download, convert, verify and replay in one cron-safe command",
        description="The whole chain for a connected machine, with the cookbook's environment "
        "variables (OPENWEBUI_BASE_URL, OPENWEBUI_TOKEN, PORTKEY_API_KEY, PORTKEY_BASE_URL) "
        "and every guarantee of the separate commands.",
        epilog=SYNC_EPILOG,
    )
    p.add_argument(
        "--user-scope",
        action="store_true",
        help="only the token owner's ratings, from the paged user endpoint (no snapshots)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="download, convert and verify, then print what would be POSTed and PUT",
    )
    _add_samples(p)
    _add_openwebui_access(p)
    p.add_argument(
        "--download-timeout",
        type=_positive_float,
        default=SyncSettings.download_timeout,
        metavar="S",
        help="seconds without data from Open WebUI before giving up (default %(default)s)",
    )
    _add_tls_options(p)
    _add_mapping_options(p)
    _add_delivery_options(p)
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="where each run's files are kept (default $XDG_STATE_HOME/owui-replay/sync)",
    )
    p.add_argument(
        "--keep",
        type=_int_range(1, 100_000),
        default=SyncSettings.keep,
        metavar="N",
        help="keep the newest N run folders, remove older ones (default %(default)s)",
    )
    p.add_argument(
        "--wait", action="store_true", help="wait for a running sync instead of exiting with 8"
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="download the whole export even when only the new and changed records could be "
        "fetched (Open WebUI 0.6.42+ lists /ids)",
    )
    _add_max_withdraw(
        p,
        SyncSettings.max_withdraw,
        "a run that finds more than N ratings deleted in Open WebUI withdraws none and says so",
    )
    p.add_argument(
        "--no-withdraw",
        action="store_true",
        help="never withdraw ratings deleted in Open WebUI",
    )
    _add_skip_approvals(p)
    _add_accept_option_change(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument(
        "-q", "--quiet", action="store_true", help="no progress and no summary, even on a terminal"
    )
    loud.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="a summary even when stderr is not a terminal (quiet by default under cron)",
    )
    p.set_defaults(handler=run_sync)


def run_sync(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> ExitCode:
    from owui_replay.option_change import OptionChangeRefused
    from owui_replay.progress import is_terminal
    from owui_replay.secrets import load_secret
    from owui_replay.syncing import sync

    settings = _sync_settings(args)
    token = load_secret("OPENWEBUI_TOKEN", args.token_file, "token_file")
    api_key = None
    if not args.dry_run:
        api_key = load_secret("PORTKEY_API_KEY", args.api_key_file, "api_key_file")
    talk = args.verbose or (not args.quiet and is_terminal(stderr))
    try:
        with _sigterm_as_interrupt():
            result = sync(
                settings, token, api_key, stderr=stderr, stdout=stdout,
                progress=None if talk else False,
            )  # fmt: skip
    except OptionChangeRefused as exc:
        raise exc.with_hint(
            "Pass --accept-option-change once to send them with this run's options, or run "
            "with the delivered version's options"
        ) from None
    redact = api_key.redact if api_key else str
    message = result.replay.stop_message()
    if message is not None:  # an interrupted run says whether requests were left in flight
        said = "" if result.exit_code == ExitCode.INTERRUPTED else "error: "
        stderr.write(f"{PROG}: {said}{redact(message)}\n")
    failed = result.exit_code not in (ExitCode.OK, ExitCode.NOTHING_NEW)
    if talk or (failed and message is None):  # under cron, a failure is one line
        stderr.write(f"{PROG}: {redact(result.summary())}\n")
    if args.json:
        stdout.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n")
    return result.exit_code


def _sync_settings(args: argparse.Namespace) -> SyncSettings:
    from pathlib import Path

    from owui_replay.syncing import default_workdir, state_in
    from owui_replay.urls import checked_base_url

    openwebui = checked_base_url(
        openwebui_base(args.openwebui_url, "--openwebui-url"),
        allow_insecure_http=args.allow_insecure_http,
        name="Open WebUI URL",
    )
    workdir = Path(args.workdir) if args.workdir else default_workdir()
    return SyncSettings(
        openwebui_url=openwebui,
        replay=state_in(workdir, replay_settings(args)),
        mapping=mapping_options(args),
        workdir=workdir,
        user_scope=args.user_scope,
        allow_empty=args.allow_empty,
        download_timeout=args.download_timeout,
        verify_tls=args.ca_bundle or True,
        keep=args.keep,
        wait=args.wait,
        dry_run=args.dry_run,
        samples=args.samples if args.dry_run and not args.json else 0,
        accept_option_change=args.accept_option_change,
        full=args.full,
        max_withdraw=args.max_withdraw,
        withdraw=not args.no_withdraw,
    )


LISTEN_EPILOG = """\
example:
  export OPENWEBUI_BASE_URL=https://openwebui.example.com OPENWEBUI_TOKEN=...  # an admin's
  export PORTKEY_API_KEY=...            # and PORTKEY_BASE_URL when self-hosted
  owui-replay listen --listen 127.0.0.1:8787 --public-url https://hooks.example.com \\
      --register
  curl -s http://127.0.0.1:8787/healthz

Open WebUI posts each feedback event to PUBLIC_URL/events/SECRET; the listener fetches the
record it names with its own token and sends Portkey what it lacks. It reconciles with
Open WebUI's /ids list at start-up and every --reconcile-every. SIGTERM stops it within 5 s
(exit 130); the state stays consistent at any point.
"""


def _duration(text: str) -> float:
    """Seconds from 90, 90s, 10m or 1h."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    raw = text.strip().lower()
    factor = units.get(raw[-1:])
    number = raw[:-1] if factor else raw
    try:
        value = float(number) * (factor or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (90, 90s, 10m, 1h)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8787)")
    return host, int(port)


def _add_listen(commands: Any) -> None:
    p = commands.add_parser(
        "listen",
        help="a live mirror: receive Open WebUI's feedback events, send Portkey the changes",
        description="A long-running service. Each feedback event from Open WebUI is a hint: "
        "the record is fetched with OPENWEBUI_TOKEN (an admin's), converted as convert does "
        "and sent as replay sends (POST new, PUT changed, skip identical). Ratings deleted in "
        "Open WebUI are withdrawn (weight 0, metadata.withdrawn). Same variables as sync.",
        epilog=LISTEN_EPILOG,
    )
    p.add_argument(
        "--listen",
        required=True,
        type=_host_port,
        metavar="HOST:PORT",
        help="address to receive events on (port 0: any free port)",
    )
    p.add_argument(
        "--public-url",
        metavar="URL",
        help="the address Open WebUI reaches the listener at (default http://HOST:PORT); "
        "events go to URL/events/SECRET",
    )
    p.add_argument(
        "--register",
        action="store_true",
        help="create or update the webhook in Open WebUI through its admin API (by name)",
    )
    p.add_argument(
        "--webhook-name",
        default=ListenSettings.webhook_name,
        metavar="NAME",
        help="the webhook's name in Open WebUI, with --register (default %(default)s)",
    )
    p.add_argument(
        "--secret-file",
        metavar="FILE",
        help="the events path secret (default $OWUI_REPLAY_EVENTS_SECRET, else made once "
        "and kept in WORKDIR/events.secret)",
    )
    p.add_argument(
        "--reconcile-every",
        type=_duration,
        default=ListenSettings.reconcile_every,
        metavar="DURATION",
        help="compare with Open WebUI's /ids list this often, e.g. 90s, 10m (default 10m)",
    )
    _add_max_withdraw(
        p,
        ListenSettings.max_withdraw,
        "a deleted_all event or a reconcile that would withdraw more than N ratings withdraws "
        "none and says so",
    )
    p.add_argument(
        "--no-withdraw",
        action="store_true",
        help="never withdraw ratings deleted in Open WebUI",
    )
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="events secret, journal and failed file (default $XDG_STATE_HOME/owui-replay/listen)",
    )
    _add_openwebui_access(p)
    p.add_argument(
        "--openwebui-timeout",
        type=_positive_float,
        default=ListenSettings.openwebui_timeout,
        metavar="S",
        help="seconds to wait for Open WebUI's answer (default %(default)s)",
    )
    _add_tls_options(p)
    _add_mapping_options(p)
    _add_delivery_options(p)
    _add_skip_approvals(p)
    _add_accept_option_change(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no log lines on stderr")
    p.set_defaults(handler=run_listen)


def _add_accept_option_change(p: argparse.ArgumentParser) -> None:
    """The option-change guard's one-run override (sync, listen); never from the config file."""
    p.add_argument(
        "--accept-option-change",
        action="store_true",
        help="rewrite delivered ratings whose only change is the mapping options (otherwise "
        "sync refuses with exit 14 and listen skips them); give it once, for one run",
    )


def run_listen(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> ExitCode:
    import time
    from pathlib import Path

    from owui_replay.listen import default_workdir, start, state_in
    from owui_replay.secrets import load_secret
    from owui_replay.urls import checked_base_url, normalized_url

    host, port = args.listen
    if args.public_url is None and host.strip("[]") in ("0.0.0.0", "::", ""):
        raise UsageError(
            f"--listen {host}:{port} listens on every address, so it is not an address Open "
            "WebUI can post to: pass --public-url with the one it reaches (e.g. "
            f"--public-url http://owui-replay:{port or 8787})"
        )
    workdir = Path(args.workdir) if args.workdir else default_workdir()
    settings = ListenSettings(
        host=host,
        port=port,
        openwebui_url=checked_base_url(
            openwebui_base(args.openwebui_url, "--openwebui-url"),
            allow_insecure_http=args.allow_insecure_http,
            name="Open WebUI URL",
        ),
        replay=state_in(workdir, replay_settings(args)),
        mapping=mapping_options(args),
        workdir=workdir,
        public_url=normalized_url(args.public_url, name="--public-url")
        if args.public_url
        else None,
        reconcile_every=args.reconcile_every,
        max_withdraw=args.max_withdraw,
        withdraw=not args.no_withdraw,
        register=args.register,
        webhook_name=args.webhook_name,
        secret_file=Path(args.secret_file) if args.secret_file else None,
        openwebui_timeout=args.openwebui_timeout,
        verify_tls=args.ca_bundle or True,
        accept_option_change=args.accept_option_change,
    )
    token = load_secret("OPENWEBUI_TOKEN", args.token_file, "token_file")
    api_key = load_secret("PORTKEY_API_KEY", args.api_key_file, "api_key_file")

    def log(text: str) -> None:
        if not args.quiet:
            stamp = time.strftime("%H:%M:%S")
            stderr.write(f"{PROG}: listen: {stamp} {text}\n")
            stderr.flush()

    running = start(settings, token, api_key, log)
    try:
        with _sigterm_as_interrupt():
            while running.listener.fatal is None:
                time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    fatal = running.listener.fatal
    finished = running.shutdown(grace=4.0)  # within 5 s of the signal, all told
    if fatal is not None:
        raise fatal
    if not finished:  # a request still in flight: every step so far is committed, so leave
        log("stopped; in-flight work abandoned (the next start announces what it may cost)")
        stderr.flush()
        os._exit(int(ExitCode.INTERRUPTED))  # not waiting for a fetch thread's 30 s timeout
    log("stopped")
    return ExitCode.INTERRUPTED


STATE_EPILOG = """\
example:
  owui-replay state                      # every endpoint and what it holds
  owui-replay state --backup /backup/ledger.sqlite3
  owui-replay state --forget https://staging.example.com/v1

The delivery state is one SQLite file. --backup copies it consistently at any time, even
during a run; after a clean exit the file alone holds everything, but after a kill recent
deliveries may be in FILE-wal only: copy it with --backup, not cp.
"""


def _add_state(commands: Any) -> None:
    p = commands.add_parser(
        "state",
        help="show the delivery state per endpoint, back it up, or forget one endpoint",
        description="List every Portkey endpoint in the delivery state with how many ratings "
        "it holds, how many are uncertain or refused; --forget URL starts that endpoint over.",
        epilog=STATE_EPILOG,
    )
    p.add_argument(
        "--state-file",
        "--ledger",
        dest="state_file",
        metavar="PATH",
        help="the delivery state (default $XDG_STATE_HOME/owui-replay/ledger.sqlite3; --ledger "
        "is the older name)",
    )
    start_over = p.add_mutually_exclusive_group()
    start_over.add_argument(
        "--forget",
        metavar="URL",
        help="drop everything known about this endpoint: the next replay sends everything",
    )
    start_over.add_argument(
        "--prune",
        action="store_true",
        help="drop the endpoints that hold nothing delivered and nothing uncertain (typos, "
        "tries); says which",
    )
    p.add_argument(
        "--backup",
        metavar="FILE",
        help="write a consistent copy of the state to FILE (safe while a replay runs)",
    )
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(handler=run_state)


def run_state(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> ExitCode:
    from pathlib import Path

    from owui_replay.delivery_state import backup_state, default_state_path, list_endpoints

    path = Path(args.state_file) if args.state_file else default_state_path()
    done: dict[str, Any] = {}  # what --backup, --forget or --prune did, for --json
    if args.backup:
        busy = _endpoints_in_use(path)
        copied = backup_state(path, Path(args.backup))
        stderr.write(f"{PROG}: copied {path} to {args.backup} ({copied['endpoints']} endpoints)\n")
        for endpoint in busy:
            stderr.write(
                f"{PROG}: warning: a run was sending to {endpoint} while this copy was taken: "
                "the copy does not know what that run sends after this moment. To move the "
                "state, copy it again after the run has ended (or was killed).\n"
            )
        done = {"backup": args.backup, "sending_while_copied": busy}
    elif args.forget or args.prune:
        done = {"forgotten": _forget_endpoints(path, args.forget, stderr)}
    if done and not args.json:
        return ExitCode.OK
    endpoints = list_endpoints(path)
    if args.json:
        doc = {"state": str(path), "endpoints": {name: c for name, c in endpoints}, **done}
        stdout.write(json.dumps(doc, indent=2) + "\n")
        return ExitCode.OK
    stdout.write(f"delivery state: {path}{'' if path.exists() else ' (not created yet)'}\n")
    for name, counts in endpoints:
        stdout.write(
            f"{name}: {counts['delivered']} delivered, {counts['uncertain']} uncertain, "
            f"{counts['refused']} refused, {counts['extra_copies']} extra copies possible\n"
        )
    return ExitCode.OK


def _endpoints_in_use(path: Path) -> list[str]:
    """The endpoints a run holds right now (their lock is taken), for state --backup."""
    from owui_replay.delivery_state import DeliveryState, StateBusy, list_endpoints

    busy = []
    for endpoint, _counts in list_endpoints(path) if path.exists() else []:
        with DeliveryState(path, endpoint, create=False) as state:
            try:
                state.lock()
            except StateBusy:
                busy.append(endpoint)
    return busy


def _forget_endpoints(path: Path, url: str | None, stderr: IO[str]) -> dict[str, Any]:
    """--forget URL, or --prune: every endpoint with nothing delivered and nothing uncertain.
    Returns what was known of each endpoint forgotten."""
    from owui_replay.delivery_state import list_endpoints
    from owui_replay.urls import normalized_url

    if not path.exists():
        raise InputError(f"{path}: no delivery state here")
    if url is not None:
        names = [normalized_url(url, name="--forget")]
    else:
        names = [n for n, c in list_endpoints(path) if not c["delivered"] and not c["uncertain"]]
        if not names:
            stderr.write(f"{PROG}: nothing to prune: every endpoint holds deliveries ({path})\n")
    forgotten = {}
    for endpoint in names:
        forgotten[endpoint] = known = _forget(path, endpoint)
        if not (known["delivered"] or known["uncertain"] or known["refused"]):
            said = f"{endpoint}: nothing was delivered, uncertain or refused there; forgotten"
        else:
            said = (
                f"forgot {endpoint}: {known['delivered']} delivered, {known['uncertain']} "
                f"uncertain, {known['refused']} refused"
            )
        stderr.write(f"{PROG}: {said} ({path})\n")
    return forgotten


def _forget(path: Path, endpoint: str) -> dict[str, int]:
    """Forget one endpoint; return what was known of it, by kind."""
    from owui_replay.delivery_state import DeliveryState

    with DeliveryState(path, endpoint) as state:
        state.lock()
        known = state.counts()
        state.forget()
    return dict(known)


DOWNLOAD_EPILOG = """\
example:
  export OPENWEBUI_BASE_URL=https://openwebui.example.com OPENWEBUI_TOKEN=...
  owui-replay download -o feedback-export.json
  owui-replay download -o my-feedback.json --user-scope

Writes OUT and OUT.sha256 (sha256sum format); nothing under OUT until the whole array has
arrived (every string and bracket closed, nothing after the last one). convert checks the JSON
inside the records.
"""


def _add_download(commands: Any) -> None:
    p = commands.add_parser(
        "download",
        help="download the feedback export from Open WebUI",
        description="Stream GET /api/v1/evaluations/feedbacks/all/export (admin) to disk, or "
        "with --user-scope follow every page of /api/v1/evaluations/feedbacks/user.",
        epilog=DOWNLOAD_EPILOG,
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT.json", help="where to write")
    _add_openwebui_access(p, url_aliases=("--base-url",))
    p.add_argument(
        "--user-scope",
        action="store_true",
        help="only the token owner's ratings, from the paged user endpoint (no snapshots)",
    )
    _add_tls_options(p)
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=DOWNLOAD_TIMEOUT,
        metavar="S",
        help="seconds without data before giving up (default %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(handler=run_download)


def run_download(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> ExitCode:
    from owui_replay.download import download_export
    from owui_replay.secrets import openwebui_token

    result = download_export(
        openwebui_base(args.openwebui_url, "--openwebui-url"),
        openwebui_token(args.token_file),
        args.output,
        user_scope=args.user_scope,
        timeout=args.timeout,
        verify_tls=args.ca_bundle or True,
        allow_insecure_http=args.allow_insecure_http,
        stderr=stderr,
        progress=False if args.quiet else None,
    )
    if args.json:
        doc = {
            "command": "download",
            "exit_code": int(ExitCode.OK),
            "path": str(result.path),
            "sidecar": str(result.path) + ".sha256",
            "sha256": result.sha256,
            "bytes": result.bytes,
            "records": result.records,
            "auth": result.auth,
            "user_scope": args.user_scope,
        }
        stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        stdout.write(f"{result.sha256}  {result.path.name}\n")
    if not args.quiet:
        stderr.write(
            f"{PROG}: downloaded {result.records} records, {result.bytes} bytes -> {result.path} "
            f"(sha256 in {result.path.name}.sha256; auth: {result.auth})\n"
        )
    return ExitCode.OK


VERIFY_EPILOG = """\
example:
  owui-replay verify feedback.jsonl
  owui-replay verify feedback.jsonl --export feedback-export.json
"""


def _add_verify(commands: Any) -> None:
    p = commands.add_parser(
        "verify",
        help="check a converted JSONL handoff against its manifest",
        description="Check FEEDBACK.jsonl and FEEDBACK.rejects.jsonl against "
        "FEEDBACK.manifest.json (hashes, line counts, counts by outcome) and every line against "
        "the Portkey payload schema; print a short report. Exit 6 on any mismatch.",
        epilog=VERIFY_EPILOG,
    )
    p.add_argument("feedback", metavar="FEEDBACK.jsonl")
    p.add_argument(
        "--export",
        metavar="EXPORT",
        help="also check the export's sha256, and that converting it again with the "
        "manifest's options gives byte-identical files",
    )
    p.add_argument(
        "--accept-other-version",
        action="store_true",
        help="accept a manifest made by another owui-replay version",
    )
    _add_allowed_signers(p, "check the approvals' signatures against FILE and list who signed")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(handler=run_verify)


def _add_skip_approvals(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--skip-approvals",
        action="store_true",
        help="do not check approvals even though this machine has an allowed_signers file "
        "configured ($XDG_CONFIG_HOME/owui-replay/allowed_signers, the config file or "
        "$OWUI_REPLAY_ALLOWED_SIGNERS); said on stderr",
    )


def _add_allowed_signers(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument(
        "--allowed-signers",
        metavar="FILE",
        default=os.environ.get("OWUI_REPLAY_ALLOWED_SIGNERS") or None,
        help=f"{text} (OpenSSH allowed_signers format; default $OWUI_REPLAY_ALLOWED_SIGNERS)",
    )


def run_verify(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> ExitCode:
    from pathlib import Path

    from owui_replay.verifying import verify

    feedback = Path(args.feedback)
    if not feedback.exists():
        raise InputError(f"{feedback}: no such file")
    report = verify(
        feedback,
        Path(args.export) if args.export else None,
        accept_other_version=args.accept_other_version,
        allowed_signers=Path(args.allowed_signers) if args.allowed_signers else None,
    )
    code = ExitCode.OK if report.ok else ExitCode.MISMATCH
    if args.json:
        doc = {"command": "verify", "exit_code": int(code), "feedback": str(feedback)}
        stdout.write(json.dumps({**doc, **report.as_dict()}, indent=2, ensure_ascii=False) + "\n")
    else:
        stdout.write(report.render())
    return code


APPROVE_EPILOG = """\
example:
  owui-replay approve week1/feedback.jsonl --export week1/export.json --key ~/.ssh/id_ed25519

Runs every verify check first (with --export: the reproduction too) and signs only if all
pass: `ssh-keygen -Y sign` over the manifest's exact bytes, namespace owui-replay-approval.
The signature goes to FEEDBACK.approvals/; several approvers may sign, each is kept.
"""


def _add_approve(commands: Any) -> None:
    p = commands.add_parser(
        "approve",
        help="verify a handoff, then sign its manifest with an SSH key",
        description="The auditor's approval: verify FEEDBACK.jsonl (and --export), then sign "
        "its manifest with OpenSSH so that replay --allowed-signers sends it.",
        epilog=APPROVE_EPILOG,
    )
    p.add_argument("feedback", metavar="FEEDBACK.jsonl")
    p.add_argument("--key", required=True, metavar="KEY", help="SSH private key to sign with")
    p.add_argument(
        "--export",
        metavar="EXPORT",
        help="verify against the export too (hash and byte-identical reproduction)",
    )
    p.add_argument(
        "--accept-other-version",
        action="store_true",
        help="accept a manifest made by another owui-replay version",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(handler=run_approve)


def run_approve(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> ExitCode:
    from pathlib import Path

    from owui_replay.atomic import sha256_file
    from owui_replay.handoff import HandoffPaths
    from owui_replay.verifying import approve

    feedback = Path(args.feedback)
    if not feedback.exists():
        raise InputError(f"{feedback}: no such file")
    approval = approve(
        feedback, args.key, args.export, accept_other_version=args.accept_other_version
    )
    report, signature = approval.report, approval.signature
    code = ExitCode.OK if signature is not None else ExitCode.MISMATCH
    if args.json:
        manifest = HandoffPaths.for_output(feedback).manifest
        doc: dict[str, Any] = {"command": "approve", "feedback": str(feedback)}
        doc.update(report.as_dict())
        doc.update(
            exit_code=int(code),
            signature=str(signature) if signature else None,
            fingerprint=approval.fingerprint,
            manifest_sha256=sha256_file(manifest) if manifest.exists() else None,
        )
        stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        stdout.write(report.render())
        _report_hint(feedback, stdout)
    if signature is None:
        stderr.write(f"{PROG}: error: {feedback.name} does not verify: not signed\n")
        return code
    if not args.json:
        name = HandoffPaths.for_output(feedback).manifest.name
        stdout.write(f"signed {name} with key {approval.fingerprint} -> {signature}\n")
    return code


REPORT_EPILOG = """\
example:
  owui-replay report week2/feedback.jsonl --export week2/export.json
  owui-replay report week2/feedback.jsonl --previous week1/feedback.jsonl -o week2.html

Writes one HTML page that needs nothing else (no script, no font, no image, no request) for
the person who approves: every verify check with its result, the approvals, what leaves
(ratings by value, model, day and rater; every free-text value, likely personal data marked)
and what stays (rejects by reason, metadata the options keep back). Exit 6 when a check
fails (the page is written all the same and says so).
"""


def _add_report(commands: Any) -> None:
    from owui_replay.report import DEFAULT_ROWS

    p = commands.add_parser(
        "report",
        help="write one self-contained HTML page of what a handoff sends, for the approver",
        description="Run every verify check on FEEDBACK.jsonl and write a page of what leaves "
        "the network and what stays, to FEEDBACK.report.html unless -o says otherwise.",
        epilog=REPORT_EPILOG,
    )
    p.add_argument("feedback", metavar="FEEDBACK.jsonl")
    p.add_argument(
        "-o", "--output", metavar="PAGE.html", help="where to write (default FEEDBACK.report.html)"
    )
    p.add_argument(
        "--export",
        metavar="EXPORT",
        help="also run verify --export (hash and byte-identical re-conversion) and count the "
        "metadata keys the options kept back",
    )
    p.add_argument(
        "--previous",
        metavar="OLD.jsonl",
        help="an earlier handoff: show which ratings are new, changed or removed",
    )
    _add_allowed_signers(p, "check the approvals' signatures against FILE")
    p.add_argument(
        "--accept-other-version",
        action="store_true",
        help="accept a manifest made by another owui-replay version",
    )
    p.add_argument(
        "--rows",
        type=_int_range(1, 100_000),
        default=DEFAULT_ROWS,
        metavar="N",
        help="rows of each long table: free text, personal data, raters, rejects (default "
        "%(default)s; every row is counted)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> ExitCode:
    import shlex

    from owui_replay.report import make_report
    from owui_replay.report_scan import workers_available

    result = make_report(
        args.feedback,
        args.output,
        export=args.export,
        previous=args.previous,
        allowed_signers=args.allowed_signers,
        accept_other_version=args.accept_other_version,
        rows=args.rows,
        command=shlex.join(_report_command(args)),
        workers=workers_available(),  # the command line's own process: safe to spawn from
    )
    if not args.quiet:
        stderr.write(f"{PROG}: {result.summary()}\n")
    return ExitCode.OK if result.ok else ExitCode.MISMATCH


def _report_command(args: argparse.Namespace) -> list[str]:
    """The command line as the page shows it: the options that change what it shows."""
    words = [PROG, "report", args.feedback]
    for flag, value in (
        ("--export", args.export),
        ("--previous", args.previous),
        ("--allowed-signers", args.allowed_signers),
        ("-o", args.output),
    ):
        if value:
            words += [flag, value]
    if args.accept_other_version:
        words.append("--accept-other-version")
    return [*words, "--rows", str(args.rows)]


def _report_hint(feedback: Any, stdout: IO[str]) -> None:
    """Point the approver to the report made for this very manifest, if there is one."""
    from owui_replay.report import report_for_manifest

    found = report_for_manifest(feedback)
    if found is None:
        return
    path, current = found
    if current:
        stdout.write(f"report: {path} (made for this manifest)\n")
    else:
        stdout.write(
            f"report: {path} was made for another manifest: run owui-replay report again\n"
        )


COMPLETION_EPILOG = """\
example:
  owui-replay completion bash > ~/.local/share/bash-completion/completions/owui-replay
  owui-replay completion zsh > "${fpath[1]}/_owui-replay"
  owui-replay completion fish > ~/.config/fish/completions/owui-replay.fish
"""


def _add_completion(commands: Any) -> None:
    p = commands.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description="Print a completion script for SHELL, generated from this program's own "
        "options, on stdout.",
        epilog=COMPLETION_EPILOG,
    )
    p.add_argument("shell", choices=("bash", "zsh", "fish"), metavar="SHELL")
    p.set_defaults(handler=run_completion)


def run_completion(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> ExitCode:
    from owui_replay.completion import script

    stdout.write(script(args.shell, build_parser(), PROG))
    return ExitCode.OK


INSPECT_EPILOG = """\
example:
  owui-replay inspect feedback-export.json
  owui-replay inspect feedback-export.json --json > stats.json
"""


def _add_inspect(commands: Any) -> None:
    p = commands.add_parser(
        "inspect",
        help="count what an export holds, without writing anything",
        description="Stream an export and count records by rating, type, model, reason, user "
        "and day, with the date range and the number of invalid records.",
        epilog=INSPECT_EPILOG,
    )
    p.add_argument("export", metavar="EXPORT", help="export file, '.gz' or '-' for stdin")
    p.add_argument("--json", action="store_true", help="print all counts as JSON")
    p.add_argument(
        "--top",
        type=_int_range(1, 10_000),
        default=10,
        metavar="N",
        help="rows per table (default 10)",
    )
    p.set_defaults(handler=run_inspect)


def run_inspect(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> ExitCode:
    from owui_replay.inspecting import inspect_export

    stats = inspect_export(args.export)
    if args.json:
        stdout.write(json.dumps(stats.as_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        stdout.write(stats.render(args.top))
    return ExitCode.OK


def main(
    argv: Sequence[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run the CLI; returns the exit code. Streams are injectable so tests run in-process."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    words = list(sys.argv[1:] if argv is None else argv)
    show_traceback = _pop_traceback(words)
    try:
        return _execute(words, stdout, stderr)
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    except KeyboardInterrupt:
        stderr.write(f"{PROG}: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return int(ExitCode.ERROR)
    except Exception as exc:
        if show_traceback:
            traceback.print_exc(file=stderr)
        return int(_one_line(exc, stderr))


def _pop_traceback(words: list[str]) -> bool:
    """--traceback is global, accepted after the command too; or $OWUI_REPLAY_TRACEBACK."""
    before_dashes = words[: words.index("--")] if "--" in words else words
    given = "--traceback" in before_dashes
    if given:
        words.remove("--traceback")
    return given or os.environ.get("OWUI_REPLAY_TRACEBACK", "") not in ("", "0")


def _execute(words: list[str], stdout: IO[str], stderr: IO[str]) -> int:
    config_file = _pop_config(words)
    parser = build_parser()
    if not words:
        stderr.write(parser.format_help())
        return int(ExitCode.USAGE)
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        args = parser.parse_args(words)  # --help and --version print here
    with naming(flag_namer(subcommand_parsers(parser)[args.command], args.command)):
        _refuse_a_mix_up(args)
        _configure(parser, args, words, config_file, stderr)
        if getattr(args, "ca_bundle", None):  # a usage error before anything else happens
            from owui_replay.http_session import checked_ca_bundle

            checked_ca_bundle(args.ca_bundle)
        return int(args.handler(args, stdout, stderr))


# A setting whose option has another dest than its key (option_names.py), per command.
_DESTS: dict[str, dict[str, str | None]] = {
    "": {"portkey_url": "base_url", "portkey_timeout": "timeout"},
    "download": {"openwebui_timeout": "timeout", "portkey_timeout": None},
    "sync": {"openwebui_timeout": "download_timeout"},
}


def flag_namer(sub: argparse.ArgumentParser, command: str) -> Callable[[str], str | None]:
    """The library names a setting by its key; under COMMAND it is the flag COMMAND
    registered for it (its first long spelling), or None if it has none."""
    flags = {
        action.dest: next(o for o in action.option_strings if o.startswith("--"))
        for action in sub._actions
        if any(o.startswith("--") for o in action.option_strings)
    }

    def name(key: str) -> str | None:
        own = _DESTS.get(command, {})
        dest = own[key] if key in own else _DESTS[""].get(key, key)
        return flags.get(dest) if dest else None

    return name


# The file each command reads, and the kind it must be (file_kinds.py).
_READS_FILE = {
    "convert": ("export", "export"),
    "inspect": ("export", "export"),
    "replay": ("feedback", "jsonl"),
    "verify": ("feedback", "jsonl"),
    "approve": ("feedback", "jsonl"),
    "report": ("feedback", "jsonl"),
}


def _refuse_a_mix_up(args: argparse.Namespace) -> None:
    """An export given where a JSONL belongs, or the other way round: one line that says
    which file it is and which command takes it, before anything else is read."""
    attribute, wanted = _READS_FILE.get(args.command, ("", ""))
    name = getattr(args, attribute, None) if attribute else None
    if not name or name == "-":
        return
    from pathlib import Path

    from owui_replay.file_kinds import mix_up

    problem = mix_up(Path(name), wanted)
    if problem is not None:
        raise InputError(f"{args.command}: {problem}")


def _one_line(exc: Exception, stderr: IO[str]) -> ExitCode:
    """A failure as one line on stderr: the error's own message, a file error with the file's
    name, anything else named as unexpected. Nothing goes to stdout, --json or not: like gh
    and pip, a command that stopped before it had a result prints no document at all (one
    that has a result, say a replay that stopped early, printed it already)."""
    if isinstance(exc, ReplayError):
        stderr.write(f"{exc.prog or PROG}: error: {exc}\n")
        return exc.code
    if isinstance(exc, OSError):  # a file we could not write or read: name it, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        stderr.write(f"{PROG}: error: {where}{exc.strerror or exc}\n")
        return ExitCode.ERROR
    stderr.write(
        f"{PROG}: error: unexpected {type(exc).__name__}: {exc} (rerun with --traceback)\n"
    )
    return ExitCode.ERROR


def _pop_config(argv: list[str]) -> str | None:
    """--config FILE (or --config=FILE) is global: accepted before or after the command."""
    words = argv[: argv.index("--")] if "--" in argv else argv
    for position, word in enumerate(words):
        if word == "--config":
            if position + 1 >= len(words):
                raise UsageError("--config needs a FILE")
            value = argv[position + 1]
            del argv[position : position + 2]
            return value
        if word.startswith("--config="):
            del argv[position]
            return word.split("=", 1)[1]
    return None


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _configure(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    argv: list[str],
    config_file: str | None,
    stderr: IO[str],
) -> None:
    """The configuration file fills what the command line and the environment left open;
    then a machine set up for approvals enforces them unless told not to, out loud."""
    import owui_replay.config as config

    parsers = subcommand_parsers(parser)
    args.config = config.load(config_file)
    args.config_sources = config.apply(
        args.config, args.command, parsers[args.command], parsers, args, argv
    )
    if not hasattr(args, "skip_approvals"):
        return
    configured = getattr(args, "allowed_signers", None) or (
        str(config.default_allowed_signers())
        if config.default_allowed_signers().is_file()
        else None
    )
    if args.skip_approvals:
        if configured:
            stderr.write(
                f"{PROG}: warning: --skip-approvals: approvals are not checked, although "
                f"{configured} is configured on this machine\n"
            )
        args.allowed_signers = None
        return
    args.allowed_signers = configured
    if configured and args.command in ("sync", "listen"):
        raise ReplayError(
            f"{args.command}: this machine requires approvals ({configured}), and "
            f"{args.command} sends what it fetches itself, which nobody signed: replay approved "
            f"handoffs instead, or pass --skip-approvals to run {args.command} unattended anyway",
            ExitCode.NOT_APPROVED,
        )


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a run lasts, SIGTERM stops it like Ctrl-C does, so state is saved the same way."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield  # signals can only be handled on the main thread
        return
    if callable(signal.getsignal(signal.SIGTERM)):
        yield  # owui_replay.entry's handler (the console script) already does this
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


CONFIG_EPILOG = """\
example:
  owui-replay config                    # every command's settings and where each comes from
  owui-replay config sync --json
  owui-replay --config /etc/owui-replay/config.toml config replay

The file (TOML) has a table per part of the chain, keys named like the long options:
  [openwebui]  openwebui_url, token_file, timeout, ...   (download, sync, listen)
  [convert]    drop_comments = true, trace_id, ...        (convert, sync, listen)
  [replay]     portkey_url, allowed_signers, state_file, ... (replay, sync, listen, verify...)
Precedence: the command line, then the environment, then the file, then the defaults.
"""


def _add_config(commands: Any) -> None:
    p = commands.add_parser(
        "config",
        help="print the effective settings of each command and where each comes from",
        description="Read the configuration file (--config, $OWUI_REPLAY_CONFIG or "
        "$XDG_CONFIG_HOME/owui-replay/config.toml), check every key, and print what each "
        "command would run with and where each value comes from. Secrets are never shown.",
        epilog=CONFIG_EPILOG,
    )
    p.add_argument(
        "commands",
        metavar="COMMAND",
        nargs="*",
        help="only these commands (default: every command the file configures)",
    )
    p.add_argument("--json", action="store_true", help="print the settings as JSON on stdout")
    p.set_defaults(handler=run_config)


def run_config(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> ExitCode:
    import owui_replay.config as config

    parsers = subcommand_parsers(build_parser())
    wanted = args.commands or [c for c in config.READS if c in parsers]
    unknown = [c for c in wanted if c not in config.READS or c not in parsers]
    if unknown:
        raise UsageError(f"config: {', '.join(unknown)}: not a command that reads the file")
    # every key of the file was checked when it was loaded for this very command
    shown = {c: config.effective(args.config, c, parsers[c], parsers) for c in wanted}
    stdout.write(
        _config_json(args.config, shown) if args.json else _config_text(args.config, shown)
    )
    return ExitCode.OK


def _config_json(loaded: ConfigFile, shown: dict[str, list[Setting]]) -> str:
    doc = {
        "command": "config",
        "exit_code": 0,
        "file": str(loaded.path) if loaded.path else None,
        "settings": {
            command: {s.option: {"value": s.value, "source": s.source} for s in settings}
            for command, settings in shown.items()
        },
    }
    return json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n"


def _config_text(loaded: ConfigFile, shown: dict[str, list[Setting]]) -> str:
    lines = [f"# {loaded.describe()}"]
    for command, settings in shown.items():
        lines.append(f"[{command}]")
        lines += [
            f"  {s.option} = {json.dumps(s.value, default=str)}  # {s.source}" for s in settings
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
