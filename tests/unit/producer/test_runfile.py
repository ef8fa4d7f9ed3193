"""Run files: TOML and YAML read into the job options; the command line on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from common.settings import Settings
from producer.cli.options import JobOptions, run_config
from producer.runfile import is_run_file, merge, read

TOML = """
engine = "echo"
models = ["answer_from=a", "answer_from=b"]
permutation = "cyclic-digits"
permutations = 3
template = "{puzzle} a={a} b={b}"
reference-field = "solution"
scorer = "exact"
aggregate = "any"
sample = 5
seed = 11
input = "data/in.jsonl"

[datasets]
extra = "extra.jsonl"
"""

YAML = """
engine: echo
model: answer_from=a
scorer: numeric
reference_field: answer
datasets:
  gsm8k: /abs/gsm8k.jsonl
"""


def test_toml_run_file(tmp_path: Path) -> None:
    path = tmp_path / "eval.toml"
    path.write_text(TOML)
    options, input_path = merge(path, JobOptions())
    assert input_path == tmp_path / "data" / "in.jsonl"
    config = run_config(Settings(), options)
    assert config.models == ["answer_from=a", "answer_from=b"]
    assert config.permutations == ["cyclic-digits@0", "cyclic-digits@1", "cyclic-digits@2"]
    assert config.lanes()[4] == ("answer_from=b", "cyclic-digits@1")
    assert config.reference_field == "solution"
    assert (config.scorer, config.sample, config.sample_seed) == ("exact", 5, 11)
    assert config.datasets == {"extra": str(tmp_path / "extra.jsonl")}


def test_yaml_run_file_and_command_line_override(tmp_path: Path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text(YAML)
    options, input_path = merge(path, JobOptions(scorer="exact", slice_size=3))
    assert input_path is None
    config = run_config(Settings(), options)
    assert config.scorer == "exact"  # the command line wins
    assert config.slice_size == 3
    assert config.models == ["answer_from=a"]  # a string is a list of one
    assert config.datasets == {"gsm8k": "/abs/gsm8k.jsonl"}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.toml", "engine = ", "bad.toml: not valid TOML"),
        ("bad.yaml", "engine: [", "bad.yaml: not valid YAML"),
        ("list.yaml", "- a\n- b\n", "list.yaml: a run file is a table of options"),
        ("key.toml", 'modle = "x"\n', "key.toml: unknown key 'modle'"),
        ("type.toml", 'permutations = "three"\n', "type.toml: field 'permutations'"),
        ("ds.toml", 'datasets = "x.jsonl"\n', "ds.toml: field 'datasets' must be a table"),
        ("dsv.toml", "[datasets]\na = 3\n", "dsv.toml: field 'datasets.a' must be a non-empty"),
    ],
)
def test_bad_run_files_name_file_and_field(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        merge(path, JobOptions())


def test_relative_checkpoints_are_read_from_the_run_file_folder(tmp_path: Path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text("model: [./ckpt, org/name]\n")
    options, _ = merge(path, JobOptions())
    assert options.model == [str(tmp_path / "ckpt"), "org/name"]


def test_only_toml_and_yaml_are_run_files() -> None:
    assert is_run_file(Path("x.TOML"))
    assert is_run_file(Path("x.yml"))
    assert not is_run_file(Path("x.jsonl"))
    assert not is_run_file(None)


DATASETS_TOML = """
models = "m"
workers = 3
scorer = "exact"
reference_field = "gold"

[datasets.math]
path = "math.jsonl"
template = "Q {q}"
reference_field = "answer"
scorer = "numeric"

[datasets]
plain = "plain.jsonl"
"""


def test_a_dataset_table_holds_its_own_settings(tmp_path: Path) -> None:
    path = tmp_path / "eval.toml"
    path.write_text(DATASETS_TOML)
    run_file = read(path, JobOptions())
    assert run_file.workers == 3
    config = run_config(Settings(), run_file.options, run_file.dataset_options)
    assert config.datasets == {
        "math": str(tmp_path / "math.jsonl"), "plain": str(tmp_path / "plain.jsonl")
    }  # fmt: skip
    assert (config.template_for("math"), config.template_for("plain")) == ("Q {q}", None)
    assert config.scorer_for("math") == "numeric"
    assert config.scorer_for("plain") == "exact"
    assert config.reference_field_for("math") == "answer"
    assert config.reference_field_for("plain") == "gold"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers = 0\n", "field 'workers' must be an integer of at least 1"),
        ('[datasets.a]\ntemplate = "{q}"\n', "field 'datasets.a.path' must be a non-empty"),
        ('[datasets.a]\npath = "a.jsonl"\nscorrer = "exact"\n', "'datasets.a.scorrer' is unknown"),
    ],
)
def test_bad_dataset_tables_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read(path, JobOptions())


def test_aggregate_without_a_scorer_is_refused() -> None:
    with pytest.raises(ConfigError, match="--aggregate majority combines the scores"):
        run_config(Settings(), JobOptions(model=["m"], aggregate="majority"))
