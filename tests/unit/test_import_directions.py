"""Imports run one way: producer/ and worker/ both import common/, never each other;
fleet/ (the Python API) imports producer/ and common/, and nothing imports it.

The broker contract (``common.celery_app``, ``common.publish``, ``common.reconcile``)
is what both sides share; the producer names the worker's task modules as strings
only (``create_app``'s ``include``) and starts workers as processes
(``celery -A worker``), so it imports nothing from ``worker/``. Every module is
parsed, and imports inside functions count as much as those at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Which top-level packages each package may not import, and why.
FORBIDDEN = {
    "common": {"producer", "worker", "fleet"},  # the contract depends on neither side
    "worker": {"producer", "fleet"},  # a worker needs no CLI nor API
    "producer": {"worker", "fleet"},  # the producer talks to workers through the broker only
    "fleet": {"worker"},  # the Python API is a producer: it calls producer/, as the CLI does
}


def imported_packages(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, top-level package) for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            top = package if node.level else (node.module or "").split(".")[0]
            found.append((node.lineno, top))
    return sorted(found)


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package: str) -> None:
    assert modules(package), f"no modules found under {package}/"
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {top}"
        for path in modules(package)
        for line, top in imported_packages(path, package)
        if top in FORBIDDEN[package]
    ]
    assert wrong == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text(
        "import os\n"
        "def f():\n"
        "    from worker.engines import ENGINES\n"
        "    import producer.cli as cli\n"
        "from . import sibling\n",
        encoding="utf-8",
    )
    assert imported_packages(module, "common") == [
        (1, "os"),
        (3, "worker"),
        (4, "producer"),
        (5, "common"),
    ]
