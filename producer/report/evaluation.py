"""The report's evaluation section: accuracy per lane, model, permutation and dataset.

Every figure is the summary's (``lane_results``, ``model_results``,
``permutation_results``, ``dataset_results``, ``overall_results``), itself counted per
item in SQL at finalize (``common.evaluation``). The ensemble is the run's
``--aggregate`` over every lane, set beside the best single lane.
"""

from __future__ import annotations

from html import escape
from typing import Any

from producer.report import charts
from producer.report.marks import figure

#: A labelled block of the summary and its path there: (label, path, block).
Named = list[tuple[str, list[str | int], dict[str, Any]]]


def _percent(value: float) -> str:
    return f"{value:.1%}"


def evaluation_section(summary: dict[str, Any]) -> str:
    """Bar charts and tables of accuracy; the ensemble against the best lane."""
    parts = ["<h2>Evaluation</h2>", _ensemble(summary)]
    for key, title in (
        ("model_results", "per model"),
        ("permutation_results", "per permutation"),
        ("dataset_results", "per dataset"),
    ):
        blocks: dict[str, dict[str, Any]] = summary.get(key) or {}
        named: Named = [(name, [key, name], block) for name, block in blocks.items()]
        parts.append(_scope(key, f"Accuracy {title}", named))
    return "".join(parts)


def _lane_label(lane: dict[str, Any]) -> str:
    return f"lane {lane['index']}: {lane['model']} {lane['permutation']}"


def _ensemble(summary: dict[str, Any]) -> str:
    """Every lane's accuracy, and the ensemble's (``--aggregate``), marked, as one chart."""
    lanes = summary.get("lane_results") or []
    overall = summary["overall_results"]
    ensemble = f"ensemble (--aggregate {overall['aggregate']})"
    named: Named = [(_lane_label(lane), ["lane_results", n], lane) for n, lane in enumerate(lanes)]
    scored = [lane for lane in lanes if lane.get("accuracy") is not None]
    best = max(scored, key=lambda lane: lane["accuracy"], default=None)
    verdict = ""
    if best is not None and overall.get("accuracy") is not None:
        gain = overall["accuracy"] - best["accuracy"]
        shown = _percent(overall["accuracy"])
        verdict = (
            f"<p>Ensemble {figure(['overall_results', 'accuracy'], overall['accuracy'], shown)}"
            f" against the best single lane, {escape(_lane_label(best))}, "
            f"{_percent(best['accuracy'])}: <strong data-derived='ensemble_gain'>"
            f"{gain:+.1%}</strong>.</p>"
        )
    values = [(label, float(block.get("accuracy") or 0.0)) for label, _, block in named]
    values.append((ensemble, float(overall.get("accuracy") or 0.0)))
    chart = charts.bars(
        "accuracy_lanes", "accuracy per lane and ensemble", values, top=1.0, fmt=_percent,
        marked=ensemble,
    )  # fmt: skip
    named.append((ensemble, ["overall_results"], overall))
    return "<h3>Accuracy per lane, and the ensemble</h3>" + verdict + chart + _table(named)


def _scope(name: str, title: str, named: Named) -> str:
    if not named:
        return ""
    values = [(label, float(block.get("accuracy") or 0.0)) for label, _, block in named]
    chart = charts.bars(name, title, values, top=1.0, fmt=_percent)
    return f"<h3>{escape(title)}</h3>{chart}{_table(named)}"


def _table(named: Named) -> str:
    rows = ["<tr><th></th><th>correct</th><th>total</th><th>accuracy</th></tr>"]
    for label, path, block in named:
        cells = "".join(
            f"<td class='n'>{figure([*path, metric], block.get(metric))}</td>"
            for metric in ("correct", "total", "accuracy")
        )
        rows.append(f"<tr><th>{escape(label)}</th>{cells}</tr>")
    return "<table class='accuracy'>" + "".join(rows) + "</table>"
