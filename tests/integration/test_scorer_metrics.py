"""A scorer of several metrics, and a reference that is a JSON object, through `fleet run`
on SQLite and PostgreSQL: each metric its own statistic per scope, recounted from the file."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

import pyarrow.parquet as pq
import pytest

from tests.integration.helpers import fleet, fleet_env

#: A user scorer: precision, recall and F1 of the answer's ``|``-separated keys against
#: the reference's ``keys``. It refuses a reference that is not an object.
SCORER = """
def overlap(answer, reference):
    if not isinstance(reference, dict):
        raise TypeError(f"reference is {type(reference).__name__}, not an object")
    expected = set(reference["keys"])
    found = set(answer.split("|"))
    common = len(expected & found)
    precision = common / len(found)
    recall = common / len(expected)
    f1 = 2 * precision * recall / (precision + recall) if common else 0.0
    return {"f1": f1, "precision": precision, "recall": recall}
"""

#: (id, expected keys, answer of checkpoint a, answer of checkpoint b)
SPANS = [
    ("s1", ["x", "y"], "x|y", "x|y|z"),
    ("s2", ["x", "y"], "x", "x|y|z"),
    ("s3", ["z"], "w", "x|y|z"),
]

METRICS = ("f1", "precision", "recall")


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_each_metric_is_a_statistic_per_scope(
    tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    (tmp_path / "span_scorer.py").write_text(SCORER)
    inputs = tmp_path / "spans.jsonl"
    inputs.write_text(
        "".join(
            json.dumps({"id": key, "expected": {"keys": keys}, "a": a, "b": b}) + "\n"
            for key, keys, a, b in SPANS
        )
    )
    settings = {}
    if database == "postgresql":
        settings["database_url"] = request.getfixturevalue("postgres_url")
    env = {**fleet_env(tmp_path, **settings), "PYTHONPATH": str(tmp_path)}
    out = tmp_path / "out"
    shown = fleet(
        "run", str(inputs), "--engine", "echo", "-m", "answer_from=a", "-m", "answer_from=b",
        "--template", "a={a} b={b}", "--reference-field", "expected",
        "--scorer", "span_scorer:overlap", "-o", str(out), env=env, cwd=tmp_path,
    )  # fmt: skip
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 6
    for line in lines:
        assert line["reference"] == line["expected"]  # an object, not its JSON text
        assert isinstance(line["reference"], dict)
        assert set(line["metrics"]) == set(METRICS)
        assert line["score"] == line["metrics"]["f1"]  # no "score" metric: the first one
    summary = json.loads((out / "summary.json").read_text())
    printed = summary["overall_results"]["metrics"]["f1"]
    assert f"f1={printed:.4g}" in shown  # fleet run prints each metric's mean
    lanes = {lane["index"]: lane for lane in summary["lane_results"]}
    for index in (0, 1):
        mine = [line for line in lines if line["lane"] == index]
        for name in METRICS:
            figure = lanes[index]["metrics"][name]
            assert figure == pytest.approx(mean(line["metrics"][name] for line in mine))
    assert lanes[0]["metrics"]["recall"] == pytest.approx((1 + 0.5 + 0) / 3)
    statistics = summary["statistics"]
    for name in METRICS:  # the ensemble (--aggregate any): each item's best lane, per metric
        best = [
            max(line["metrics"][name] for line in lines if line["id"] == key) for key, *_ in SPANS
        ]
        assert statistics["overall"][f"{name}_sum"] == pytest.approx(sum(best))
        assert summary["overall_results"]["metrics"][name] == pytest.approx(mean(best))
        model = summary["model_results"]["answer_from=b"]["metrics"][name]
        assert model == pytest.approx(lanes[1]["metrics"][name])
        assert statistics["dataset:default"][f"{name}_mean"] == pytest.approx(mean(best))
        assert statistics["permutation:identity"][f"{name}_mean"] == pytest.approx(mean(best))

    # Parquet: the object reference and the metrics as JSON text, the score a float.
    table = tmp_path / "spans.parquet"
    fleet("export", "latest", "--format", "parquet", "-o", str(table), env=env, cwd=tmp_path)
    rows = pq.read_table(table).to_pylist()
    assert [json.loads(row["reference"]) for row in rows] == [line["reference"] for line in lines]
    assert [json.loads(row["metrics"]) for row in rows] == [line["metrics"] for line in lines]
    assert [row["score"] for row in rows] == [line["score"] for line in lines]
