"""``worker.app``: JSON-only, late acks, one message at a time, configured lazily."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.celery_app import celery_config, create_app
from common.constants import DEFAULT_QUEUE
from common.errors import ConfigError
from common.settings import Settings

BROKER = "redis://127.0.0.1:1/0"  # never connected to: nothing here talks to a broker


def test_json_only() -> None:
    config = celery_config(Settings(broker_url=BROKER))
    assert config["task_serializer"] == "json"
    assert config["result_serializer"] == "json"
    assert config["event_serializer"] == "json"
    assert config["accept_content"] == ["json"]


def test_late_acks_and_one_message_at_a_time() -> None:
    config = celery_config(Settings(broker_url=BROKER))
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["task_ignore_result"] is True
    assert config["result_backend"] is None
    assert config["task_default_queue"] == DEFAULT_QUEUE
    assert config["broker_url"] == BROKER


@given(limit=st.integers(min_value=30, max_value=1_000_000))
def test_soft_limit_below_hard_limit_below_visibility_timeout(limit: int) -> None:
    config = celery_config(Settings(broker_url=BROKER, slice_time_limit=limit))
    soft, hard = config["task_soft_time_limit"], config["task_time_limit"]
    visibility = config["broker_transport_options"]["visibility_timeout"]
    assert hard == limit
    assert 0 < soft < hard < visibility


def test_missing_broker_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="FLEET_BROKER_URL is not set"):
        celery_config(Settings())


def test_create_app_with_settings_applies_them() -> None:
    app = create_app(Settings(broker_url=BROKER, slice_time_limit=600))
    assert app.conf.broker_url == BROKER
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert (app.conf.task_soft_time_limit, app.conf.task_time_limit) == (540, 600)
    assert app.conf.broker_transport_options == {"visibility_timeout": 900}


def test_create_app_reads_the_environment_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app()  # FLEET_* is clean: reading settings now would fail on the broker
    monkeypatch.setenv("FLEET_BROKER_URL", BROKER)
    monkeypatch.setenv("FLEET_SLICE_TIME_LIMIT", "120")
    assert app.conf.broker_url == BROKER
    assert app.conf.task_time_limit == 120


def test_create_app_is_lazy_about_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_NOT_A_SETTING", "1")
    app = create_app()  # does not read the environment yet
    with pytest.raises(ConfigError, match="FLEET_NOT_A_SETTING"):
        _ = app.conf.broker_url


def test_create_app_without_broker_fails_on_first_use() -> None:
    app = create_app()
    with pytest.raises(ConfigError, match="FLEET_BROKER_URL is not set"):
        _ = app.conf.task_acks_late


def test_importing_worker_app_reads_no_settings() -> None:
    """A fresh interpreter imports worker.app under a bogus FLEET_ variable; config use fails."""
    script = textwrap.dedent(
        """
        from worker.app import app
        from common.errors import ConfigError
        print("imported", app.main)
        try:
            app.conf.broker_url
        except ConfigError as error:
            print("config error:", error)
        """
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("FLEET_")}
    env["FLEET_BOGUS_SETTING"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "imported fleet"
    assert lines[1].startswith("config error: unknown setting(s) FLEET_BOGUS_SETTING")
