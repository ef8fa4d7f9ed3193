"""The evaluation options on the command line: run files and bad specs give clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.errors import ConfigError
from producer.cli import app

runner = CliRunner()
BROKER = {"FLEET_BROKER_URL": "redis://127.0.0.1:1/0"}


def enqueue(tmp_path: Path, *args: str) -> BaseException | None:
    env = {**BROKER, "FLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'fleet.db'}"}
    return runner.invoke(app, ["enqueue", *args], env=env).exception


@pytest.mark.parametrize("command", ["run", "enqueue"])
def test_evaluation_options_are_on_both_commands(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    for flag in ("--permutation", "--permutations", "--dataset", "--scorer", "--aggregate"):
        assert flag in result.output
    assert "--sample" in result.output
    assert "--from-run" in result.output


def test_bad_run_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "eval.toml"
    path.write_text('engine = "echo"\nscorer = 3\n')
    error = enqueue(tmp_path, str(path))
    assert isinstance(error, ConfigError)
    assert f"{path}: field 'scorer'" in str(error)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "nameonly"], "--dataset 'nameonly': expected name=path"),
        (["--scorer", "regex:("], "scorer 'regex:(': bad regular expression"),
        (["--permutation", "reverse-all"], "unknown permutation 'reverse-all'"),
        (["--permutations", "3"], "--permutations K needs the kind"),
        (["--aggregate", "vote"], "--aggregate 'vote'"),
    ],
)
def test_bad_evaluation_options(tmp_path: Path, args: list[str], message: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "hi", "ref": "x"}\n')
    error = enqueue(
        tmp_path, str(source), "--engine", "echo", "-m", "m", "--reference-field", "ref", *args
    )
    assert isinstance(error, ConfigError)
    assert message in str(error)
