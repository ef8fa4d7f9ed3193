"""``producer.slicing.cut``: contiguous ranges covering every item exactly once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.slicing import cut


@pytest.mark.parametrize(
    ("count", "size", "expected"),
    [
        (0, 1, []),
        (0, 64, []),
        (1, 1, [(0, 1)]),
        (1, 64, [(0, 1)]),
        (5, 1, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]),
        (10, 5, [(0, 5), (5, 10)]),
        (11, 5, [(0, 5), (5, 10), (10, 11)]),
        (64, 64, [(0, 64)]),
        (65, 64, [(0, 64), (64, 65)]),
        (3, 100, [(0, 3)]),
    ],
)
def test_cut_known_cases(count: int, size: int, expected: list[tuple[int, int]]) -> None:
    assert cut(count, size) == expected


@pytest.mark.parametrize("size", [0, -1, -64])
def test_cut_rejects_size_below_one(size: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        cut(10, size)


def test_cut_rejects_negative_count() -> None:
    with pytest.raises(ValueError, match="negative"):
        cut(-1, 5)


@given(count=st.integers(min_value=0, max_value=5000), size=st.integers(min_value=1, max_value=600))
def test_cut_is_an_exact_cover(count: int, size: int) -> None:
    """Ranges start at 0, touch end to start, end at count, and are all full but the last."""
    ranges = cut(count, size)
    assert len(ranges) == -(-count // size)
    position = 0
    for start, end in ranges:
        assert start == position  # no gap, no overlap
        assert start < end  # never empty
        assert end - start <= size
        position = end
    assert position == count
    assert all(end - start == size for start, end in ranges[:-1])
    covered = [index for start, end in ranges for index in range(start, end)]
    assert covered == list(range(count))
