"""Cutting a run's items into slices: contiguous, no gap, no overlap."""

from __future__ import annotations


def cut(count: int, size: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of at most ``size`` covering ``0..count`` exactly once."""
    if size < 1:
        raise ValueError("slice size must be at least 1")
    if count < 0:
        raise ValueError("item count cannot be negative")
    return [(start, min(start + size, count)) for start in range(0, count, size)]
