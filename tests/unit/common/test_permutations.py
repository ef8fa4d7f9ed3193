"""Permutations: each forward transform and its inverse, by property and by example."""

from __future__ import annotations

import string
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import permutations
from common.errors import ConfigError
from common.permutations import CyclicDigits, ShuffleChoices, expand, parse

digits_text = st.text(alphabet="0123456789 .,abc", max_size=40)
shifts = st.integers(min_value=0, max_value=50)


@given(text=digits_text, shift=shifts)
def test_cyclic_digits_inverse_undoes_the_relabelling(text: str, shift: int) -> None:
    permutation = parse(f"cyclic-digits@{shift}")
    assert isinstance(permutation, CyclicDigits)
    assert permutation.inverse(permutation.relabel(text), {}) == text


@given(text=digits_text, shift=shifts)
def test_cyclic_digits_is_a_bijection_of_1_to_9_and_keeps_the_rest(text: str, shift: int) -> None:
    permutation = parse(f"cyclic-digits@{shift}")
    assert isinstance(permutation, CyclicDigits)
    assert sorted(permutation.relabel("123456789")) == list("123456789")
    relabelled = permutation.relabel(text)
    assert [c for c in relabelled if c not in "123456789"] == [
        c for c in text if c not in "123456789"
    ]


def test_cyclic_digits_by_hand() -> None:
    permutation = parse("cyclic-digits@1")
    payload = {"id": "17", "puzzle": "109", "grid": ["9", {"x": "5"}], "n": 12}
    assert permutation.payload(payload) == {
        "id": "17",  # the id is never relabelled
        "puzzle": "201",  # 0 is a blank and stays
        "grid": ["1", {"x": "6"}],
        "n": 12,  # numbers are not text: kept
    }
    assert permutation.reference("912", payload) == "123"
    assert permutation.inverse("123", payload) == "912"
    assert parse("cyclic-digits@0").payload(payload) == payload
    assert parse("cyclic-digits@9").payload(payload) == payload


choice_lists = st.lists(st.text(max_size=5), min_size=1, max_size=26)


@given(choices=choice_lists, seed=st.integers(0, 1000), item=st.text(max_size=8), data=st.data())
def test_shuffle_choices_remaps_the_reference_and_inverts_answers(
    choices: list[str], seed: int, item: str, data: Any
) -> None:
    permutation = parse(f"shuffle-choices@{seed}")
    payload = {"id": item, "choices": choices}
    shuffled = permutation.payload(payload)["choices"]
    assert sorted(shuffled) == sorted(choices)
    reference = string.ascii_uppercase[data.draw(st.integers(0, len(choices) - 1))]
    moved = permutation.reference(reference, payload)
    # the option the lane's reference points at is the original right option
    assert (
        shuffled[string.ascii_uppercase.index(moved)]
        == choices[string.ascii_uppercase.index(reference)]
    )
    assert permutation.inverse(moved, payload) == reference


def test_shuffle_choices_is_seeded_per_item_and_seed_zero_keeps_the_order() -> None:
    payload = {"id": "q1", "choices": list("abcdefgh")}
    first = parse("shuffle-choices@3").payload(payload)
    assert first == parse("shuffle-choices@3").payload(payload)  # stable
    assert first["choices"] != payload["choices"]
    assert parse("shuffle-choices@0").payload(payload) == payload
    permutation = parse("shuffle-choices@3")
    assert isinstance(permutation, ShuffleChoices)
    order = permutation.order(payload)
    assert permutation.inverse(" (B). ", payload) == "ABCDEFGH"[order[1]]
    assert permutation.inverse("not a letter", payload) == "not a letter"


def test_shuffle_choices_without_a_choices_list_is_an_error() -> None:
    with pytest.raises(ValueError, match="choices"):
        parse("shuffle-choices@1").payload({"id": 1, "prompt": "x"})


@pytest.fixture
def user_module() -> Iterator[str]:
    module = types.ModuleType("fleet_test_perm")

    def reverse(payload: dict[str, Any], seed: int) -> dict[str, Any]:
        return {**payload, "prompt": payload["prompt"][::-1]}

    def reverse_inverse(answer: str, payload: dict[str, Any], seed: int) -> str:
        return answer[::-1]

    module.reverse = reverse  # type: ignore[attr-defined]
    module.reverse_inverse = reverse_inverse  # type: ignore[attr-defined]
    module.not_callable = 3  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module.__name__
    del sys.modules[module.__name__]


def test_user_function_and_its_inverse(user_module: str) -> None:
    permutation = parse(f"{user_module}:reverse@2")
    assert permutation.payload({"id": 1, "prompt": "abc"})["prompt"] == "cba"
    assert permutation.inverse("cba", {}) == "abc"
    assert permutation.reference("R", {}) == "R"  # no _reference function: unchanged


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown permutation 'nope'"),
        ("cyclic-digits@x", "seed after '@'"),
        ("no_such_module_xyz:f", "cannot import no_such_module_xyz"),
    ],
)
def test_bad_permutation_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(spec)


def test_user_spec_naming_no_function(user_module: str) -> None:
    with pytest.raises(ConfigError, match="has no function not_callable"):
        parse(f"{user_module}:not_callable")


def test_expand_multiplies_kinds_by_count() -> None:
    assert expand([], None) == ["identity"]
    assert expand(["identity", "cyclic-digits@2"], None) == ["identity", "cyclic-digits@2"]
    assert expand(["cyclic-digits"], 3) == ["cyclic-digits@0", "cyclic-digits@1", "cyclic-digits@2"]
    assert len(expand(["cyclic-digits", "shuffle-choices"], 2)) == 4
    with pytest.raises(ConfigError, match="needs the kind"):
        expand([], 3)
    with pytest.raises(ConfigError, match="repeat"):
        expand(["identity", "identity"], None)
    assert permutations.IDENTITY == "identity"
