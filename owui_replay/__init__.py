"""owui-replay: move Open WebUI thumbs feedback into Portkey's feedback API, auditably.

The command line is a thin caller of this API; everything it does can be done from Python:

    import owui_replay as owr

    converted = owr.convert("export.json", "out/feedback.jsonl")
    report = owr.verify("out/feedback.jsonl", export="export.json")
    assert report.ok, report.render()
    result = owr.replay("out/feedback.jsonl", owr.ReplaySettings(), api_key=owr.portkey_key())
    assert result.exit_code == owr.ExitCode.OK, result.summary()
"""

__version__ = "0.1.0"

# After __version__: the modules below import it.
from owui_replay.convert import ConvertResult, convert
from owui_replay.delivery import DeliveryOptions, StopReason
from owui_replay.delivery_state import (
    DeliveryState,
    LineState,
    default_state_path,
)
from owui_replay.download import Downloaded, download_export
from owui_replay.errors import ExitCode, InputError, ReplayError, UsageError
from owui_replay.inspect_export import ExportStats, inspect_export
from owui_replay.mapping import MappingOptions
from owui_replay.replay import ReplayResult, ReplaySettings, dry_run, replay
from owui_replay.secrets import Secret, openwebui_token, portkey_key
from owui_replay.sync import SyncResult, SyncSettings, sync
from owui_replay.verify import Approval, Report, approve, verify

__all__ = [  # noqa: RUF022 - grouped by purpose, not sorted
    "__version__",
    # the jobs
    "convert",
    "verify",
    "approve",
    "replay",
    "dry_run",
    "download_export",
    "inspect_export",
    "sync",
    # their options and results
    "MappingOptions",
    "ConvertResult",
    "Report",
    "Approval",
    "ReplaySettings",
    "DeliveryOptions",
    "ReplayResult",
    "StopReason",
    "LineState",
    "Downloaded",
    "ExportStats",
    "SyncSettings",
    "SyncResult",
    # the delivery state
    "DeliveryState",
    "default_state_path",
    # secrets
    "Secret",
    "portkey_key",
    "openwebui_token",
    # errors and exit codes
    "ExitCode",
    "ReplayError",
    "UsageError",
    "InputError",
]
