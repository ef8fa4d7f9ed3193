"""``common.settings.Settings``: FLEET_* variables, strict names, derived limits.

The autouse ``clean_fleet_env`` fixture (conftest.py) removes every FLEET_* variable first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from common.errors import ConfigError
from common.settings import Settings


def test_defaults_without_any_variable() -> None:
    settings = Settings()
    assert settings.broker_url is None
    assert settings.database_url is None
    assert settings.state_dir == Path(".fleet")
    assert (settings.slice_size, settings.batch_size) == (64, 16)
    assert (settings.max_batch_tokens, settings.max_new_tokens) == (32768, 64)
    assert settings.slice_time_limit == 3600


def test_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEET_BROKER_URL", "redis://localhost:6390/0")
    monkeypatch.setenv("FLEET_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("FLEET_SLICE_SIZE", "7")
    monkeypatch.setenv("FLEET_TORCH_THREADS", "2")
    settings = Settings()
    assert settings.broker_url == "redis://localhost:6390/0"
    assert settings.state_dir == tmp_path
    assert settings.slice_size == 7
    assert settings.torch_threads == 2


def test_unknown_fleet_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_BATCHSIZE", "8")  # misspelled FLEET_BATCH_SIZE
    with pytest.raises(ConfigError, match="FLEET_BATCHSIZE") as caught:
        Settings()
    assert "FLEET_BATCH_SIZE" in str(caught.value)  # the known names are listed


def test_every_unknown_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_ZETA", "1")
    monkeypatch.setenv("FLEET_ALPHA", "1")
    with pytest.raises(ConfigError, match="FLEET_ALPHA, FLEET_ZETA"):
        Settings()


def test_test_suite_variables_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TEST_REDIS_URL", "redis://elsewhere")
    monkeypatch.setenv("FLEET_TEST_ANYTHING", "x")
    assert Settings().broker_url is None


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETING_THOUGHT", "1")
    monkeypatch.setenv("BATCH_SIZE", "3")
    assert Settings().batch_size == 16


@pytest.mark.parametrize(
    ("given_url", "expected"),
    [
        ("postgres://u:p@db:5432/fleet", "postgresql+psycopg://u:p@db:5432/fleet"),
        ("postgresql://u:p@db/fleet", "postgresql+psycopg://u:p@db/fleet"),
        ("postgresql+psycopg://u@db/fleet", "postgresql+psycopg://u@db/fleet"),
        ("sqlite:////var/fleet.db", "sqlite:////var/fleet.db"),
    ],
)
def test_database_url_uses_psycopg3(
    monkeypatch: pytest.MonkeyPatch, given_url: str, expected: str
) -> None:
    monkeypatch.setenv("FLEET_DATABASE_URL", given_url)
    settings = Settings()
    assert settings.database_url == expected
    assert settings.sqlalchemy_url == expected


def test_database_url_rewritten_when_passed_directly() -> None:
    assert Settings(database_url="postgres://h/db").database_url == "postgresql+psycopg://h/db"


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://secure:6380/1", "unix:///tmp/redis.sock"]
)
def test_good_broker_schemes(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("FLEET_BROKER_URL", url)
    assert Settings().broker_url == url


@pytest.mark.parametrize(
    "url", ["http://localhost:6379", "amqp://guest@localhost//", "localhost:6379", ""]
)
def test_bad_broker_scheme_is_rejected(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("FLEET_BROKER_URL", url)
    with pytest.raises(ValidationError, match="FLEET_BROKER_URL must start with"):
        Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLEET_SLICE_SIZE", "0"),
        ("FLEET_BATCH_SIZE", "-1"),
        ("FLEET_MAX_BATCH_TOKENS", "0"),
        ("FLEET_MAX_NEW_TOKENS", "0"),
        ("FLEET_SLICE_TIME_LIMIT", "29"),
        ("FLEET_SLICE_SIZE", "many"),
        ("FLEET_PREFILL_TOKENS", "-1"),
        ("FLEET_PREFILL_TOKENS", "many"),
    ],
)
def test_bad_numbers_are_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_sqlalchemy_url_defaults_to_sqlite_under_state_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLEET_STATE_DIR", str(tmp_path / "state"))
    assert Settings().sqlalchemy_url == f"sqlite:///{tmp_path / 'state' / 'fleet.db'}"


def test_default_state_dir_is_resolved_against_cwd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    url = Settings().sqlalchemy_url
    assert url == f"sqlite:///{tmp_path.resolve() / '.fleet' / 'fleet.db'}"
    assert url.startswith("sqlite:////")  # an absolute path, not relative to a later cwd


@pytest.mark.parametrize(
    ("limit", "soft", "visibility"), [(30, 27, 330), (300, 270, 600), (3600, 3540, 3900)]
)
def test_derived_time_limits(limit: int, soft: int, visibility: int) -> None:
    settings = Settings(slice_time_limit=limit)
    assert (settings.slice_soft_time_limit, settings.visibility_timeout) == (soft, visibility)


@given(limit=st.integers(min_value=30, max_value=10_000_000))
def test_soft_limit_below_hard_limit_below_visibility_timeout(limit: int) -> None:
    settings = Settings(slice_time_limit=limit)
    assert 0 < settings.slice_soft_time_limit < settings.slice_time_limit
    assert settings.slice_time_limit < settings.visibility_timeout
