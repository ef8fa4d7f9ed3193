"""The report as one HTML page: styles inline, charts as inline SVG, no script at all.

Figures from the summary are marked with their place in ``summary.json``
(``producer.report.marks``); charts come from ``producer.report.charts``.
"""

from __future__ import annotations

import json
from html import escape

from producer.report import charts
from producer.report.content import ReportContent
from producer.report.evaluation import evaluation_section
from producer.report.marks import figure
from producer.report.tables import failures_table, items_table, workers_table

#: Marks a file as a fleet report: ``fleet report`` only overwrites files that carry it.
GENERATOR = '<meta name="generator" content="fleet report">'

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;
color:#222}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 4px}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.partial{background:#fff4d6;border:1px solid #e6b800;padding:8px 12px}
.final{background:#e8f6ec;border:1px solid #5cb85c;padding:8px 12px}
svg.chart{max-width:100%;height:auto;font-size:12px}pre{background:#f6f6f6;padding:8px;
overflow:auto;max-height:360px}.muted{color:#777}code{font-size:12px}
"""


def render(content: ReportContent) -> str:
    """The whole page."""
    run = content.summary["run"]
    body = [
        f"<h1>fleet run <code>{escape(content.run_id)}</code></h1>",
        _state(content),
        _glance(content),
        _throughput(content),
        _distributions(content),
        "<h2>Workers</h2>",
        workers_table(content.workers, content.summary["statistics"]),
        "<h2>Failures by kind</h2>",
        failures_table(content.failures),
    ]
    if content.scored:
        body.append(evaluation_section(content.summary))
    body += [
        "<h2>Slowest items</h2>",
        items_table(content.slowest, "slowest", failed=False),
        "<h2>Failed items</h2>",
        items_table(content.failed, "failed", failed=True),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'{GENERATOR}<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>fleet report {escape(run['id'])}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def _state(content: ReportContent) -> str:
    run = content.summary["run"]
    overall = content.overall
    status = figure(["run", "status"], run["status"])
    read_at = content.read_at.isoformat(timespec="seconds")
    if content.final:
        return f'<p class="final" data-partial="false">Run {status}; figures final.</p>'
    expected = overall.get("expected_results", 0) or 0
    pending = expected - (overall.get("results", 0) or 0)
    return (
        f'<p class="partial" data-partial="true"><strong>Partial report</strong>: the run is '
        f"{status}; {pending:,} of {expected:,} results still owed. Figures as read at "
        f"{escape(read_at)} UTC; run <code>fleet report</code> again for newer ones.</p>"
    )


def _glance(content: ReportContent) -> str:
    """The run at a glance: two columns of label and figure."""
    run, config, overall = content.summary["run"], content.summary["config"], content.overall
    stat = ["statistics", "overall"]
    models = list(dict.fromkeys(lane["model"] for lane in content.summary["lanes"]))
    active = overall.get("active_time_s") or 0.0
    tokens_in_rate = (overall.get("tokens_in") or 0) / active if active else 0.0
    rows: list[tuple[str, str]] = [
        ("run", figure(["run", "id"], run["id"])),
        ("status", figure(["run", "status"], run["status"])),
        ("engine", figure(["run", "engine"], run["engine"])),
        ("input", figure(["run", "input"], run["input"])),
        ("models", ", ".join(escape(model) for model in models)),
        ("lanes", figure([*stat, "lanes"], overall.get("lanes"))),
        ("started", figure(["run", "started_at"], run["started_at"])),
        ("finished", figure(["run", "finished_at"], run["finished_at"])),
    ]
    for label, metric in (
        ("items", "items"),
        ("rejected at enqueue", "rejected_items"),
        ("results expected", "expected_results"),
        ("results", "results"),
        ("results ok", "results_ok"),
        ("results failed", "results_failed"),
        ("success rate", "success_rate"),
        ("wall time (s)", "wall_time_s"),
        ("active time (s)", "active_time_s"),
        ("items/s", "items_per_s"),
        ("results/s", "results_per_s"),
        ("tokens in", "tokens_in"),
        ("tokens out", "tokens_out"),
        ("tokens out/s", "tokens_per_s"),
        ("latency mean (s)", "latency_mean_s"),
        ("latency p50 (s)", "latency_p50_s"),
        ("latency p95 (s)", "latency_p95_s"),
    ):
        if metric in overall:
            rows.append((label, figure([*stat, metric], overall[metric])))
    rows.append(
        ("tokens in/s", f'<span data-derived="tokens_in_per_s">{tokens_in_rate:,.1f}</span>')
    )
    cells = "".join(f"<tr><th>{label}</th><td class='n'>{value}</td></tr>" for label, value in rows)
    config_text = escape(json.dumps(config, indent=2, ensure_ascii=False))
    return (
        f"<h2>At a glance</h2><table class='glance'>{cells}</table>"
        f"<details><summary>config</summary><pre>{config_text}</pre></details>"
    )


def _throughput(content: ReportContent) -> str:
    flow = content.throughput
    if not flow.per_worker:
        return "<h2>Throughput</h2><p class='muted'>No results yet.</p>"
    chart = charts.lines(
        "throughput",
        f"results per {flow.interval_s:g} s, per worker",
        flow.per_worker,
        interval_s=flow.interval_s,
    )
    start = flow.start.isoformat(timespec="seconds") if flow.start else ""
    return (
        f"<h2>Throughput</h2><p class='muted'>Results written per {flow.interval_s:g} s "
        f"interval by each worker, from the first result ({escape(start)}). A stall is a gap; "
        f"a slow worker is a low line.</p>{chart}"
    )


def _distributions(content: ReportContent) -> str:
    overall = content.overall
    markers = [
        (name, overall[metric])
        for name, metric in (("p50", "latency_p50_s"), ("p95", "latency_p95_s"))
        if overall.get(metric) is not None
    ]
    parts = ["<h2>Latency and tokens</h2><p class='muted'>Over the successful results.</p>"]
    if not content.latency:
        return parts[0] + "<p class='muted'>No successful result yet.</p>"
    parts += [
        "<h3>Latency (s)</h3>",
        charts.histogram(
            "latency", "latency (s)", content.latency, fmt=lambda s: f"{s:.3g}", markers=markers
        ),
        "<h3>Tokens in</h3>",
        charts.histogram("tokens_in", "tokens in per result", content.tokens_in),
        "<h3>Tokens out</h3>",
        charts.histogram("tokens_out", "tokens out per result", content.tokens_out),
    ]
    return "".join(parts)
