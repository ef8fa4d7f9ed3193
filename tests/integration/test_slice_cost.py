"""A slice costs the database the same in a run of any size.

The last slice of a 2,000-item run and of a 40,000-item run (every other slice
answered, as near the end of a run) goes through the worker's own pipeline while
each statement is recorded with its plan (``bench.plans``): the same statements,
none reading a run-sized table whole, and on PostgreSQL the same number of rows
visited by each (``EXPLAIN ANALYZE``), with the planner statistics left as the
enqueue left them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from bench.plans import Statement, answer_all_but_last, last_slice_plans, make_run, scans

#: Divides both run sizes, so both last slices hold the same number of items.
SLICE_SIZE = 50


def last_slice(db: Engine, folder: Path, items: int) -> list[Statement]:
    run_id = make_run(db, folder, items, slice_size=SLICE_SIZE)
    slice_id = answer_all_but_last(db, run_id, slice_size=SLICE_SIZE)
    return last_slice_plans(db, run_id, slice_id)


@pytest.mark.timeout(600)
def test_a_slice_costs_the_same_at_2000_and_at_40000_items(db: Engine, tmp_path: Path) -> None:
    small = last_slice(db, tmp_path, 2_000)
    large = last_slice(db, tmp_path, 40_000)

    assert [statement.sql for statement in small] == [statement.sql for statement in large]
    assert scans(large) == []
    assert [statement.rows_visited for statement in small] == [
        statement.rows_visited for statement in large
    ]
    if db.dialect.name == "postgresql":
        # The plans were really measured: the slice's own items were read.
        assert max(statement.rows_visited for statement in large) >= SLICE_SIZE
