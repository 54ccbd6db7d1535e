"""Spacing of periodic events: what a cyclic publisher's and subscriber's summaries report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IntervalStats:
    """Spacing of a series of events, in microseconds.

    Jitter is how far each interval strays from the mean interval; p99_jitter_us is the
    99th percentile of that distance.
    """

    intervals: int
    mean_us: float
    stdev_us: float
    min_us: float
    max_us: float
    p99_jitter_us: float

    @classmethod
    def from_timestamps(cls, timestamps_ns: Sequence[int]) -> IntervalStats | None:
        if len(timestamps_ns) < 2:
            return None
        gaps = np.diff(np.asarray(timestamps_ns, dtype=np.int64)) / 1_000.0
        mean = float(gaps.mean())
        return cls(
            intervals=len(gaps),
            mean_us=mean,
            stdev_us=float(gaps.std()),
            min_us=float(gaps.min()),
            max_us=float(gaps.max()),
            p99_jitter_us=float(np.percentile(np.abs(gaps - mean), 99)),
        )

    def describe(self) -> str:
        return (
            f"mean {self.mean_us / 1e3:.3f} ms, stdev {self.stdev_us / 1e3:.3f} ms,"
            f" min {self.min_us / 1e3:.3f} ms, max {self.max_us / 1e3:.3f} ms,"
            f" p99 jitter {self.p99_jitter_us / 1e3:.3f} ms"
        )
