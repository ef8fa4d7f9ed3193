"""Structured output: finding the JSON in an answer and checking it against the schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import ConfigError
from common.prompts import with_schema
from common.results import ErrorKind
from producer.output_schema import (
    check_schema,
    load_json_schema,
    load_pydantic_schema,
    output_schema,
)
from worker.engines import Completion
from worker.inference import Outcome
from worker.structured import (
    InvalidOutput,
    parse_output,
    validate_outcomes,
)

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def test_whole_text() -> None:
    assert parse_output('{"name": "Ada", "age": 36}', SCHEMA) == {"name": "Ada", "age": 36}


def test_fenced_block() -> None:
    text = 'Here it is:\n```json\n{"name": "Ada", "age": 36}\n```\nHope that helps.'
    assert parse_output(text, SCHEMA) == {"name": "Ada", "age": 36}


def test_trailing_and_leading_text() -> None:
    text = 'Sure! {"name": "Ada", "age": 36} is the answer, and {"other": 1} too.'
    assert parse_output(text, SCHEMA) == {"name": "Ada", "age": 36}


def test_braces_and_quotes_inside_strings() -> None:
    text = 'noise {"name": "A {weird} \\"}\\" name", "age": 3} tail }'
    assert parse_output(text, SCHEMA) == {"name": 'A {weird} "}" name', "age": 3}


def test_first_object_that_validates_wins() -> None:
    text = 'First {"name": "x"} then {"name": "Ada", "age": 36}'
    assert parse_output(text, SCHEMA) == {"name": "Ada", "age": 36}


def test_schema_violation_is_named() -> None:
    with pytest.raises(InvalidOutput, match=r"age.*not of type 'integer'"):
        parse_output('{"name": "Ada", "age": "old"}', SCHEMA)


@pytest.mark.parametrize("text", ["", "no json here", '{"name": "Ada", "age": ', "} {"])
def test_no_json(text: str) -> None:
    with pytest.raises(InvalidOutput, match="no JSON object"):
        parse_output(text, SCHEMA)


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=4), st.text(max_size=20))
def test_any_object_is_found_after_any_prose(obj: dict[str, str], prose: str) -> None:
    import json

    prose = prose.replace("{", "").replace("[", "")
    assert parse_output(f"{prose} {json.dumps(obj)} trailing", {"type": "object"}) == obj


def test_prompt_carries_schema() -> None:
    prompt = with_schema("Who?", SCHEMA)
    assert prompt.startswith("Who?")
    assert '"required": ["name", "age"]' in prompt


def outcome(text: str) -> Outcome:
    return Outcome(Completion(text, 1, 1), 0.1, 2)


def test_validate_outcomes_retries_then_fails_keeping_raw_text() -> None:
    asked: list[list[int]] = []
    answers = iter(['{"name": "Ada", "age": 1}', "still not json"])

    def regenerate(positions: list[int]) -> list[Outcome]:
        asked.append(positions)
        return [outcome(next(answers)) for _ in positions]

    first = [outcome('{"name": "Bob", "age": 2}'), outcome("nope"), outcome("nope either")]
    result = validate_outcomes(first, SCHEMA, retries=1, regenerate=regenerate)
    assert asked == [[1, 2]]
    assert result[0].parsed == {"name": "Bob", "age": 2}
    assert result[0].error_kind is None
    assert result[1].parsed == {"name": "Ada", "age": 1}
    assert result[1].error_kind is None
    assert result[2].error_kind == ErrorKind.invalid_output
    assert result[2].completion is not None
    assert result[2].completion.text == "still not json"


def test_no_retry_by_default_and_engine_errors_left_alone() -> None:
    failed = Outcome(None, 0.0, 1, "engine", "boom")

    def regenerate(positions: list[int]) -> list[Outcome]:
        raise AssertionError("no retries were asked for")

    result = validate_outcomes([failed, outcome("x")], SCHEMA, retries=0, regenerate=regenerate)
    assert result[0] == failed
    assert result[1].error_kind == ErrorKind.invalid_output


def test_check_schema_rejects_bad_schema() -> None:
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        check_schema({"type": "no-such-type"})
    with pytest.raises(ValueError, match="must be an object"):
        check_schema([1])


def test_json_schema_file_errors_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"type": "object"}')
    assert load_json_schema(good) == {"type": "object"}
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{\n"type": }')
    with pytest.raises(ConfigError, match=r"bad\.json: line 2: not valid JSON"):
        load_json_schema(bad_json)
    bad_schema = tmp_path / "schema.json"
    bad_schema.write_text('{"type": 12}')
    with pytest.raises(ConfigError, match=r"schema\.json: not a valid JSON Schema"):
        load_json_schema(bad_schema)
    with pytest.raises(ConfigError, match="cannot read"):
        load_json_schema(tmp_path / "missing.json")


def test_pydantic_model_schema() -> None:
    schema = load_pydantic_schema("common.runconfig:Generation")
    assert "max_new_tokens" in schema["properties"]
    for spec, message in [
        ("nocolon", "expected module:Model"),
        ("no_such_module_xyz:Model", "cannot import"),
        ("common.runconfig:Literal", "not a pydantic model"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_pydantic_schema(spec)


def test_both_options_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        output_schema(tmp_path / "x.json", "a:B")
    assert output_schema(None, None) is None
