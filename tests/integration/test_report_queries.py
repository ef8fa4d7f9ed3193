"""The report's SQL aggregates against a recount in Python, on SQLite and PostgreSQL,
and the report of a run still going (partial) or not started."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from common import report_queries as q
from common.db import session_scope
from common.errors import ConfigError
from common.models import Item, Result, Slice
from common.results import ErrorKind, ResultRow
from common.runconfig import RunConfig
from common.store import claim_slice, finish_slice, save_results
from producer.enqueue import create_run
from producer.report import write_report

#: (latency, tokens in, tokens out) of item n; items 3 and 8 fail in lane 1.
ITEMS = 12
FAILING = {3: ErrorKind.engine, 8: ErrorKind.too_long}


def figures(n: int) -> tuple[float, int, int]:
    return 0.05 * (n % 5) + 0.01, 10 + 7 * n, 1 + n % 4


def stored_run(db: Engine, tmp_path: Path, *, finish_all: bool) -> str:
    """Two lanes of 12 items in slices of 4; workers w0/w1 by slice; the last slice open
    unless ``finish_all``."""
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"i{n}", "prompt": f"p {n}"}) + "\n"
                              for n in range(ITEMS)))  # fmt: skip
    config = RunConfig(engine="echo", models=["a", "b"], slice_size=4)
    run_id = create_run(db, input_path=source, config=config, queue="q").run_id
    with session_scope(db) as session:
        ids = list(session.exec(select(Item.id).where(Item.run_id == run_id).order_by(Item.seq)))
        slices = list(
            session.exec(select(Slice).where(Slice.run_id == run_id).order_by(col(Slice.id)))
        )
    for number, piece in enumerate(slices):
        if not finish_all and number == len(slices) - 1:
            break
        worker = f"w{number % 2}"
        with session_scope(db) as session:
            claim_slice(session, run_id=run_id, slice_id=piece.id or 0, worker=worker)
        rows = []
        for seq in range(piece.seq_start, piece.seq_end):
            latency, tokens_in, tokens_out = figures(seq)
            kind = FAILING.get(seq) if piece.lane_index == 1 else None
            rows.append(
                ResultRow(
                    run_id=run_id, item_id=ids[seq] or 0, lane_index=piece.lane_index,
                    slice_id=piece.id, worker=worker, ok=kind is None, latency_s=latency,
                    tokens_in=tokens_in, tokens_out=0 if kind else tokens_out,
                    error_kind=kind, error_message=f"{kind} {seq}" if kind else None,
                )
            )  # fmt: skip
        with session_scope(db) as session:
            save_results(session, rows=rows)
            finish_slice(session, run_id=run_id, slice_id=piece.id or 0)
    return run_id


def test_aggregates_equal_a_recount(db: Engine, tmp_path: Path) -> None:
    run_id = stored_run(db, tmp_path, finish_all=True)
    with session_scope(db) as session:
        rows = list(session.exec(select(Result).where(Result.run_id == run_id)))
        ok = [row for row in rows if row.ok]

        latency = q.histogram(session, run_id=run_id, column=col(Result.latency_s), integral=False)
        assert sum(bucket.count for bucket in latency) == len(ok) == 22
        for bucket in latency:
            last = bucket is latency[-1]
            inside = [
                row for row in ok
                if bucket.low - 1e-9 <= row.latency_s < bucket.high - 1e-9
                or (last and math.isclose(row.latency_s, bucket.high))
            ]  # fmt: skip
            assert bucket.count == len(inside), bucket

        tokens = q.histogram(session, run_id=run_id, column=col(Result.tokens_in), integral=True)
        assert sum(bucket.count for bucket in tokens) == len(ok)
        for bucket in tokens:
            assert bucket.high - bucket.low == int(bucket.high - bucket.low) >= 1
            assert bucket.count == sum(bucket.low <= row.tokens_in < bucket.high for row in ok)

        flow = q.throughput(session, run_id=run_id)
        assert set(flow.per_worker) == {"w0", "w1"}
        for worker, counts in flow.per_worker.items():
            assert len(counts) == flow.intervals
            assert sum(counts) == sum(row.worker == worker for row in rows)

        workers = {figures.name: figures for figures in q.workers(session, run_id=run_id)}
        for name in ("w0", "w1"):
            mine = [row for row in rows if row.worker == name]
            assert workers[name].results == len(mine)
            assert workers[name].failed == sum(not row.ok for row in mine)
            assert workers[name].slices == 3
            assert workers[name].busy_s >= 0.0

        kinds = q.failures(session, run_id=run_id)
        assert sorted((kind.kind, kind.count) for kind in kinds) == [("engine", 1), ("too_long", 1)]
        engine = next(kind for kind in kinds if kind.kind == "engine")
        assert engine.examples == [("i3", 1, "engine 3")]

        slowest = q.slowest(session, run_id=run_id, limit=3)
        assert [row.latency_s for row in slowest] == sorted(
            (row.latency_s for row in ok), reverse=True
        )[:3]
        assert [(row.item, row.error_kind) for row in q.failed_items(session, run_id=run_id)] == [
            ("i3", "engine"),
            ("i8", "too_long"),
        ]


def test_a_running_run_gets_a_partial_report(db: Engine, tmp_path: Path) -> None:
    run_id = stored_run(db, tmp_path, finish_all=False)
    page = write_report(db, run_id, tmp_path / "report.html").read_text()
    assert 'data-partial="true"' in page
    assert "4 of 24 results still owed" in page
    assert 'data-chart="throughput"' in page


def test_a_run_without_results_gets_a_report(db: Engine, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "p"}\n')
    run_id = create_run(
        db, input_path=source, config=RunConfig(engine="echo", models=["a"]), queue="q"
    ).run_id
    page = write_report(db, run_id, tmp_path / "report.html").read_text()
    assert "1 of 1 results still owed" in page
    assert "No results yet." in page
    assert "<svg" not in page


def test_only_a_report_is_overwritten(db: Engine, tmp_path: Path) -> None:
    run_id = stored_run(db, tmp_path, finish_all=True)
    precious = tmp_path / "notes.html"
    precious.write_text("<html>my notes</html>")
    with pytest.raises(ConfigError, match=r"notes\.html is not a fleet report; not overwriting"):
        write_report(db, run_id, precious)
    assert precious.read_text() == "<html>my notes</html>"
    path = write_report(db, run_id, tmp_path / "report.html")
    assert write_report(db, run_id, path) == path
    # Every result is in, but finalize has not run: still partial, owing nothing.
    assert "0 of 24 results still owed" in path.read_text()


def test_the_python_api_writes_the_same_report(db: Engine, tmp_path: Path) -> None:
    import fleet
    from common.settings import Settings

    run_id = stored_run(db, tmp_path, finish_all=True)
    settings = Settings(database_url=db.url.render_as_string(hide_password=False))
    path = fleet.Run(run_id, settings=settings).report(tmp_path / "api.html")
    assert path == tmp_path / "api.html"
    page = path.read_text()
    assert f"<title>fleet report {run_id}</title>" in page
    assert "0 of 24 results still owed" in page
