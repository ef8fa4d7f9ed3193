"""The report of a run of 200,000 echo results is built, and stays small.

``bench.report`` fills the run through the store's own writes and measures the time
and memory (``python -m bench.report``); this test asserts only that the report is
written and that its size does not grow with the results (no wall-clock assertion).
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import pytest

from bench.report import build
from common.db import make_engine
from producer.report import write_report

#: Most bytes the report of any run may take: it holds aggregates, never rows.
MAX_REPORT_BYTES = 512 * 1024


@pytest.mark.timeout(3600)
def test_report_of_200_000_results_is_bounded(tmp_path: Path) -> None:
    db = make_engine(f"sqlite:///{tmp_path / 'big.db'}")
    run_id = build(db, tmp_path, items=100_000, lanes=2, workers=4)
    path = write_report(db, run_id, tmp_path / "report.html")
    db.dispose()
    page = path.read_text()
    results = escape(json.dumps(["statistics", "overall", "results"]))
    assert f"data-summary='{results}' data-value='200000'" in page
    assert 'data-partial="false"' in page
    assert path.stat().st_size < MAX_REPORT_BYTES
