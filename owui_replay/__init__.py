"""owui-replay: move Open WebUI thumbs feedback into Portkey's feedback API, auditably.

The command line is a thin caller of this API; everything it does can be done from Python:

    import owui_replay as owr

    converted = owr.convert("export.json", "out/feedback.jsonl")
    report = owr.verify("out/feedback.jsonl", export="export.json")
    assert report.ok, report.render()
    result = owr.replay("out/feedback.jsonl", owr.ReplaySettings(), api_key=owr.portkey_key())
    assert result.exit_code == owr.ExitCode.OK, result.summary()
"""

from typing import TYPE_CHECKING, Any

from owui_replay._version import __version__

# Names resolve on first use (PEP 562): `import owui_replay` for one job, and every command
# line run, does not pay for importing requests, jsonschema and tqdm for all of them. The job
# modules are named for the work (converting, replaying, ...), so no submodule has the name of
# a function here: `owui_replay.convert` is the function, `owui_replay.converting` its module.
_HOMES = {
    "convert": "converting",
    "ConvertResult": "converting",
    "DeliveryOptions": "settings",
    "StopReason": "delivery",
    "DeliveryState": "delivery_state",
    "LineState": "delivery_state",
    "default_state_path": "delivery_state",
    "Downloaded": "download",
    "download_export": "download",
    "ExitCode": "errors",
    "InputError": "errors",
    "ReplayError": "errors",
    "UsageError": "errors",
    "ExportStats": "inspecting",
    "inspect_export": "inspecting",
    "MappingOptions": "mapping",
    "ReplayResult": "replaying",
    "ReplaySettings": "settings",
    "dry_run": "replaying",
    "replay": "replaying",
    "Secret": "secrets",
    "openwebui_token": "secrets",
    "portkey_key": "secrets",
    "SyncResult": "syncing",
    "SyncSettings": "settings",
    "sync": "syncing",
    "Approval": "verifying",
    "Report": "verifying",
    "approve": "verifying",
    "verify": "verifying",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'owui_replay' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"owui_replay.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


if TYPE_CHECKING:
    from owui_replay.converting import ConvertResult, convert
    from owui_replay.delivery import StopReason
    from owui_replay.delivery_state import (
        DeliveryState,
        LineState,
        default_state_path,
    )
    from owui_replay.download import Downloaded, download_export
    from owui_replay.errors import ExitCode, InputError, ReplayError, UsageError
    from owui_replay.inspecting import ExportStats, inspect_export
    from owui_replay.mapping import MappingOptions
    from owui_replay.replaying import ReplayResult, dry_run, replay
    from owui_replay.secrets import Secret, openwebui_token, portkey_key
    from owui_replay.settings import DeliveryOptions, ReplaySettings, SyncSettings
    from owui_replay.syncing import SyncResult, sync
    from owui_replay.verifying import Approval, Report, approve, verify

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
