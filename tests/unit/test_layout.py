"""The unit tests mirror the package layout: ``tests/unit/worker/engines/test_echo.py``
tests ``worker/engines/echo.py``, so a module's tests are found by its path.

A test file in a package's folder is named after a module of that package, alone
(``test_inputs.py``) or with a word of its own after it (``test_inputs_corpus.py``).
The files directly under ``tests/unit`` test the tree as a whole.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "tests" / "unit"


def _modules(package: Path) -> set[str]:
    return {path.stem for path in package.glob("*.py")} | {
        path.name for path in package.iterdir() if (path / "__init__.py").exists()
    }


def test_every_unit_test_is_named_after_a_module_of_its_package() -> None:
    stray = []
    for test in sorted(UNIT.rglob("test_*.py")):
        folder = test.parent.relative_to(UNIT)
        if folder == Path("."):
            continue
        package = ROOT / folder
        subject = test.stem.removeprefix("test_")
        modules = _modules(package) if package.is_dir() else set()
        if not any(subject == name or subject.startswith(name + "_") for name in modules):
            stray.append(str(test.relative_to(ROOT)))
    assert not stray, f"unit tests named after no module of their package: {stray}"


def test_every_package_folder_of_the_unit_tests_is_a_package() -> None:
    folders = {test.parent for test in UNIT.rglob("test_*.py")} - {UNIT}
    assert all((ROOT / folder.relative_to(UNIT)).is_dir() for folder in folders)


def test_the_readme_architecture_lists_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Architecture\n", 1)[1].split("\n## ", 1)[0]
    modules = []
    for package in ("common", "fleet", "producer", "worker"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py":
                continue
            relative = path.parent.relative_to(ROOT) if path.name == "__init__.py" else None
            name = f"{relative}/" if relative else str(path.relative_to(ROOT))
            modules.append(name)
    missing = [name for name in modules if f"`{name}`" not in section]
    assert not missing, f"modules missing from the README's Architecture table: {missing}"
