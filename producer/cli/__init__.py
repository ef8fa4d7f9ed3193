"""The ``fleet`` command line.

Each command builds the settings, does its one job through the modules that own
it, and turns a FleetError into a clear message and exit code 2 (``main``).
"""

from producer.cli import batch, jobs, repair, reports, tools, workers  # noqa: F401  (each registers its commands)
from producer.cli.app import app, main

__all__ = ["app", "main"]
