"""The GPU bench's model and prompts: a random Llama of a real shape, a seeded length mix.

The model is the demo model (``producer.demo_model``) grown to a realistic shape: its
byte-level tokenizer, vocabulary, special ids, context and generation config are kept,
only the layer sizes change. It is saved with ``save_pretrained`` so the engine and the
fleet's worker load it from disk like any checkpoint; nothing is downloaded.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from producer.demo_model import build_demo_model

EXAMPLE = Path(__file__).parents[1] / "examples" / "contexts.jsonl"


@dataclass(frozen=True)
class Shape:
    """The layer sizes of a Llama-like decoder."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int


#: About 1B parameters (Llama 3.2 1B's layer shapes, the demo's small vocabulary).
FULL = Shape(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8)

#: Seconds on a CPU: the same code path, a toy size.
TINY = Shape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2)


def build_model(target: Path, shape: Shape, *, device: str, seed: int = 0) -> dict[str, Any]:
    """The demo model grown to ``shape``, random weights, saved in bfloat16 under ``target``.

    Built on ``device`` (a GPU initialises a billion weights in a moment, a CPU does not)
    and saved in bfloat16, the dtype the GPU runs; the float32 comparison loads it upcast.
    Returns what was built: path, parameter count, seconds.
    """
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    started = time.perf_counter()
    demo = build_demo_model(target.parent / f"{target.name}-demo", seed=seed)
    config = AutoConfig.from_pretrained(demo)
    config.update(
        {
            "hidden_size": shape.hidden,
            "intermediate_size": shape.intermediate,
            "num_hidden_layers": shape.layers,
            "num_attention_heads": shape.heads,
            "num_key_value_heads": shape.kv_heads,
            "head_dim": shape.hidden // shape.heads,
        }
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model: Any = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig.from_pretrained(demo)
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(demo).save_pretrained(target)
    parameters = sum(weight.numel() for weight in model.parameters())
    del model
    return {
        "path": str(target),
        "shape": asdict(shape),
        "vocab": config.vocab_size,
        "parameters": parameters,
        "saved_dtype": "bfloat16",
        "build_s": time.perf_counter() - started,
    }


def make_prompts(
    tokenizer: Any, *, count: int, min_tokens: int, max_tokens: int, seed: int = 0
) -> list[str]:
    """``count`` prompts of text from the example file's words, lengths drawn uniformly
    from ``min_tokens``..``max_tokens`` tokens (special tokens included).

    Each prompt is its own random draw of words, so no two share a prefix (a shared prefix
    would favour an engine that caches prefixes). Cut in tokens, then decoded: re-encoded,
    a prompt may come out a token or two off its target.
    """
    rng = random.Random(seed)
    words = _word_pool()
    targets = [rng.randint(min_tokens, max_tokens) for _ in range(count)]
    special = len(tokenizer("")["input_ids"])
    # Every word is at least one token, so as many words as tokens always suffice.
    texts = [" ".join(rng.choices(words, k=target)) for target in targets]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [
        tokenizer.decode(ids[: max(target - special, 1)])
        for ids, target in zip(encoded, targets, strict=True)
    ]


def _word_pool() -> list[str]:
    """The words of the example file's prompts: real prose, code and numbers."""
    words: list[str] = []
    for line in EXAMPLE.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            words.extend(f"{record.get('context', '')} {record.get('query', '')}".split())
    return words
