"""Scorers: an answer and a reference in, a score in [0, 1] out (1 is right).

Spec strings (``--scorer``):

- ``exact``: the answer, stripped, equals the reference, stripped;
- ``normalized``: equal after lower-casing, dropping punctuation and articles, and
  collapsing whitespace (SQuAD's normalisation);
- ``contains``: the normalised reference occurs in the normalised answer;
- ``regex:PATTERN``: the first match of PATTERN in the answer (its first group if it
  has one) equals the reference, stripped;
- ``numeric``: the first number in the answer equals the reference as a number
  (relative tolerance 1e-6);
- ``json-field:PATH``: the answer parsed as JSON, PATH (dotted keys and list indexes,
  ``a.b.0``) read from it and compared to the reference as text (stripped);
- ``package.module:function``: ``function(answer, reference) -> bool | float``.

An answer that cannot be read (bad JSON, no number, no match) scores 0: it is wrong.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Callable
from typing import Any

from common.errors import ConfigError
from common.imports import user_attribute

Scorer = Callable[[str, str], float]

#: Scorer names that take no argument.
SIMPLE_SCORERS = ("exact", "normalized", "contains", "numeric")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_USER_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def normalize(text: str) -> str:
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact(answer: str, reference: str) -> float:
    return float(answer.strip() == reference.strip())


def normalized(answer: str, reference: str) -> float:
    return float(normalize(answer) == normalize(reference))


def contains(answer: str, reference: str) -> float:
    return float(normalize(reference) in normalize(answer))


def numeric(answer: str, reference: str) -> float:
    found = _NUMBER.search(answer.replace(",", ""))
    expected = _NUMBER.fullmatch(reference.strip().replace(",", ""))
    if found is None or expected is None:
        return 0.0
    return float(math.isclose(float(found.group()), float(expected.group()), rel_tol=1e-6))


def parse(spec: str) -> Scorer:
    """The scorer a spec names; ConfigError naming the spec when it names none."""
    builtins: dict[str, Scorer] = {
        "exact": exact,
        "normalized": normalized,
        "contains": contains,
        "numeric": numeric,
    }
    if spec in builtins:
        return builtins[spec]
    kind, sep, argument = spec.partition(":")
    if sep and kind == "regex":
        return _regex(spec, argument)
    if sep and kind == "json-field":
        return _json_field(spec, argument)
    if _USER_SPEC.match(spec):
        return _user(spec)
    raise ConfigError(
        f"unknown scorer {spec!r}; known: {', '.join(SIMPLE_SCORERS)}, regex:PATTERN, "
        "json-field:PATH, or module:function"
    )


def _regex(spec: str, pattern: str) -> Scorer:
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"scorer {spec!r}: bad regular expression: {error}") from error

    def score(answer: str, reference: str) -> float:
        match = compiled.search(answer)
        if match is None:
            return 0.0
        found = match.group(1) if compiled.groups else match.group()
        return float((found or "").strip() == reference.strip())

    return score


def _json_field(spec: str, path: str) -> Scorer:
    if not path or any(not part for part in path.split(".")):
        raise ConfigError(f"scorer {spec!r}: give a path such as json-field:answer or a.b.0")
    keys = path.split(".")

    def score(answer: str, reference: str) -> float:
        try:
            value: Any = json.loads(answer)
        except json.JSONDecodeError:
            return 0.0
        for key in keys:
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                return 0.0
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return float(text.strip() == reference.strip())

    return score


def _user(spec: str) -> Scorer:
    module_name, _, function_name = spec.partition(":")
    function = user_attribute(module_name, function_name, label=f"scorer {spec!r}")
    if not callable(function):
        raise ConfigError(f"scorer {spec!r}: {module_name} has no function {function_name}")

    def score(answer: str, reference: str) -> float:
        value = float(function(answer, reference))
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"scorer {spec}: score {value} is outside [0, 1]")
        return value

    return score
