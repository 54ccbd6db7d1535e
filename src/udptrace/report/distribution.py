"""Distributions of durations: from the kernel's log-linear histograms, or from samples.

The BPF side keeps exact count, sum, min and max, and buckets that are exact
below 16 ns and then 16 linear steps per power of two (each at most 1/16 of
its lower bound wide). A percentile is the nearest-rank one: the value of the
sample at rank ceil(q/100 * count). From buckets it is the middle of the
bucket that sample is in, so it is within half a bucket, 1/32 (3.125 %), of
the exact one (interpolating inside the bucket, as this did before, could
land at its far end: 12.5 % off with 8 steps). A distribution is any set of
bins (lower bound, width, count) of integer values; samples make it exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def nearest_rank(q: float, count: int) -> int:
    """The 1-based rank of the sample that is the q-th percentile of `count` samples."""
    return max(1, math.ceil(round(q / 100.0 * count, 9)))  # 99 % of 1000 is 990, not 990.0…01


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

    @classmethod
    def from_hist(cls, hist: np.void) -> Distribution:
        buckets = np.asarray(hist["buckets"])
        low, width = bucket_bounds(*buckets.shape)
        return cls(int(hist["count"]), int(hist["sum"]), int(hist["min"]), int(hist["max"]),
                   buckets.reshape(-1).astype(np.int64), low, width)

    @classmethod
    def from_bins(cls, low: np.ndarray, width: np.ndarray, counts: np.ndarray, minimum: float,
                  maximum: float, total: float) -> Distribution:
        order = np.argsort(low, kind="stable")
        counts = np.asarray(counts, np.float64)[order]
        return cls(round(counts.sum()), int(total), int(minimum), int(maximum), counts,
                   np.asarray(low, np.float64)[order], np.asarray(width, np.float64)[order])

    @classmethod
    def from_samples(cls, values: np.ndarray) -> Distribution:
        """Exact: one 1-ns bin per distinct value."""
        values = np.asarray(values, np.int64)
        if not len(values):
            return cls(0, 0, 0, 0, np.zeros(0), np.zeros(0), np.zeros(0))
        distinct, counts = np.unique(values, return_counts=True)
        return cls(len(values), int(values.sum()), int(distinct[0]), int(distinct[-1]),
                   counts.astype(np.float64), distinct.astype(np.float64),
                   np.ones(len(distinct)))

    def folded(self, center: float) -> Distribution:
        """The distribution of |x - center|: a bin that straddles the center is split."""
        low, high = self.low, self.low + self.width
        below = np.clip(center - low, 0, self.width)  # the part of each bin under the center
        share_below = np.divide(below, self.width, out=np.zeros_like(below),
                                where=self.width > 0)
        lows = np.concatenate([np.maximum(center - np.minimum(high, center), 0),
                               np.maximum(low - center, 0)])
        widths = np.concatenate([below, self.width - below])
        counts = np.concatenate([self.counts * share_below, self.counts * (1 - share_below)])
        used = counts > 0
        farthest = max(self.max - center, center - self.min, 0.0)
        return Distribution.from_bins(lows[used], np.maximum(widths[used], 1), counts[used],
                                      0.0, farthest, float((lows * counts).sum()))

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """The nearest-rank percentile: exact from samples, from buckets the middle of the
        one its sample is in (within `relative_error` of the exact value)."""
        if not self.count:
            return 0.0
        cumulative = np.cumsum(self.counts)
        i = int(np.searchsorted(cumulative, nearest_rank(q, self.count), side="left"))
        i = min(i, len(self.counts) - 1)
        # a bin holds the integers low .. low + width - 1; min and max are exact, and
        # clamping to them only brings the value nearer its sample
        value = self.low[i] + (self.width[i] - 1) / 2
        return float(min(max(value, self.min), self.max))

    @property
    def relative_error(self) -> float:
        """The most a percentile can be off, as a fraction of the exact value: half the
        widest used bin relative to its lower bound (0 from samples)."""
        used = (self.counts > 0) & (self.width > 1)
        if not used.any():
            return 0.0
        return float(np.max((self.width[used] - 1) / 2 / np.maximum(self.low[used], 1)))

    def log2_rows(self) -> list[tuple[int, int, int]]:
        """(low, high, count) per power of two, like bpftrace's hist()."""
        power = np.where(self.low < 1, 0, np.floor(np.log2(np.maximum(self.low, 1))) + 1)
        sums = np.bincount(power.astype(np.int64), weights=self.counts)
        rows = []
        for p, n in enumerate(sums):
            low = 0 if p == 0 else 1 << (p - 1)
            rows.append((low, 1 if p == 0 else 1 << p, int(n)))
        return _trim(rows)

    def bucket_rows(self) -> list[tuple[int, int, int]]:
        """(low, high, count) per bucket as it is, from the first used to the last."""
        return _trim([(int(lo), int(lo + w), round(n))
                      for lo, w, n in zip(self.low, self.width, self.counts, strict=True)])

    def linear_rows(self, step: int) -> list[tuple[int, int, int]]:
        """(low, high, count) per `step` ns, each bucket's count spread over its width."""
        top = self.max + step
        edges = np.arange(0, top + step, step, dtype=np.float64)
        bins = len(edges) - 1
        # vectorized: a recorded run has one bucket per distinct value, often a million;
        # unused buckets are left out (the kernel's top rows have wrapped-around bounds)
        used = self.counts > 0
        mid = np.minimum(self.low[used] + self.width[used] / 2, self.max)
        where = np.minimum((mid // step).astype(np.int64), bins - 1)
        spread = np.bincount(where, weights=self.counts[used], minlength=bins)
        rows = [(int(edges[i]), int(edges[i + 1]), int(spread[i])) for i in range(len(spread))]
        return _trim(rows)

    def centered_rows(self, center: float, step: int, half: int) -> list[tuple[int, int, int]]:
        """`2 * half` rows of `step` ns around `center`, plus one row for everything below
        (low 0) and one for everything above (high -1) when they hold anything."""
        first = int(center) - half * step
        edges = first + step * np.arange(2 * half + 1)
        mids = self.low + self.width / 2
        where = np.searchsorted(edges, mids, side="right")  # 0: below, len(edges): above
        sums = np.bincount(where, weights=self.counts, minlength=len(edges) + 1)
        rows = [(int(edges[i - 1]), int(edges[i]), round(sums[i]))
                for i in range(1, len(edges))]
        if round(sums[0]):
            rows.insert(0, (0, int(edges[0]), round(sums[0])))
        if round(sums[-1]):
            rows.append((int(edges[-1]), -1, round(sums[-1])))
        return rows


def _trim(rows: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    used = [i for i, r in enumerate(rows) if r[2]]
    return rows[used[0]:used[-1] + 1] if used else []
