"""Names that must agree between producers and workers: tasks, queues, defaults."""

#: Celery name of the task that runs one slice: args ``[run_id, slice_id]``.
SLICE_TASK = "fleet.run_slice"

#: Celery name of the task that computes a run's statistics: args ``[run_id]``.
FINALIZE_TASK = "fleet.finalize"

#: Queue every slice and finalize order goes to unless a run names another.
DEFAULT_QUEUE = "fleet"

#: Prompt template used when an input record carries ``context`` and ``query``.
CONTEXTS_TEMPLATE = "Context: {context}\nQuestion: {query}\nAnswer:"

#: What ``fleet status`` and friends accept in place of a run id.
LATEST = "latest"

#: The permutation every lane has until permutations are asked for.
IDENTITY = "identity"
