"""Packing a slice's prompts into forward batches: longest first, by a token budget.

Longest first (as lm-evaluation-harness does) puts the most expensive batch at the
start, so a batch that does not fit shows at once, and keeps prompts of similar
length together, which wastes the least padding.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(
    lengths: Sequence[int], *, batch_size: int, max_batch_tokens: int, max_new_tokens: int
) -> list[list[int]]:
    """Indexes into ``lengths`` grouped into batches.

    A batch costs ``rows x (longest prompt + max_new_tokens)`` tokens, which is what
    a left-padded batch really holds; it stays within ``max_batch_tokens`` and
    ``batch_size``. A single prompt over the budget still gets a batch of its own.
    """
    if batch_size < 1 or max_batch_tokens < 1:
        raise ValueError("batch_size and max_batch_tokens must be at least 1")
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]
        cost = (len(current) + 1) * (width + max_new_tokens)
        if current and (len(current) >= batch_size or cost > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches
