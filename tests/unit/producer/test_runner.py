"""``fleet run``'s start-up plan: the model its workers preload, how many it starts."""

from __future__ import annotations

from pathlib import Path

from common.runconfig import RunConfig
from producer.runner import preload_env


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
