"""``fleet export --format csv|parquet``: read back with pandas and pyarrow, the
records equal the JSONL export's, field for field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from common.db import make_engine
from producer import export_tables
from tests.integration.helpers import fleet, fleet_env, run_fleet

#: Inputs whose fields are hard on a table: nested, mixed types, missing in some
#: records, text with commas, quotes and newlines, an int beyond int64, one failure.
RECORDS: list[dict[str, Any]] = [
    {"id": 0, "prompt": "plain", "meta": {"k": [1, 2]}, "mixed": 1, "flag": True},
    {"id": 1, "prompt": 'a "quoted", text\nover two lines', "mixed": "one", "flag": False},
    {"id": 2, "prompt": "POISON", "meta": {"k": []}, "big": 2**70},
    {"id": 3, "prompt": "unicode: été 東京 🚀", "tags": ["x", "y"], "ratio": 1},
    {"id": 4, "prompt": "last", "ratio": 0.5, "mixed": None},
]


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, str], Path, list[dict[str, Any]]]:
    """A finished echo run (two lanes, one failing item), exported as JSONL."""
    tmp_path = tmp_path_factory.mktemp("exported")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    env = fleet_env(tmp_path)
    fleet("run", str(inputs), "--engine", "echo", "--model", "fail_marker=POISON",
          "--model", "echo", env=env, cwd=tmp_path)  # fmt: skip
    fleet("export", "latest", "-o", "results.jsonl", env=env, cwd=tmp_path)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    return env, tmp_path, [json.loads(line) for line in lines]


def columns_of(records: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(name for record in records for name in record))


def test_csv_reads_back_as_the_jsonl_export(
    exported: tuple[dict[str, str], Path, list[dict[str, Any]]],
) -> None:
    env, folder, records = exported
    assert len(records) == 10
    assert sum(not record["success"] for record in records) == 1
    fleet("export", "latest", "--format", "csv", env=env, cwd=folder)  # default results.csv
    table = pd.read_csv(folder / "results.csv", dtype=str, keep_default_na=False)
    assert list(table.columns) == columns_of(records)
    for record, row in zip(records, table.to_dict("records"), strict=True):
        for name, cell in row.items():
            value = record.get(name)
            if value is None:
                assert cell == "", name
            elif isinstance(value, str):
                assert cell == value, name
            else:
                assert json.loads(cell) == value, name
    typed = pd.read_csv(folder / "results.csv")
    assert typed["tokens_out"].tolist() == [record["tokens_out"] for record in records]
    assert typed["success"].tolist() == [record["success"] for record in records]
    assert typed["lane"].tolist() == [record["lane"] for record in records]

    piped = fleet("export", "latest", "-f", "csv", "-o", "-", env=env, cwd=folder)
    assert piped == (folder / "results.csv").read_text()


def test_parquet_reads_back_as_the_jsonl_export(
    exported: tuple[dict[str, str], Path, list[dict[str, Any]]],
) -> None:
    env, folder, records = exported
    fleet("export", "latest", "-f", "parquet", "-o", "out.parquet", env=env, cwd=folder)
    table = pq.read_table(folder / "out.parquet")
    assert table.schema.names == columns_of(records)
    as_json = {
        field.name
        for field in table.schema
        if (field.metadata or {}).get(b"fleet.encoding") == b"json"
    }
    assert as_json == {"meta", "mixed", "big", "tags", "parsed"}
    assert str(table.schema.field("ratio").type) == "double"
    assert str(table.schema.field("flag").type) == "bool"
    assert str(table.schema.field("tokens_in").type) == "int64"
    for record, row in zip(records, table.to_pylist(), strict=True):
        decoded = {
            name: json.loads(value) if name in as_json and value is not None else value
            for name, value in row.items()
        }
        assert decoded == {name: record.get(name) for name in table.schema.names}
    frame = pd.read_parquet(folder / "out.parquet")
    answers = [None if pd.isna(answer) else answer for answer in frame["answer"]]
    assert answers == [record["answer"] for record in records]


def test_parquet_streams_in_row_groups(
    exported: tuple[dict[str, str], Path, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, folder, records = exported
    monkeypatch.setattr(export_tables, "BATCH", 3)
    db = make_engine(f"sqlite:///{folder / '.fleet' / 'fleet.db'}")
    path = folder / "groups.parquet"
    assert export_tables.write_parquet(db, run_ref="latest", path=path) == 10
    db.dispose()
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    assert pq.read_table(path).column("id").to_pylist() == [record["id"] for record in records]


def test_table_exports_never_overwrite_another_kind(
    exported: tuple[dict[str, str], Path, list[dict[str, Any]]],
) -> None:
    env, folder, _ = exported
    before = (folder / "results.jsonl").read_text()
    for kind in ("csv", "parquet"):
        refused = run_fleet("export", "latest", "-f", kind, "-o", "results.jsonl", env=env,
                            cwd=folder)  # fmt: skip
        assert refused.returncode == 2
        assert f"holds something else than a {kind} export" in " ".join(refused.stderr.split())
    assert (folder / "results.jsonl").read_text() == before

    fleet("export", "latest", "-f", "csv", "-o", "again.csv", env=env, cwd=folder)
    fleet("export", "latest", "-f", "csv", "-o", "again.csv", env=env, cwd=folder)  # its own kind
    fleet("export", "latest", "-f", "parquet", "-o", "again.parquet", env=env, cwd=folder)
    fleet("export", "latest", "-f", "parquet", "-o", "again.parquet", env=env, cwd=folder)
    assert run_fleet("export", "latest", "-f", "jsonl", "-o", "again.csv", env=env,
                     cwd=folder).returncode == 2  # fmt: skip

    piped = run_fleet("export", "latest", "-f", "parquet", "-o", "-", env=env, cwd=folder)
    assert piped.returncode == 2
    assert "parquet cannot be written to standard output" in piped.stderr


def test_fleet_report_writes_the_page_and_refuses_another_file(
    exported: tuple[dict[str, str], Path, list[dict[str, Any]]],
) -> None:
    env, folder, _ = exported
    out = fleet("report", "latest", "-o", "page.html", env=env, cwd=folder)
    assert "report: page.html" in out
    page = (folder / "page.html").read_text()
    assert 'data-partial="false"' in page
    assert '<tr data-kind="engine">' in page
    before = (folder / "results.jsonl").read_text()
    refused = run_fleet("report", "latest", "-o", "results.jsonl", env=env, cwd=folder)
    assert refused.returncode == 2
    assert "is not a fleet report; not overwriting it" in " ".join(refused.stderr.split())
    assert (folder / "results.jsonl").read_text() == before
    missing = run_fleet("report", "no-such-run", env=env, cwd=folder)
    assert missing.returncode == 2
    assert "no-such-run" in missing.stderr
