"""The report of a real ``fleet run``, opened from a file:// URL in a headless Chromium.

The page must load with no console error and no network request, draw every chart,
and show the figures of ``summary.json``; a screenshot is kept in the test's folder.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from tests.integration.browser import headless_chromium
from tests.integration.helpers import fleet, fleet_env

#: Two echo "checkpoints" answering from the prompt, one of which fails on POISON.
MODELS = ("answer_from=a,fail_marker=POISON", "answer_from=a")

#: Charts an evaluation run's report draws.
CHARTS = {
    "throughput", "latency", "tokens_in", "tokens_out", "accuracy_lanes",
    "model_results", "permutation_results", "dataset_results",
}  # fmt: skip


#: Schemes that leave the machine.
NETWORK = ("http://", "https://", "ws://", "wss://", "ftp://")


def evaluation_run(tmp_path: Path) -> Path:
    """A finished, scored two-model echo run with one failing item; its output folder."""
    records = [
        {"id": n, "prompt": "POISON" if n == 4 else f"q {n} a={1 + n % 3 // 2}", "ref": "1"}
        for n in range(30)
    ]
    inputs = tmp_path / "eval.jsonl"
    inputs.write_text("".join(json.dumps(record) + "\n" for record in records))
    env = fleet_env(tmp_path)
    models = [arg for model in MODELS for arg in ("--model", model)]
    out = fleet(
        "run", str(inputs), "--engine", "echo", *models, "--reference-field", "ref",
        "--scorer", "exact", "--workers", "2", "--slice-size", "5", "-o", str(tmp_path / "out"),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert f"report: {tmp_path / 'out' / 'report.html'}" in out
    return tmp_path / "out"


def at(document: Any, path: list[str | int]) -> Any:
    for key in path:
        document = document[key]
    return document


def test_report_opens_offline_and_shows_the_summary(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    out = evaluation_run(tmp_path)
    page = out / "report.html"
    summary = json.loads((out / "summary.json").read_text())
    text = page.read_text()
    assert "<script" not in text
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    with headless_chromium(tmp_path / "profile") as browser:
        browser.get_log("performance")  # what the browser's own start page fetched
        browser.get(page.as_uri())
        assert browser.title == f"fleet report {summary['run']['id']}"

        # No console error; no request but the page itself; no resource loaded.
        console = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert console == []
        requests = [
            json.loads(entry["message"])["message"]["params"]
            for entry in browser.get_log("performance")
            if '"Network.requestWillBeSent"' in entry["message"]
        ]
        ours = [sent["request"]["url"] for sent in requests if sent["documentURL"] == page.as_uri()]
        assert ours == [page.as_uri()]
        assert not [sent for sent in requests if sent["request"]["url"].startswith(NETWORK)]
        assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0

        # Every chart drawn: there, with a size, and with its bars or lines.
        charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
        assert {chart.get_attribute("data-chart") for chart in charts} == CHARTS
        for chart in charts:
            assert chart.size["width"] > 100
            assert chart.size["height"] > 20
            marks = chart.find_elements(By.CSS_SELECTOR, "rect.bar, polyline.series")
            assert marks, chart.get_attribute("data-chart")

        # Every figure marked as the summary's equals it, in its value and its text.
        figures = browser.find_elements(By.CSS_SELECTOR, "[data-summary]")
        paths = set()
        for element in figures:
            path = json.loads(element.get_attribute("data-summary") or "")
            expected = at(summary, path)
            assert json.loads(element.get_attribute("data-value") or "") == expected, path
            assert_shows(element.text, expected)
            paths.add(tuple(path))
        overall = summary["statistics"]["overall"]
        for metric in (
            "items",
            "results_ok",
            "results_failed",
            "success_rate",
            "items_per_s",
            "tokens_per_s",
            "latency_p50_s",
            "latency_p95_s",
            "wall_time_s",
        ):
            assert ("statistics", "overall", metric) in paths, metric  # fmt: skip
        assert ("overall_results", "accuracy") in paths
        markers = browser.find_elements(By.CSS_SELECTOR, "svg[data-chart=latency] line.marker")
        assert [float(line.get_attribute("data-value") or 0) for line in markers] == [
            overall["latency_p50_s"],
            overall["latency_p95_s"],
        ]
        assert overall["results_failed"] == 1

        # The tables recount the same rows: failures by kind, results per worker.
        kinds = browser.find_elements(By.CSS_SELECTOR, "table.failures tr[data-kind]")
        assert [(row.get_attribute("data-kind"), row.find_element(By.CSS_SELECTOR,
                 "[data-count]").text) for row in kinds] == [("engine", "1")]  # fmt: skip
        per_worker = [
            int(cell.get_attribute("data-results") or 0)
            for cell in browser.find_elements(By.CSS_SELECTOR, "table.workers [data-results]")
        ]
        assert sum(per_worker) == overall["results"]
        # One row per worker that answered, with its count (of the two started, one may
        # take every slice): the same as the results file says.
        lines = (out / "results.jsonl").read_text().splitlines()
        answered = Counter(json.loads(line)["worker"] for line in lines)
        assert sorted(per_worker) == sorted(answered.values())
        assert 1 <= len(per_worker) <= 2
        series = browser.find_elements(By.CSS_SELECTOR, "polyline.series")
        assert sum(int(line.get_attribute("data-total") or 0) for line in series) == 60
        assert (
            browser.find_element(By.CSS_SELECTOR, "[data-partial]").get_attribute("data-partial")
            == "false"
        )

        screenshot = tmp_path / "report.png"
        assert browser.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000


def assert_shows(text: str, expected: Any) -> None:
    """The text of a figure says ``expected`` (rounded as the page rounds)."""
    if expected is None:
        assert text == "–"
    elif isinstance(expected, (bool, str)):
        assert text == (("yes" if expected else "no") if isinstance(expected, bool) else expected)
    elif isinstance(expected, int):
        assert text.replace(",", "") == str(expected)
    else:
        number = float(re.sub(r"[,%]", "", text)) / (100 if text.endswith("%") else 1)
        assert abs(number - expected) <= 0.0011 * max(1.0, abs(expected)), (text, expected)
