"""``worker.engines.echo.EchoEngine``: options from the model string, answers from the prompt."""

from __future__ import annotations

import time

import pytest

from common.errors import ConfigError
from common.settings import Settings
from worker.engines import GenerationParams, load_engine
from worker.engines.echo import ECHO_CONTEXT, EchoEngine, PoisonItem


@pytest.mark.parametrize("spec", ["", "echo", " echo ", ",", "echo,"])
def test_empty_spec_means_no_options(spec: str) -> None:
    assert EchoEngine.from_spec(spec) == EchoEngine(delay_s=0.0, fail_marker=None)


@pytest.mark.parametrize(
    ("spec", "delay", "marker"),
    [
        ("delay=0.05", 0.05, None),
        ("delay=0", 0.0, None),
        ("delay=2", 2.0, None),
        ("fail_marker=POISON", 0.0, "POISON"),
        ("delay=0.05,fail_marker=POISON", 0.05, "POISON"),
        (" fail_marker=BAD , delay=1e-3 ", 0.001, "BAD"),
        ("echo,delay=0.5", 0.5, None),
        ("fail_marker=a=b", 0.0, "a=b"),  # only the first '=' separates
    ],
)
def test_from_spec_parses_options(spec: str, delay: float, marker: str | None) -> None:
    engine = EchoEngine.from_spec(spec)
    assert engine.delay_s == pytest.approx(delay)
    assert engine.fail_marker == marker


@pytest.mark.parametrize("spec", ["speed=2", "delay", "fail_marker", "gpt2", "delay=0,color=red"])
def test_unknown_option_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        EchoEngine.from_spec(spec)


@pytest.mark.parametrize("spec", ["delay=abc", "delay=", "delay=1s", "delay=0.1.2"])
def test_non_numeric_delay_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="delay must be a number"):
        EchoEngine.from_spec(spec)


@pytest.mark.parametrize("spec", ["delay=-1", "delay=nan", "delay=inf"])
def test_negative_or_non_finite_delay_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError):
        EchoEngine.from_spec(spec)


def test_load_engine_builds_echo_from_the_model_string() -> None:
    engine = load_engine("echo", "delay=0,fail_marker=X", settings=Settings())
    assert isinstance(engine, EchoEngine)
    assert (engine.name, engine.max_context, engine.fail_marker) == ("echo", ECHO_CONTEXT, "X")


def test_load_engine_rejects_unknown_engine() -> None:
    with pytest.raises(ConfigError, match="unknown engine 'vllm'"):
        load_engine("vllm", "x", settings=Settings())


def test_answer_is_the_last_max_new_tokens_words() -> None:
    engine = EchoEngine()
    prompts = ["one two three four five", "  spaced\tout \n words  ", "short", ""]
    completions = engine.generate(prompts, GenerationParams(max_new_tokens=3))
    assert [completion.text for completion in completions] == [
        "three four five",
        "spaced out words",
        "short",
        "",
    ]
    assert [(c.tokens_in, c.tokens_out) for c in completions] == [(5, 3), (3, 3), (1, 1), (0, 0)]


def test_token_counts_are_whitespace_words() -> None:
    engine = EchoEngine()
    assert engine.count_tokens(["a b c", "", "  x  ", "déjà vu\n¿qué?"]) == [3, 0, 1, 3]


def test_fail_marker_fails_the_whole_batch() -> None:
    engine = EchoEngine(fail_marker="POISON")
    params = GenerationParams(max_new_tokens=1)
    assert [c.text for c in engine.generate(["a b", "c d"], params)] == ["b", "d"]
    with pytest.raises(PoisonItem, match="'POISON'"):
        engine.generate(["a b", "c POISONED d", "e f"], params)


def test_empty_fail_marker_fails_nothing() -> None:
    engine = EchoEngine.from_spec("fail_marker=")
    assert [c.text for c in engine.generate(["a b"], GenerationParams(max_new_tokens=1))] == ["b"]


def test_delay_is_slept_once_per_batch() -> None:
    engine = EchoEngine(delay_s=0.05)
    started = time.perf_counter()
    engine.generate(["a"] * 20, GenerationParams())
    elapsed = time.perf_counter() - started
    assert 0.05 <= elapsed < 0.9  # one sleep per prompt would take 1 s
