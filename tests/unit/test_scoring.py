"""Scorers: each built-in on right, wrong and unreadable answers; bad specs."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from common.errors import ConfigError
from common.scoring import parse


@pytest.mark.parametrize(
    ("spec", "answer", "reference", "score"),
    [
        ("exact", " Paris\n", "Paris", 1.0),
        ("exact", "paris", "Paris", 0.0),
        ("normalized", "The  Paris!", "paris", 1.0),
        ("normalized", "Paris, France", "paris", 0.0),
        ("contains", "It is Paris, France.", "paris", 1.0),
        ("contains", "London", "Paris", 0.0),
        ("regex:answer: (\\w+)", "so the answer: B because", "B", 1.0),
        ("regex:answer: (\\w+)", "so the answer: C", "B", 0.0),
        ("regex:answer: (\\w+)", "no match here", "B", 0.0),
        ("regex:[A-D]", "x C y", "C", 1.0),
        ("numeric", "The total is 1,234.50 dollars", "1234.5", 1.0),
        ("numeric", "about 12", "13", 0.0),
        ("numeric", "no number", "13", 0.0),
        ("numeric", "-3e2", "-300", 1.0),
        ("json-field:result.value", '{"result": {"value": "42"}}', "42", 1.0),
        ("json-field:result.value", '{"result": {"value": 42}}', "42", 1.0),
        ("json-field:items.1", '{"items": ["a", "b"]}', "b", 1.0),
        ("json-field:items.5", '{"items": ["a", "b"]}', "b", 0.0),
        ("json-field:result", "not json", "42", 0.0),
        ("json-field:result", '{"other": 1}', "42", 0.0),
    ],
)
def test_builtin_scorers(spec: str, answer: str, reference: str, score: float) -> None:
    assert parse(spec)(answer, reference) == score


@pytest.fixture
def user_scorer() -> Iterator[str]:
    module = types.ModuleType("fleet_test_scorer")
    module.length_ratio = lambda answer, reference: (
        min(len(answer), len(reference))
        / max(  # type: ignore[attr-defined]
            len(answer), len(reference), 1
        )
    )
    module.too_big = lambda answer, reference: 2.0  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module.__name__
    del sys.modules[module.__name__]


def test_user_scorer(user_scorer: str) -> None:
    assert parse(f"{user_scorer}:length_ratio")("ab", "abcd") == 0.5
    with pytest.raises(ValueError, match="outside"):
        parse(f"{user_scorer}:too_big")("a", "b")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("exactly", "unknown scorer 'exactly'"),
        ("regex:(", "bad regular expression"),
        ("json-field:", "give a path"),
        ("json-field:a..b", "give a path"),
        ("no_such_module_xyz:f", "cannot import"),
    ],
)
def test_bad_scorer_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(spec)
