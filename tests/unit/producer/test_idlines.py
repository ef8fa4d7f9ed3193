"""The compact table of first lines behaves as a ``dict.setdefault`` of ids."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from producer.idlines import IdLines


def test_a_duplicate_answers_the_line_it_was_first_seen_on() -> None:
    table = IdLines()
    assert table.setdefault("a", 1) == 1
    assert table.setdefault("b", 2) == 2
    assert table.setdefault("a", 7) == 1
    assert "a" in table
    assert "c" not in table
    assert len(table) == 2


def test_ids_survive_the_table_growing_many_times() -> None:
    table = IdLines()
    count = 50_000  # the first table holds 2,048: this grows it five times
    for line in range(1, count + 1):
        assert table.setdefault(f"item-{line}", line) == line
    assert len(table) == count
    assert all(table.setdefault(f"item-{line}", 0) == line for line in range(1, count + 1, 997))
    assert "item-0" not in table


@given(st.lists(st.text(max_size=12), max_size=300))
def test_it_agrees_with_a_dict(ids: list[str]) -> None:
    table, reference = IdLines(), {}
    for line, custom_id in enumerate(ids, start=1):
        assert table.setdefault(custom_id, line) == reference.setdefault(custom_id, line)
    assert len(table) == len(reference)
