"""Stop texts cut out of an answer (``worker.engines.stops``), and the ``echo`` engine's
answer ended before one."""

from __future__ import annotations

from worker.engines.base import GenerationParams
from worker.engines.echo import EchoEngine
from worker.engines.stops import cut_at_stop, first_stop


def test_stop_texts_end_the_answer_and_are_left_out() -> None:
    pieces = ["He", "llo", " wor", "ld", "!"]

    def decode(tokens: list[int]) -> str:
        return "".join(pieces[token] for token in tokens)

    tokens = [0, 1, 2, 3, 4]
    assert cut_at_stop(tokens, decode, ["wor"]) == ([0, 1, 2], "Hello ")
    assert cut_at_stop(tokens, decode, ["ld", "llo"]) == ([0, 1], "He")
    assert cut_at_stop(tokens, decode, ["rl"]) == ([0, 1, 2, 3], "Hello wo")
    assert cut_at_stop(tokens, decode, ["?"]) is None
    assert cut_at_stop(tokens, decode, []) is None
    assert first_stop("abcabc", ["c", "b"]) == 1


def test_the_echo_engine_ends_its_answer_before_a_stop_text() -> None:
    engine = EchoEngine()
    cut, short = engine.generate(
        ["a b c d", "x y"], GenerationParams(max_new_tokens=3, stop=("c",))
    )
    assert (cut.text, cut.tokens_out, cut.finish_reason) == ("b ", 1, "stop")
    assert (short.text, short.tokens_out, short.finish_reason) == ("x y", 2, "stop")
    (full,) = engine.generate(["a b c d"], GenerationParams(max_new_tokens=2))
    assert (full.text, full.finish_reason) == ("c d", "length")
