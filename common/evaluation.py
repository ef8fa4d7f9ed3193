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
are scored. Scopes written as RunStat rows: ``overall``, ``lane:<i>``,
``model:<name>`` (that model's lanes combined), ``permutation:<spec>`` (that
permutation's lanes combined), ``dataset:<name>`` and ``batch:<slice index>``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Float, and_, case, cast, func, select, true
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
    if config.scorer is None:
        return []
    aggregate = config.aggregate
    lanes = list(
        session.exec(select_rows(Lane).where(Lane.run_id == run.id).order_by(col(Lane.index)))
    )
    stats = _block("overall", *_totals(session, run.id, aggregate, true()))
    for lane in lanes:
        lane_only = col(Lane.index) == lane.index
        stats += _block(f"lane:{lane.index}", *_totals(session, run.id, aggregate, lane_only))
    for model in dict.fromkeys(lane.model for lane in lanes):
        of_model = col(Lane.model) == model
        stats += _block(f"model:{model}", *_totals(session, run.id, aggregate, of_model))
    for permutation in dict.fromkeys(lane.permutation for lane in lanes):
        of_permutation = col(Lane.permutation) == permutation
        scope = f"permutation:{permutation}"
        stats += _block(scope, *_totals(session, run.id, aggregate, of_permutation))
    stats += _per_dataset(session, run.id, aggregate)
    stats += _per_batch(session, run.id, aggregate)
    return stats


def _item_scores(
    run_id: str, aggregate: str, lanes: ColumnElement[bool], *, with_batch: bool = False
) -> Subquery:
    score = func.coalesce(col(Result.score), 0.0)
    combined: dict[str, Any] = {
        "any": func.max(score),
        "all": func.min(score),
        "mean": func.avg(score),
        "majority": case(
            (func.sum(case((score >= RIGHT, 1), else_=0)) * 2 > func.count(), 1.0), else_=0.0
        ),
    }
    columns: list[Any] = [
        col(Result.item_id).label("item_id"),
        cast(combined[aggregate], Float).label("score"),
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
    return (
        query.where(col(Result.run_id) == run_id, col(Item.reference).is_not(None), lanes)
        .group_by(col(Result.item_id))
        .subquery()
    )


def _totals(
    session: Session, run_id: str, aggregate: str, lanes: ColumnElement[bool]
) -> tuple[float, int]:
    scores = _item_scores(run_id, aggregate, lanes)
    correct, total = session.execute(
        select(func.coalesce(func.sum(scores.c.score), 0.0), func.count()).select_from(scores)
    ).one()
    return float(correct), int(total)


def _per_dataset(session: Session, run_id: str, aggregate: str) -> list[Stat]:
    scores = _item_scores(run_id, aggregate, true())
    rows = session.execute(
        select(col(Item.dataset), func.sum(scores.c.score), func.count())
        .join(Item, col(Item.id) == scores.c.item_id)
        .group_by(col(Item.dataset))
        .order_by(col(Item.dataset))
    ).all()
    stats: list[Stat] = []
    for dataset, correct, total in rows:
        stats += _block(f"dataset:{dataset}", float(correct), int(total))
    return stats


def _per_batch(session: Session, run_id: str, aggregate: str) -> list[Stat]:
    """The summary's ``batch_results``: one block per slice index (its items, every lane).

    A result knows the slice that answered it (``Result.slice_id``); an item's lanes
    share the slice index, since every lane is cut the same way.
    """
    scores = _item_scores(run_id, aggregate, true(), with_batch=True)
    rows = session.execute(
        select(scores.c.batch, func.sum(scores.c.score), func.count())
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
    for index, correct, total in rows:
        scope = f"batch:{index}"
        stats += _block(scope, float(correct), int(total))
        stats.append((scope, "time_seconds", times.get(index, 0.0)))
    return stats


def _block(scope: str, correct: float, total: int) -> list[Stat]:
    accuracy = correct / total if total else 0.0
    return [
        (scope, "correct", correct),
        (scope, "total", float(total)),
        (scope, "accuracy", accuracy),
    ]
