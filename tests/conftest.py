"""Suite-wide guard: tests decide every FLEET_* setting themselves."""

from __future__ import annotations

import os

import pytest

from common.settings import process_settings


@pytest.fixture(autouse=True)
def _clean_fleet_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own FLEET_* variables must not leak into the tests."""
    for name in list(os.environ):
        if name.startswith("FLEET_") and not name.startswith("FLEET_TEST_"):
            monkeypatch.delenv(name)
    # A process reads its settings once; each test sets its own environment.
    process_settings.cache_clear()
