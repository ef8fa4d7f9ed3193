"""An item's answer and reference in the item's own terms, as the scorer sees them.

A permuted lane answers in the permuted space (``shuffle-choices`` moved the right
option from A to C): its answer is mapped back by the lane's inverse before it is
scored, and the export writes that mapped answer as ``answer`` next to the text as
generated (``raw_answer``), so ``scorer(answer, reference) == score`` on every line.
A reference that was a JSON object or array in the input is handed back as that
object (``Item.reference`` holds its JSON text).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from common import permutations, scoring
from common.constants import IDENTITY
from common.models import Item


def reference_value(item: Item) -> Any:
    """The item's reference as the input gave it: text, or an object or array."""
    if item.reference is not None and item.reference_is_json:
        return json.loads(item.reference)
    return item.reference


def original_answer(permutation: str, item: Item, answer: str) -> str:
    """``answer`` of a lane with ``permutation`` mapped back to the item's own terms."""
    if permutation == IDENTITY or item.reject_reason is not None:
        return answer
    return parsed_permutation(permutation).inverse(answer, item.payload)


@lru_cache(maxsize=64)
def parsed_permutation(spec: str) -> permutations.Permutation:
    return permutations.parse(spec)


@lru_cache(maxsize=64)
def parsed_scorer(spec: str) -> scoring.Scorer:
    return scoring.parse(spec)
