"""What a lane asks and how its answers score: the permutation and scorer of a run.

The identity lane uses the prompt rendered at enqueue (``Item.prompt``). Another
lane renders its own from ``Item.payload`` passed through the lane's permutation,
with the same rules as at enqueue (template, else ``prompt``, else context and
query). Nothing per lane is stored but the answer and its score.
"""

from __future__ import annotations

from collections.abc import Sequence

from common import scoring
from common.answers import original_answer, parsed_permutation, parsed_scorer, reference_value
from common.constants import IDENTITY
from common.models import Item
from common.prompts import record_text
from common.runconfig import RunConfig

#: An answer's verdict: (score, metrics of a multi-metric scorer).
Verdict = tuple[float | None, dict[str, float] | None]


def lane_prompt(config: RunConfig, permutation: str, item: Item) -> str:
    """The prompt ``item`` gets in a lane with ``permutation``."""
    if permutation == IDENTITY or item.reject_reason is not None:
        return item.prompt or ""
    payload = parsed_permutation(permutation).payload(item.payload)
    return record_text(config.template_for(item.dataset), payload)


def lane_prompts(config: RunConfig, permutation: str, items: Sequence[Item]) -> list[str]:
    return [lane_prompt(config, permutation, item) for item in items]


def answer_score(config: RunConfig, permutation: str, item: Item, answer: str | None) -> Verdict:
    """The verdict on an answer: the lane's inverse applied, then the dataset's scorer.

    (None, None) when the item's dataset has no scorer or the item no reference; a
    score of 0 for no answer.
    """
    scorer = config.scorer_for(item.dataset)
    if scorer is None or item.reference is None:
        return None, None
    if answer is None:
        return 0.0, None
    original = original_answer(permutation, item, answer)
    return scoring.split(parsed_scorer(scorer)(original, reference_value(item)))
