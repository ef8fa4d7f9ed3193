"""``common.stats``: nearest-rank percentile offsets, safe ratios, nesting of figures."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.stats import nearest_rank_offset, nest, ratio

#: (count, quantile) -> 0-based offset, by hand: rank = ceil(q * n), offset = rank - 1.
NEAREST_RANK = {
    (1, 0.5): 0,
    (1, 0.95): 0,
    (1, 1.0): 0,
    (2, 0.5): 0,  # ceil(1.0) = 1
    (2, 0.95): 1,  # ceil(1.9) = 2
    (2, 1.0): 1,
    (10, 0.5): 4,  # ceil(5) = 5
    (10, 0.95): 9,  # ceil(9.5) = 10
    (10, 1.0): 9,
    (20, 0.5): 9,  # ceil(10) = 10
    (20, 0.95): 18,  # ceil(19) = 19
    (20, 1.0): 19,
    (100, 0.5): 49,
    (100, 0.95): 94,  # ceil(95) = 95
    (100, 1.0): 99,
    (3, 0.5): 1,  # ceil(1.5) = 2: the median of three is the middle one
    (4, 0.25): 0,
    (5, 0.01): 0,  # ceil(0.05) = 1: the smallest value, never offset -1
}


@pytest.mark.parametrize(("count", "quantile"), list(NEAREST_RANK))
def test_nearest_rank_table(count: int, quantile: float) -> None:
    assert nearest_rank_offset(count, quantile) == NEAREST_RANK[(count, quantile)]


@pytest.mark.parametrize("count", [0, -1])
def test_nearest_rank_needs_values(count: int) -> None:
    with pytest.raises(ValueError, match="no values"):
        nearest_rank_offset(count, 0.5)


@pytest.mark.parametrize("quantile", [0.0, -0.1, 1.0000001, 2.0, math.nan])
def test_nearest_rank_quantile_range(quantile: float) -> None:
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\]"):
        nearest_rank_offset(10, quantile)


@given(count=st.integers(min_value=1, max_value=100_000), percent=st.sampled_from([50, 90, 95, 99]))
def test_nearest_rank_matches_exact_arithmetic_for_the_reported_percentiles(
    count: int, percent: int
) -> None:
    offset = nearest_rank_offset(count, percent / 100)
    assert 0 <= offset < count
    assert offset == math.ceil(Fraction(percent, 100) * count) - 1


@pytest.mark.parametrize(("quantile", "expected"), [(0.07, 6), (0.14, 13), (0.55, 54)])
def test_nearest_rank_is_exact_for_decimal_quantiles(quantile: float, expected: int) -> None:
    assert nearest_rank_offset(100, quantile) == expected


@pytest.mark.parametrize(
    ("part", "whole", "expected"), [(1, 2, 0.5), (3, 3, 1.0), (0, 5, 0.0), (5, 0, 0.0), (0, 0, 0.0)]
)
def test_ratio_is_zero_for_an_empty_whole(part: float, whole: float, expected: float) -> None:
    assert ratio(part, whole) == expected


def test_nest_groups_by_scope_in_order() -> None:
    stats = [
        ("overall", "items", 10.0),
        ("lane:0", "results", 5.0),
        ("overall", "results", 10.0),
        ("lane:1", "results", 5.0),
        ("worker:w1", "processed", 7.0),
    ]
    nested = nest(stats)
    assert nested == {
        "overall": {
            "items": 10,
            "results": 10,
            "latency_mean_s": None,
            "latency_p50_s": None,
            "latency_p95_s": None,
        },
        "lane:0": {"results": 5.0},
        "lane:1": {"results": 5.0},
        "worker:w1": {"processed": 7.0},
    }
    assert list(nested) == ["overall", "lane:0", "lane:1", "worker:w1"]


def test_nest_last_value_wins_and_empty_is_empty() -> None:
    assert nest([("s", "m", 1.0), ("s", "m", 2.0)]) == {"s": {"m": 2.0}}
    assert nest([]) == {}
