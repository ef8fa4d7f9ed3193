"""``fleet run`` and ``fleet enqueue`` check the model and every input before anything
starts: a bad one exits 2 naming it, with no broker, worker or run left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.integration.helpers import fleet_env, run_fleet


def write_records(path: Path, records: list[dict[str, object]], extra: str = "") -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records) + extra)
    return path


def assert_nothing_started(tmp_path: Path) -> None:
    state = tmp_path / ".fleet"
    assert not (state / "broker").exists(), "the embedded broker was started"
    assert not (state / "logs").exists(), "workers were started"


def test_a_misspelled_hub_id_stops_fleet_run_at_once(tmp_path: Path) -> None:
    inputs = write_records(tmp_path / "in.jsonl", [{"id": 1, "prompt": "hi"}])
    env = fleet_env(tmp_path) | {"HF_HUB_OFFLINE": "1"}
    done = run_fleet("run", str(inputs), "--model", "no-such-org/no-such-model", env=env,
                     cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--model no-such-org/no-such-model does not load" in " ".join(done.stderr.split())
    assert_nothing_started(tmp_path)
    assert not (tmp_path / ".fleet" / "fleet.db").exists()


def test_a_folder_that_does_not_exist_says_so(tmp_path: Path) -> None:
    inputs = write_records(tmp_path / "in.jsonl", [{"id": 1, "prompt": "hi"}])
    done = run_fleet("run", str(inputs), "--model", "./no/such/ckpt", env=fleet_env(tmp_path),
                     cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "no such checkpoint folder" in done.stderr
    assert_nothing_started(tmp_path)


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        (["--scorer", "exact"], "", "--scorer exact needs --reference-field"),
        (["--dataset", "extra=missing.jsonl"], "", "dataset 'extra': no such file"),
        (["--reference-field", "answer"], "{not json\n", "in.jsonl:3"),
    ],
    ids=["scorer-without-reference", "missing-dataset", "bad-record"],
)
def test_bad_inputs_stop_fleet_run_before_the_broker_starts(
    tmp_path: Path, args: list[str], extra: str, message: str
) -> None:
    records: list[dict[str, object]] = [{"id": n, "prompt": "a", "answer": "a"} for n in (1, 2)]
    inputs = write_records(tmp_path / "in.jsonl", records, extra=extra)
    done = run_fleet("run", str(inputs), "--engine", "echo", "--model", "echo", *args,
                     env=fleet_env(tmp_path), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in " ".join(done.stderr.split())
    assert_nothing_started(tmp_path)


def test_fleet_enqueue_checks_the_model_before_the_broker(tmp_path: Path) -> None:
    inputs = write_records(tmp_path / "in.jsonl", [{"id": 1, "prompt": "hi"}])
    env = fleet_env(tmp_path, broker_url="redis://127.0.0.1:1/0") | {"HF_HUB_OFFLINE": "1"}
    done = run_fleet("enqueue", str(inputs), "--model", "nobody/nothing", env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert "--model nobody/nothing does not load" in " ".join(done.stderr.split())


def test_doctor_and_run_agree_on_a_training_runs_latest_step(
    tmp_path: Path, demo_model: Path
) -> None:
    training = tmp_path / "train"
    for step in (100, 1200, 300):
        shutil.copytree(demo_model, training / f"step_{step}")
    done = run_fleet("doctor", "--model", str(training), env=fleet_env(tmp_path), cwd=tmp_path)
    assert f"ok model: {training / 'step_1200'}:" in " ".join(done.stdout.split())
    gone = run_fleet("doctor", "--model", "./gone", env=fleet_env(tmp_path), cwd=tmp_path)
    assert gone.returncode == 1
    assert "--model ./gone: no such checkpoint folder" in gone.stdout
