"""``fleet run``'s start-up plan (the model its workers preload), and how it hears a stop."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.runconfig import RunConfig
from producer.runner import RunInterrupted, interruptible, preload_env, stop_signals


def lines(path: Path, count: int, *, last_newline: bool = True) -> Path:
    text = "".join(f'{{"id": "{index}", "prompt": "p"}}\n' for index in range(count))
    path.write_text(text if last_newline else text.rstrip("\n"))
    return path


def test_workers_preload_the_first_lanes_model_with_the_runs_dtype() -> None:
    config = RunConfig(engine="hf", models=["/m/a", "/m/b"], dtype="float32")
    assert preload_env(config) == {
        "FLEET_PRELOAD_MODEL": "/m/a",
        "FLEET_PRELOAD_ENGINE": "hf",
        "FLEET_DTYPE": "float32",
    }


def test_nothing_is_preloaded_that_the_run_would_load_differently() -> None:
    assert preload_env(RunConfig(engine="openai", models=["gpt"])) == {}
    assert preload_env(RunConfig(models=["/m/a"], attn_implementation="sdpa")) == {}
    assert preload_env(RunConfig(models=["/m/a"], trust_remote_code=True)) == {}


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored, as a shell hands it to a command started with ``&``."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_ignored")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_is_heard_whatever_was_inherited(signum: signal.Signals) -> None:
    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt), stop_signals():
        signal.raise_signal(signum)
    assert signal.getsignal(signum) == before  # SIGINT ignored again, SIGTERM as it was


def test_an_interrupt_anywhere_in_a_stored_run_names_it() -> None:
    with pytest.raises(RunInterrupted) as stop, interruptible("20261130-010203-abcdef"):
        signal.raise_signal(signal.SIGTERM)
    assert stop.value.run_id == "20261130-010203-abcdef"
    with pytest.raises(RunInterrupted) as inner, interruptible("outer"):
        raise RunInterrupted("inner")
    assert inner.value.run_id == "inner"
