"""Accuracy of an evaluation run, computed in SQL, always per item first.

A per-GPU sum of correct answers counts an item once per lane; here each item's
lanes are combined into ONE score for the item (``GROUP BY item``) before anything is
counted, so an item is counted once however many lanes answered it:

- ``any``: the best lane's score (OR);
- ``all``: the worst lane's score (AND);
- ``majority``: 1 when more than half the lanes are right (score >= 0.5), else 0
  (a vote);
- ``mean``: the lanes' mean score.

A lane without a score (a failed answer) counts as 0. Only items with a reference
are scored. Scopes written as RunStat rows: ``overall`` (the ensemble of every
lane), ``lane:<i>``, ``model:<name>`` (that model's lanes combined),
``permutation:<spec>`` (that permutation's lanes combined), ``dataset:<name>`` and
``batch:<slice index>``. Every dataset of the run has its block, with its
``items`` and ``rejected_items``, even one whose records were all rejected.

A multi-metric scorer (``common/scoring.py``) adds, per scope and metric NAME,
``NAME_sum`` and ``NAME_mean`` (over the scope's ``total`` items), each metric
combined across lanes by the same ``--aggregate`` as the score.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Float, and_, case, cast, func, select, text, true
from sqlalchemy.sql import Subquery
from sqlmodel import Session, col
from sqlmodel import select as select_rows

from common.models import Item, Lane, Result, Run, Slice, Stat, elapsed_s
from common.runconfig import RunConfig

#: A lane's score at or above this is a right answer for ``majority``.
RIGHT = 0.5


def evaluation_statistics(session: Session, *, run: Run) -> list[Stat]:
    """Accuracy per scope; empty for a run without a scorer."""
    config = RunConfig.model_validate(run.config)
    if not config.scored():
        return []
    unscored = [name for name in ("default", *config.datasets) if config.scorer_for(name) is None]
    how = _Aggregation(config.aggregate, _metric_names(session, run.id), unscored)
    lanes = list(
        session.exec(select_rows(Lane).where(Lane.run_id == run.id).order_by(col(Lane.index)))
    )
    stats = _block("overall", *_totals(session, run.id, how, true()))
    for lane in lanes:
        lane_only = col(Lane.index) == lane.index
        stats += _block(f"lane:{lane.index}", *_totals(session, run.id, how, lane_only))
    for model in dict.fromkeys(lane.model for lane in lanes):
        of_model = col(Lane.model) == model
        stats += _block(f"model:{model}", *_totals(session, run.id, how, of_model))
    for permutation in dict.fromkeys(lane.permutation for lane in lanes):
        of_permutation = col(Lane.permutation) == permutation
        scope = f"permutation:{permutation}"
        stats += _block(scope, *_totals(session, run.id, how, of_permutation))
    stats += _per_dataset(session, run.id, how)
    stats += _per_batch(session, run.id, how)
    return stats


class _Aggregation:
    """How an item's lanes combine (``--aggregate``), and the metrics combined alike."""

    def __init__(self, aggregate: str, metrics: list[str], unscored: list[str]) -> None:
        self.aggregate = aggregate
        self.metrics = metrics
        #: Datasets without a scorer: their items are not counted.
        self.unscored = unscored

    def combine(self, value: Any) -> ColumnElement[Any]:
        """The item's value from its lanes' ``value`` (a missing one counts as 0)."""
        value = func.coalesce(value, 0.0)
        combined: dict[str, Any] = {
            "any": func.max(value),
            "all": func.min(value),
            "mean": func.avg(value),
            "majority": case(
                (func.sum(case((value >= RIGHT, 1), else_=0)) * 2 > func.count(), 1.0), else_=0.0
            ),
        }
        return cast(combined[self.aggregate], Float)


def _metric_names(session: Session, run_id: str) -> list[str]:
    """The metric names of a multi-metric scorer's results, sorted; empty for a plain one."""
    if session.get_bind().dialect.name == "postgresql":
        query = (
            "SELECT DISTINCT json_object_keys(scores) FROM result "
            "WHERE run_id = :run_id AND scores IS NOT NULL"
        )
    else:
        query = (
            "SELECT DISTINCT metric.key FROM result, json_each(result.scores) AS metric "
            "WHERE result.run_id = :run_id AND result.scores IS NOT NULL"
        )
    return sorted(str(name) for (name,) in session.execute(text(query), {"run_id": run_id}))


def _item_scores(
    run_id: str, how: _Aggregation, lanes: ColumnElement[bool], *, with_batch: bool = False
) -> Subquery:
    columns: list[Any] = [
        col(Result.item_id).label("item_id"),
        how.combine(col(Result.score)).label("score"),
    ]
    columns += [
        how.combine(col(Result.scores)[name].as_float()).label(f"metric_{position}")
        for position, name in enumerate(how.metrics)
    ]
    if with_batch:
        columns.append(func.min(col(Slice.index)).label("batch"))
    query = (
        select(*columns)
        .join(
            Lane,
            and_(col(Lane.run_id) == col(Result.run_id), col(Lane.index) == col(Result.lane_index)),
        )
        .join(Item, col(Item.id) == col(Result.item_id))
    )
    if with_batch:
        query = query.outerjoin(Slice, col(Slice.id) == col(Result.slice_id))
    if how.unscored:
        query = query.where(col(Item.dataset).not_in(how.unscored))
    return (
        query.where(col(Result.run_id) == run_id, col(Item.reference).is_not(None), lanes)
        .group_by(col(Result.item_id))
        .subquery()
    )


#: A scope's sums: (correct, total, metric name -> sum).
Totals = tuple[float, int, dict[str, float]]


def _sums(scores: Subquery, how: _Aggregation) -> list[Any]:
    """Sum of the item scores, item count, then the sum of each metric."""
    return [
        func.coalesce(func.sum(scores.c.score), 0.0),
        func.count(),
        *(
            func.coalesce(func.sum(scores.c[f"metric_{position}"]), 0.0)
            for position in range(len(how.metrics))
        ),
    ]


def _totals_of(row: Any, how: _Aggregation) -> Totals:
    correct, total, *metric_sums = row
    metrics = {name: float(value) for name, value in zip(how.metrics, metric_sums, strict=True)}
    return float(correct), int(total), metrics


def _totals(session: Session, run_id: str, how: _Aggregation, lanes: ColumnElement[bool]) -> Totals:
    scores = _item_scores(run_id, how, lanes)
    return _totals_of(session.execute(select(*_sums(scores, how)).select_from(scores)).one(), how)


def _per_dataset(session: Session, run_id: str, how: _Aggregation) -> list[Stat]:
    """One block per dataset of the run, scored items or not, with its item counts."""
    scores = _item_scores(run_id, how, true())
    rows = session.execute(
        select(col(Item.dataset), *_sums(scores, how))
        .join(Item, col(Item.id) == scores.c.item_id)
        .group_by(col(Item.dataset))
    ).all()
    scored = {row[0]: _totals_of(row[1:], how) for row in rows}
    counts = session.execute(
        select(
            col(Item.dataset),
            func.count(),
            func.sum(case((col(Item.reject_reason).is_not(None), 1), else_=0)),
        )
        .where(col(Item.run_id) == run_id)
        .group_by(col(Item.dataset))
        .order_by(col(Item.dataset))
    ).all()
    stats: list[Stat] = []
    for dataset, items, rejected in counts:
        scope = f"dataset:{dataset}"
        nothing: Totals = (0.0, 0, dict.fromkeys(how.metrics, 0.0))
        stats += _block(scope, *scored.get(dataset, nothing))
        stats += [(scope, "items", float(items)), (scope, "rejected_items", float(rejected or 0))]
    return stats


def _per_batch(session: Session, run_id: str, how: _Aggregation) -> list[Stat]:
    """The summary's ``batch_results``: one block per slice index (its items, every lane).

    A result knows the slice that answered it (``Result.slice_id``); an item's lanes
    share the slice index, since every lane is cut the same way.
    """
    scores = _item_scores(run_id, how, true(), with_batch=True)
    rows = session.execute(
        select(scores.c.batch, *_sums(scores, how))
        .where(scores.c.batch.is_not(None))
        .group_by(scores.c.batch)
        .order_by(scores.c.batch)
    ).all()
    times = {
        index: elapsed_s(start, end)
        for index, start, end in session.execute(
            select(col(Slice.index), func.min(Slice.started_at), func.max(Slice.finished_at))
            .where(col(Slice.run_id) == run_id)
            .group_by(col(Slice.index))
        ).all()
    }
    stats: list[Stat] = []
    for index, *sums in rows:
        scope = f"batch:{index}"
        stats += _block(scope, *_totals_of(sums, how))
        stats.append((scope, "time_seconds", times.get(index, 0.0)))
    return stats


def _block(scope: str, correct: float, total: int, metrics: dict[str, float]) -> list[Stat]:
    """Correct, total and accuracy; the sum and mean of each metric."""
    stats: list[Stat] = [
        (scope, "correct", correct),
        (scope, "total", float(total)),
        (scope, "accuracy", correct / total if total else 0.0),
    ]
    for name, summed in metrics.items():
        stats += [
            (scope, f"{name}_sum", summed),
            (scope, f"{name}_mean", summed / total if total else 0.0),
        ]
    return stats
