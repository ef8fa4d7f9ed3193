"""Which GPUs a machine has, and how they are cut into one group per worker.

Detection asks ``nvidia-smi`` in a subprocess: the launcher must never initialise
CUDA itself (its children are started after, and a CUDA context does not survive
a fork). Grouping is pure logic: ``gpus_per_worker =
total // workers``, each worker owning its group exclusively; GPUs that do not
divide evenly are an error that says which numbers would, unless the operator asks
for shared mode (several workers on one GPU, round robin).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from common.errors import ConfigError

#: What the launcher asks nvidia-smi for; one CSV line per GPU.
NVIDIA_SMI_QUERY = ["--query-gpu=index,name,memory.total", "--format=csv,noheader"]


class GroupingError(ConfigError):
    """The GPUs cannot be cut as asked."""


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory: str


@dataclass(frozen=True)
class GpuGroup:
    """The GPUs of one worker process and the node name that says which they are."""

    gpus: tuple[int, ...]
    #: Set in shared mode: the n-th worker on the same GPUs.
    share: int | None = None

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(str(gpu) for gpu in self.gpus)

    @property
    def name(self) -> str:
        """``gpu0``, ``gpu0-1`` (a range), ``gpu0_2_5`` (a set), ``gpu0-s1`` (shared)."""
        gpus = self.gpus
        contiguous = len(gpus) > 1 and list(gpus) == list(range(gpus[0], gpus[-1] + 1))
        if contiguous:
            base = f"gpu{gpus[0]}-{gpus[-1]}"
        else:
            base = "gpu" + "_".join(str(gpu) for gpu in gpus)
        return base if self.share is None else f"{base}-s{self.share}"


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """The GPUs in ``nvidia-smi --query-gpu=index,name,memory.total`` CSV output."""
    gpus = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            raise ConfigError(f"nvidia-smi output line {line_no} not understood: {line!r}")
        gpus.append(Gpu(int(parts[0]), ",".join(parts[1:-1]), parts[-1]))
    return gpus


def detect_gpus(timeout_s: float = 20.0) -> list[Gpu]:
    """The machine's GPUs per ``nvidia-smi``; empty when there is none or no driver."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        done = subprocess.run(
            [binary, *NVIDIA_SMI_QUERY],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    return parse_nvidia_smi(done.stdout)


def parse_gpu_list(text: str) -> list[int]:
    """``"0,1,2,3"`` -> ``[0, 1, 2, 3]``; a clear error on anything else."""
    try:
        gpus = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--gpus {text!r}: expected GPU indexes like 0,1,2,3") from None
    if not gpus or any(gpu < 0 for gpu in gpus):
        raise ConfigError(f"--gpus {text!r}: expected GPU indexes like 0,1,2,3")
    if len(set(gpus)) != len(gpus):
        raise ConfigError(f"--gpus {text!r}: a GPU is listed twice")
    return gpus


def choose_gpus(detected: list[int], requested: list[int] | None) -> list[int]:
    """The GPUs to use: the requested subset (each must exist) or every detected one."""
    if requested is None:
        return detected
    missing = [gpu for gpu in requested if gpu not in detected]
    if missing:
        raise ConfigError(f"GPU(s) {missing} not found; nvidia-smi lists {detected or 'no GPU'}")
    return requested


def _divisors(total: int) -> list[int]:
    return [n for n in range(1, total + 1) if total % n == 0]


def _check_counts(total: int, per_worker: int | None, workers: int | None) -> None:
    if total == 0:
        raise GroupingError("no GPU to group")
    if per_worker is not None and per_worker < 1:
        raise GroupingError("--gpus-per-worker must be at least 1")
    if workers is not None and workers < 1:
        raise GroupingError("--workers must be at least 1")


def plan_groups(
    gpus: list[int],
    *,
    per_worker: int | None = None,
    workers: int | None = None,
    shared: bool = False,
) -> list[GpuGroup]:
    """Cut ``gpus`` into one group per worker.

    ``per_worker`` G: ``len(gpus) / G`` workers of G GPUs each (must divide).
    ``workers`` N: ``len(gpus) // N`` GPUs each (must divide); N above the GPU count
    needs ``shared`` (N workers spread round robin, several per GPU). Neither: one
    worker per GPU.
    """
    total = len(gpus)
    _check_counts(total, per_worker, workers)
    if per_worker is not None:
        if per_worker > total or total % per_worker:
            raise GroupingError(
                f"{total} GPU(s) do not split into groups of {per_worker}; "
                f"--gpus-per-worker can be {_divisors(total)}, or choose GPUs with --gpus"
            )
        if workers is not None and workers != total // per_worker:
            raise GroupingError(
                f"--workers {workers} with --gpus-per-worker {per_worker} needs "
                f"{workers * per_worker} GPU(s); {total} are available"
            )
        workers = total // per_worker
    elif workers is None:
        workers = total
    if workers > total:
        if not shared:
            raise GroupingError(
                f"{workers} workers for {total} GPU(s): pass --shared to put several "
                f"workers on one GPU, or --workers at most {total}"
            )
        return [GpuGroup((gpus[index % total],), share=index // total) for index in range(workers)]
    if total % workers:
        raise GroupingError(
            f"{total} GPU(s) do not split evenly between {workers} workers; "
            f"--workers can be {_divisors(total)}, or choose GPUs with --gpus"
        )
    size = total // workers
    return [GpuGroup(tuple(gpus[start : start + size])) for start in range(0, total, size)]
