"""How long a publish keeps trying while the broker is away: the waits fit the budget."""

from __future__ import annotations

import pytest

from common.publish import PUBLISH_RETRY_S, retry_policy


def waits(policy: dict[str, float]) -> list[float]:
    """kombu's waits under ``policy``: start, start + step, ... capped at the max."""
    return [
        min(policy["interval_max"], policy["interval_start"] + policy["interval_step"] * n)
        for n in range(int(policy["max_retries"]))
    ]


@pytest.mark.parametrize("budget", [0.0, 0.4, 0.5, 2.0, 10.0, PUBLISH_RETRY_S, 600.0])
def test_the_waits_add_up_to_the_budget_at_most(budget: float) -> None:
    spent = sum(waits(retry_policy(budget)))
    assert spent <= budget
    assert budget - spent < 5.0  # one more wait (at most 5 s) would not have fitted


def test_no_budget_no_retry() -> None:
    assert retry_policy(0)["max_retries"] == 0


def test_the_default_tries_for_about_a_minute() -> None:
    assert 55 <= sum(waits(retry_policy(PUBLISH_RETRY_S))) <= 60
