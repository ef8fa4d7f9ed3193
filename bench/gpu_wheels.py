"""Wheels for the lent GPU machine: the project's dependencies it lacks, for CPython 3.12.

Run it as ``python -m bench.gpu_wheels`` (here, with PyPI reachable). The GPU machine has
Python 3.12 with torch (CUDA) and transformers but no network, so the rest travels as
wheels in the working tree (64 MiB per call at most). This walks the project's runtime
dependencies (``pyproject.toml``, extras included) through the versions installed in
this environment, the ones the tests ran with, and downloads a manylinux x86_64 /
CPython 3.12 wheel of each into ``.whl/`` (ignored by git), except:

- a package the machine has at a recorded version that satisfies every requirement on it
  (:data:`ON_DEVICE`: torch, numpy, huggingface-hub, tokenizers, safetensors);
- torch, which nothing here requires (it is installed first, by hand, everywhere).

A package the machine has at a version too old for the project travels: transformers
(5.17 there, >=5.24 needed). Unrecorded versions travel too, since nothing proves the
machine's will do: the wheels are installed with ``--target`` ahead of its own packages,
so what travels is the tested set. The total must stay under :data:`LIMIT_MIB`; the
command then prints the one command that installs them there and runs ``bench.gpu``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parents[1]

#: What the wheels must fit in: a call carries 64 MiB of working tree at most.
LIMIT_MIB = 60

#: Packages on the lent machine at a recorded version (KINDS.md's pip list, 2026-11).
ON_DEVICE = {
    "torch": "2.11.0",
    "numpy": "2.5.2",
    "huggingface-hub": "1.33.0",
    "tokenizers": "0.23.2",
    "safetensors": "0.8.0",
    "transformers": "5.17.0",
}

#: The interpreter the wheels are for, as environment markers see it.
TARGET = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}

#: ``pip download`` options for that interpreter (pip matches manylinux tags exactly).
PLATFORM = [
    "--only-binary=:all:",
    "--python-version=3.12",
    "--implementation=cp",
    "--abi=cp312",
    "--abi=abi3",
    "--abi=none",
    *(f"--platform=manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)),
    "--platform=manylinux2014_x86_64",
    "--platform=linux_x86_64",
    "--platform=any",
]

#: The one command the device tool runs, with ``carry: [".whl"]``.
DEVICE_COMMAND = (
    "set -o pipefail; python3 -m pip install -q --no-index --no-deps --no-compile "
    "--no-cache-dir --upgrade --target /tmp/site .whl/*.whl "
    "&& export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 "
    "&& python3 -m bench.gpu --output $OUT/gpu.json 2>&1 | tee $OUT/gpu.log"
)


def closure(requirements: list[str]) -> dict[str, tuple[str, list[Requirement]]]:
    """Every distribution ``requirements`` pull in on :data:`TARGET`, by canonical name:
    the version installed here and every requirement that names it.

    A requirement the machine's own copy satisfies is not followed further: that copy
    came with what it needs.
    """
    found: dict[str, tuple[str, list[Requirement]]] = {}
    asked: dict[str, list[Requirement]] = defaultdict(list)
    followed: set[tuple[str, frozenset[str]]] = set()
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        asked[name].append(requirement)
        found[name] = (metadata.version(name), asked[name])
        there = ON_DEVICE.get(name)
        key = (name, frozenset(requirement.extras))
        if (there and Version(there) in requirement.specifier) or key in followed:
            continue
        followed.add(key)
        for text in metadata.requires(name) or []:
            needed = Requirement(text)
            if needed.marker is None or any(
                needed.marker.evaluate(TARGET | {"extra": extra})
                for extra in [*requirement.extras, ""]
            ):
                pending.append(needed)
    return found


def to_carry(found: dict[str, tuple[str, list[Requirement]]]) -> tuple[list[str], list[str]]:
    """(``name==version`` to download, what stays behind and why)."""
    carry, behind = [], []
    for name, (version, asked) in sorted(found.items()):
        there = ON_DEVICE.get(name)
        if there and all(Version(there) in requirement.specifier for requirement in asked):
            behind.append(f"{name}: {there} on the machine fits")
        else:
            carry.append(f"{name}=={version}")
    return carry, behind


def download(carry: list[str], folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", *PLATFORM, "-d", str(folder)]
    subprocess.run([*command, *carry], check=True)


def _pin(spec: str) -> tuple[str, Version]:
    name, version = spec.split("==")
    return canonicalize_name(name), Version(version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / ".whl")
    parser.add_argument("--dry-run", action="store_true", help="list, download nothing")
    args = parser.parse_args()

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    carry, behind = to_carry(closure(project["dependencies"]))
    print("stays behind:\n  " + "\n  ".join(behind))
    print(f"travels ({len(carry)}):\n  " + "\n  ".join(carry))
    if args.dry_run:
        return
    download(carry, args.folder)
    wanted = {_pin(spec) for spec in carry}
    for wheel in args.folder.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        if _pin(f"{name}=={version}") not in wanted:
            wheel.unlink()  # from an earlier download: two versions of one package stop pip
    total = sum(wheel.stat().st_size for wheel in args.folder.glob("*.whl"))
    print(f"{len(carry)} wheels, {total / 2**20:.1f} MiB in {args.folder}")
    if total > LIMIT_MIB * 2**20:
        sys.exit(f"over the {LIMIT_MIB} MiB a call may carry: leave something behind")
    print(f'device tool: run(carry=[".whl"], timeout_s=600, command={DEVICE_COMMAND!r})')


if __name__ == "__main__":
    main()
