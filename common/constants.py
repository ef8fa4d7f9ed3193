"""Names that must agree between producers and workers: tasks, queues, engines, defaults."""

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

#: Longest input line read at enqueue, in bytes, unless ``--max-line-bytes`` says more:
#: a 30 MB line once cost a worker 70 s and 6.6 GB before it failed as too long.
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024

#: Most pixels (width x height) of one input image unless ``--max-image-pixels`` says
#: otherwise: a 6,000 x 6,000 photograph passes, a decompression bomb does not.
DEFAULT_MAX_IMAGE_PIXELS = 36_000_000

#: Frames sampled from each input video unless ``--video-frames`` says otherwise.
DEFAULT_VIDEO_FRAMES = 8

#: Engine names accepted by ``--engine``: ``hf`` (transformers), ``openai`` (any
#: OpenAI-compatible server), ``echo`` (no model: for tests and demos).
ENGINES = ("hf", "echo", "openai")

#: Seconds between two reads of a run's progress while a watcher (``fleet run``'s
#: progress, ``fleet.Run.wait``) follows it: a read costs the same at any size of run
#: (the counts are kept on the run's row), and the end of a run is seen within this.
WATCH_POLL_S = 0.2
