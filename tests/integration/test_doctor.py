"""``fleet doctor`` against real servers: all green, then each check failing on its own."""

from __future__ import annotations

import os
from pathlib import Path

from tests.integration.helpers import fleet_env, run_fleet
from tests.integration.test_flower import free_port
from tests.unit.producer.test_gpus import fake_nvidia_smi


def doctor(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    done = run_fleet("doctor", *args, env=env, cwd=cwd)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def with_path(env: dict[str, str], folder: Path) -> dict[str, str]:
    """``env`` with only ``folder`` and the system folders on PATH (a fake or no nvidia-smi)."""
    return {**env, "PATH": f"{folder}{os.pathsep}/usr/bin:/bin"}


def test_doctor_passes_on_a_ready_machine(
    tmp_path: Path, redis_url: str, postgres_url: str, demo_model: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_nvidia_smi(bin_dir, 2)
    env = with_path(fleet_env(tmp_path, broker_url=redis_url, database_url=postgres_url), bin_dir)
    code, out = doctor("--model", str(demo_model), "--require-gpu", env=env, cwd=tmp_path)
    assert code == 0, out
    # The test Redis may warn (appendonly off): a warning does not fail the doctor.
    assert f"broker: {redis_url} answers" in out
    assert "fail" not in out
    assert "ok database:" in out
    assert "ok gpus: 2 visible: 0: NVIDIA H100 80GB HBM3" in out
    assert "ok model:" in out
    assert "llama" in out
    assert "ok versions: python" in out
    assert "celery 5." in out


def test_doctor_fails_when_the_broker_does_not_answer(tmp_path: Path) -> None:
    env = fleet_env(tmp_path, broker_url=f"redis://:pw@127.0.0.1:{free_port()}/0")
    (tmp_path / ".fleet").mkdir()
    code, out = doctor(env=env, cwd=tmp_path)
    assert code == 1
    assert "fail broker: redis://:***@127.0.0.1:" in out
    assert "does not answer" in out
    assert ":pw@" not in out  # the password is never printed
    assert "ok database:" in out  # the other checks still ran


def test_doctor_fails_on_database_model_and_missing_gpu(tmp_path: Path, redis_url: str) -> None:
    not_a_model = tmp_path / "ckpt"
    not_a_model.mkdir()
    env = with_path(
        fleet_env(tmp_path, broker_url=redis_url, database_url="postgresql://nobody@127.0.0.1:1/x"),
        tmp_path,
    )
    code, out = doctor("--model", str(not_a_model), "--require-gpu", env=env, cwd=tmp_path)
    assert code == 1
    assert f"broker: {redis_url} answers" in out
    assert "fail database: postgresql+psycopg://nobody@127.0.0.1:1/x" in out
    assert f"fail model: --model {not_a_model}: a folder without config.json" in out
    assert "fail gpus: no GPU visible" in out


def test_doctor_rejects_a_misspelled_setting(tmp_path: Path) -> None:
    env = {**fleet_env(tmp_path), "FLEET_BROKER_URLL": "redis://x"}
    code, out = doctor(env=env, cwd=tmp_path)
    assert code == 2
    assert "FLEET_BROKER_URLL" in out
