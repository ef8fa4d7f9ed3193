"""The per-item aggregation SQL on PostgreSQL: the same hand table as on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.db import make_engine
from tests.unit.common.test_evaluation import EXPECTED_OVERALL, scored_run, statistics


@pytest.mark.parametrize(("aggregate", "correct"), EXPECTED_OVERALL.items())
def test_aggregates_on_postgres(
    tmp_path: Path, postgres_url: str, aggregate: str, correct: float
) -> None:
    db = make_engine(postgres_url)
    try:
        stats = statistics(db, scored_run(db, tmp_path, aggregate))
    finally:
        db.dispose()
    assert stats["overall"] == {"correct": correct, "total": 4.0, "accuracy": correct / 4}
    if aggregate == "any":
        assert stats["batch:0"]["correct"] == 2.0
        assert stats["dataset:ds2"]["correct"] == 1.0
        assert stats["model:m1"]["correct"] == 3.0
