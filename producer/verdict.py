"""Whether a finished run succeeded, for the exit status of ``fleet run``, ``resume``, ``retry``.

A run that completed but in which every result failed (every answer invalid, every
item quarantined, a model that never loaded) is no success: the command exits 1
and says why on stderr. ``--max-failures N`` (most failed results) or
``--max-failures P%`` (largest share of failed results) makes the verdict stricter,
for pipelines and CI.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import ConfigError


@dataclass(frozen=True)
class FailureLimit:
    """At most ``count`` failed results, or at most ``percent`` % of them."""

    count: int | None = None
    percent: float | None = None

    def exceeded_by(self, failed: int, results: int) -> bool:
        if self.count is not None:
            return failed > self.count
        if self.percent is not None and results:
            return failed * 100 > self.percent * results
        return False

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


def parse_limit(text: str | None) -> FailureLimit | None:
    """``--max-failures``: ``N`` (a count) or ``P%`` (a share); ConfigError otherwise."""
    if text is None:
        return None
    raw = text.strip()
    try:
        if raw.endswith("%"):
            percent = float(raw[:-1])
            if not 0.0 <= percent <= 100.0:
                raise ValueError(percent)
            return FailureLimit(percent=percent)
        count = int(raw)
        if count < 0:
            raise ValueError(count)
        return FailureLimit(count=count)
    except ValueError:
        raise ConfigError(
            f"--max-failures {text}: expected a count (e.g. 10) or a share (e.g. 5%)"
        ) from None


def failure_verdict(*, status: str, ok: int, failed: int, limit: FailureLimit | None) -> str | None:
    """Why the run counts as failed, or None when it succeeded."""
    results = ok + failed
    if status != "completed":
        return f"the run ended {status}"
    if results and ok == 0:
        return f"every result failed ({failed} of {results})"
    if limit is not None and limit.exceeded_by(failed, results):
        return f"{failed} of {results} results failed, more than --max-failures {limit}"
    return None
