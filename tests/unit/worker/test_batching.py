"""``worker.batching.plan_batches``: longest first, within batch_size and a padded token budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.batching import plan_batches


def cost(lengths: list[int], batch: list[int], max_new_tokens: int) -> int:
    """What a left-padded batch really holds: rows x (longest prompt + new tokens)."""
    return len(batch) * (max(lengths[index] for index in batch) + max_new_tokens)


def test_empty_input_gives_no_batches() -> None:
    assert plan_batches([], batch_size=4, max_batch_tokens=100, max_new_tokens=8) == []


def test_batch_size_groups_longest_first() -> None:
    batches = plan_batches(
        [10, 50, 30, 20], batch_size=2, max_batch_tokens=10_000, max_new_tokens=0
    )
    assert batches == [[1, 2], [3, 0]]


def test_equal_lengths_keep_input_order() -> None:
    assert plan_batches([5, 5, 5], batch_size=2, max_batch_tokens=1000, max_new_tokens=1) == [
        [0, 1],
        [2],
    ]


def test_token_budget_counts_padding_and_new_tokens() -> None:
    # [0, 1]: 2 x (100 + 10) = 220 fits 250; adding 2 would cost 3 x 110 = 330.
    batches = plan_batches(
        [100, 90, 10, 10], batch_size=16, max_batch_tokens=250, max_new_tokens=10
    )
    assert batches == [[0, 1], [2, 3]]


def test_budget_is_inclusive() -> None:
    # 2 x (40 + 10) = 100: fits a budget of exactly 100, not one of 99.
    assert plan_batches([40, 40], batch_size=8, max_batch_tokens=100, max_new_tokens=10) == [[0, 1]]
    assert plan_batches([40, 40], batch_size=8, max_batch_tokens=99, max_new_tokens=10) == [
        [0],
        [1],
    ]


def test_oversize_prompt_gets_a_batch_of_its_own() -> None:
    batches = plan_batches([5, 1000, 5, 800], batch_size=8, max_batch_tokens=100, max_new_tokens=10)
    assert batches == [[1], [3], [0, 2]]


def test_max_new_tokens_alone_can_force_single_rows() -> None:
    assert plan_batches([1, 1, 1], batch_size=8, max_batch_tokens=150, max_new_tokens=99) == [
        [0],
        [1],
        [2],
    ]


@pytest.mark.parametrize(("batch_size", "max_batch_tokens"), [(0, 100), (4, 0), (-1, -1)])
def test_limits_below_one_are_rejected(batch_size: int, max_batch_tokens: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan_batches(
            [1, 2], batch_size=batch_size, max_batch_tokens=max_batch_tokens, max_new_tokens=1
        )


@given(
    lengths=st.lists(st.integers(min_value=0, max_value=2000), max_size=200),
    batch_size=st.integers(min_value=1, max_value=32),
    max_batch_tokens=st.integers(min_value=1, max_value=20_000),
    max_new_tokens=st.integers(min_value=0, max_value=512),
)
def test_plan_properties(
    lengths: list[int], batch_size: int, max_batch_tokens: int, max_new_tokens: int
) -> None:
    """Exact cover, longest first, within both limits, and no batch closed early."""
    batches = plan_batches(
        lengths,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        max_new_tokens=max_new_tokens,
    )
    flat = [index for batch in batches for index in batch]
    assert sorted(flat) == list(range(len(lengths)))  # every index exactly once
    assert all(batch for batch in batches)
    # Longest first, across and within batches (ties in input order).
    assert flat == sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    for position, batch in enumerate(batches):
        assert len(batch) <= batch_size
        if len(batch) > 1:
            assert cost(lengths, batch, max_new_tokens) <= max_batch_tokens
        if position + 1 < len(batches):
            # Greedy: the next batch's first item did not fit in this one.
            grown = [*batch, batches[position + 1][0]]
            assert (
                len(grown) > batch_size or cost(lengths, grown, max_new_tokens) > max_batch_tokens
            )


@given(
    st.lists(st.integers(min_value=1, max_value=500), max_size=60),
    st.floats(min_value=0.0, max_value=1.0),
    st.integers(min_value=0, max_value=32),
)
def test_padding_cap_holds_for_every_batch(
    lengths: list[int], max_padding: float, max_new_tokens: int
) -> None:
    batches = plan_batches(
        lengths,
        batch_size=16,
        max_batch_tokens=1_000_000,
        max_new_tokens=max_new_tokens,
        max_padding=max_padding,
    )
    assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))
    for batch in batches:
        real = sum(lengths[index] + max_new_tokens for index in batch)
        assert 1 - real / cost(lengths, batch, max_new_tokens) <= max_padding + 1e-9


def test_padding_cap_splits_a_long_and_short_mix() -> None:
    lengths = [100, 95, 20, 18]
    capped = plan_batches(
        lengths, batch_size=8, max_batch_tokens=10_000, max_new_tokens=0, max_padding=0.25
    )
    assert capped == [[0, 1], [2, 3]]
    uncapped = plan_batches(lengths, batch_size=8, max_batch_tokens=10_000, max_new_tokens=0)
    assert uncapped == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="max_padding"):
        plan_batches(lengths, batch_size=8, max_batch_tokens=10, max_new_tokens=0, max_padding=2)
