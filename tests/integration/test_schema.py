"""The schema a database gets, made fresh or by an earlier version of the fleet."""

from __future__ import annotations

from sqlalchemy import Column, Engine, Integer, MetaData, event, inspect, text
from sqlmodel import SQLModel

from common.db import create_tables, make_engine, schema_fingerprint

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
        # An earlier version left no mark of this schema.
        connection.execute(text("DELETE FROM schemamark"))
        before = connection.execute(text('SELECT count(*) FROM "result"')).scalar_one()
    assert len(inspect(db).get_foreign_keys("result")) == 3

    create_tables(db)

    schema = inspect(db)
    assert schema.get_foreign_keys("result") == schema.get_foreign_keys("attempt") == []
    with db.begin() as connection:
        assert connection.execute(text('SELECT count(*) FROM "result"')).scalar_one() == before
    db.dispose()


def test_a_database_marked_with_this_schema_is_not_inspected_again(db: Engine) -> None:
    statements: list[str] = []
    url = db.url.render_as_string(hide_password=False)
    again = make_engine(url)  # the fixture's engine made and marked the schema
    event.listen(again, "before_cursor_execute", lambda *args: statements.append(args[2]))
    create_tables(again)
    again.dispose()
    # Whether the mark's table is there, and the mark: no table inspected, none created.
    read = [statement for statement in statements if not statement.startswith("BEGIN")]
    assert len(read) == 2
    assert "FROM schemamark" in read[1]


def copy_of_the_schema() -> MetaData:
    copy = MetaData()
    for table in SQLModel.metadata.sorted_tables:
        table.to_metadata(copy)
    return copy


def test_the_fingerprint_follows_the_declared_schema() -> None:
    assert schema_fingerprint(copy_of_the_schema()) == schema_fingerprint()
    later = copy_of_the_schema()
    later.tables["result"].append_column(Column("added_by_a_later_version", Integer))
    assert schema_fingerprint(later) != schema_fingerprint()
