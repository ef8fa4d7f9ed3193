"""Export of an evaluation run: record fields and the summary's shape."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from common.models import Item, Result
from producer.export import record, summary
from tests.unit.common.test_evaluation import scored_run


def item(**changes: object) -> Item:
    fields: dict[str, object] = {
        "run_id": "r",
        "seq": 0,
        "custom_id": "1",
        "line_no": 1,
        "payload": {"id": "1", "reference": "mine", "dataset": "gsm8k"},
        **changes,
    }
    return Item.model_validate(fields)


def test_record_keeps_input_fields_that_defaults_would_hide() -> None:
    plain = record(item(), "m", 0, None)
    assert (plain["reference"], plain["dataset"]) == ("mine", "gsm8k")
    scored = record(
        item(reference="42", dataset="math"),
        "m",
        1,
        Result(run_id="r", item_id=1, lane_index=1, ok=True, answer="42", score=1.0),
        "cyclic-digits@1",
    )
    # The input's own reference and dataset stay; the fleet's go under "fleet".
    assert (scored["reference"], scored["dataset"]) == ("mine", "gsm8k")
    assert scored["fleet"] == {"reference": "42", "dataset": "math"}
    assert scored["score"] == 1.0
    assert scored["permutation"] == "cyclic-digits@1"
    # The lane's answer mapped back to the item's own digits, and as generated.
    assert (scored["answer"], scored["raw_answer"]) == ("31", "42")


def test_summary_has_seed_000_shape(db: Engine, tmp_path: Path) -> None:
    document = summary(db, run_ref=scored_run(db, tmp_path, "any"))
    assert {"config", "batch_results", "overall_results"} <= set(document)
    overall = document["overall_results"]
    assert set(overall) == {"correct", "total", "accuracy", "aggregate", "elapsed_time", "end_time"}
    assert (overall["correct"], overall["total"], overall["accuracy"]) == (3.0, 4, 0.75)
    assert [set(batch) for batch in document["batch_results"]] == [
        {"batch_idx", "correct", "total", "accuracy", "time_seconds"}
    ] * 2
    assert [lane["correct"] for lane in document["lane_results"]] == [3.0, 2.0, 1.0, 1.0]
    assert document["dataset_results"]["ds2"] == {
        "correct": 1.0, "total": 2, "accuracy": 0.5, "items": 2, "rejected_items": 0
    }  # fmt: skip
    assert set(document["model_results"]) == {"m1", "m2"}
    assert set(document["permutation_results"]) == {"identity", "cyclic-digits@1"}
