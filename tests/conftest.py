"""Fixtures every test gets: a private state and configuration folder; the real export."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import REAL_EXPORT, load_fixture


@pytest.fixture
def real_records() -> list[dict[str, Any]]:
    return load_fixture(REAL_EXPORT)


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """The default ledger lives under $XDG_STATE_HOME and the configuration under
    $XDG_CONFIG_HOME: never the real ones in tests."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    monkeypatch.delenv("OWUI_REPLAY_CONFIG", raising=False)
    monkeypatch.delenv("OWUI_REPLAY_ALLOWED_SIGNERS", raising=False)
    return state
