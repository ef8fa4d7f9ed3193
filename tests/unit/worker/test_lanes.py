"""A lane's prompt and score: the permutation forward on the item, inverse on the answer."""

from __future__ import annotations

from common.models import Item
from common.runconfig import RunConfig
from worker.engines import GenerationParams
from worker.engines.echo import EchoEngine
from worker.lanes import answer_score, lane_prompt

CONFIG = RunConfig(
    engine="echo",
    models=["m"],
    template="{puzzle} guess={guess}",
    scorer="exact",
    reference_field="solution",
)

ITEM = Item(
    run_id="r",
    seq=0,
    custom_id="1",
    line_no=1,
    payload={"id": "1", "puzzle": "12", "guess": "34"},
    prompt="12 guess=34",
    reference="34",
)


def test_identity_lane_uses_the_stored_prompt() -> None:
    assert lane_prompt(CONFIG, "identity", ITEM) == "12 guess=34"


def test_permuted_lane_renders_from_the_permuted_payload() -> None:
    assert lane_prompt(CONFIG, "cyclic-digits@1", ITEM) == "23 guess=45"


def test_score_inverts_the_answer_before_comparing() -> None:
    assert answer_score(CONFIG, "cyclic-digits@1", ITEM, "45") == (1.0, None)  # 45 -> 34
    assert answer_score(CONFIG, "cyclic-digits@1", ITEM, "34") == (0.0, None)  # 34 -> 23
    assert answer_score(CONFIG, "identity", ITEM, "34") == (1.0, None)
    assert answer_score(CONFIG, "identity", ITEM, None) == (0.0, None)  # a failed answer
    unscored = CONFIG.model_copy(update={"scorer": None})
    assert answer_score(unscored, "identity", ITEM, "34") == (None, None)


def test_scripted_echo_answers_from_a_prompt_field() -> None:
    engine = EchoEngine.from_spec("answer_from=guess")
    params = GenerationParams(max_new_tokens=4)
    answers = engine.generate(["12 guess=45 other=1", "no field here"], params)
    assert [completion.text for completion in answers] == ["45", ""]
