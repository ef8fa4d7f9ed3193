"""Stop texts: a completion ends where one of them first appears, and leaves it out.

Generation stops early on them (transformers' ``stop_strings``); this cut is what
decides the answer, whether or not the early stop happened: the fewest generated
tokens whose text holds a stop text are the tokens counted, and the text ends before
it, as OpenAI's API ends it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest of ``stops`` begins in ``text``; None if none is there."""
    found = [position for stop in stops if stop and (position := text.find(stop)) >= 0]
    return min(found) if found else None


def cut_at_stop(
    tokens: list[int], decode: Callable[[list[int]], str], stops: Sequence[str]
) -> tuple[list[int], str] | None:
    """The tokens through the one that completes a stop text, and the text before it.

    None when the decoded tokens hold no stop text. The shortest such prefix is found
    by bisection: a prefix that holds a stop text stays so as it grows.
    """
    if not stops or first_stop(decode(tokens), stops) is None:
        return None
    low, high = 1, len(tokens)  # the shortest prefix holding a stop is in [low, high]
    while low < high:
        middle = (low + high) // 2
        if first_stop(decode(tokens[:middle]), stops) is None:
            low = middle + 1
        else:
            high = middle
    text = decode(tokens[:low])
    position = first_stop(text, stops)
    assert position is not None
    return tokens[:low], text[:position]
