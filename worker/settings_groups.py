"""A slice's items grouped by their generation settings: each group batched on its own.

An item read from an OpenAI Batch file carries its request's own settings
(``Item.params``: max_tokens, temperature, top_p, seed, stop, a JSON schema). An engine
generates a batch with one set of settings, so the items of a slice are grouped by
equal settings; each group is the run's config with its settings in place, and is
prepared (length policy with its own ``max_new_tokens``), planned under the same token
budget, and checked against its own schema, like a run of its own. A slice of mixed
settings is still batched, group by group; a run whose items carry no settings is one
group: the run's config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from common.models import Item
from common.request_settings import RequestSettings
from common.runconfig import RunConfig
from worker.engines import Engine, GenerationParams
from worker.prompting import Prepared, prepare


@dataclass
class SettingsGroup:
    """The slice's items (by index) that share one set of generation settings."""

    config: RunConfig
    indexes: list[int] = field(default_factory=list)

    @property
    def params(self) -> GenerationParams:
        generation = self.config.generation
        return GenerationParams(
            max_new_tokens=generation.max_new_tokens,
            temperature=generation.temperature,
            top_p=generation.top_p,
            seed=generation.seed,
            stop=tuple(generation.stop),
            output_schema=self.config.output_schema,
        )


def settings_groups(config: RunConfig, items: Sequence[Item]) -> list[SettingsGroup]:
    """The items grouped by equal settings, groups in the order of their first item."""
    groups: dict[str, SettingsGroup] = {}
    for index, item in enumerate(items):
        own = RequestSettings.of(item.params)
        key = own.key() if own is not None else ""
        if key not in groups:
            groups[key] = SettingsGroup(own.apply(config) if own is not None else config)
        groups[key].indexes.append(index)
    return list(groups.values())


def prepare_groups(
    engine: Engine,
    entries: Sequence[tuple[dict[str, Any], str]],
    groups: Sequence[SettingsGroup],
) -> Prepared:
    """Every (payload, prompt) prepared under its group's settings, in item order."""
    prompts: list[Any] = [""] * len(entries)
    lengths = [0] * len(entries)
    failed: dict[int, Any] = {}
    for group in groups:
        part = prepare(engine, [entries[index] for index in group.indexes], group.config)
        for position, index in enumerate(group.indexes):
            prompts[index], lengths[index] = part.prompts[position], part.lengths[position]
            if position in part.failed:
                failed[index] = part.failed[position]
    return Prepared(prompts, lengths, failed)
