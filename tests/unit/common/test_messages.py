"""``common.messages``: task args round-trip through JSON; malformed args are MessageError."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common.errors import MessageError
from common.messages import FinalizeOrder, SliceOrder


@pytest.mark.parametrize(
    "order", [SliceOrder("20261123-101500-3fa9c1", 0), SliceOrder("r", 123_456_789)]
)
def test_slice_order_round_trips_through_json(order: SliceOrder) -> None:
    args = order.to_args()
    assert args == [order.run_id, order.slice_id]
    assert SliceOrder.decode(json.loads(json.dumps(args))) == order


def test_finalize_order_round_trips_through_json() -> None:
    order = FinalizeOrder("20261123-101500-3fa9c1")
    assert order.to_args() == ["20261123-101500-3fa9c1"]
    assert FinalizeOrder.decode(json.loads(json.dumps(order.to_args()))) == order


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["run"],
        ["run", 1, 2],
        [1, "run"],
        ["run", "1"],
        ["run", 1.0],
        ["run", None],
        [None, 1],
        [["run"], 1],
        None,
        42,
    ],
    ids=repr,
)
def test_malformed_slice_order_is_a_message_error(args: Any) -> None:
    with pytest.raises(MessageError, match="bad slice order"):
        SliceOrder.decode(args)


def test_boolean_slice_id_is_a_message_error() -> None:
    with pytest.raises(MessageError):
        SliceOrder.decode(["run", True])


@pytest.mark.parametrize(
    "args", [[], ["a", "b"], [1], [None], [["run"]], [{"run_id": "r"}]], ids=repr
)
def test_malformed_finalize_order_is_a_message_error(args: list[Any]) -> None:
    with pytest.raises(MessageError, match="bad finalize order"):
        FinalizeOrder.decode(args)


def test_orders_are_frozen() -> None:
    order = SliceOrder("r", 1)
    with pytest.raises(AttributeError):
        order.slice_id = 2  # type: ignore[misc]
