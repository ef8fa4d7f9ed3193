"""Which broker queue a lane's slices go to: the run's queue, or one per model.

Model affinity: a run enqueued with per-model queues sends each lane's slices to
``<run queue>.m.<model key>``, so workers pinned to one model (``-Q`` that queue)
never load another one. The key is stable: the same model reference always gives
the same queue, on every machine, so a worker can be pinned before any run exists
(``fleet workers --model REF`` computes it the same way). Finalize orders always go
to the run's own queue, which every worker serving the run must also consume.
"""

from __future__ import annotations

import hashlib
import re

#: Characters kept from a model reference in its queue name.
_UNSAFE = re.compile(r"[^a-z0-9_-]+")

#: Most characters of the readable part of a model key.
_READABLE_MAX = 40


def model_key(model: str) -> str:
    """``<readable tail>-<8 hex of sha256>``: readable, stable, distinct per reference.

    ``/models/Llama-3-8B`` -> ``llama-3-8b-1a2b3c4d``. The hash covers the whole
    reference, so two checkpoints called ``ckpt`` in different folders differ.
    """
    tail = model.rstrip("/").rsplit("/", 1)[-1].lower()
    readable = _UNSAFE.sub("-", tail).strip("-")[:_READABLE_MAX] or "model"
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def model_queue(run_queue: str, model: str) -> str:
    """The queue of ``model``'s slices in runs enqueued on ``run_queue`` with model queues."""
    return f"{run_queue}.m.{model_key(model)}"
