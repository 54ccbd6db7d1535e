"""Percentiles: exact from samples, and from the kernel's buckets within the error they state."""

from __future__ import annotations

import os

import numpy as np
from conftest import connected_to_listener, records, tracing
from hypothesis import given
from hypothesis import strategies as st

from udptrace.netns import VethPair
from udptrace.report.distribution import PERCENTILES, Distribution, bucket_bounds, nearest_rank
from udptrace.report.stage_latency import PacketTimes

ROWS, SUB = 61, 16  # ut_record.h's UT_HIST_ROWS and UT_HIST_SUB_BUCKETS
LOW, WIDTH = bucket_bounds(ROWS, SUB)
USABLE = 40 * SUB  # rows past 2**40 ns (18 minutes) would need bounds past float64's care


def bucketed(values: np.ndarray) -> Distribution:
    """`values` as the kernel's histogram holds them: each in the bucket whose bounds have it."""
    values = np.asarray(values, np.int64)
    index = np.searchsorted(LOW[:USABLE], values, side="right") - 1
    counts = np.bincount(index, minlength=len(LOW)).astype(np.int64)
    return Distribution(len(values), int(values.sum()), int(values.min()), int(values.max()),
                        counts, LOW, WIDTH)


def exact(values: np.ndarray, q: float) -> int:
    return int(np.sort(values)[nearest_rank(q, len(values)) - 1])


def test_the_issues_example_is_within_the_stated_bound() -> None:
    # 990 samples at 4096 ns, 10 at 100 µs: p99 is 4096 ns. Interpolating inside the bucket
    # said 4608 ns (12.5 % off).
    values = np.array([4096] * 990 + [100_000] * 10)
    dist = bucketed(values)
    assert exact(values, 99) == 4096
    assert dist.relative_error <= 1 / 32
    assert abs(dist.percentile(99) - 4096) <= 4096 * dist.relative_error
    assert Distribution.from_samples(values).percentile(99) == 4096


def test_buckets_are_contiguous_and_at_most_a_sixteenth_of_their_lower_bound_wide() -> None:
    low, width = LOW[:USABLE], WIDTH[:USABLE]
    assert (low[1:] == low[:-1] + width[:-1]).all()
    assert ((width - 1) / 2 / np.maximum(low, 1) < 1 / 32).all()


@given(st.lists(st.integers(0, 1 << 36), min_size=1, max_size=300),
       st.sampled_from([*PERCENTILES, 0.0, 1.0, 25.0, 75.0, 100.0]))
def test_a_bucketed_percentile_is_within_its_stated_error_of_the_exact_one(
        values: list[int], q: float) -> None:
    values_ = np.array(values)
    dist = bucketed(values_)
    truth = exact(values_, q)
    assert abs(dist.percentile(q) - truth) <= truth * dist.relative_error + 1e-9
    samples = Distribution.from_samples(values_)
    assert samples.percentile(q) == truth and samples.relative_error == 0


def test_the_kernels_percentiles_are_within_the_stated_error_of_its_records(
        net: VethPair) -> None:
    sender, listener = connected_to_listener(net, 4840)
    with sender, listener, tracing(pids=(os.getpid(),)) as (session, batches):
        for size in range(1, 2001):  # sizes make the send path's times spread
            sender.send(b"u" * size)
        snapshot = session.snapshot()
    times = [PacketTimes.of(b, session.layout).span("total") for b in batches]
    values = np.concatenate([v for _, v in times if v is not None]).astype(np.int64)
    assert len(values) == len(records(batches)) >= 1900
    hist = snapshot.hists[session.layout.span_slot("total")]
    assert np.asarray(hist["buckets"]).shape == (ROWS, SUB)
    kernel = Distribution.from_hist(hist)
    # C's hist_put and Python's bucket_bounds agree on every bucket
    assert (kernel.counts == bucketed(values).counts).all()
    assert 0 < kernel.relative_error <= 1 / 32
    for q in PERCENTILES:
        truth = exact(values, q)
        assert abs(kernel.percentile(q) - truth) <= truth * kernel.relative_error, q


def test_a_single_value_is_its_own_every_percentile() -> None:
    dist = bucketed(np.array([123_456]))
    assert all(dist.percentile(q) == 123_456 for q in PERCENTILES)  # min and max are exact
