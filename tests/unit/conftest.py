"""Shared fixtures of the unit suite: a clean FLEET_* environment for every test, and an
SQLite database in the test's folder for those that ask for ``db``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from common.db import make_engine


@pytest.fixture(autouse=True)
def clean_fleet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FLEET_* variable of the calling shell leaks into a unit test."""
    for name in list(os.environ):
        if name.startswith("FLEET_"):
            monkeypatch.delenv(name)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    yield engine
    engine.dispose()
