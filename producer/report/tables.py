"""The report's tables: per worker, failures by kind, and lists of items."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from common.report_queries import FailureKind, ItemRow, WorkerFigures
from producer.report.marks import figure

#: Characters of an error message a table shows.
MESSAGE_CHARS = 240


def _row(cells: Sequence[str], **data: str) -> str:
    attributes = "".join(f' data-{name}="{escape(value)}"' for name, value in data.items())
    return f"<tr{attributes}>" + "".join(cells) + "</tr>"


def _number(value: float | int, name: str, text: str | None = None) -> str:
    shown = text if text is not None else f"{value:,}"
    return f'<td class="n" data-{name}="{value!r}">{escape(shown)}</td>'


def _head(*names: str) -> str:
    return "<tr>" + "".join(f"<th>{escape(name)}</th>" for name in names) + "</tr>"


def workers_table(workers: Sequence[WorkerFigures], statistics: dict[str, Any]) -> str:
    """Per worker: results, failed, slices, seconds busy, and the summary's mean latency."""
    if not workers:
        return "<p class='muted'>No results yet.</p>"
    rows = [_head("worker", "results", "failed", "slices", "busy (s)", "mean inference (s)")]
    for worker in workers:
        scope = f"worker:{worker.name}"
        mean = statistics.get(scope, {}).get("avg_inference_time_s")
        rows.append(
            _row(
                [
                    f"<td>{escape(worker.name)}</td>",
                    _number(worker.results, "results"),
                    _number(worker.failed, "failed"),
                    _number(worker.slices, "slices"),
                    _number(worker.busy_s, "busy", f"{worker.busy_s:,.2f}"),
                    f'<td class="n">{_mean(scope, mean)}</td>',
                ],
                worker=worker.name,
            )
        )
    return "<table class='workers'>" + "".join(rows) + "</table>"


def _mean(scope: str, mean: float | None) -> str:
    return "–" if mean is None else figure(["statistics", scope, "avg_inference_time_s"], mean)


def failures_table(failures: Sequence[FailureKind]) -> str:
    """Each error kind, its count and a few examples (item id, lane, message)."""
    if not failures:
        return "<p class='muted' data-failures='0'>No failed result.</p>"
    rows = [_head("error kind", "results", "examples (item, lane: message)")]
    for failure in failures:
        examples = "<br>".join(
            f"<code>{escape(item)}</code> lane {lane}: {escape(_clip(message))}"
            for item, lane, message in failure.examples
        )
        rows.append(
            _row(
                [f"<td>{escape(failure.kind)}</td>", _number(failure.count, "count"),
                 f"<td>{examples}</td>"],
                kind=failure.kind,
            )
        )  # fmt: skip
    return "<table class='failures'>" + "".join(rows) + "</table>"


def items_table(rows: Sequence[ItemRow], name: str, *, failed: bool) -> str:
    """Items with their lane, worker, latency and tokens (and error, for failed ones)."""
    if not rows:
        return f"<p class='muted' data-{name}='0'>None.</p>"
    head = ["item", "lane", "worker", "latency (s)", "tokens in", "tokens out"]
    lines = [_head(*head, *(["error kind", "error"] if failed else []))]
    for row in rows:
        cells = [
            f"<td><code>{escape(row.item)}</code></td>",
            _number(row.lane, "lane"),
            f"<td>{escape(row.worker)}</td>",
            _number(row.latency_s, "latency", f"{row.latency_s:.4f}"),
            _number(row.tokens_in, "tokens-in"),
            _number(row.tokens_out, "tokens-out"),
        ]
        if failed:
            cells += [
                f"<td>{escape(row.error_kind or '')}</td>",
                f"<td>{escape(_clip(row.error or ''))}</td>",
            ]
        lines.append(_row(cells, item=row.item))
    return f"<table class='items {name}'>" + "".join(lines) + "</table>"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"
