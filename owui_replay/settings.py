"""The option types of the jobs that talk to servers, with their defaults, declared once.

The command line takes its defaults (`default=`) and its help (`%(default)s`) from these
classes, and the library uses the same values: nothing is written twice. The module imports
nothing heavy, so building the command line stays cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owui_replay.mapping import MappingOptions
from owui_replay.urls import DEFAULT_PORTKEY_BASE, checked_base_url

DOWNLOAD_TIMEOUT = 300.0  # seconds without data from Open WebUI before a download gives up
DRY_RUN_SAMPLES = 3  # payloads a dry run prints (convert, replay and sync --samples)


@dataclass(frozen=True)
class DeliveryOptions:
    """How lines travel to Portkey: parallelism, pacing, retries. The CLI's defaults."""

    concurrency: int = 16
    rate: float | None = None
    batch_size: int = 1
    retries: int = 8
    max_retry_after: float = 60.0
    backoff_base: float = 0.25
    backoff_cap: float = 20.0
    stop_grace: float = 2.0  # seconds in-flight requests get after Ctrl-C or SIGTERM


@dataclass(frozen=True)
class ReplaySettings:
    """How to replay. base_url is normalised on construction: it is the endpoint's identity,
    and plain http to another host is refused unless allow_insecure_http."""

    base_url: str = DEFAULT_PORTKEY_BASE
    delivery: DeliveryOptions = field(default_factory=DeliveryOptions)
    timeout: float = 30.0
    verify_tls: bool | str = True
    verify_manifest: bool = True
    restart: bool = False  # set the audit journal aside; the delivery state still applies
    start_offset: int = 0
    uncertain: str = "resend"  # or "skip"
    retry_refused: bool = False
    state_file: Path | None = None  # None: default_state_path()
    power_safe: bool = False  # fsync the delivery state on every commit
    allowed_signers: Path | None = None  # only a handoff approved by these principals is sent
    min_approvals: int = 1
    new_state: bool = False  # send although journals show deliveries this state does not know
    send_older: bool = False  # PUT changes whose updated_at went back, with no export time
    evidence_journals: tuple[Path, ...] = ()  # more journals to read (sync's earlier runs)
    # refuse to rewrite delivered ratings only because the mapping options changed (sync)
    guard_option_change: bool = False

    allow_insecure_http: bool = False

    def __post_init__(self) -> None:
        normal = checked_base_url(
            self.base_url, allow_insecure_http=self.allow_insecure_http, name="Portkey base URL"
        )
        object.__setattr__(self, "base_url", normal)

    def state_file_or_default(self) -> Path:
        """The delivery state this replay uses: state_file, else the default location."""
        from owui_replay.delivery_state import default_state_path

        return self.state_file or default_state_path()

    @classmethod
    def from_environment(cls, **given: Any) -> ReplaySettings:
        """Settings as the command line makes them when no option is given: the endpoint
        from $PORTKEY_BASE_URL (else Portkey's public API), the rest from the defaults."""
        given.setdefault("base_url", os.environ.get("PORTKEY_BASE_URL") or DEFAULT_PORTKEY_BASE)
        return cls(**given)


@dataclass(frozen=True)
class SyncSettings:
    """What one sync run does: where to download from, how to convert, how to replay."""

    openwebui_url: str
    replay: ReplaySettings
    mapping: MappingOptions
    workdir: Path
    user_scope: bool = False
    allow_empty: bool = False
    download_timeout: float = DOWNLOAD_TIMEOUT
    verify_tls: bool | str = True
    keep: int = 30
    wait: bool = False
    dry_run: bool = False
    samples: int = DRY_RUN_SAMPLES
    accept_option_change: bool = False  # rewrite ratings whose only change is the options
    full: bool = False  # read the whole export even when an incremental read is possible
    max_withdraw: int = 10  # more ratings gone than this: none withdrawn, said in one line
    withdraw: bool = True

    @classmethod
    def from_environment(cls, workdir: Path, **given: Any) -> SyncSettings:
        """As the command line makes them with no option: Open WebUI at $OPENWEBUI_BASE_URL,
        Portkey at $PORTKEY_BASE_URL (else Portkey's public API), convert's defaults."""
        from owui_replay.errors import UsageError

        if "openwebui_url" not in given:
            url = os.environ.get("OPENWEBUI_BASE_URL")
            if not url:
                raise UsageError("OPENWEBUI_BASE_URL is not set (or pass openwebui_url)")
            given["openwebui_url"] = checked_base_url(
                url, allow_insecure_http=False, name="Open WebUI URL"
            )
        given.setdefault("replay", ReplaySettings.from_environment())
        given.setdefault("mapping", MappingOptions())
        return cls(workdir=workdir, **given)


@dataclass(frozen=True)
class ListenSettings:
    """What the live mirror listens on, where it fetches from, and how it withdraws."""

    host: str
    port: int
    openwebui_url: str
    replay: ReplaySettings
    mapping: MappingOptions
    workdir: Path
    public_url: str | None = None  # None: http://HOST:PORT
    reconcile_every: float = 600.0
    max_withdraw: int = 10
    withdraw: bool = True
    register: bool = False
    webhook_name: str = "owui-replay"
    secret_file: Path | None = None
    openwebui_timeout: float = 30.0
    verify_tls: bool | str = True
    accept_option_change: bool = False  # else ratings changed only by options are skipped

    @property
    def public(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"
