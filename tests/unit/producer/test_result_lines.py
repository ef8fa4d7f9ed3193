"""Export lines: the input's fields kept under their own names, the fleet's beside them
or, where the input uses the name, under ``fleet``; the item's ensemble."""

from __future__ import annotations

import pytest

from common.models import Item, Lane, Result
from common.runconfig import RunConfig
from producer.ensemble import ensemble_fields
from producer.result_lines import merged, record


def test_fleet_fields_never_replace_input_fields() -> None:
    payload = {"id": 1, "success": "retrieved", "answer": "gold", "x": 1}
    line = merged(payload, {"id": 1, "answer": "mine", "success": True, "score": 1.0})
    assert {name: line[name] for name in payload} == payload
    assert line["score"] == 1.0
    assert line["fleet"] == {"answer": "mine", "success": True}


def test_the_namespace_moves_aside_for_an_input_field_named_fleet() -> None:
    line = merged({"fleet": "A", "fleet_": "B", "score": 3}, {"score": 0.0})
    assert (line["fleet"], line["fleet_"], line["fleet__"]) == ("A", "B", {"score": 0.0})


def test_replaceable_fields_are_the_fleets_own() -> None:
    line = merged({"answer": "source", "q": 1}, {"answer": "stage"}, replaceable=("answer",))
    assert line == {"answer": "stage", "q": 1}


def test_record_maps_a_permuted_answer_back_and_keeps_an_object_reference() -> None:
    item = Item(
        run_id="r", seq=0, custom_id="1", line_no=1, payload={"id": "1", "choices": ["a", "b"]},
        reference='{"k": [1]}', reference_is_json=True,
    )  # fmt: skip
    result = Result(run_id="r", item_id=1, lane_index=0, ok=True, answer="B", score=0.0)
    line = record(item, "m", 0, result, "shuffle-choices@0")
    assert (line["answer"], line["raw_answer"]) == ("B", "B")  # @0 keeps the order
    assert line["reference"] == {"k": [1]}


CONFIG = RunConfig(models=["m"], scorer="normalized", reference_field="gold")


def answered(*answers: tuple[str | None, float | None]) -> list[tuple[Lane, Result | None]]:
    return [
        (
            Lane(run_id="r", index=index, model="m", permutation="identity"),
            Result(
                run_id="r",
                item_id=1,
                lane_index=index,
                ok=answer is not None,
                answer=answer,
                score=score,
            ),
        )
        for index, (answer, score) in enumerate(answers)
    ]


ITEM = Item(run_id="r", seq=0, custom_id="1", line_no=1, payload={"id": "1"}, reference="Paris")


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [("any", 1.0), ("all", 0.0), ("mean", pytest.approx(2 / 3)), ("majority", 1.0)],
)
def test_ensemble_score_combines_lanes_as_the_statistics_do(
    aggregate: str, expected: object
) -> None:
    config = CONFIG.model_copy(update={"aggregate": aggregate})
    lanes = answered(("Paris", 1.0), ("the paris", 1.0), ("Rome", 0.0))
    assert ensemble_fields(config, ITEM, lanes)["ensemble_score"] == expected


def test_majority_answer_is_the_normalised_text_most_lanes_gave() -> None:
    config = CONFIG.model_copy(update={"aggregate": "majority"})
    voted = ensemble_fields(config, ITEM, answered(("Paris", 1.0), ("the paris", 1.0), ("x", 0)))
    assert voted == {"ensemble_score": 1.0, "ensemble_answer": "paris"}
    split = ensemble_fields(config, ITEM, answered(("a", 0.0), ("b", 0.0), (None, None)))
    assert split == {"ensemble_score": 0.0, "ensemble_answer": None}  # no majority
    assert ensemble_fields(CONFIG, ITEM.model_copy(update={"reference": None}), []) == {}
