"""A missing Redis or PostgreSQL skips a test on a laptop and fails it in CI."""

from __future__ import annotations

import pytest

from tests.integration.services import in_ci, service_missing


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
