"""The job options are declared once and reach both commands that start a run."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.errors import ConfigError
from common.settings import Settings
from producer.cli import app
from producer.cli.options import JobOptions, run_config

runner = CliRunner()


@pytest.mark.parametrize("command", ["run", "enqueue"])
def test_every_job_option_is_an_option_of_the_command(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--model", "--engine", "--max-new-tokens", "--slice-size", "--skip-invalid"):
        assert flag in result.output


def test_enqueue_hands_the_options_over(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "hi"}\n')
    result = runner.invoke(
        app,
        ["enqueue", str(source), "--model", "m", "--engine", "nope"],
        env={"FLEET_BROKER_URL": "redis://127.0.0.1:1/0"},
    )
    assert isinstance(result.exception, ConfigError)
    assert "unknown engine 'nope'" in str(result.exception)


def test_run_config_fills_defaults_from_settings() -> None:
    settings = Settings(slice_size=7, max_new_tokens=9)
    config = run_config(settings, JobOptions(model=["m"], engine="echo", batch_size=3))
    assert (config.slice_size, config.generation.max_new_tokens) == (7, 9)
    assert config.batching.batch_size == 3


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown engine"):
        run_config(Settings(), JobOptions(model=["m"], engine="nope"))
