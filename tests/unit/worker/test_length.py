"""The length policy and prompt preparation: decided per item, before any batch runs."""

from __future__ import annotations

import pytest

from common.results import ErrorKind
from common.runconfig import Generation, RunConfig
from worker.engines.echo import EchoEngine
from worker.length import apply_length_policy
from worker.prompting import prepare


class SmallEcho(EchoEngine):
    max_context = 10


SHORT = "one two three"
LONG = " ".join(f"w{index}" for index in range(20))


def test_fail_by_default() -> None:
    plan = apply_length_policy(SmallEcho(), [SHORT, LONG], max_new_tokens=2, truncate=None)
    assert plan.prompts == [SHORT, LONG]
    assert list(plan.too_long) == [1]
    assert "20 tokens" in plan.too_long[1]


@pytest.mark.parametrize(
    ("side", "kept"),
    [
        ("left", " ".join(f"w{i}" for i in range(12, 20))),
        ("right", " ".join(f"w{i}" for i in range(8))),
    ],
)
def test_truncate(side: str, kept: str) -> None:
    plan = apply_length_policy(SmallEcho(), [SHORT, LONG], max_new_tokens=2, truncate=side)
    assert plan.prompts == [SHORT, kept]
    assert plan.lengths == [3, 8]
    assert plan.too_long == {}


def test_no_room_at_all_still_fails_per_item() -> None:
    plan = apply_length_policy(SmallEcho(), [SHORT], max_new_tokens=10, truncate="left")
    assert list(plan.too_long) == [0]
    assert "even truncated left" in plan.too_long[0]


def test_bad_side() -> None:
    with pytest.raises(ValueError, match="truncate"):
        apply_length_policy(SmallEcho(), [SHORT], max_new_tokens=1, truncate="middle")


def test_prepare_renders_chat_schema_and_length() -> None:
    config = RunConfig(
        engine="echo",
        models=["echo"],
        generation=Generation(max_new_tokens=2),
        system="Be brief.",
        output_schema={"type": "object"},
    )
    items = [
        ({"messages": [{"role": "user", "content": "Hi"}]}, "user: Hi"),
        ({}, "plain"),
    ]
    prepared = prepare(EchoEngine(), items, config)
    assert prepared.failed == {}
    assert prepared.prompts[0].startswith(
        "system: Be brief.\nuser: Hi\n\nAnswer with a single JSON"
    )
    assert prepared.prompts[0].endswith("assistant:")
    assert prepared.prompts[1].startswith("system: Be brief.\nuser: plain\n\nAnswer with")


def test_prepare_fails_unrenderable_and_too_long_items_alone() -> None:
    class NoTemplate(SmallEcho):
        def render_chat(self, messages: list[dict[str, str]]) -> str:
            raise ValueError("this model's tokenizer has no chat template")

    config = RunConfig(engine="echo", models=["echo"], generation=Generation(max_new_tokens=2))
    items = [({"messages": [{"role": "user", "content": "x"}]}, "x"), ({}, LONG), ({}, SHORT)]
    prepared = prepare(NoTemplate(), items, config)
    assert prepared.failed[0][0] == ErrorKind.invalid_input
    assert prepared.failed[1][0] == ErrorKind.too_long
    assert prepared.runnable == [2]
