"""Charts as static SVG text: horizontal bars, a histogram, lines over time.

No script, no library: each chart is a few hundred bytes per bar or point, drawn by
any browser offline, and its size depends on the buckets it shows, never on the
number of results behind them. Every bar and point carries its figure in a
``<title>`` (shown on hover) and ``data-`` attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

from common.report_queries import Bucket

#: Series colours, in order (colour-blind-safe, after Okabe and Ito).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000")

#: Width of every chart, in SVG units (the page scales it down on a narrow screen).
WIDTH = 760

Format = Callable[[float], str]


def _number(value: float) -> str:
    return f"{value:,.4g}"


def _svg(name: str, title: str, height: int, body: list[str]) -> str:
    return (
        f'<svg class="chart" data-chart="{escape(name)}" role="img" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        + "".join(body)
        + "</svg>"
    )


def bars(
    name: str,
    title: str,
    values: Sequence[tuple[str, float]],
    *,
    top: float | None = None,
    fmt: Format = _number,
    marked: str | None = None,
) -> str:
    """One horizontal bar per (label, value), longest ``top`` (default: the largest value).

    ``marked`` names a bar drawn in the second colour (the ensemble among lanes).
    """
    row, label_w, bar_w = 26, 260, WIDTH - 260 - 90
    scale = top if top else max((value for _, value in values), default=0.0) or 1.0
    body: list[str] = []
    for n, (label, value) in enumerate(values):
        y = 6 + n * row
        length = max(bar_w * value / scale, 0.0)
        colour = PALETTE[1] if label == marked else PALETTE[0]
        body.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{escape(_clip(label))}</text>'
            f'<rect class="bar" data-label="{escape(label)}" data-value="{value!r}" '
            f'x="{label_w}" y="{y + 3}" width="{length:.1f}" height="{row - 8}" fill="{colour}">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
            f'<text x="{label_w + length + 6:.1f}" y="{y + 16}">{escape(fmt(value))}</text>'
        )
    return _svg(name, title, 12 + row * max(len(values), 1), body)


def histogram(
    name: str,
    title: str,
    buckets: Sequence[Bucket],
    *,
    fmt: Format = _number,
    markers: Sequence[tuple[str, float]] = (),
) -> str:
    """Vertical bars of ``buckets``, with a dashed line at each (label, value) marker."""
    height, left, bottom, top_pad = 240, 50, 40, 24
    plot_w, plot_h = WIDTH - left - 20, height - bottom - top_pad
    low = buckets[0].low if buckets else 0.0
    high = buckets[-1].high if buckets else 1.0
    span = (high - low) or 1.0
    most = max((bucket.count for bucket in buckets), default=0) or 1
    body = [_axes(left, top_pad, plot_w, plot_h, most)]
    step = plot_w / max(len(buckets), 1)
    for n, bucket in enumerate(buckets):
        tall = plot_h * bucket.count / most
        body.append(
            f'<rect class="bar" data-low="{bucket.low!r}" data-high="{bucket.high!r}" '
            f'data-value="{bucket.count}" x="{left + n * step + 1:.1f}" '
            f'y="{top_pad + plot_h - tall:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{tall:.1f}" fill="{PALETTE[0]}"><title>{escape(fmt(bucket.low))} to '
            f"{escape(fmt(bucket.high))}: {bucket.count:,}</title></rect>"
        )
    for n, (label, value) in enumerate(markers):
        x = left + plot_w * (value - low) / span
        colour = PALETTE[5 - 2 * n]
        # A label near the right edge reads leftwards from its line.
        anchor, dx = ("end", -3) if x > left + plot_w * 0.7 else ("start", 3)
        body.append(
            f'<line class="marker" data-label="{escape(label)}" data-value="{value!r}" '
            f'x1="{x:.1f}" x2="{x:.1f}" y1="{top_pad}" y2="{top_pad + plot_h}" '
            f'stroke="{colour}" stroke-dasharray="4 3"/>'
            f'<text x="{x + dx:.1f}" y="{top_pad - 8 + 11 * n}" fill="{colour}" '
            f'text-anchor="{anchor}">{escape(label)} {escape(fmt(value))}</text>'
        )
    body.append(_ticks(left, top_pad + plot_h, plot_w, low, high, fmt))
    return _svg(name, title, height, body)


def lines(name: str, title: str, series: dict[str, list[int]], *, interval_s: float) -> str:
    """One polyline per series (a worker), a dot per interval at its middle; a legend below."""
    intervals = max((len(counts) for counts in series.values()), default=0)
    legend_rows = (len(series) + 2) // 3
    height, left, top_pad = 250 + 18 * legend_rows, 50, 20
    plot_w, plot_h = WIDTH - left - 20, 190
    most = max((max(counts) for counts in series.values() if counts), default=0) or 1
    body = [_axes(left, top_pad, plot_w, plot_h, most)]
    step = plot_w / max(intervals, 1)
    for n, (label, counts) in enumerate(series.items()):
        colour = PALETTE[n % len(PALETTE)]
        points = [
            (left + (i + 0.5) * step, top_pad + plot_h - plot_h * count / most)
            for i, count in enumerate(counts)
        ]
        dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>' for x, y in points)
        body.append(
            f'<polyline class="series" data-label="{escape(label)}" '
            f'data-total="{sum(counts)}" fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}">'
            f"<title>{escape(label)}: {sum(counts):,} results</title></polyline>"
            f'<g fill="{colour}">{dots}</g>'
        )
        x, y = left + (n % 3) * 240, 252 + 18 * (n // 3)
        body.append(
            f'<rect x="{x}" y="{y - 9}" width="12" height="10" fill="{colour}"/>'
            f'<text x="{x + 16}" y="{y}">{escape(_clip(label, 30))}</text>'
        )
    span = interval_s * max(intervals, 1)
    body.append(_ticks(left, top_pad + plot_h, plot_w, 0.0, span, lambda s: f"{s:.3g} s"))
    return _svg(name, title, height, body)


def _axes(left: int, top: int, width: float, height: float, most: int) -> str:
    return (
        f'<line x1="{left}" y1="{top + height}" x2="{left + width}" y2="{top + height}" '
        f'stroke="#888"/><line x1="{left}" y1="{top}" x2="{left}" y2="{top + height}" '
        f'stroke="#888"/><text x="{left - 6}" y="{top + 4}" text-anchor="end">{most:,}</text>'
        f'<text x="{left - 6}" y="{top + height}" text-anchor="end">0</text>'
    )


def _ticks(left: int, y: float, width: float, low: float, high: float, fmt: Format) -> str:
    """Five labels under the x axis, from ``low`` to ``high``."""
    return "".join(
        f'<text x="{left + width * n / 4:.1f}" y="{y + 16:.1f}" text-anchor="middle">'
        f"{escape(fmt(low + (high - low) * n / 4))}</text>"
        for n in range(5)
    )


def _clip(label: str, width: int = 36) -> str:
    return label if len(label) <= width else "…" + label[-(width - 1) :]
