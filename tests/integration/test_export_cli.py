"""``fleet export`` as a user meets it: default names per format, no overwriting of a
file of the other kind, ``-o -`` to standard output."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.helpers import fleet, fleet_env, run_fleet


def finished_run(tmp_path: Path, records: list[dict[str, object]], *args: str) -> dict[str, str]:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(record) + "\n" for record in records))
    env = fleet_env(tmp_path)
    fleet("run", str(inputs), "--engine", "echo", "--model", "echo", *args, env=env, cwd=tmp_path)
    return env


def test_export_names_per_format_and_refuses_the_other_kind(tmp_path: Path) -> None:
    env = finished_run(tmp_path, [{"id": n, "prompt": f"item {n}"} for n in range(3)])
    fleet("export", "latest", env=env, cwd=tmp_path)
    fleet("export", "latest", "--format", "json", env=env, cwd=tmp_path)
    results = (tmp_path / "results.jsonl").read_text()
    assert len(results.splitlines()) == 3
    assert json.loads((tmp_path / "summary.json").read_text())["run"]["status"] == "completed"

    wrong = run_fleet("export", "latest", "--format", "json", "-o", "results.jsonl", env=env,
                      cwd=tmp_path)  # fmt: skip
    assert wrong.returncode == 2
    assert "results.jsonl holds results (jsonl); not overwriting it" in " ".join(
        wrong.stderr.split()
    )
    assert (tmp_path / "results.jsonl").read_text() == results
    assert (
        run_fleet("export", "latest", "-o", "summary.json", env=env, cwd=tmp_path).returncode == 2
    )

    lines = fleet("export", "latest", "-o", "-", env=env, cwd=tmp_path).splitlines()
    assert [json.loads(line)["id"] for line in lines] == [0, 1, 2]
    document = json.loads(fleet("export", "latest", "-f", "json", "-o", "-", env=env, cwd=tmp_path))
    assert document["statistics"]["overall"]["results"] == 3
    assert not (tmp_path / "-").exists()
