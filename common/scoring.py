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
- ``package.module:function``: ``function(answer, reference) -> bool | float | dict``.

An answer that cannot be read (bad JSON, no number, no match) scores 0: it is wrong.

A reference that is a JSON object or array in the input reaches a user function as
that object; the built-ins compare it as its JSON text. A user function may return
several metrics at once, a dict such as ``{"f1": 0.8, "precision": 1.0, "recall":
0.67}``: every metric becomes its own statistic (``common/evaluation.py``), and the
result's ``score`` is the metric named ``score`` if there is one, else the first.
Every value, a single score or a metric, lies in [0, 1].

:func:`canonical` gives the form of an answer a scorer compares (its normalisation):
the ensemble of a majority vote is the text most lanes agree on in that form.
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

#: A scorer's verdict on one answer: a score, or several named metrics.
Score = float | dict[str, float]

#: ``scorer(answer, reference)``; the reference is text, or an object for a user function.
Scorer = Callable[[str, Any], Score]

#: The form of an answer a scorer compares; None when it cannot be read.
Canonical = Callable[[str], str | None]

#: Scorer names that take no argument.
SIMPLE_SCORERS = ("exact", "normalized", "contains", "numeric")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_USER_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_METRIC_NAME = re.compile(r"^[A-Za-z_][\w-]{0,39}$")

#: The metric a multi-metric scorer's ``score`` is, when it returns one of that name.
PRIMARY_METRIC = "score"


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
    builtins: dict[str, Callable[[str, str], float]] = {
        "exact": exact,
        "normalized": normalized,
        "contains": contains,
        "numeric": numeric,
    }
    if spec in builtins:
        return _on_text(builtins[spec])
    kind, sep, argument = spec.partition(":")
    if sep and kind == "regex":
        return _on_text(_regex(spec, argument))
    if sep and kind == "json-field":
        return _on_text(_json_field(spec, argument))
    if _USER_SPEC.match(spec):
        return _user(spec)
    raise _unknown(spec)


def canonical(spec: str) -> Canonical:
    """What the scorer ``spec`` compares of an answer: the stripped text (``exact``, a
    user function), the normalised text (``normalized``, ``contains``), the number
    (``numeric``), the match (``regex``) or the field (``json-field``)."""
    parse(spec)
    kind, _, argument = spec.partition(":")
    if spec in ("normalized", "contains"):
        return normalize
    if spec == "numeric":
        return _number
    if kind == "regex":
        compiled = re.compile(argument)
        return lambda answer: _match(compiled, answer)
    if kind == "json-field":
        keys = argument.split(".")
        return lambda answer: _field_text(answer, keys)
    return str.strip


def split(score: Score) -> tuple[float, dict[str, float] | None]:
    """A verdict as (the result's score, its metrics or None)."""
    if isinstance(score, dict):
        return score.get(PRIMARY_METRIC, next(iter(score.values()))), score
    return score, None


def text(reference: Any) -> str:
    """A reference as the built-in scorers compare it: an object as its JSON text."""
    return reference if isinstance(reference, str) else json.dumps(reference, ensure_ascii=False)


def _on_text(scorer: Callable[[str, str], float]) -> Scorer:
    return lambda answer, reference: scorer(answer, text(reference))


def _unknown(spec: str) -> ConfigError:
    return ConfigError(
        f"unknown scorer {spec!r}; known: {', '.join(SIMPLE_SCORERS)}, regex:PATTERN, "
        "json-field:PATH, or module:function"
    )


def _regex(spec: str, pattern: str) -> Callable[[str, str], float]:
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"scorer {spec!r}: bad regular expression: {error}") from error

    def score(answer: str, reference: str) -> float:
        found = _match(compiled, answer)
        return float(found is not None and found == reference.strip())

    return score


def _match(compiled: re.Pattern[str], answer: str) -> str | None:
    """The first match of ``compiled`` in ``answer`` (its first group if any), stripped."""
    match = compiled.search(answer)
    if match is None:
        return None
    return ((match.group(1) if compiled.groups else match.group()) or "").strip()


def _json_field(spec: str, path: str) -> Callable[[str, str], float]:
    if not path or any(not part for part in path.split(".")):
        raise ConfigError(f"scorer {spec!r}: give a path such as json-field:answer or a.b.0")
    keys = path.split(".")

    def score(answer: str, reference: str) -> float:
        found = _field_text(answer, keys)
        return float(found is not None and found == reference.strip())

    return score


def _field_text(answer: str, keys: list[str]) -> str | None:
    """The value at ``keys`` of the answer read as JSON, as stripped text; None if none."""
    try:
        value: Any = json.loads(answer)
    except json.JSONDecodeError:
        return None
    for key in keys:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return text(value).strip()


def _number(answer: str) -> str | None:
    """The first number of the answer, written as a float (``1,234.50`` -> ``1234.5``)."""
    found = _NUMBER.search(answer.replace(",", ""))
    return None if found is None else repr(float(found.group()))


def _user(spec: str) -> Scorer:
    module_name, _, function_name = spec.partition(":")
    function = user_attribute(module_name, function_name, label=f"scorer {spec!r}")
    if not callable(function):
        raise ConfigError(f"scorer {spec!r}: {module_name} has no function {function_name}")

    def score(answer: str, reference: Any) -> Score:
        value = function(answer, reference)
        if isinstance(value, dict):
            return _metrics(spec, value)
        return _unit(spec, "score", value)

    return score


def _metrics(spec: str, value: dict[Any, Any]) -> dict[str, float]:
    """A user function's metrics, checked: named, non-empty, each a number in [0, 1]."""
    if not value:
        raise ValueError(f"scorer {spec}: returned an empty dict of metrics")
    for name in value:
        if not isinstance(name, str) or not _METRIC_NAME.match(name):
            raise ValueError(
                f"scorer {spec}: metric name {name!r} must be a word of at most 40 characters"
            )
    return {name: _unit(spec, f"metric {name!r}", number) for name, number in value.items()}


def _unit(spec: str, what: str, value: Any) -> float:
    if isinstance(value, dict) or not isinstance(value, (bool, int, float)):
        raise ValueError(f"scorer {spec}: {what} must be a number, got {value!r:.80}")
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"scorer {spec}: {what} {number} is outside [0, 1]")
    return number
