"""What a report shows, read from SQL in one session: the summary and the aggregates.

The headline figures are the summary's own (``producer.export.summary``, what
``summary.json`` holds), so the page and the file can never disagree; the charts
and tables come from ``common.report_queries``, each one aggregated or LIMITed in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import col

from common import report_queries as q
from common.db import session_scope
from common.models import Result, utcnow
from common.queries import resolve_run
from producer.export import summary


@dataclass(frozen=True)
class ReportContent:
    run_id: str
    #: ``producer.export.summary``: run, config, lanes, statistics, evaluation blocks.
    summary: dict[str, Any]
    throughput: q.Throughput
    latency: list[q.Bucket]
    tokens_in: list[q.Bucket]
    tokens_out: list[q.Bucket]
    workers: list[q.WorkerFigures]
    failures: list[q.FailureKind]
    slowest: list[q.ItemRow]
    failed: list[q.ItemRow]
    #: When the figures were read: the moment a partial report stands for.
    read_at: datetime

    @property
    def overall(self) -> dict[str, Any]:
        return dict(self.summary["statistics"].get("overall", {}))

    @property
    def final(self) -> bool:
        """The run is completed: its figures will not change."""
        return bool(self.summary["run"]["statistics_final"])

    @property
    def scored(self) -> bool:
        return self.summary["config"].get("scorer") is not None


def gather(db: Engine, *, run_ref: str) -> ReportContent:
    """Everything the page shows, for the run ``run_ref`` names (an id or ``latest``)."""
    with session_scope(db) as session:
        run_id = resolve_run(session, run_ref).id
    document = summary(db, run_ref=run_id)
    with session_scope(db) as session:
        return ReportContent(
            run_id=run_id,
            summary=document,
            throughput=q.throughput(session, run_id=run_id),
            latency=q.histogram(
                session, run_id=run_id, column=col(Result.latency_s), integral=False
            ),
            tokens_in=q.histogram(
                session, run_id=run_id, column=col(Result.tokens_in), integral=True
            ),
            tokens_out=q.histogram(
                session, run_id=run_id, column=col(Result.tokens_out), integral=True
            ),
            workers=q.workers(session, run_id=run_id),
            failures=q.failures(session, run_id=run_id),
            slowest=q.slowest(session, run_id=run_id),
            failed=q.failed_items(session, run_id=run_id),
            read_at=utcnow(),
        )
