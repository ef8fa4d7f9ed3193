"""A missing Redis or PostgreSQL skips a test on a laptop and fails it in CI; each
pytest-xdist process has a Redis database of its own."""

from __future__ import annotations

import pytest

from tests.integration.services import in_ci, redis_url_of_this_process, service_missing


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", " true "])
def test_ci_is_recognised(value: str) -> None:
    assert in_ci({"CI": value})


@pytest.mark.parametrize("environ", [{}, {"CI": ""}, {"CI": "false"}, {"CI": "0"}])
def test_outside_ci(environ: dict[str, str]) -> None:
    assert not in_ci(environ)


def test_a_missing_service_skips_outside_ci() -> None:
    with pytest.raises(pytest.skip.Exception, match="no Redis at redis://x"):
        service_missing("no Redis at redis://x", {})


def test_a_missing_service_fails_in_ci() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"no PostgreSQL at postgresql://x.*CI=true"):
        service_missing("no PostgreSQL at postgresql://x", {"CI": "true"})


def test_the_process_environment_decides_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        service_missing("no Redis")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        service_missing("no Redis")


def test_one_process_uses_the_database_it_is_given() -> None:
    assert redis_url_of_this_process("redis://127.0.0.1:6379/4", None) == (
        "redis://127.0.0.1:6379/4"
    )


def test_each_xdist_process_counts_down_from_the_database_given() -> None:
    urls = [redis_url_of_this_process("redis://:pw@h:6379/15", f"gw{n}") for n in range(4)]
    assert urls == [f"redis://:pw@h:6379/{db}" for db in (15, 14, 13, 12)]
    assert redis_url_of_this_process("redis://h:6379", "gw0") == "redis://h:6379/0"


def test_a_process_past_database_0_is_refused() -> None:
    with pytest.raises(pytest.UsageError, match="gw3 would need Redis database -1"):
        redis_url_of_this_process("redis://h:6379/2", "gw3")
