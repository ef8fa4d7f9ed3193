"""Seeded sampling that does not depend on the batch: one random stream per row.

``torch.manual_seed`` followed by a batched ``generate`` draws every row from one shared
stream, so what an item samples depends on which rows share its batch and in what
order. Here each row gets its own ``torch.Generator``, seeded from the run's seed and
the prompt's own text, and the token is drawn by a logits processor; generation then
runs greedily over a distribution where only the drawn token is left. An item samples
the same text in any batch, on any worker (in float32, where batched equals alone).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor


def row_seed(seed: int, prompt: str) -> int:
    """A 63-bit seed for one prompt: the run's seed and the prompt's text, hashed."""
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


class RowSeededSampler(LogitsProcessor):
    """Samples each row's next token with that row's own generator (temperature, top-p)."""

    def __init__(
        self, seeds: Sequence[int], *, temperature: float, top_p: float, device: torch.device
    ) -> None:
        if temperature <= 0:
            raise ValueError("sampling needs a temperature above 0")
        self.temperature = temperature
        self.top_p = top_p
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            probs = _nucleus(probs, self.top_p)
        chosen = torch.empty(len(self.generators), dtype=torch.long, device=scores.device)
        for row, generator in enumerate(self.generators):
            chosen[row] = torch.multinomial(probs[row], 1, generator=generator)[0]
        only = torch.full_like(scores, float("-inf"))
        only.scatter_(1, chosen.unsqueeze(1), 0.0)
        return only  # type: ignore[return-value]


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs`` with everything outside the top-p mass zeroed (at least one token kept)."""
    ordered, order = torch.sort(probs, dim=-1, descending=True)
    before = torch.cumsum(ordered, dim=-1) - ordered
    ordered = ordered.masked_fill(before >= top_p, 0.0)
    kept = torch.zeros_like(probs).scatter(1, order, ordered)
    return kept / kept.sum(dim=-1, keepdim=True)
