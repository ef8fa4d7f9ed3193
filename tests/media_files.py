"""Image and video files for the tests that take media: real files, made on the spot."""

from __future__ import annotations

import base64
import io
from pathlib import Path


def write_png(path: Path, *, colour: tuple[int, int, int] = (200, 30, 30), side: int = 24) -> Path:
    """A ``side`` x ``side`` PNG of one colour with a darker square in it."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (side, side), colour)
    ImageDraw.Draw(image).rectangle((side // 4, side // 4, side // 2, side // 2), fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def write_truncated_png(path: Path) -> Path:
    """A PNG whose header is whole and whose pixels are cut off: Pillow opens it, but
    cannot decode it."""
    from PIL import Image

    image = Image.effect_noise((64, 64), 80).convert("RGB")  # noise: no tiny compressed form
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_huge_png(path: Path, *, width: int, height: int) -> Path:
    """A one-colour PNG of ``width`` x ``height``: small on disk, many pixels."""
    from PIL import Image

    Image.new("L", (width, height), 0).save(path, optimize=True)
    return path


def png_data_url(*, colour: tuple[int, int, int] = (30, 30, 200)) -> str:
    """A ``data:`` URL of a small PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_video(path: Path, *, frames: int, side: int = 32) -> Path:
    """An MPEG-4 clip of ``frames`` frames; frame ``i`` is a flat grey of level ``8 * i``,
    so a decoded frame tells which one it was."""
    import av
    from PIL import Image

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "1"}  # near-lossless: the levels survive encoding
        for index in range(frames):
            image = Image.new("RGB", (side, side), (8 * index,) * 3)
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_level(image: object) -> int:
    """The grey level of a frame made by :func:`write_video`, read back."""
    import numpy as np
    from PIL import Image

    assert isinstance(image, Image.Image)
    return round(float(np.asarray(image.convert("L")).mean()))
