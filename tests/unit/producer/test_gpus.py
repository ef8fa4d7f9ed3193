"""GPU detection (a fake nvidia-smi on PATH) and grouping: the even splits and the uneven cases."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import ConfigError
from producer.gpus import (
    GpuGroup,
    GroupingError,
    choose_gpus,
    detect_gpus,
    parse_gpu_list,
    parse_nvidia_smi,
    plan_groups,
)


def fake_nvidia_smi(folder: Path, count: int, *, exit_code: int = 0) -> Path:
    """A ``nvidia-smi`` that prints ``count`` GPUs as the real one does for our query."""
    lines = "\n".join(f"{index}, NVIDIA H100 80GB HBM3, 81559 MiB" for index in range(count))
    script = folder / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in *--query-gpu=index,name,memory.total*--format=csv,noheader*) ;; '
        '*) echo "unexpected arguments: $*" >&2; exit 9;; esac\n'
        f"printf '%s\\n' '{lines}'\nexit {exit_code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.mark.parametrize("count", [1, 2, 4, 8])
def test_detects_the_gpus_nvidia_smi_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    fake_nvidia_smi(tmp_path, count)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    gpus = detect_gpus()
    assert [gpu.index for gpu in gpus] == list(range(count))
    assert gpus[0].name == "NVIDIA H100 80GB HBM3"
    assert gpus[0].memory == "81559 MiB"


def test_no_nvidia_smi_means_no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == []


def test_failing_nvidia_smi_means_no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No driver loaded: nvidia-smi exits non-zero; the launcher falls back to CPU."""
    fake_nvidia_smi(tmp_path, 2, exit_code=9)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == []


def test_garbled_nvidia_smi_output_names_the_line() -> None:
    with pytest.raises(ConfigError, match="line 2"):
        parse_nvidia_smi("0, A100, 40960 MiB\nNo devices were found\n")


def groups(gpus: list[int], **kwargs: object) -> list[str]:
    return [group.cuda_visible_devices for group in plan_groups(gpus, **kwargs)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("total", "per_worker", "expected"),
    [
        (1, 1, ["0"]),
        (2, 1, ["0", "1"]),
        (2, 2, ["0,1"]),
        (4, 2, ["0,1", "2,3"]),
        (4, 4, ["0,1,2,3"]),
        (8, 1, [str(index) for index in range(8)]),
        (8, 2, ["0,1", "2,3", "4,5", "6,7"]),
        (8, 4, ["0,1,2,3", "4,5,6,7"]),
        (8, 8, ["0,1,2,3,4,5,6,7"]),
    ],
)
def test_groups_by_gpus_per_worker(total: int, per_worker: int, expected: list[str]) -> None:
    assert groups(list(range(total)), per_worker=per_worker) == expected


@pytest.mark.parametrize(
    ("total", "workers", "expected"),
    [
        (4, 2, ["0,1", "2,3"]),  # development: two workers of two
        (8, 4, ["0,1", "2,3", "4,5", "6,7"]),  # balanced
        (8, 8, [str(index) for index in range(8)]),  # most parallel
        (8, 2, ["0,1,2,3", "4,5,6,7"]),  # large model
    ],
)
def test_seed_002_table_by_worker_count(total: int, workers: int, expected: list[str]) -> None:
    assert groups(list(range(total)), workers=workers) == expected


def test_default_is_one_worker_per_gpu() -> None:
    assert groups([0, 1, 2]) == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("total", "kwargs", "message"),
    [
        (3, {"per_worker": 2}, r"3 GPU\(s\) do not split into groups of 2.*\[1, 3\]"),
        (8, {"per_worker": 3}, r"\[1, 2, 4, 8\]"),
        (2, {"per_worker": 4}, "groups of 4"),
        (8, {"workers": 3}, r"between 3 workers.*\[1, 2, 4, 8\]"),
        (6, {"workers": 4}, "between 4 workers"),
        (2, {"workers": 4}, "--shared"),
        (8, {"per_worker": 2, "workers": 3}, "needs 6 GPU"),
        (0, {}, "no GPU"),
        (4, {"per_worker": 0}, "at least 1"),
    ],
)
def test_uneven_requests_are_clear_errors(total: int, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(GroupingError, match=message):
        plan_groups(list(range(total)), **kwargs)  # type: ignore[arg-type]


def test_shared_mode_spreads_workers_round_robin() -> None:
    planned = plan_groups([0, 1], workers=4, shared=True)
    assert [group.cuda_visible_devices for group in planned] == ["0", "1", "0", "1"]
    assert [group.name for group in planned] == ["gpu0-s0", "gpu1-s0", "gpu0-s1", "gpu1-s1"]


def test_subset_of_gpus_keeps_their_indexes() -> None:
    chosen = choose_gpus([0, 1, 2, 3, 4, 5, 6, 7], parse_gpu_list("4,5,6,7"))
    planned = plan_groups(chosen, per_worker=2)
    assert [group.cuda_visible_devices for group in planned] == ["4,5", "6,7"]
    assert [group.name for group in planned] == ["gpu4-5", "gpu6-7"]


def test_names_say_the_group() -> None:
    assert GpuGroup((3,)).name == "gpu3"
    assert GpuGroup((0, 1)).name == "gpu0-1"
    assert GpuGroup((0, 2)).name == "gpu0_2"


@pytest.mark.parametrize("text", ["", "a,b", "0,-1", "1,1"])
def test_bad_gpu_lists(text: str) -> None:
    with pytest.raises(ConfigError, match="--gpus"):
        parse_gpu_list(text)


def test_requested_gpu_must_exist() -> None:
    with pytest.raises(ConfigError, match=r"GPU\(s\) \[9\] not found"):
        choose_gpus([0, 1], [1, 9])


@given(total=st.integers(1, 64), per_worker=st.integers(1, 64))
def test_groups_are_disjoint_equal_and_cover_every_gpu(total: int, per_worker: int) -> None:
    gpus = list(range(100, 100 + total))
    try:
        planned = plan_groups(gpus, per_worker=per_worker)
    except GroupingError:
        assert total % per_worker != 0
        return
    assert total % per_worker == 0
    assert all(len(group.gpus) == per_worker for group in planned)
    assert sorted(gpu for group in planned for gpu in group.gpus) == gpus
    assert len({group.name for group in planned}) == len(planned)
