"""Settings and options of recovery: max attempts, reconciler interval, leases, TLS brokers."""

from __future__ import annotations

import ssl
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from common.celery_app import celery_config, create_app
from common.settings import Settings
from producer.cli.options import JobOptions, run_config
from worker.engines.echo import CRASH_EXIT_CODE, EchoEngine


def test_recovery_defaults() -> None:
    settings = Settings()
    assert (settings.max_attempts, settings.reconcile_interval, settings.heartbeat_interval) == (
        3,
        15,
        5,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLEET_MAX_ATTEMPTS", "0"),
        ("FLEET_RECONCILE_INTERVAL", "-1"),
        ("FLEET_HEARTBEAT_INTERVAL", "-2"),
    ],
)
def test_bad_recovery_numbers_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_reconcile_interval_zero_turns_the_reconciler_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_RECONCILE_INTERVAL", "0")
    assert Settings().reconcile_interval == 0


@given(limit=st.integers(min_value=30, max_value=10_000_000))
def test_lease_is_past_the_hard_limit_and_before_the_visibility_timeout(limit: int) -> None:
    settings = Settings(slice_time_limit=limit)
    assert settings.slice_soft_time_limit < settings.slice_time_limit < settings.slice_lease
    assert settings.slice_lease < settings.visibility_timeout


def test_max_attempts_option_and_its_default_reach_the_run_config() -> None:
    settings = Settings(max_attempts=5)
    assert run_config(settings, JobOptions(model=["m"], engine="echo")).max_attempts == 5
    options = JobOptions(model=["m"], engine="echo", max_attempts=2)
    assert run_config(settings, options).max_attempts == 2


def test_broker_url_with_password_is_used_as_given() -> None:
    url = "redis://:s3cret@redis.example:6379/3"
    connection = create_app(Settings(broker_url=url)).connection_for_write()
    assert (connection.hostname, connection.password, connection.virtual_host) == (
        "redis.example",
        "s3cret",
        "3",
    )
    assert "s3cret" not in connection.as_uri()  # never printed


def test_rediss_broker_verifies_certificates_by_default() -> None:
    url = "rediss://:s3cret@redis.example:6380/0"
    assert celery_config(Settings(broker_url=url))["broker_use_ssl"] == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED
    }
    connection = create_app(Settings(broker_url=url)).connection_for_write()
    assert connection.transport_cls == "rediss"
    assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def test_rediss_url_may_choose_its_own_certificate_policy() -> None:
    url = "rediss://redis.example:6380/0?ssl_cert_reqs=optional"
    assert "broker_use_ssl" not in celery_config(Settings(broker_url=url))
    connection = create_app(Settings(broker_url=url)).connection_for_write()
    assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_OPTIONAL}


def test_plain_redis_has_no_tls() -> None:
    assert "broker_use_ssl" not in celery_config(Settings(broker_url="redis://h:6379/0"))


def test_worker_app_includes_the_reconciler_module() -> None:
    app = create_app(Settings(broker_url="redis://127.0.0.1:1/0"))
    assert "worker.upkeep" in app.conf.include


def test_echo_crash_marker_is_parsed() -> None:
    engine = EchoEngine.from_spec("delay=0.01,crash_marker=CRASH")
    assert (engine.delay_s, engine.crash_marker) == (0.01, "CRASH")


def test_echo_crash_marker_kills_the_process() -> None:
    code = textwrap.dedent(
        """
        from worker.engines import GenerationParams
        from worker.engines.echo import EchoEngine
        engine = EchoEngine.from_spec("crash_marker=CRASH")
        params = GenerationParams(max_new_tokens=4)
        print(engine.generate(["fine prompt"], params)[0].text, flush=True)
        engine.generate(["fine", "a CRASH here"], params)
        print("survived", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == CRASH_EXIT_CODE
    assert done.stdout.split() == ["fine", "prompt"]


def test_retry_delay_backs_off_to_a_minute() -> None:
    from worker.failures import MAX_RETRY_DELAY_S, retry_delay

    delays = [retry_delay(retries) for retries in range(10)]
    assert delays[:4] == [1, 2, 4, 8]
    assert delays == sorted(delays)
    assert retry_delay(10_000) == MAX_RETRY_DELAY_S
