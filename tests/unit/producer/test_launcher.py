"""The launcher's plan (GPU or CPU workers) and its restart back-off."""

from __future__ import annotations

import pytest

from common.routing import model_key, model_queue
from producer.launcher import RESTART_CAP_S, plan_workers, restart_delay


def test_gpu_plan_pins_each_worker_with_its_own_node_name() -> None:
    plan = plan_workers(gpus=[0, 1, 2, 3], queues=["fleet"], env={"X": "1"}, per_worker=2)
    assert plan.mode == "gpu"
    assert [spec.hostname for spec in plan.specs] == ["gpu0-1@%h", "gpu2-3@%h"]
    assert [spec.env["CUDA_VISIBLE_DEVICES"] for spec in plan.specs] == ["0,1", "2,3"]
    assert all(spec.env["X"] == "1" and spec.queues == ["fleet"] for spec in plan.specs)


def test_no_gpu_means_cpu_workers_with_threads_split() -> None:
    plan = plan_workers(gpus=[], queues=["a", "b"], env={}, workers=2)
    assert plan.mode == "cpu"
    assert [spec.hostname for spec in plan.specs] == ["cpu0@%h", "cpu1@%h"]
    for spec in plan.specs:
        assert spec.env["CUDA_VISIBLE_DEVICES"] == ""
        assert int(spec.env["FLEET_TORCH_THREADS"]) >= 1
        assert spec.env["OMP_NUM_THREADS"] == spec.env["FLEET_TORCH_THREADS"]
        assert spec.queues == ["a", "b"]


def test_restart_delay_doubles_and_is_capped() -> None:
    delays = [restart_delay(crashes) for crashes in range(1, 12)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert delays == sorted(delays)
    assert max(delays) == RESTART_CAP_S
    assert restart_delay(0) == 0.0


@pytest.mark.parametrize(
    ("model", "readable"),
    [
        ("/models/Llama-3-8B", "llama-3-8b-"),
        ("/models/ckpt/", "ckpt-"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "qwen2-5-0-5b-instruct-"),
        ("delay=0.01", "delay-0-01-"),
        ("///", "model-"),
    ],
)
def test_model_keys_are_readable_and_queue_safe(model: str, readable: str) -> None:
    key = model_key(model)
    assert key.startswith(readable)
    assert len(key) == len(readable) + 8
    assert model_queue("fleet", model) == f"fleet.m.{key}"


def test_model_keys_are_stable_and_tell_same_named_folders_apart() -> None:
    assert model_key("/a/ckpt") == model_key("/a/ckpt")
    assert model_key("/a/ckpt") != model_key("/b/ckpt")


def test_pinned_workers_carry_the_model_key_in_their_node_name() -> None:
    plan = plan_workers(gpus=[0, 1], queues=["q"], env={}, tag="demo-1234abcd")
    assert [spec.hostname for spec in plan.specs] == [
        "gpu0.demo-1234abcd@%h",
        "gpu1.demo-1234abcd@%h",
    ]
