"""Shared fixtures of the unit suite: a clean FLEET_* environment for every test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def clean_fleet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FLEET_* variable of the calling shell leaks into a unit test."""
    for name in list(os.environ):
        if name.startswith("FLEET_"):
            monkeypatch.delenv(name)
