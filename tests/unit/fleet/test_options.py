"""``fleet.run``'s keyword options: the command line's job options, checked alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.db import make_engine, session_scope
from common.errors import ConfigError
from common.queries import iter_results
from common.settings import Settings
from fleet.options import job_options
from producer.cli.options import JobOptions, run_config
from producer.jobs import store_job


def test_options_by_their_long_names_become_the_run_config() -> None:
    options = job_options(
        {"model": "m", "engine": "echo", "max_new_tokens": 5, "permutation": "cyclic-digits"}
    )
    assert options == JobOptions(
        model=["m"], engine="echo", max_new_tokens=5, permutation=["cyclic-digits"]
    )
    config = run_config(Settings(), options)
    assert (config.models, config.generation.max_new_tokens) == (["m"], 5)


def test_an_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown option.*max_tokens"):
        job_options({"model": "m", "max_tokens": 5})


def test_a_value_of_the_wrong_type_is_named() -> None:
    with pytest.raises(ConfigError, match="option batch_size"):
        job_options({"model": "m", "batch_size": "many"})


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [("slice_size", 0, "below its minimum 1"), ("top_p", 1.5, "above its maximum 1")],
)
def test_the_command_lines_bounds_hold(name: str, value: float, words: str) -> None:
    with pytest.raises(ConfigError, match=f"option {name}: .*{words}"):
        job_options({"model": "m", name: value})


@pytest.mark.parametrize(
    ("inputs", "words"),
    [({"id": 1, "prompt": "x"}, "not one dict"), (b"{}", "not bytes"), ("nope.jsonl", "no such")],
)
def test_inputs_that_are_neither_a_file_nor_records_are_refused(
    tmp_path: Path, inputs: object, words: str
) -> None:
    settings = Settings(state_dir=tmp_path / ".fleet")
    options = JobOptions(model=["echo"], engine="echo")
    with pytest.raises(ConfigError, match=words):
        store_job(settings, inputs=inputs, options=options)  # type: ignore[arg-type]


def test_a_path_given_as_text_and_a_list_of_dicts_store_the_same_items(tmp_path: Path) -> None:
    records = [{"id": f"r{n}", "prompt": f"p{n}", "extra": [n]} for n in range(5)]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    settings = Settings(state_dir=tmp_path / ".fleet")
    options = JobOptions(model=["echo"], engine="echo", slice_size=2)
    stored = [
        store_job(settings, inputs=inputs, options=options).enqueued
        for inputs in (str(path), records)
    ]
    assert [(job.items, job.slices) for job in stored] == [(5, 3), (5, 3)]
    with session_scope(make_engine(settings.sqlalchemy_url)) as session:
        payloads = [
            [item.payload for item, _, _ in iter_results(session, run_id=job.run_id)]
            for job in stored
        ]
    assert payloads[0] == payloads[1] == records
