"""The verdict on a finished run: what makes ``fleet run`` exit 1."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from producer.verdict import FailureLimit, failure_verdict, parse_limit


def test_parse_limit_reads_a_count_or_a_share() -> None:
    assert parse_limit(None) is None
    assert parse_limit("3") == FailureLimit(count=3)
    assert parse_limit("2.5%") == FailureLimit(percent=2.5)


@pytest.mark.parametrize("text", ["-1", "x", "101%", "%", "1.5"])
def test_parse_limit_refuses_the_rest(text: str) -> None:
    with pytest.raises(ConfigError, match="--max-failures"):
        parse_limit(text)


def test_verdicts() -> None:
    assert failure_verdict(status="completed", ok=5, failed=0, limit=None) is None
    assert failure_verdict(status="completed", ok=0, failed=0, limit=None) is None
    assert failure_verdict(status="completed", ok=1, failed=9, limit=None) is None
    assert failure_verdict(status="completed", ok=0, failed=3, limit=None) == (
        "every result failed (3 of 3)"
    )
    assert failure_verdict(status="cancelled", ok=3, failed=0, limit=None) == (
        "the run ended cancelled"
    )
    two = FailureLimit(count=2)
    assert failure_verdict(status="completed", ok=8, failed=2, limit=two) is None
    assert "more than --max-failures 2" in str(
        failure_verdict(status="completed", ok=7, failed=3, limit=two)
    )
    share = FailureLimit(percent=25.0)
    assert failure_verdict(status="completed", ok=3, failed=1, limit=share) is None
    assert failure_verdict(status="completed", ok=2, failed=1, limit=share) is not None
