"""The schema a database gets, made fresh or by an earlier version of the fleet."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from common.db import create_tables, make_engine

#: What an earlier version declared on the two tables a slice writes per item.
EARLIER_REFERENCES = (("run_id", "run"), ("item_id", "item"), ("slice_id", "slice"))


def test_rows_written_per_item_carry_no_reference_checks(db: Engine) -> None:
    schema = inspect(db)
    assert schema.get_foreign_keys("result") == []
    assert schema.get_foreign_keys("attempt") == []
    # The tables written once per run or per slice keep theirs.
    assert [key["referred_table"] for key in schema.get_foreign_keys("lane")] == ["run"]
    assert [key["referred_table"] for key in schema.get_foreign_keys("receipt")] == ["slice"]


def test_an_earlier_postgres_database_loses_the_checks_and_keeps_its_rows(
    postgres_url: str,
) -> None:
    db = make_engine(postgres_url)
    with db.begin() as connection:
        for table in ("result", "attempt"):
            for column, target in EARLIER_REFERENCES:
                connection.execute(
                    text(
                        f'ALTER TABLE "{table}" ADD CONSTRAINT "{table}_{column}_fkey" '
                        f'FOREIGN KEY ("{column}") REFERENCES "{target}" (id) NOT VALID'
                    )
                )
        before = connection.execute(text('SELECT count(*) FROM "result"')).scalar_one()
    assert len(inspect(db).get_foreign_keys("result")) == 3

    create_tables(db)

    schema = inspect(db)
    assert schema.get_foreign_keys("result") == schema.get_foreign_keys("attempt") == []
    with db.begin() as connection:
        assert connection.execute(text('SELECT count(*) FROM "result"')).scalar_one() == before
    db.dispose()
