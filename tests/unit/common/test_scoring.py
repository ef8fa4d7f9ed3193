"""Scorers: each built-in on right, wrong and unreadable answers; bad specs."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from common.errors import ConfigError
from common.scoring import canonical, parse, split


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


def test_a_user_scorer_gets_an_object_reference_and_may_return_metrics(user_scorer: str) -> None:
    module = sys.modules[user_scorer]
    module.keys = lambda answer, reference: {  # type: ignore[attr-defined]
        "recall": float(answer in reference["keys"]),
        "f1": 0.5,
    }
    verdict = parse(f"{user_scorer}:keys")("x", {"keys": ["x", "y"]})
    assert verdict == {"recall": 1.0, "f1": 0.5}
    assert split(verdict) == (1.0, verdict)  # no "score" metric: the first one
    assert split({"f1": 0.5, "score": 0.25}) == (0.25, {"f1": 0.5, "score": 0.25})
    assert split(0.75) == (0.75, None)


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ({}, "empty dict"),
        ({"f1": 1.5}, "metric 'f1' 1.5 is outside"),
        ({"f1": "high"}, "metric 'f1' must be a number"),
        ({"has space": 1.0}, "metric name 'has space'"),
        ({3: 1.0}, "metric name 3"),
    ],
)
def test_bad_metrics_are_refused(user_scorer: str, returned: object, message: str) -> None:
    module = sys.modules[user_scorer]
    module.bad = lambda answer, reference: returned  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=message):
        parse(f"{user_scorer}:bad")("a", "b")


def test_builtins_compare_an_object_reference_as_its_json_text() -> None:
    assert parse("exact")('{"a": 1}', {"a": 1}) == 1.0
    assert parse("json-field:x")('{"x": [1, 2]}', [1, 2]) == 1.0


@pytest.mark.parametrize(
    ("spec", "answer", "form"),
    [
        ("exact", "  Paris \n", "Paris"),
        ("normalized", "The Paris!", "paris"),
        ("contains", "It is Paris.", "it is paris"),
        ("numeric", "about 1,234.50 km", "1234.5"),
        ("numeric", "none", None),
        ("regex:answer: (\\w+)", "so answer: B.", "B"),
        ("regex:answer: (\\w+)", "nothing", None),
        ("json-field:a.0", '{"a": [" x "]}', "x"),
        ("json-field:a", "not json", None),
    ],
)
def test_canonical_is_what_the_scorer_compares(spec: str, answer: str, form: str | None) -> None:
    assert canonical(spec)(answer) == form
