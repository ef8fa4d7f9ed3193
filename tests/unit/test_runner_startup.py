"""``fleet run``'s start-up plan: the model its workers preload, how many it starts."""

from __future__ import annotations

from pathlib import Path

from common.runconfig import RunConfig
from producer.runner import local_worker_count, preload_env


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


def test_never_more_workers_than_slices(tmp_path: Path) -> None:
    one = lines(tmp_path / "one.jsonl", 1)
    config = RunConfig(models=["/m/a"], slice_size=64)
    assert local_worker_count(4, input_path=one, config=config) == 1
    hundred = lines(tmp_path / "hundred.jsonl", 100, last_newline=False)
    assert local_worker_count(4, input_path=hundred, config=config) == 2  # 64 + 36
    tens = config.model_copy(update={"slice_size": 10})
    assert local_worker_count(4, input_path=hundred, config=tens) == 4


def test_every_lane_and_dataset_counts(tmp_path: Path) -> None:
    two_models = RunConfig(models=["/m/a", "/m/b"], slice_size=64)
    assert local_worker_count(4, input_path=lines(tmp_path / "a.jsonl", 3), config=two_models) == 2
    datasets = RunConfig(
        models=["/m/a"],
        slice_size=2,
        datasets={
            "x": str(lines(tmp_path / "x.jsonl", 2)),
            "y": str(lines(tmp_path / "y.jsonl", 1)),
        },
    )
    assert local_worker_count(4, input_path=None, config=datasets) == 2  # 3 lines, slices of 2


def test_inputs_that_are_not_files_leave_the_request_as_it_is(tmp_path: Path) -> None:
    staged = RunConfig(models=["/m/a"], from_run="20250101-000000-abcdef")
    assert local_worker_count(3, input_path=None, config=staged) == 3
    empty = RunConfig(models=["/m/a"])
    assert local_worker_count(3, input_path=tmp_path / "missing.jsonl", config=empty) == 3
    assert local_worker_count(1, input_path=None, config=empty) == 1
