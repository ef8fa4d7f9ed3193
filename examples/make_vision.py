"""Write a small, deterministic vision dataset: pictures of coloured shapes and a clip.

Each image is one shape (circle, square or triangle) in one colour on a light
background; the video is a dot crossing the frame. The JSONL file uses both input
shapes: ``images``/``video`` fields with a ``prompt``, and chat ``messages`` with
content parts. Paths in it are relative to the file, as the fleet resolves them.
Every record has an ``expected`` answer (the shape's colour), so ``--reference-field expected
--scorer contains`` evaluates it.

Usage::

    python examples/make_vision.py [OUT_DIR]   # default examples/vision
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

#: Colour name -> RGB.
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220)}
SHAPES = ("circle", "square", "triangle")

#: Side of the square pictures, in pixels.
SIDE = 64

#: Frames of the clip.
CLIP_FRAMES = 24


def draw_shape(shape: str, colour: str, rng: random.Random) -> Any:
    """One picture (a PIL image): ``shape`` in ``colour`` at a random place and size."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (SIDE, SIDE), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    size = rng.randint(SIDE // 4, SIDE // 2)
    x, y = rng.randint(0, SIDE - size), rng.randint(0, SIDE - size)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((x, y, x + size, y + size), fill=fill)
    elif shape == "square":
        draw.rectangle((x, y, x + size, y + size), fill=fill)
    else:
        draw.polygon([(x + size // 2, y), (x, y + size), (x + size, y + size)], fill=fill)
    return image


def write_clip(path: Path, colour: str, frames: int = CLIP_FRAMES) -> None:
    """A short MPEG-4 clip: a ``colour`` dot crossing the frame from left to right."""
    import av
    from PIL import Image, ImageDraw

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=12)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            image = Image.new("RGB", (SIDE, SIDE), (245, 245, 240))
            x = index * (SIDE - 16) // max(frames - 1, 1)
            ImageDraw.Draw(image).ellipse((x, 24, x + 16, 40), fill=COLOURS[colour])
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def build(out: Path, *, count: int = 9, seed: int = 0) -> Path:
    """Write ``count`` pictures, one clip and ``vision.jsonl`` into ``out``; return the file."""
    rng = random.Random(seed)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for index in range(count):
        shape, colour = SHAPES[index % len(SHAPES)], rng.choice(sorted(COLOURS))
        name = f"images/{index:02d}-{colour}-{shape}.png"
        draw_shape(shape, colour, rng).save(out / name)
        question = f"What colour is the {shape}?"
        if index % 3 == 2:
            records.append(_chat_record(f"pic-{index}", name, question, colour))
        else:
            records.append(
                {"id": f"pic-{index}", "images": [name], "prompt": question, "expected": colour}
            )
    # Two pictures in one question: the first two.
    first, second = records[0], records[1]
    records.append(
        {
            "id": "pair",
            "images": [first["images"][0], second["images"][0]],
            "prompt": "What colours are the two shapes?",
            "expected": f"{first['expected']} {second['expected']}",
        }
    )
    write_clip(out / "clip.mp4", "red")
    records.append(
        {"id": "clip", "video": "clip.mp4", "prompt": "What colour is the dot?", "expected": "red"}
    )
    path = out / "vision.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def _chat_record(record_id: str, image: str, question: str, answer: str) -> dict[str, Any]:
    return {
        "id": record_id,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image}},
                    {"type": "text", "text": question},
                ],
            }
        ],
        "expected": answer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).parent / "vision")
    args = parser.parse_args()
    print(build(args.out))


if __name__ == "__main__":
    main()
