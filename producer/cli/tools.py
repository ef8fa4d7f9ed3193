"""Helper commands around a run: ``demo-model``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from producer.cli.app import app, console


@app.command("demo-model")
def demo_model(
    target: Annotated[Path, typer.Argument(help="Folder to write the model into.")] = Path(
        ".fleet/demo-model"
    ),
    vision: Annotated[
        bool,
        typer.Option(
            "--vision", help="Build a vision-language model (Llava) with its image processor."
        ),
    ] = False,
    seed: Annotated[
        int, typer.Option(help="Seed of the random weights: another seed, another model.")
    ] = 0,
) -> None:
    """Build a tiny real transformers model (random weights, local tokenizer), no download."""
    if vision:
        from producer.demo_vision import build_demo_vision_model

        path = build_demo_vision_model(target, seed=seed)
    else:
        from producer.demo_model import build_demo_model

        path = build_demo_model(target, seed=seed)
    console.print(f"demo {'vision ' if vision else ''}model written to {path}")
