"""One item's own generation settings, over its run's: what an OpenAI Batch request sets.

The producer stores them on ``Item.params`` (only the settings the request gives);
a worker reads them back, puts them in place of the run's (:meth:`RequestSettings.apply`)
and batches together the items whose settings are equal (``worker.settings_groups``).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.runconfig import RunConfig


class RequestSettings(BaseModel):
    """The settings a request gives; None (or absent) leaves the run's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    #: The JSON Schema the answer must match (``response_format``).
    output_schema: dict[str, Any] | None = None

    @classmethod
    def of(cls, params: dict[str, Any] | None) -> RequestSettings | None:
        """The settings stored on an item (``Item.params``), or None."""
        return cls.model_validate(params) if params else None

    def stored(self) -> dict[str, Any] | None:
        """What ``Item.params`` holds: the given settings only; None when there are none."""
        given = self.model_dump(mode="json", exclude_none=True)
        return given or None

    def key(self) -> str:
        """Equal for equal settings: items with the same key share batches."""
        return json.dumps(self.stored(), sort_keys=True)

    def apply(self, config: RunConfig) -> RunConfig:
        """``config`` with these settings in place of the run's own."""
        generation = {
            name: value
            for name in ("max_new_tokens", "temperature", "top_p", "seed", "stop")
            if (value := getattr(self, name)) is not None
        }
        update: dict[str, Any] = {"generation": config.generation.model_copy(update=generation)}
        if self.output_schema is not None:
            update["output_schema"] = self.output_schema
        return config.model_copy(update=update)
