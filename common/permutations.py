"""Input permutations: a lane's transform of an item before prompting, and its inverse.

A lane is a (model, permutation) pair. A permutation is named by a spec string:

- ``identity``: the item as read;
- ``cyclic-digits@K``: a relabelling of the digits 1-9, the cyclic shift
  ``d -> (d - 1 + K) mod 9 + 1``, applied to every string of the payload (except ``id``)
  and to the reference; the inverse shift maps an answer back. ``@0`` is the identity;
- ``shuffle-choices@S``: the list in the payload's ``choices`` field reordered by a
  shuffle seeded with S and the item's id; a reference letter (``A``, ``B``, ...) is
  remapped to the option's new place, and an answer letter is mapped back. ``@0`` keeps
  the order;
- ``package.module:function[@S]``: a user function ``function(payload, seed) -> dict``
  returning the new payload. If the module also defines ``function_reference(reference,
  payload, seed) -> str`` and ``function_inverse(answer, payload, seed) -> str``, they
  map the reference forward and an answer back; otherwise both are left as they are.

Everything is a pure function of (spec, payload, reference): the worker recomputes a
lane's prompt from ``Item.payload`` and the exporter recomputes the inverse of an answer,
so no per-lane copy of an item is stored.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from common.constants import IDENTITY
from common.errors import ConfigError
from common.imports import user_attribute

#: Payload field holding the options of a multiple-choice item.
CHOICES_FIELD = "choices"

#: Payload field never touched by a permutation: the item's id.
ID_FIELD = "id"

#: Built-in permutations that take a seed (``name@seed``).
SEEDED_BUILTINS = ("cyclic-digits", "shuffle-choices")

_LETTERS = string.ascii_uppercase
_USER_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class Permutation(Protocol):
    """A lane's transform: forward on the item, inverse on the answer."""

    @property
    def spec(self) -> str:
        """The spec string that names it (``cyclic-digits@2``)."""
        ...

    def payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload the lane's prompt is rendered from."""
        ...

    def reference(self, reference: str, payload: dict[str, Any]) -> str:
        """The reference in the lane's terms (what the lane's answer should be)."""
        ...

    def inverse(self, answer: str, payload: dict[str, Any]) -> str:
        """An answer of the lane mapped back to the item's own terms."""
        ...


@dataclass(frozen=True)
class Identity:
    spec: str = IDENTITY

    def payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    def reference(self, reference: str, payload: dict[str, Any]) -> str:
        return reference

    def inverse(self, answer: str, payload: dict[str, Any]) -> str:
        return answer


@dataclass(frozen=True)
class CyclicDigits:
    """Digits 1-9 shifted cyclically by ``shift``; 0 and every other character kept."""

    spec: str
    shift: int

    def _table(self, shift: int) -> dict[int, str]:
        return {ord(str(d)): str((d - 1 + shift) % 9 + 1) for d in range(1, 10)}

    def relabel(self, text: str) -> str:
        return text.translate(self._table(self.shift))

    def payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {
            key: value if key == ID_FIELD else _map_strings(value, self.relabel)
            for key, value in payload.items()
        }

    def reference(self, reference: str, payload: dict[str, Any]) -> str:
        return self.relabel(reference)

    def inverse(self, answer: str, payload: dict[str, Any]) -> str:
        return answer.translate(self._table(-self.shift))


@dataclass(frozen=True)
class ShuffleChoices:
    """The ``choices`` list reordered by a shuffle seeded with (seed, item id)."""

    spec: str
    seed: int

    def order(self, payload: dict[str, Any]) -> list[int]:
        """``order[new] = old``: which original option sits at each new place."""
        count = len(_choices(payload))
        order = list(range(count))
        if self.seed == 0:
            return order
        digest = hashlib.sha256(f"{self.seed}:{payload.get(ID_FIELD)}".encode()).digest()
        random.Random(digest).shuffle(order)
        return order

    def payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        choices = _choices(payload)
        return {**payload, CHOICES_FIELD: [choices[old] for old in self.order(payload)]}

    def reference(self, reference: str, payload: dict[str, Any]) -> str:
        order = self.order(payload)
        old = _letter_index(reference, len(order))
        return reference if old is None else _LETTERS[order.index(old)]

    def inverse(self, answer: str, payload: dict[str, Any]) -> str:
        order = self.order(payload)
        new = _letter_index(answer, len(order))
        return answer if new is None else _LETTERS[order[new]]


@dataclass(frozen=True)
class UserPermutation:
    """``module:function`` with optional ``function_reference`` and ``function_inverse``."""

    spec: str
    seed: int
    forward: Callable[[dict[str, Any], int], dict[str, Any]]
    forward_reference: Callable[[str, dict[str, Any], int], str] | None
    backward: Callable[[str, dict[str, Any], int], str] | None

    def payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        result = self.forward(dict(payload), self.seed)
        if not isinstance(result, dict):
            raise TypeError(f"permutation {self.spec}: must return a dict, got {result!r:.80}")
        return result

    def reference(self, reference: str, payload: dict[str, Any]) -> str:
        if self.forward_reference is None:
            return reference
        return str(self.forward_reference(reference, payload, self.seed))

    def inverse(self, answer: str, payload: dict[str, Any]) -> str:
        return answer if self.backward is None else str(self.backward(answer, payload, self.seed))


def parse(spec: str) -> Permutation:
    """The permutation a spec names; ConfigError naming the spec when it names none."""
    name, sep, seed_text = spec.strip().partition("@")
    seed = 0
    if sep:
        if not seed_text.isdigit():
            raise ConfigError(f"permutation {spec!r}: the seed after '@' must be an integer >= 0")
        seed = int(seed_text)
    if name == IDENTITY and not sep:
        return Identity()
    if name == "cyclic-digits":
        return CyclicDigits(spec, seed % 9)
    if name == "shuffle-choices":
        return ShuffleChoices(spec, seed)
    if _USER_SPEC.match(name):
        return _user(spec, name, seed)
    known = ", ".join((IDENTITY, *SEEDED_BUILTINS))
    raise ConfigError(f"unknown permutation {spec!r}; known: {known}, or module:function")


def expand(kinds: list[str], count: int | None) -> list[str]:
    """The permutation specs of a run's lanes from ``--permutation`` and ``--permutations``.

    Without a count, the kinds are the lanes' permutations as given. With ``count`` K,
    each kind becomes K lanes ``kind@0 .. kind@K-1`` (``@0`` is the item as read for the
    built-ins). Every spec is parsed, so a bad one fails before anything is stored.
    """
    if count is not None and count < 1:
        raise ConfigError("--permutations must be at least 1")
    if count is not None and not kinds:
        raise ConfigError(
            "--permutations K needs the kind to vary: --permutation cyclic-digits, "
            "--permutation shuffle-choices or --permutation module:function"
        )
    specs = list(kinds) or [IDENTITY]
    if count is not None:
        specs = [f"{kind}@{seed}" for kind in specs for seed in range(count)]
    for spec in specs:
        parse(spec)
    if len(set(specs)) != len(specs):
        raise ConfigError(f"permutations repeat: {specs}")
    return specs


def _user(spec: str, name: str, seed: int) -> UserPermutation:
    module_name, _, function_name = name.partition(":")
    label = f"permutation {spec!r}"
    forward = user_attribute(module_name, function_name, label=label)
    if not callable(forward):
        raise ConfigError(f"{label}: {module_name} has no function {function_name}")
    return UserPermutation(
        spec,
        seed,
        forward,
        user_attribute(module_name, f"{function_name}_reference", label=label),
        user_attribute(module_name, f"{function_name}_inverse", label=label),
    )


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_map_strings(element, change) for element in value]
    if isinstance(value, dict):
        return {key: _map_strings(element, change) for key, element in value.items()}
    return value


def _choices(payload: dict[str, Any]) -> list[Any]:
    choices = payload.get(CHOICES_FIELD)
    if not isinstance(choices, list) or len(choices) > len(_LETTERS):
        raise ValueError(
            f"shuffle-choices needs a list of at most {len(_LETTERS)} options "
            f"in the field '{CHOICES_FIELD}'"
        )
    return choices


def _letter_index(text: str, count: int) -> int | None:
    """``"B"``, ``" b."`` or ``"(B)"`` -> 1; None for anything that is not one letter."""
    letter = text.strip().strip("().:").upper()
    if len(letter) == 1 and letter in _LETTERS[:count]:
        return _LETTERS.index(letter)
    return None
