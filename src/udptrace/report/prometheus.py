"""Prometheus metrics from the per-packet records, aggregated per batch in NumPy.

The trace loop (collection) adds each batch to bucket arrays, then publishes
an immutable copy by swapping one reference; a scrape (prometheus_client's
HTTP thread) reads whatever copy is current. Neither ever waits for the
other. Label values are capped per label (``max_values``): values beyond the
cap are counted under ``other``, so a sweep of ports cannot grow the series
without bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from udptrace.pubsub.headers import UadpHeaders
from udptrace.report.stage_latency import PacketTimes
from udptrace.report.terminal import live_drops
from udptrace.trace.decode import Packets, char_strings
from udptrace.trace.layout import Layout
from udptrace.trace.session import Snapshot

# µs to ms: a veth send takes tens of µs, a shaped or NIC-queued one milliseconds
LATENCY_BOUNDS_S = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3,
                    1e-2, 2e-2, 5e-2, 0.1)
# cyclic traffic: from 100 µs (10 kHz) to seconds
INTERVAL_BOUNDS_S = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0,
                     2.0, 5.0)
LABELS = ("comm", "port", "interface", "group")
OTHER = "other"
DEFAULT_MAX_VALUES = 20


class LabelCap:
    """The first ``limit`` values of a label keep their name; later ones become ``other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.kept:
            return value
        if len(self.kept) < self.limit:
            self.kept.add(value)
            return value
        return OTHER


@dataclass(frozen=True)
class Published:
    """What a scrape reads: copies, never touched again after publishing."""

    labels: list[tuple[str, ...]] = field(default_factory=list)
    latency: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.int64))
    latency_sum: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    datagrams: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    intervals: np.ndarray | None = None
    interval_sum: np.ndarray | None = None
    interval_sq: np.ndarray | None = None
    counters: dict[str, int] = field(default_factory=dict)
    drops: list[tuple[str, str, int]] = field(default_factory=list)


def _bounds_ns(bounds_s: tuple[float, ...]) -> np.ndarray:
    return np.round(np.array(bounds_s) * 1e9).astype(np.int64)


class Metrics:
    """Collector (prometheus_client's protocol) over per-batch NumPy aggregates."""

    def __init__(self, layout: Layout, drop_names: dict[int, str],
                 max_values: int = DEFAULT_MAX_VALUES, intervals: bool = False) -> None:
        self.layout = layout
        self.drop_names = drop_names
        self.stages = (*layout.stages, *layout.spans)
        self.fates = tuple(layout.fates.values())
        self.fate_index = np.zeros(max(layout.fates) + 1, np.int64)  # enum value → position
        self.fate_index[list(layout.fates)] = np.arange(len(layout.fates))
        self.caps = {name: LabelCap(max_values) for name in LABELS}
        self.groups: dict[tuple[str, ...], int] = {}
        self.latency_bounds = _bounds_ns(LATENCY_BOUNDS_S)
        self.interval_bounds = _bounds_ns(INTERVAL_BOUNDS_S)
        self.latency = np.zeros((0, len(self.stages), len(self.latency_bounds) + 1), np.int64)
        self.latency_sum = np.zeros((0, len(self.stages)))
        self.datagrams = np.zeros((0, len(self.fates)), np.int64)
        self.track_intervals = intervals
        self.intervals = np.zeros((0, len(self.interval_bounds) + 1), np.int64)
        self.interval_sum = np.zeros(0)
        self.interval_sq = np.zeros(0)
        self.counters: dict[str, int] = {}
        self.drops: list[tuple[str, str, int]] = []
        self.published = Published()

    # ---- collection (the trace loop's thread) ------------------------------------------
    def _group_of(self, packets: Packets, headers: UadpHeaders | None) -> np.ndarray:
        """Each packet's label set, as an index into self.groups (new sets appended)."""
        r = packets.records
        columns = [char_strings(r["comm"]), r["dport"].astype(str).astype(object),
                   char_strings(r["ifname"])]
        if headers is not None:
            group = np.char.add(np.char.add(headers.publisher_id.astype(str), "/"),
                                headers.writer_group_id.astype(str)).astype(object)
            columns.append(np.where(headers.valid, group, ""))
        else:
            columns.append(np.full(len(r), "", object))
        codes, texts = [], []
        for name, values in zip(LABELS, columns, strict=True):
            distinct, inverse = np.unique(values.astype(str), return_inverse=True)
            texts.append([self.caps[name](v) for v in distinct.tolist()])
            codes.append(inverse.reshape(-1))
        combos, which = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
        index = []
        for combo in combos.tolist():
            key = tuple(texts[k][c] for k, c in enumerate(combo))
            if key not in self.groups:
                self.groups[key] = len(self.groups)
            index.append(self.groups[key])
        grow = len(self.groups) - len(self.latency)
        if grow > 0:
            self.latency = np.concatenate([self.latency, np.zeros(
                (grow, *self.latency.shape[1:]), np.int64)])
            self.latency_sum = np.concatenate([self.latency_sum,
                                               np.zeros((grow, len(self.stages)))])
            self.datagrams = np.concatenate([self.datagrams,
                                             np.zeros((grow, len(self.fates)), np.int64)])
            self.intervals = np.concatenate([self.intervals, np.zeros(
                (grow, self.intervals.shape[1]), np.int64)])
            self.interval_sum = np.concatenate([self.interval_sum, np.zeros(grow)])
            self.interval_sq = np.concatenate([self.interval_sq, np.zeros(grow)])
        return np.array(index, np.int64)[which.reshape(-1)]

    def _observe(self, group: np.ndarray, stage: int, values: np.ndarray) -> None:
        keep = values >= 0
        group, values = group[keep], values[keep]
        bucket = np.searchsorted(self.latency_bounds, values, side="left")
        np.add.at(self.latency[:, stage, :], (group, bucket), 1)
        np.add.at(self.latency_sum[:, stage], group, values / 1e9)

    def add(self, packets: Packets, headers: UadpHeaders | None = None) -> None:
        if not len(packets):
            return
        r = packets.records
        group = self._group_of(packets, headers)
        fate = self.fate_index[np.minimum(r["fate"], len(self.fate_index) - 1)]
        np.add.at(self.datagrams, (group, fate), 1)
        times = PacketTimes.of(packets, self.layout)
        spent = times.per_stage()
        for stage in range(len(self.layout.stages)):
            self._observe(group[times.sent], stage, spent[:, stage])
        for index, span in enumerate(self.layout.spans, start=len(self.layout.stages)):
            found = times.span(span)
            if found is not None:
                self._observe(group[found[0]], index, found[1])
        if self.track_intervals:
            gaps = r["interval_ns"].astype(np.int64)  # measured in the kernel, per flow
            self._add_intervals(group[gaps > 0], gaps[gaps > 0])
        self.publish()

    def _add_intervals(self, group: np.ndarray, gaps: np.ndarray) -> None:
        bucket = np.searchsorted(self.interval_bounds, gaps, side="left")
        np.add.at(self.intervals, (group, bucket), 1)
        np.add.at(self.interval_sum, group, gaps / 1e9)
        np.add.at(self.interval_sq, group, (gaps / 1e9) ** 2)

    def kernel(self, snapshot: Snapshot) -> None:
        """The kernel's counters and drops (drops include the peer's, which end no record)."""
        self.counters = dict(snapshot.counters)
        self.drops = [(d.reason, d.stage, d.packets)
                      for d in live_drops(snapshot, self.layout, self.drop_names)]
        self.publish()

    def publish(self) -> None:
        labels = [key for key, _ in sorted(self.groups.items(), key=lambda kv: kv[1])]
        self.published = Published(
            labels, self.latency.copy(), self.latency_sum.copy(), self.datagrams.copy(),
            self.intervals.copy() if self.track_intervals else None,
            self.interval_sum.copy() if self.track_intervals else None,
            self.interval_sq.copy() if self.track_intervals else None,
            dict(self.counters), list(self.drops))

    # ---- scrapes (prometheus_client's HTTP threads) ------------------------------------
    def collect(self) -> Iterator[Metric]:
        p = self.published  # one read: everything below comes from the same moment
        latency = HistogramMetricFamily(
            "udptrace_stage_latency_seconds",
            "time per stage since the stage before (total: send syscall entry until the "
            "packet left the device)", labels=["stage", *LABELS])
        for g, labels in enumerate(p.labels):
            for s, stage in enumerate(self.stages):
                _histogram(latency, [stage, *labels], LATENCY_BOUNDS_S, p.latency[g, s],
                           p.latency_sum[g, s])
        yield latency
        datagrams = CounterMetricFamily("udptrace_datagrams", "datagrams followed, by fate",
                                        labels=["fate", *LABELS])
        for g, labels in enumerate(p.labels):
            for f, fate in enumerate(self.fates):
                if p.datagrams[g, f]:
                    datagrams.add_metric([fate, *labels], int(p.datagrams[g, f]))
        yield datagrams
        drops = CounterMetricFamily("udptrace_drops", "packets the kernel dropped, by drop "
                                    "reason and the last stage reached", labels=["reason", "stage"])
        for reason, stage, n in p.drops:
            drops.add_metric([reason, stage], n)
        yield drops
        yield CounterMetricFamily("udptrace_lost_records",
                                  "per-packet records the ring buffer had no room for",
                                  value=p.counters.get("lost", 0))
        kernel = CounterMetricFamily("udptrace_kernel_events", "the BPF side's counters",
                                     labels=["counter"])
        for name, value in p.counters.items():
            kernel.add_metric([name], value)
        yield kernel
        if p.intervals is not None and p.interval_sum is not None and p.interval_sq is not None:
            intervals = HistogramMetricFamily(
                "udptrace_send_interval_seconds",
                "time since the same socket's previous datagram", labels=list(LABELS))
            jitter = GaugeMetricFamily(
                "udptrace_send_interval_jitter_seconds",
                "standard deviation of the send intervals since the exporter started",
                labels=list(LABELS))
            for g, labels in enumerate(p.labels):
                n = int(p.intervals[g].sum())
                _histogram(intervals, list(labels), INTERVAL_BOUNDS_S, p.intervals[g],
                           p.interval_sum[g])
                if n > 1:
                    mean = p.interval_sum[g] / n
                    jitter.add_metric(list(labels),
                                      float(np.sqrt(max(p.interval_sq[g] / n - mean**2, 0))))
            yield intervals
            yield jitter


def _histogram(family: HistogramMetricFamily, labels: list[str], bounds: tuple[float, ...],
               counts: np.ndarray, total: float) -> None:
    if not counts.sum():
        return
    cumulative = np.cumsum(counts).tolist()
    buckets = [(f"{b:g}", c) for b, c in zip(bounds, cumulative, strict=False)]
    family.add_metric(labels, [*buckets, ("+Inf", cumulative[-1])], sum_value=float(total))
