"""Latency distributions: from the kernel's log-linear histograms, or from every value.

The BPF side keeps exact count, sum, min and max, and buckets that are exact
below 8 ns and then 8 linear steps per power of two, so a percentile read
from them is within 1/16 (6.25 %) of the true value. A recorded run has every
value: each distinct value becomes a bucket of width zero, so the same
percentile and histogram code gives exact (nearest-rank) results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def bucket_bounds(rows: int, sub: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower bounds and widths (ns) of the flattened buckets, as ``hist_add`` fills them."""
    row = np.repeat(np.arange(rows), sub)
    step = np.tile(np.arange(sub), rows)
    shift = np.maximum(row - 1, 0)
    low = np.where(row == 0, step, (sub + step) << shift)
    width = np.where(row == 0, 1, 1 << shift)
    return low.astype(np.float64), width.astype(np.float64)


@dataclass(frozen=True)
class Distribution:
    count: int
    total: int
    min: int
    max: int
    counts: np.ndarray  # per bucket, flattened
    low: np.ndarray
    width: np.ndarray
    exact: bool = False  # built from every value, not from the kernel's buckets

    @classmethod
    def from_values(cls, values: np.ndarray) -> Distribution:
        values = np.asarray(values, np.int64)
        if not len(values):
            empty = np.empty(0)
            return cls(0, 0, 0, 0, empty.astype(np.int64), empty, empty, exact=True)
        distinct, counts = np.unique(values, return_counts=True)
        return cls(len(values), int(values.sum()), int(distinct[0]), int(distinct[-1]),
                   counts.astype(np.int64), distinct.astype(np.float64),
                   np.zeros(len(distinct)), exact=True)

    @classmethod
    def from_hist(cls, hist: np.void) -> Distribution:
        buckets = np.asarray(hist["buckets"])
        low, width = bucket_bounds(*buckets.shape)
        return cls(int(hist["count"]), int(hist["sum"]), int(hist["min"]), int(hist["max"]),
                   buckets.reshape(-1).astype(np.int64), low, width)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        if not self.count:
            return 0.0
        rank = q / 100.0 * self.count
        cumulative = np.cumsum(self.counts)
        i = int(np.searchsorted(cumulative, rank, side="left"))
        i = min(i, len(self.counts) - 1)
        before = cumulative[i] - self.counts[i]
        inside = (rank - before) / self.counts[i] if self.counts[i] else 0.0
        value = self.low[i] + inside * self.width[i]
        return float(min(max(value, self.min), self.max))

    def log2_rows(self) -> list[tuple[int, int, int]]:
        """(low, high, count) per power of two, like bpftrace's hist()."""
        power = np.where(self.low < 1, 0, np.floor(np.log2(np.maximum(self.low, 1))) + 1)
        sums = np.bincount(power.astype(np.int64), weights=self.counts)
        rows = []
        for p, n in enumerate(sums):
            low = 0 if p == 0 else 1 << (p - 1)
            rows.append((low, 1 if p == 0 else 1 << p, int(n)))
        return _trim(rows)

    def linear_rows(self, step: int) -> list[tuple[int, int, int]]:
        """(low, high, count) per `step` ns, each bucket's count spread over its width."""
        top = self.max + step
        edges = np.arange(0, top + step, step, dtype=np.float64)
        bins = len(edges) - 1
        # vectorized: a recorded run has one bucket per distinct value, often a million
        mid = np.minimum(self.low + self.width / 2, self.max)
        where = np.minimum((mid // step).astype(np.int64), bins - 1)
        spread = np.bincount(where, weights=self.counts, minlength=bins)
        rows = [(int(edges[i]), int(edges[i + 1]), int(spread[i])) for i in range(len(spread))]
        return _trim(rows)


def _trim(rows: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    used = [i for i, r in enumerate(rows) if r[2]]
    return rows[used[0]:used[-1] + 1] if used else []
