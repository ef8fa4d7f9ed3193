"""What the exported lines say, through `fleet run` on the embedded default: permuted
answers mapped back (a recount agrees with every score), input fields never overwritten,
the ensemble of each item, and the prompt the model saw."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from common.scoring import parse
from tests.integration.helpers import fleet, fleet_env, run_fleet

#: Multiple-choice items whose input uses field names the fleet also writes.
QUESTIONS = [
    {
        "id": "q1", "question": "pick", "choices": ["red", "green", "blue", "grey"],
        "gold": "A", "a": "A", "success": "retrieved", "answer": "from-retrieval",
        "score": 7, "error": "none",
    },
    {
        "id": "q2", "question": "pick", "choices": ["one", "two", "three", "four"],
        "gold": "C", "a": "C", "success": False, "answer": "other", "score": 8, "error": None,
    },
]  # fmt: skip

#: Checkpoints of the majority run: the word after a=, b= or c= (see the echo engine).
VOTES = [
    {"id": "v1", "gold": "Paris", "a": "paris", "b": "Paris.", "c": "Rome"},  # 2 of 3 right
    {"id": "v2", "gold": "Oslo", "a": "Bern", "b": "bern", "c": "Oslo"},  # a wrong majority
    {"id": "v3", "gold": "Lima", "a": "Quito", "b": "Lima", "c": "Cairo"},  # no majority
]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def fleet_field(line: dict[str, Any], name: str) -> Any:
    """A fleet field as a reader takes it: from ``fleet`` when the input uses the name."""
    return line.get("fleet", {}).get(name, line.get(name))


def test_permuted_answers_recount_and_input_fields_survive(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", QUESTIONS)
    out = tmp_path / "out"
    env = fleet_env(tmp_path)
    fleet(
        "run", str(inputs), "--engine", "echo", "--model", "answer_from=a",
        "--permutation", "shuffle-choices", "--permutations", "3",
        "--template", "{question} {choices} a={a}", "--reference-field", "gold",
        "--scorer", "exact", "--keep-prompts", "--system", "Answer with one letter.",
        "-o", str(out), env=env, cwd=tmp_path,
    )  # fmt: skip
    lines = read_jsonl(out / "results.jsonl")
    assert len(lines) == 2 * 3
    exact = parse("exact")
    moved = 0
    for line in lines:
        source = next(q for q in QUESTIONS if q["id"] == line["id"])
        # Every input field survives under its own name, with its own value and type.
        assert {name: line[name] for name in source} == source
        answer, score = fleet_field(line, "answer"), fleet_field(line, "score")
        # The recount from the file agrees with the score on every line.
        assert exact(answer, line["reference"]) == score
        assert line["raw_answer"] == line["a"]  # the text as generated
        moved += answer != line["raw_answer"]
        assert set(line["fleet"]) == {"answer", "success", "score", "error"}
        assert line["fleet"]["success"] is True
        # What the model saw: the system prompt and the lane's shuffled choices.
        prompt = line["rendered_prompt"]
        assert "Answer with one letter." in prompt
        if line["permutation"] == "shuffle-choices@0":  # @0 keeps the order
            assert json.dumps(source["choices"]) in prompt
    assert moved > 0  # some lane's letter was mapped back to another one
    prompts = {line["rendered_prompt"] for line in lines if line["id"] == "q1"}
    assert len(prompts) > 1  # each lane saw its own order of the choices
    summary = json.loads((out / "summary.json").read_text())
    recount = sum(fleet_field(line, "score") for line in lines)
    assert recount == sum(lane["correct"] for lane in summary["lane_results"])

    exported = tmp_path / "again.jsonl"
    fleet("export", "latest", "--with-prompts", "-o", str(exported), env=env, cwd=tmp_path)
    assert read_jsonl(exported) == lines


def test_with_prompts_on_a_run_that_did_not_keep_them_says_so(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "a=x"}])
    env = fleet_env(tmp_path)
    fleet("run", str(inputs), "--engine", "echo", "-m", "echo", "-o", str(tmp_path / "o"),
          env=env, cwd=tmp_path)  # fmt: skip
    line = read_jsonl(tmp_path / "o" / "results.jsonl")[0]
    assert "rendered_prompt" not in line  # stored only when asked
    done = run_fleet("export", "latest", "--with-prompts", "-o", str(tmp_path / "x.jsonl"),
                     env=env, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "--keep-prompts" in done.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_majority_exports_the_ensemble_answer_and_score(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "votes.jsonl", VOTES)
    out = tmp_path / "out"
    env = fleet_env(tmp_path)
    fleet(
        "run", str(inputs), "--engine", "echo", "--model", "answer_from=a",
        "--model", "answer_from=b", "--model", "answer_from=c",
        "--template", "a={a} b={b} c={c}", "--reference-field", "gold",
        "--scorer", "normalized", "--aggregate", "majority", "-o", str(out),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    lines = read_jsonl(out / "results.jsonl")
    per_item = {line["id"]: (line["ensemble_answer"], line["ensemble_score"]) for line in lines}
    assert per_item == {"v1": ("paris", 1.0), "v2": ("bern", 0.0), "v3": (None, 0.0)}
    for line in lines:  # the same ensemble on every lane of an item
        assert (line["ensemble_answer"], line["ensemble_score"]) == per_item[line["id"]]
    summary = json.loads((out / "summary.json").read_text())
    overall = summary["overall_results"]
    assert overall["aggregate"] == "majority"
    assert overall["correct"] == sum(score for _, score in per_item.values()) == 1

    # The table exports carry the same fields.
    table = tmp_path / "votes.csv"
    fleet("export", "latest", "--format", "csv", "-o", str(table), env=env, cwd=tmp_path)
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert [(row["id"], row["ensemble_answer"], row["ensemble_score"]) for row in rows[::3]] == [
        ("v1", "paris", "1.0"), ("v2", "bern", "0.0"), ("v3", "", "0.0")
    ]  # fmt: skip
    assert rows[1]["raw_answer"] == "Paris."


def test_aggregate_without_a_reference_field_is_refused(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "votes.jsonl", VOTES)
    env = fleet_env(tmp_path)
    for command in ("run", "enqueue"):
        extra = {"broker_url": "redis://127.0.0.1:1/0"} if command == "enqueue" else {}
        done = run_fleet(
            command, str(inputs), "--engine", "echo", "-m", "answer_from=a",
            "--aggregate", "majority", env=fleet_env(tmp_path, **extra), cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode != 0, done.stdout
        assert "--aggregate majority" in done.stderr
        assert "--reference-field" in done.stderr
    nothing = run_fleet("status", "latest", env=env, cwd=tmp_path)
    assert nothing.returncode != 0  # no run was stored


def test_kept_prompt_is_the_chat_template_text_the_model_read(
    tmp_path: Path, demo_model: Path
) -> None:
    """A real checkpoint: the tokenizer's chat template, the schema instruction and the
    lane's permutation, exactly as the model got them."""
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"id": "p1", "puzzle": "12", "ref": "12"}])
    schema = {"type": "object", "properties": {"n": {"type": "string"}}}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    out = tmp_path / "out"
    # The demo checkpoint's random weights write no JSON: the run fails (exit 1), and
    # the failed answer keeps its prompt all the same.
    done = run_fleet(
        "run", str(inputs), "--model", str(demo_model), "--template", "Solve {puzzle}",
        "--permutation", "cyclic-digits@1", "--system", "Be exact.",
        "--json-schema", str(tmp_path / "schema.json"), "--max-new-tokens", "2",
        "--keep-prompts", "-o", str(out), env=fleet_env(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    (line,) = read_jsonl(out / "results.jsonl")
    instruction = (
        "\n\nAnswer with a single JSON object that matches this JSON Schema, and nothing "
        f"else:\n{json.dumps(schema)}\n"
    )
    # The demo checkpoint's chat template: <|role|>, newline, content, newline.
    expected = (
        "<|system|>\nBe exact.\n"
        f"<|user|>\nSolve 23{instruction}\n"  # 12 relabelled by cyclic-digits@1
        "<|assistant|>\n"
    )
    assert line["rendered_prompt"] == expected
