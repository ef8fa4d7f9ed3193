"""An item's ensemble, per exported line: its lanes combined as the statistics combine them.

``ensemble_score`` is the item's score under the run's ``--aggregate`` (the best
lane's for ``any``, the worst's for ``all``, their mean for ``mean``, 1 or 0 by a
vote of the lanes for ``majority``), the figure ``common.evaluation`` sums into
``correct``: summing it once per item recounts the run's accuracy from the file.
With ``--aggregate majority``, ``ensemble_answer`` is the answer more than half of
the item's lanes gave, in the form the scorer compares (``common.scoring.canonical``:
stripped, normalised, the number, the match...), or null when no answer has a
majority.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from common.answers import original_answer
from common.evaluation import RIGHT
from common.models import Item, Lane, Result
from common.runconfig import RunConfig
from common.scoring import Canonical, canonical


def ensemble_fields(
    config: RunConfig, item: Item, answered: Sequence[tuple[Lane, Result | None]]
) -> dict[str, Any]:
    """``ensemble_score`` (and ``ensemble_answer`` for majority); empty when unscored."""
    scorer = config.scorer_for(item.dataset)
    if scorer is None or item.reference is None or item.reject_reason is not None:
        return {}
    results = [(lane, result) for lane, result in answered if result is not None]
    fields: dict[str, Any] = {"ensemble_score": _combined(config.aggregate, results)}
    if config.aggregate == "majority":
        fields["ensemble_answer"] = _majority_answer(scorer, item, results)
    return fields


def _combined(aggregate: str, results: list[tuple[Lane, Result]]) -> float | None:
    scores = [result.score or 0.0 for _, result in results]
    if not scores:
        return None  # no lane has answered yet: the statistics do not count the item
    if aggregate == "any":
        return max(scores)
    if aggregate == "all":
        return min(scores)
    if aggregate == "mean":
        return sum(scores) / len(scores)
    return 1.0 if sum(score >= RIGHT for score in scores) * 2 > len(scores) else 0.0


def _majority_answer(scorer: str, item: Item, results: list[tuple[Lane, Result]]) -> str | None:
    form = _canonical(scorer)
    votes: Counter[str] = Counter()
    for lane, result in results:
        if result.ok and result.answer is not None:
            said = form(original_answer(lane.permutation, item, result.answer))
            if said is not None:
                votes[said] += 1
    if not votes:
        return None
    answer, count = votes.most_common(1)[0]
    return answer if count * 2 > len(results) else None


@lru_cache(maxsize=16)
def _canonical(scorer: str) -> Canonical:
    return canonical(scorer)
