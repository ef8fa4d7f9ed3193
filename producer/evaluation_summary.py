"""The evaluation summary's blocks, read from a run's statistics.

The summary has the shape that evaluation scripts of checkpoints x permutations
write: ``config``, ``batch_results`` (per batch: index, correct, total, accuracy,
time) and ``overall_results`` (correct, total, accuracy, elapsed and end time), a
batch being a slice index (the same items in every lane); it adds
``lane_results``, ``model_results``, ``permutation_results`` and
``dataset_results`` (each dataset with its ``items`` and ``rejected_items``), and,
for a multi-metric scorer, each block's ``metrics`` (name -> mean over the block's
items). Every figure comes from the per-item aggregation in SQL
(common/evaluation.py); nothing is summed here. Accuracy figures are null for a run
without a scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.models import Lane, Run
from common.stats import Figures

#: What a ``batch_results`` entry's ``time_seconds`` measures.
BATCH_TIME = (
    "wall seconds from the first claim to the last finish of the batch's slices (one per "
    "lane); batches run side by side, so their times overlap and do not add up to the run's"
)


def evaluation_blocks(run: Run, lanes: Sequence[Lane], stats: dict[str, Figures]) -> dict[str, Any]:
    """``batch_results``, ``overall_results`` and the per-scope blocks."""
    overall = stats.get("overall", {})
    batches = sorted(
        (int(scope.split(":", 1)[1]), figures)
        for scope, figures in stats.items()
        if scope.startswith("batch:")
    )
    return {
        "batch_results_time": BATCH_TIME,
        "batch_results": [
            {"batch_idx": index, **_accuracy(figures), "time_seconds": figures.get("time_seconds")}
            for index, figures in batches
        ],
        "overall_results": {
            **_accuracy(overall),
            "aggregate": run.config.get("aggregate", "any"),
            "elapsed_time": overall.get("wall_time_s"),
            "end_time": run.finished_at.isoformat() if run.finished_at else None,
        },
        "lane_results": [
            {
                "index": lane.index,
                "model": lane.model,
                "permutation": lane.permutation,
                **_accuracy(stats.get(f"lane:{lane.index}", {})),
            }
            for lane in lanes
        ],
        "model_results": _scoped(stats, "model:"),
        "permutation_results": _scoped(stats, "permutation:"),
        "dataset_results": _scoped(stats, "dataset:", counts=True),
    }


def _scoped(
    stats: dict[str, Figures], prefix: str, *, counts: bool = False
) -> dict[str, dict[str, Any]]:
    return {
        scope[len(prefix) :]: _accuracy(figures, counts=counts)
        for scope, figures in stats.items()
        if scope.startswith(prefix)
    }


def _accuracy(figures: Figures, *, counts: bool = False) -> dict[str, Any]:
    """Correct, total and accuracy; a dataset's item counts; a multi-metric scorer's means."""
    total = figures.get("total")
    block: dict[str, Any] = {
        "correct": figures.get("correct"),
        "total": None if total is None else int(total),
        "accuracy": figures.get("accuracy"),
    }
    for count in ("items", "rejected_items") if counts else ():
        if count in figures:
            block[count] = figures[count]
    metrics = {
        name.removesuffix("_mean"): value
        for name, value in figures.items()
        if name.endswith("_mean") and f"{name.removesuffix('_mean')}_sum" in figures
    }
    if metrics:
        block["metrics"] = metrics
    return block
