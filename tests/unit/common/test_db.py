"""A database made by an earlier version gets the columns and indexes it lacks."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from common.db import make_engine


def test_missing_counter_columns_and_indexes_are_added_with_zero(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        for column in ("results_ok", "results_failed", "slices_done"):
            connection.execute(text(f"ALTER TABLE run DROP COLUMN {column}"))
        connection.execute(
            text(
                "INSERT INTO run (id, status, input_path, engine, queue, config, item_count, "
                "rejected_count, lane_count, slice_count, finalize_count, created_at) VALUES "
                "('old', 'completed', 'in.jsonl', 'echo', 'fleet', '{}', 3, 0, 1, 1, 1, "
                "'2026-01-01 00:00:00')"
            )
        )
        connection.execute(text("DROP INDEX ix_result_slice"))
        # An earlier version left no mark of this schema.
        connection.execute(text("DELETE FROM schemamark"))
    engine.dispose()

    upgraded = make_engine(url)
    columns = {column["name"] for column in inspect(upgraded).get_columns("run")}
    indexes = {index["name"] for index in inspect(upgraded).get_indexes("result")}
    with upgraded.connect() as connection:
        row = connection.execute(
            text("SELECT results_ok, results_failed, slices_done FROM run WHERE id = 'old'")
        ).one()
    upgraded.dispose()
    assert {"results_ok", "results_failed", "slices_done"} <= columns
    assert "ix_result_slice" in indexes
    assert tuple(row) == (0, 0, 0)
