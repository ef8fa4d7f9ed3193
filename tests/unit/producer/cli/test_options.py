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


def test_engine_options_reach_the_run_config(tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "required": ["answer"]}')
    options = JobOptions(
        model=["m"],
        engine="echo",
        truncate="left",
        json_schema=schema,
        retries_on_invalid=2,
        system="Be brief.",
        attn_implementation="sdpa",
        trust_remote_code=True,
        max_padding=0.5,
        dtype="bfloat16",
    )
    config = run_config(Settings(), options)
    assert config.truncate == "left"
    assert config.output_schema == {"type": "object", "required": ["answer"]}
    assert (config.retries_on_invalid, config.system) == (2, "Be brief.")
    assert (config.attn_implementation, config.trust_remote_code) == ("sdpa", True)
    assert (config.batching.max_padding, config.dtype) == (0.5, "bfloat16")
    defaults = run_config(Settings(), JobOptions(model=["m"], engine="echo"))
    assert (defaults.truncate, defaults.output_schema, defaults.trust_remote_code) == (
        None,
        None,
        False,
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dtype": "float8"}, "--dtype float8"),
        ({"truncate": "middle"}, "--truncate middle"),
        ({"on_too_long": "ignore"}, "--on-too-long ignore"),
        ({"on_too_long": "fail", "truncate": "right"}, "contradicts --truncate right"),
        ({"pydantic": "nocolon"}, "expected module:Model"),
    ],
)
def test_bad_engine_options_are_refused(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_config(Settings(), JobOptions(model=["m"], engine="echo", **overrides))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("truncate", "on_too_long", "side"),
    [(None, None, None), (None, "fail", None), (None, "truncate", "left"),
     ("right", "truncate", "right"), ("right", None, "right")],
)  # fmt: skip
def test_the_length_policy_from_either_flag(
    truncate: str | None, on_too_long: str | None, side: str | None
) -> None:
    options = JobOptions(model=["m"], engine="echo", truncate=truncate, on_too_long=on_too_long)
    assert run_config(Settings(), options).truncate == side


def test_bad_schema_file_stops_enqueue_before_anything(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "hi"}\n')
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "nonsense"}')
    state = tmp_path / "state"
    result = runner.invoke(
        app,
        ["enqueue", str(source), "--model", "m", "--engine", "echo", "--json-schema", str(schema)],
        env={"FLEET_BROKER_URL": "redis://127.0.0.1:1/0", "FLEET_STATE_DIR": str(state)},
    )
    assert isinstance(result.exception, ConfigError)
    assert "schema.json: not a valid JSON Schema" in str(result.exception)
    assert not (state / "fleet.db").exists()
