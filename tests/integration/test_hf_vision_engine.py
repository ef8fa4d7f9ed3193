"""The ``hf`` engine on a real vision-language checkpoint (the demo Llava), in process:
loading, image tokens counted, batched greedy == one by one, failures per item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.runconfig import Generation, RunConfig
from common.settings import Settings
from producer.demo_vision import IMAGE_SIDE, PATCH
from tests.media_files import write_png, write_truncated_png, write_video
from worker.engines import GenerationParams, load_engine
from worker.engines.hf import HFEngine
from worker.engines.hf_vision import HFVisionEngine, VisionPrompt
from worker.inference import generate_isolated
from worker.prompting import prepare

#: Tokens the demo processor expands each image placeholder into.
IMAGE_TOKENS = (IMAGE_SIDE // PATCH) ** 2

GREEDY = GenerationParams(max_new_tokens=6)


@pytest.fixture(scope="module")
def engine(demo_vision_model: Path) -> HFVisionEngine:
    loaded = load_engine("hf", str(demo_vision_model), dtype="float32", settings=Settings())
    assert isinstance(loaded, HFVisionEngine)
    return loaded


def config(frames: int = 2) -> RunConfig:
    return RunConfig(models=["vlm"], video_frames=frames, generation=Generation(max_new_tokens=6))


def pictures(folder: Path, count: int) -> list[str]:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    return [
        str(write_png(folder / f"p{index}.png", colour=colours[index % 4], side=20 + 9 * index))
        for index in range(count)
    ]


def items(folder: Path) -> list[tuple[dict[str, Any], str]]:
    """Mixed image counts, a chat item, a video and a plain text prompt."""
    paths = pictures(folder, 4)
    clip = str(write_video(folder / "clip.mp4", frames=6))
    rows: list[dict[str, Any]] = [
        {"id": 0, "images": paths[:1], "prompt": "What colour?"},
        {"id": 1, "images": paths[:3], "prompt": "Which of these three is the odd one out?"},
        {"id": 2, "prompt": "No picture at all, only words."},
        {"id": 3, "images": [], "prompt": "An empty list of images."},
        {
            "id": 4,
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Left:"},
                        {"type": "image_url", "image_url": {"url": Path(paths[3]).as_uri()}},
                        {"type": "text", "text": "Right:"},
                        {"type": "image_url", "image_url": {"url": Path(paths[1]).as_uri()}},
                        {"type": "text", "text": "Same colour?"},
                    ],
                },
            ],
        },
        {"id": 5, "video": clip, "prompt": "What happens?"},
        {"id": 6, "images": paths[1:3], "prompt": "Two."},
    ]
    return [(row, row.get("prompt", "")) for row in rows]


def test_a_vision_checkpoint_loads_as_the_vision_engine(
    engine: HFVisionEngine, demo_model: Path
) -> None:
    assert engine.max_context == 2048
    assert type(load_engine("hf", str(demo_model), settings=Settings())) is HFEngine


def test_lengths_count_the_image_tokens(engine: HFVisionEngine, tmp_path: Path) -> None:
    prepared = prepare(engine, items(tmp_path), config(frames=3))
    assert prepared.failed == {}
    by_id = dict(zip(range(7), zip(prepared.prompts, prepared.lengths, strict=True), strict=True))
    texts = engine.count_tokens(
        [prompt.text for prompt, _ in by_id.values() if isinstance(prompt, VisionPrompt)]
    )
    vision = [(p, n) for p, n in by_id.values() if isinstance(p, VisionPrompt)]
    for (prompt, length), text_tokens in zip(vision, texts, strict=True):
        images = sum(3 if kind == "video_url" else 1 for kind, _, _ in prompt.media)
        # Each placeholder is one token of the text and IMAGE_TOKENS once expanded.
        assert length == text_tokens + images * (IMAGE_TOKENS - 1)
    assert by_id[1][1] - by_id[0][1] > 2 * IMAGE_TOKENS  # three images against one
    assert isinstance(by_id[2][0], str)  # no media, no chat: a plain prompt


def test_batched_greedy_equals_one_by_one(engine: HFVisionEngine, tmp_path: Path) -> None:
    prepared = prepare(engine, items(tmp_path), config())
    batched = engine.generate(prepared.prompts, GREEDY)
    alone = [engine.generate([prompt], GREEDY)[0] for prompt in prepared.prompts]
    assert batched == alone
    assert [completion.tokens_in for completion in batched] == prepared.lengths
    assert all(completion.tokens_out > 0 for completion in batched)


def test_seeded_sampling_is_the_same_batched_or_alone(
    engine: HFVisionEngine, tmp_path: Path
) -> None:
    prepared = prepare(engine, items(tmp_path)[:3], config())
    sampled = GenerationParams(max_new_tokens=6, temperature=1.0, seed=3)
    assert engine.generate(prepared.prompts, sampled) == [
        engine.generate([prompt], sampled)[0] for prompt in prepared.prompts
    ]


def test_an_undecodable_image_fails_its_item_alone(engine: HFVisionEngine, tmp_path: Path) -> None:
    good = pictures(tmp_path, 2)
    cut = str(write_truncated_png(tmp_path / "cut.png"))
    rows = [
        ({"id": 0, "images": good[:1], "prompt": "a"}, "a"),
        ({"id": 1, "images": [good[1], cut], "prompt": "b"}, "b"),
        ({"id": 2, "images": good, "prompt": "c"}, "c"),
    ]
    prepared = prepare(engine, rows, config())
    assert set(prepared.failed) == {1}
    kind, message = prepared.failed[1]
    assert kind == "invalid_input"
    assert "cut.png" in message


def test_an_image_removed_after_rendering_fails_alone_and_the_batch_is_bisected(
    engine: HFVisionEngine, tmp_path: Path
) -> None:
    paths = pictures(tmp_path, 4)
    rows = [
        ({"id": n, "images": [path], "prompt": f"q{n}"}, f"q{n}") for n, path in enumerate(paths)
    ]
    prepared = prepare(engine, rows, config())
    expected = [engine.generate([prompt], GREEDY)[0] for prompt in prepared.prompts]
    Path(paths[2]).unlink()
    outcomes = generate_isolated(engine, prepared.prompts, GREEDY, lengths=prepared.lengths)
    assert [outcome.error_kind for outcome in outcomes] == [None, None, "invalid_input", None]
    assert [outcome.completion for n, outcome in enumerate(outcomes) if n != 2] == [
        completion for n, completion in enumerate(expected) if n != 2
    ]
    assert "p2.png" in (outcomes[2].error_message or "")


def test_the_text_engine_refuses_media_per_item(demo_model: Path, tmp_path: Path) -> None:
    text_engine = load_engine("hf", str(demo_model), settings=Settings())
    rows = [
        ({"id": 0, "images": pictures(tmp_path, 1), "prompt": "a"}, "a"),
        ({"id": 1, "prompt": "b"}, "b"),
    ]
    prepared = prepare(text_engine, rows, config())
    assert list(prepared.failed) == [0]
    assert prepared.failed[0][0] == "invalid_input"
    assert "text only" in prepared.failed[0][1]
