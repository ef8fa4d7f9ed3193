"""``bench.gpu``'s bookkeeping: a failing part is recorded and the next one runs; caps."""

from __future__ import annotations

from typing import Any

from bench.gpu_budget import Budget, Cap, run_part, throughput


def test_a_failing_part_is_recorded_and_the_next_one_still_runs() -> None:
    parts: dict[str, Any] = {}

    def broken() -> dict[str, Any]:
        raise RuntimeError("CUDA error: no kernel image")

    run_part("first", broken, parts)
    run_part("second", lambda: {"items_per_s": 2.0}, parts)

    assert parts["first"]["error"] == "RuntimeError: CUDA error: no kernel image"
    assert "broken" in parts["first"]["traceback"]
    assert parts["second"]["items_per_s"] == 2.0
    assert {"part_s"} <= set(parts["first"]) & set(parts["second"])


def test_a_part_gets_its_own_cap_or_what_is_left_of_the_whole() -> None:
    budget = Budget(30.0)
    assert 29.0 < budget.cap(45.0).seconds <= 30.0
    assert budget.cap(5.0).seconds == 5.0
    assert Budget(0.0).cap(45.0).spent()


def test_throughput_counts_what_ran_and_says_what_the_cap_left_out() -> None:
    spent = Cap(0.0)
    figures = throughput(items=10, done=4, seconds=2.0, tokens_out=40, cap=spent)
    assert figures["skipped_items"] == 6
    assert figures["capped"]
    assert figures["items_per_s"] == 2.0
    assert figures["tokens_per_s"] == 20.0
    whole = throughput(items=10, done=10, seconds=2.0, tokens_out=40, cap=Cap(60.0))
    assert not whole["capped"]
    assert whole["skipped_items"] == 0
