"""Items of a slice grouped by their own generation settings (``worker.settings_groups``)."""

from __future__ import annotations

from common.models import Item
from common.runconfig import Generation, RunConfig
from worker.engines.echo import EchoEngine
from worker.settings_groups import prepare_groups, settings_groups

CONFIG = RunConfig(engine="echo", models=["echo"], generation=Generation(max_new_tokens=5))


def item(seq: int, params: dict[str, object] | None = None, prompt: str = "a b c") -> Item:
    return Item(
        run_id="r", seq=seq, custom_id=str(seq), line_no=seq + 1, prompt=prompt, params=params
    )


def test_items_of_equal_settings_share_a_group_in_first_seen_order() -> None:
    items = [
        item(0),
        item(1, {"max_new_tokens": 2}),
        item(2),
        item(3, {"max_new_tokens": 2}),
        item(4, {"max_new_tokens": 2, "stop": ["x"]}),
        item(5, {"output_schema": {"type": "object"}}),
    ]
    groups = settings_groups(CONFIG, items)
    assert [group.indexes for group in groups] == [[0, 2], [1, 3], [4], [5]]
    assert groups[0].config is CONFIG
    assert [group.params.max_new_tokens for group in groups] == [5, 2, 2, 5]
    assert groups[2].params.stop == ("x",)
    assert groups[3].params.output_schema == {"type": "object"}
    assert groups[3].config.output_schema == {"type": "object"}


def test_a_run_without_own_settings_is_one_group() -> None:
    (group,) = settings_groups(CONFIG, [item(0), item(1)])
    assert group.indexes == [0, 1]
    assert group.params.max_new_tokens == 5


def test_each_group_is_prepared_under_its_own_max_new_tokens() -> None:
    """The length policy leaves each item room for its own answer (echo: 1,000,000 words)."""
    engine = EchoEngine()
    words = " ".join(["w"] * (engine.max_context - 3))
    items = [item(0, prompt=words), item(1, {"max_new_tokens": 2}, prompt=words)]
    groups = settings_groups(CONFIG, items)
    prepared = prepare_groups(engine, [(i.payload, i.prompt or "") for i in items], groups)
    assert prepared.runnable == [1]
    assert prepared.failed[0][0] == "too_long"
