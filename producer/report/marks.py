"""Figures on the page, marked with where they come from in ``summary.json``.

A figure carries ``data-summary`` (its path in the summary, a JSON list of keys: a
model name may hold dots) and ``data-value`` (its exact JSON value); the text is the
same value rounded for the eye. A reader (a test, a script) checks the page against
the file through these two attributes.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any


def figure(path: list[str | int], value: Any, text: str | None = None) -> str:
    """``value`` shown as ``text`` (or formatted), marked with its path in the summary."""
    shown = text if text is not None else formatted(value)
    return (
        f"<span data-summary='{escape(json.dumps(path))}' "
        f"data-value='{escape(json.dumps(value))}'>{escape(shown)}</span>"
    )


def formatted(value: Any) -> str:
    """A figure for the eye: thousands separated, four decimals, a dash for none."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value and abs(value) < 0.01:
            return f"{value:.3g}"
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)
