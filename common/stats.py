"""Run statistics, computed in SQL from the Result rows.

Every figure is a recount of the rows, so the summary can never disagree with
the results it describes. Percentiles use the nearest-rank method, which SQLite
and PostgreSQL can both answer with ORDER BY ... OFFSET.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Integer, cast, func, select
from sqlmodel import Session, col

from common.evaluation import evaluation_statistics
from common.models import Result, Run, Slice, Stat, elapsed_s

#: Figures that count something: written to JSON as integers.
COUNT_METRICS = frozenset(
    {
        "items", "lanes", "expected_results", "results", "results_ok", "results_failed",
        "rejected_items", "tokens_in", "tokens_out", "processed", "successes", "errors",
        "correct", "total",
    }
)  # fmt: skip

#: One scope's figures as JSON shows them.
Figures = dict[str, float | int | None]

#: Latency figures of the answers that succeeded (absent, null in JSON, when none did).
LATENCY_METRICS = ("latency_mean_s", "latency_p50_s", "latency_p95_s")

# Scopes of a ``Stat``: overall, lane:<i>, worker:<name>, and for a scored run
# model:<name>, permutation:<spec>, dataset:<name>, batch:<i>.


def nearest_rank_offset(count: int, quantile: float) -> int:
    """0-based position of the ``quantile`` value among ``count`` sorted values."""
    if count < 1:
        raise ValueError("no values")
    if not 0.0 < quantile <= 1.0:
        raise ValueError("quantile must be in (0, 1]")
    # Decimal, not float: 0.07 * 100 is 7.000000000000001 in binary floating point.
    return max(math.ceil(Decimal(str(quantile)) * count), 1) - 1


def ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def run_statistics(session: Session, *, run_id: str) -> list[Stat]:
    """Every figure of a run: overall, per lane and per worker, and accuracy if scored."""
    run = session.get(Run, run_id)
    if run is None:
        raise ValueError(f"no run {run_id}")
    of_run = col(Result.run_id) == run_id
    stats = _overall(session, run, of_run)
    stats += _per_lane(session, of_run)
    stats += _per_worker(session, of_run)
    stats += evaluation_statistics(session, run=run)
    return stats


def _overall(session: Session, run: Run, of_run: ColumnElement[bool]) -> list[Stat]:
    count, ok, tokens_in, tokens_out, last = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(_as_int(col(Result.ok))), 0),
            func.coalesce(func.sum(Result.tokens_in), 0),
            func.coalesce(func.sum(Result.tokens_out), 0),
            func.max(Result.created_at),
        ).where(of_run)
    ).one()
    wall = elapsed_s(run.started_at, last)
    active = active_s(_slice_spans(session, run.id))
    figures: dict[str, float] = {
        "items": run.item_count,
        "lanes": run.lane_count,
        "expected_results": run.item_count * run.lane_count,
        "results": count,
        "results_ok": ok,
        "results_failed": count - ok,
        "rejected_items": run.rejected_count,
        "success_rate": ratio(ok, count),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "wall_time_s": wall,
        "active_time_s": active,
        "tokens_per_s": ratio(tokens_out, active),
        "results_per_s": ratio(count, active),
        # Every item runs in every lane: an item is done once per lane.
        "items_per_s": ratio(ratio(count, run.lane_count), active),
    }
    # Latency of the answers that succeeded; none when nothing succeeded (no row: null).
    latency = _latency(session, of_run & col(Result.ok))
    if latency is not None:
        figures |= dict(zip(LATENCY_METRICS, latency, strict=True))
    return [("overall", name, float(value)) for name, value in figures.items()]


def _slice_spans(session: Session, run_id: str) -> list[tuple[datetime, datetime]]:
    rows = session.execute(
        select(col(Slice.started_at), col(Slice.finished_at)).where(
            col(Slice.run_id) == run_id,
            col(Slice.started_at).is_not(None),
            col(Slice.finished_at).is_not(None),
        )
    ).all()
    return [(start, end) for start, end in rows]


def active_s(spans: list[tuple[datetime, datetime]]) -> float:
    """Seconds covered by at least one span: the time in which the run had work in flight.

    Overlapping slices count once; the idle gap before a ``fleet resume`` or ``fleet
    retry`` counts not at all (a reopened slice's span is its new one).
    """
    total = 0.0
    current: tuple[datetime, datetime] | None = None
    for start, end in sorted(spans):
        if current is not None and start <= current[1]:
            current = (current[0], max(current[1], end))
            continue
        if current is not None:
            total += elapsed_s(*current)
        current = (start, end)
    if current is not None:
        total += elapsed_s(*current)
    return total


def _per_lane(session: Session, of_run: ColumnElement[bool]) -> list[Stat]:
    rows = session.execute(
        select(col(Result.lane_index), func.count(), func.sum(_as_int(col(Result.ok))))
        .where(of_run)
        .group_by(col(Result.lane_index))
        .order_by(col(Result.lane_index))
    ).all()
    stats: list[Stat] = []
    for lane, count, ok in rows:
        scope = f"lane:{lane}"
        stats += [
            (scope, "results", float(count)),
            (scope, "results_ok", float(ok)),
            (scope, "results_failed", float(count - ok)),
            (scope, "success_rate", ratio(ok, count)),
        ]
    return stats


def _per_worker(session: Session, of_run: ColumnElement[bool]) -> list[Stat]:
    """The block per worker: processed, successes, errors, rate, mean time."""
    rows = session.execute(
        select(
            col(Result.worker),
            func.count(),
            func.sum(_as_int(col(Result.ok))),
            func.avg(Result.latency_s),
        )
        .where(of_run, col(Result.worker).is_not(None))
        .group_by(col(Result.worker))
        .order_by(col(Result.worker))
    ).all()
    stats: list[Stat] = []
    for worker, count, ok, mean in rows:
        scope = f"worker:{worker}"
        stats += [
            (scope, "processed", float(count)),
            (scope, "successes", float(ok)),
            (scope, "errors", float(count - ok)),
            (scope, "success_rate", ratio(ok, count)),
            (scope, "avg_inference_time_s", float(mean or 0.0)),
        ]
    return stats


def _latency(session: Session, where: ColumnElement[bool]) -> tuple[float, float, float] | None:
    """Mean, p50 and p95 latency of the rows ``where`` selects; None when there are none."""
    count, mean = session.execute(
        select(func.count(col(Result.latency_s)), func.avg(Result.latency_s)).where(
            where, col(Result.latency_s).is_not(None)
        )
    ).one()
    if not count:
        return None

    def at(quantile: float) -> float:
        value = session.execute(
            select(col(Result.latency_s))
            .where(where, col(Result.latency_s).is_not(None))
            .order_by(col(Result.latency_s))
            .offset(nearest_rank_offset(count, quantile))
            .limit(1)
        ).scalar_one()
        return float(value)

    return float(mean), at(0.5), at(0.95)


def _as_int(flag: Any) -> ColumnElement[int]:
    """A boolean column as 0/1, for SUM on PostgreSQL as on SQLite."""
    return cast(flag, Integer)


def nest(stats: list[Stat]) -> dict[str, Figures]:
    """Stats as ``{scope: {metric: value}}`` for JSON output.

    Counts are integers (a RunStat stores every figure as a float); ``correct`` is a
    count unless the run aggregates by ``mean``, where it is a sum of scores. The
    latency figures of an ``overall`` block without one successful answer are null.
    """
    nested: dict[str, Figures] = {}
    for scope, metric, value in stats:
        figures = nested.setdefault(scope, {})
        figures[metric] = int(value) if metric in COUNT_METRICS and value.is_integer() else value
    overall = nested.get("overall")
    if overall is not None and "results" in overall:
        for metric in LATENCY_METRICS:
            overall.setdefault(metric, None)
    return nested
