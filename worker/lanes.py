"""What a lane asks and how its answers score: the permutation and scorer of a run.

The identity lane uses the prompt rendered at enqueue (``Item.prompt``). Another
lane renders its own from ``Item.payload`` passed through the lane's permutation,
with the same rules as at enqueue (template, else ``prompt``, else context and
query). Nothing per lane is stored but the answer and its score.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from common import permutations, scoring
from common.constants import IDENTITY
from common.models import Item
from common.prompts import record_text
from common.runconfig import RunConfig


def lane_prompt(config: RunConfig, permutation: str, item: Item) -> str:
    """The prompt ``item`` gets in a lane with ``permutation``."""
    if permutation == IDENTITY or item.reject_reason is not None:
        return item.prompt or ""
    payload = _permutation(permutation).payload(item.payload)
    return record_text(config.template, payload)


def lane_prompts(config: RunConfig, permutation: str, items: Sequence[Item]) -> list[str]:
    return [lane_prompt(config, permutation, item) for item in items]


def answer_score(
    config: RunConfig, permutation: str, item: Item, answer: str | None
) -> float | None:
    """The score of an answer: the lane's inverse applied, then the run's scorer.

    None when the run has no scorer or the item no reference; 0 for no answer.
    """
    if config.scorer is None or item.reference is None:
        return None
    if answer is None:
        return 0.0
    original = _permutation(permutation).inverse(answer, item.payload)
    return _scorer(config.scorer)(original, item.reference)


@lru_cache(maxsize=64)
def _permutation(spec: str) -> permutations.Permutation:
    return permutations.parse(spec)


@lru_cache(maxsize=64)
def _scorer(spec: str) -> scoring.Scorer:
    return scoring.parse(spec)
