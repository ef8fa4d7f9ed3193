"""Stop texts and ``finish_reason`` in the ``hf`` engine, on the demo model."""

from __future__ import annotations

from pathlib import Path

from worker.engines.base import GenerationParams
from worker.engines.hf import HFEngine

PROMPTS = ["The quick brown fox", "Once upon a time there was", "Hello"]


def test_a_stop_text_ends_each_row_where_it_first_appears(demo_model: Path) -> None:
    engine = HFEngine.load(str(demo_model), device="cpu")
    free = engine.generate(PROMPTS, GenerationParams(max_new_tokens=8))
    for completion in free:
        expected = "length" if completion.tokens_out == 8 else "stop"
        assert completion.finish_reason == expected
    stop = free[1].text[2:4]
    stopped = engine.generate(PROMPTS, GenerationParams(max_new_tokens=8, stop=(stop,)))
    for before, after in zip(free, stopped, strict=True):
        if stop in before.text:
            assert after.text == before.text[: before.text.index(stop)]
            assert after.finish_reason == "stop"
            assert after.tokens_out <= before.tokens_out
        else:
            assert after == before
    assert stopped[1].tokens_out < 8
    # The same rows one by one: a stop text cuts each row as it does in the batch.
    alone = [engine.generate([prompt], GenerationParams(8, stop=(stop,)))[0] for prompt in PROMPTS]
    assert alone == stopped
