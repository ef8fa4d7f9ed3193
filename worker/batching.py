"""Packing a slice's prompts into forward batches: longest first, by a token budget.

Longest first (as lm-evaluation-harness does) puts the most expensive batch at the
start, so a batch that does not fit shows at once, and keeps prompts of similar
length together, which wastes the least padding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence


def batch_cost(lengths: Sequence[int], max_new_tokens: int) -> int:
    """Tokens a left-padded batch holds: rows x (longest prompt + new tokens)."""
    if not lengths:
        return 0
    return len(lengths) * (max(lengths) + max_new_tokens)


def plan_batches(
    lengths: Sequence[int],
    *,
    batch_size: int,
    max_batch_tokens: int,
    max_new_tokens: int,
    max_padding: float = 1.0,
) -> list[list[int]]:
    """Indexes into ``lengths`` grouped into batches.

    A batch costs ``rows x (longest prompt + max_new_tokens)`` tokens, which is what
    a left-padded batch really holds; it stays within ``max_batch_tokens`` and
    ``batch_size``. A single prompt over the budget still gets a batch of its own.

    ``max_padding`` caps the share of that cost that is padding: a prompt much shorter
    than the batch's longest starts a new batch instead. Prefill is compute-bound, so
    padded positions cost as much as real ones (and on a CPU a padded batch also
    loses the unmasked attention kernel); 1.0 switches the cap off.
    """
    if batch_size < 1 or max_batch_tokens < 1:
        raise ValueError("batch_size and max_batch_tokens must be at least 1")
    if not 0.0 <= max_padding <= 1.0:
        raise ValueError("max_padding must be between 0 and 1")
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0  # prompt + new tokens of the current batch's rows, without padding
    for index in order:
        width = lengths[current[0]] if current else lengths[index]
        cost = (len(current) + 1) * (width + max_new_tokens)
        padding = 1 - (real + lengths[index] + max_new_tokens) / cost if cost else 0.0
        if current and (
            len(current) >= batch_size or cost > max_batch_tokens or padding > max_padding
        ):
            batches.append(current)
            current, real = [], 0
        current.append(index)
        real += lengths[index] + max_new_tokens
    if current:
        batches.append(current)
    return batches


def iter_batches(
    lengths: Mapping[int, int],
    *,
    batch_size: int,
    max_new_tokens: int,
    budget: Callable[[], int],
    max_padding: float = 1.0,
) -> Iterator[list[int]]:
    """Keys of ``lengths`` in batches, planned like :func:`plan_batches` but re-planned
    before each batch with the token budget ``budget()`` returns then, so a budget lowered
    by an out-of-memory applies to the rest of the slice, not only the next one."""
    pending = list(lengths)
    while pending:
        first = plan_batches(
            [lengths[key] for key in pending],
            batch_size=batch_size,
            max_batch_tokens=budget(),
            max_new_tokens=max_new_tokens,
            max_padding=max_padding,
        )[0]
        batch = [pending[position] for position in first]
        yield batch
        taken = set(batch)
        pending = [key for key in pending if key not in taken]
