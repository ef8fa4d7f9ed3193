"""The reads behind ``fleet report``: every figure aggregated in SQL, never row by row.

A histogram is one GROUP BY over a bucket number computed in SQL; the throughput is
one GROUP BY over (interval, worker); the tables are LIMITed. So a report costs a few
scans of the run's results whatever their number, and its size depends on the number
of buckets, intervals, workers and error kinds, not on the number of results.
Timestamps become seconds since the epoch in SQL (``julianday`` on SQLite, ``EXTRACT``
on PostgreSQL), so the bucketing happens where the rows are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Float, Integer, case, cast, func
from sqlmodel import Session, col

from common.models import Item, Result, Slice

#: Bars of a histogram.
HISTOGRAM_BINS = 40

#: Most intervals of a throughput chart; the interval is the first of ``STEPS_S`` that fits.
MAX_INTERVALS = 60

#: Interval lengths a throughput chart may use, in seconds.
STEPS_S = (
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
    7200, 21600, 86400,
)  # fmt: skip

#: Name shown for results no worker wrote (records rejected at enqueue).
NO_WORKER = "(enqueue)"


@dataclass(frozen=True)
class Bucket:
    """Values in [low, high) (the last bucket includes its high end), and how many."""

    low: float
    high: float
    count: int


@dataclass(frozen=True)
class Throughput:
    """Results written per interval by each worker, from ``start`` on."""

    start: datetime | None
    interval_s: float
    intervals: int
    #: Worker -> one count per interval.
    per_worker: dict[str, list[int]]


@dataclass(frozen=True)
class WorkerFigures:
    name: str
    results: int
    failed: int
    slices: int
    #: Seconds its slices were in flight, claim to finish, summed.
    busy_s: float


@dataclass(frozen=True)
class FailureKind:
    kind: str
    count: int
    #: (item id, lane, message) of a few of them.
    examples: list[tuple[str, int, str]]


@dataclass(frozen=True)
class ItemRow:
    """One result as the report's tables show it."""

    item: str
    lane: int
    worker: str
    latency_s: float
    tokens_in: int
    tokens_out: int
    error_kind: str | None
    error: str | None


def epoch_s(session: Session, column: Any) -> ColumnElement[float]:
    """``column`` (a timestamp) as seconds since 1970, computed by the database."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(column) - 2440587.5) * 86400.0
    return cast(func.extract("epoch", column), Float)


def _floor(session: Session, value: ColumnElement[Any]) -> ColumnElement[int]:
    """``value`` (never negative here) rounded down, as an integer."""
    if session.get_bind().dialect.name == "sqlite":
        return cast(value, Integer)  # SQLite's CAST truncates: floor for values >= 0
    return cast(func.floor(value), Integer)


def histogram(
    session: Session, *, run_id: str, column: Any, integral: bool, bins: int = HISTOGRAM_BINS
) -> list[Bucket]:
    """Buckets of ``column`` over the run's successful results, counted in SQL.

    ``integral`` values (token counts) get whole-number bucket widths, so a bar
    never splits one value from its neighbour unevenly.
    """
    where = sa.and_(col(Result.run_id) == run_id, col(Result.ok), column.is_not(None))
    low, high = session.execute(sa.select(func.min(column), func.max(column)).where(where)).one()
    if low is None:
        return []
    low, high = float(low), float(high)
    if integral:
        width = float(max(math.ceil((high - low + 1) / bins), 1))
        bins = min(bins, int((high - low) // width) + 1)
    else:
        width = (high - low) / bins if high > low else 1.0
    raw = _floor(session, (cast(column, Float) - low) / width)
    index = case((raw > bins - 1, bins - 1), else_=raw)
    counts = dict(
        session.execute(sa.select(index, func.count()).where(where).group_by(index)).all()
    )
    return [
        Bucket(low + n * width, low + (n + 1) * width, int(counts.get(n, 0))) for n in range(bins)
    ]


def interval_for(span_s: float) -> float:
    """The shortest step of ``STEPS_S`` that draws ``span_s`` in ``MAX_INTERVALS`` or fewer."""
    for step in STEPS_S:
        if span_s / step < MAX_INTERVALS:
            return step
    return float(math.ceil(span_s / MAX_INTERVALS))


def throughput(session: Session, *, run_id: str) -> Throughput:
    """Results per interval per worker, counted in SQL over the results' write times."""
    of_run = col(Result.run_id) == run_id
    written = epoch_s(session, col(Result.created_at))
    first, last, start = session.execute(
        sa.select(func.min(written), func.max(written), func.min(col(Result.created_at))).where(
            of_run
        )
    ).one()
    if first is None:
        return Throughput(None, 1, 0, {})
    span = float(last) - float(first)
    step = interval_for(span)
    intervals = int(span // step) + 1
    index = _floor(session, (written - float(first)) / step)
    worker = func.coalesce(col(Result.worker), NO_WORKER)
    per_worker: dict[str, list[int]] = {}
    rows = session.execute(
        sa.select(worker, index, func.count()).where(of_run).group_by(worker, index)
    )
    for name, at, count in rows:
        counts = per_worker.setdefault(str(name), [0] * intervals)
        counts[min(int(at), intervals - 1)] += int(count)
    return Throughput(start, step, intervals, dict(sorted(per_worker.items())))


def workers(session: Session, *, run_id: str) -> list[WorkerFigures]:
    """Per worker: results written, failed among them, slices finished, seconds busy."""
    name = func.coalesce(col(Result.worker), NO_WORKER)
    counts = session.execute(
        sa.select(name, func.count(), func.sum(case((col(Result.ok), 0), else_=1)))
        .where(col(Result.run_id) == run_id)
        .group_by(name)
    )
    busy_s = epoch_s(session, col(Slice.finished_at)) - epoch_s(session, col(Slice.started_at))
    spans = {
        str(worker): (int(slices), float(busy or 0.0))
        for worker, slices, busy in session.execute(
            sa.select(col(Slice.worker), func.count(), func.sum(busy_s))
            .where(
                col(Slice.run_id) == run_id,
                col(Slice.worker).is_not(None),
                col(Slice.started_at).is_not(None),
                col(Slice.finished_at).is_not(None),
            )
            .group_by(col(Slice.worker))
        )
    }
    return [
        WorkerFigures(str(worker), int(total), int(failed or 0), *spans.get(str(worker), (0, 0.0)))
        for worker, total, failed in sorted(counts, key=lambda row: str(row[0]))
    ]


def failures(session: Session, *, run_id: str, examples: int = 3) -> list[FailureKind]:
    """Failed results by error kind, commonest first, each with a few examples."""
    failed = sa.and_(col(Result.run_id) == run_id, sa.not_(col(Result.ok)))
    kinds = session.execute(
        sa.select(col(Result.error_kind), func.count())
        .where(failed)
        .group_by(col(Result.error_kind))
        .order_by(func.count().desc(), col(Result.error_kind))
    )
    found: list[FailureKind] = []
    for kind, count in kinds.all():
        rows = session.execute(
            sa.select(col(Item.custom_id), col(Result.lane_index), col(Result.error_message))
            .join(Item, col(Item.id) == col(Result.item_id))
            .where(failed, col(Result.error_kind) == kind)
            .order_by(col(Result.item_id), col(Result.lane_index))
            .limit(examples)
        )
        samples = [(str(item), int(lane), message or "") for item, lane, message in rows]
        found.append(FailureKind(str(kind or "unknown"), int(count), samples))
    return found


def slowest(session: Session, *, run_id: str, limit: int = 15) -> list[ItemRow]:
    """The successful results that took longest."""
    return _item_rows(
        session,
        sa.and_(col(Result.run_id) == run_id, col(Result.ok)),
        order=[col(Result.latency_s).desc(), col(Result.item_id)],
        limit=limit,
    )


def failed_items(session: Session, *, run_id: str, limit: int = 25) -> list[ItemRow]:
    """The first failed results, in input order."""
    return _item_rows(
        session,
        sa.and_(col(Result.run_id) == run_id, sa.not_(col(Result.ok))),
        order=[col(Result.item_id), col(Result.lane_index)],
        limit=limit,
    )


def _item_rows(
    session: Session, where: ColumnElement[bool], *, order: list[Any], limit: int
) -> list[ItemRow]:
    rows = session.execute(
        sa.select(
            col(Item.custom_id),
            col(Result.lane_index),
            col(Result.worker),
            col(Result.latency_s),
            col(Result.tokens_in),
            col(Result.tokens_out),
            col(Result.error_kind),
            col(Result.error_message),
        )
        .join(Item, col(Item.id) == col(Result.item_id))
        .where(where)
        .order_by(*order)
        .limit(limit)
    )
    return [
        ItemRow(str(item), int(lane), worker or NO_WORKER, float(latency or 0.0),
                int(tokens_in), int(tokens_out), kind, message)
        for item, lane, worker, latency, tokens_in, tokens_out, kind, message in rows
    ]  # fmt: skip
