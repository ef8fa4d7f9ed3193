"""``common.prompts`` templates: plain named fields only, literal braces, JSON for non-strings."""

from __future__ import annotations

from typing import Any

import pytest

from common.errors import ConfigError
from common.prompts import Chat, MissingField, build_prompt, render, template_fields
from worker.engines.openai import OpenAIEngine


def test_fields_are_listed_in_order_of_appearance() -> None:
    template = "Context: {context}\nQuestion: {query}\nAnswer about {topic} ({query}):"
    assert template_fields(template) == ["context", "query", "topic", "query"]


def test_literal_braces_are_not_fields() -> None:
    template = 'JSON like {{"a": 1}} for {name}'
    assert template_fields(template) == ["name"]
    assert render(template, ["name"], {"name": "Ada"}) == 'JSON like {"a": 1} for Ada'


def test_braces_inside_values_are_kept_verbatim() -> None:
    assert render("Q: {q}", ["q"], {"q": "{other} {0} {{x}}"}) == "Q: {other} {0} {{x}}"


@pytest.mark.parametrize(
    "template",
    [
        "{record.attr}",  # attribute access
        "{record[0]}",  # index
        "{record[key]}",  # key lookup
        "{value:>10}",  # format spec
        "{value:{width}}",  # nested format spec
        "{value!r}",  # conversion
        "{value!s}",
        "{0}",  # positional
        "{}",  # auto-numbered
        "{ value }",  # not an identifier
    ],
)
def test_non_plain_fields_are_rejected(template: str) -> None:
    with pytest.raises(ConfigError, match="plain field name"):
        template_fields(template)


@pytest.mark.parametrize("template", ["unclosed {field", "stray } brace", "{"])
def test_malformed_template_is_a_config_error(template: str) -> None:
    with pytest.raises(ConfigError, match="template"):
        template_fields(template)


@pytest.mark.parametrize("template", ["", "no fields here", "only {{literal}} braces"])
def test_template_without_fields_is_rejected(template: str) -> None:
    with pytest.raises(ConfigError, match="names no field"):
        template_fields(template)


def test_missing_field_names_the_field() -> None:
    template = "{a} and {b}"
    with pytest.raises(MissingField) as caught:
        render(template, template_fields(template), {"a": "x"})
    assert caught.value.field == "b"
    assert isinstance(caught.value, KeyError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain text", "plain text"),
        ("", ""),
        (3, "3"),
        (2.5, "2.5"),
        (True, "true"),
        (None, "null"),
        (["a", 1], '["a", 1]'),
        ({"k": "v"}, '{"k": "v"}'),
        ({"k": "é"}, '{"k": "é"}'),  # not \u-escaped
        ("déjà", "déjà"),
    ],
)
def test_values_are_rendered_as_is_or_json(value: Any, expected: str) -> None:
    assert render("<{v}>", ["v"], {"v": value}) == f"<{expected}>"


def test_extra_record_fields_are_ignored() -> None:
    assert render("{a}", ["a"], {"a": "1", "b": "2"}) == "1"


def test_a_plain_record_is_a_text_with_the_schema_instruction() -> None:
    prompt = build_prompt({"prompt": "Who?"}, "Who?", system=None, schema={"type": "object"})
    assert isinstance(prompt, str)
    assert prompt.startswith("Who?\n\nAnswer with a single JSON object")


def test_messages_or_a_system_prompt_make_a_conversation() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    chat = build_prompt({"messages": messages}, "", system="Be brief.", schema={"type": "object"})
    assert isinstance(chat, Chat)
    assert [m["role"] for m in chat.messages] == ["system", "user"]
    assert chat.messages[1]["content"].startswith("Hi\n\nAnswer with a single JSON object")
    assert build_prompt({"prompt": "Q"}, "Q", system="S", schema=None) == Chat(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    )


def test_the_openai_engine_sends_a_conversation_as_messages_not_text() -> None:
    engine = OpenAIEngine("m", base_url="http://127.0.0.1:1/v1")
    messages = [{"role": "user", "content": "Q"}]
    assert engine.render_chat(messages) == Chat(messages)
    engine.close()
