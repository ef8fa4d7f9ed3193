"""``fleet report``: one self-contained HTML page that shows a run.

``write_report`` is the one entry point (the CLI and ``fleet run`` call it). The
page holds its styles and its charts (static SVG) inline and loads nothing, so it
opens offline from a file; its figures are aggregated in SQL, so its size and cost
stay bounded for a run of any number of results. A run still going gets a partial
report that says so.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from common.errors import ConfigError
from producer.report.content import gather
from producer.report.page import GENERATOR, render

__all__ = ["write_report"]


def write_report(engine: Engine, run_id: str, path: Path) -> Path:
    """Write the report of ``run_id`` (an id or ``latest``) to ``path``; returns ``path``.

    An existing file is replaced only when it is a fleet report itself (or empty).
    """
    refuse_foreign(path)
    page = render(gather(engine, run_ref=run_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(path)
    return path


def refuse_foreign(path: Path) -> None:
    """ConfigError when ``path`` holds something other than a fleet report."""
    if not path.exists():
        return
    if path.is_file():
        with path.open("rb") as stream:
            head = stream.read(4096)
        if not head or GENERATOR.encode() in head:
            return
    raise ConfigError(
        f"{path} is not a fleet report; not overwriting it: give another -o, or remove it first"
    )
