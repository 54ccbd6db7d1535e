"""The cycle view: per flow its period, and how each part of a cycle adds to its time and jitter.

A cyclic sender's cycle runs from its requested wake-up (the expiry its timer asked for,
--wakeup) until its datagram left the device. The parts, each from one step of the record
to the next, add up to the whole cycle:

  wake-up  requested wake-up → on a CPU: timer slack, the interrupt, the scheduler
  app      on a CPU → the send syscall: the application's work (its callback with --uprobe)
  stack    → a queueing qdisc took it, or the driver: socket, UDP, IP, the device queue
  qdisc    held in the qdisc until the driver took it
  driver   the driver's transmit, until the datagram left the device

A part's share of the cycle's jitter is its covariance with the cycle divided by the
cycle's variance: the shares add up to 100 %, and a part that makes up for the others (a
qdisc holding each datagram until its launch time) has a negative one. Where the socket
gives launch times (SO_TXTIME), the launch-time error is the driver's entry minus the
launch time; it is no part of the sum, its share is counted the same way.

A cycle starts where the kernel's cycle span starts (stages.CYCLE_START); in a flow
whose sends carry no wake-up at all (no --wakeup), at each send's start instead (the
callback's entry with --uprobe, else the syscall's), so launch times can still be read
against the stack. A send without a wake-up in a flow that has them is no cycle.
Every value is exact, from the records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table

from udptrace.report.stage_latency import PacketTimes
from udptrace.report.terminal import duration
from udptrace.stages import (
    CYCLE_START,
    DRIVER,
    LAUNCH_TIME,
    ON_CPU,
    QDISC_HELD,
    RUNNING,
    SEND_START,
    STACK_END,
    TIME_ZERO,
    WIRE,
    Role,
)
from udptrace.trace.decode import (
    Packets,
    Times,
    address_strings,
    char_strings,
    endpoint,
    first_of,
    origin_ns,
)
from udptrace.trace.layout import Layout


@dataclass(frozen=True)
class Part:
    name: str
    title: str
    span: str  # from → to
    start: Role
    end: Role


PARTS = (
    Part("wake_up", "wake-up", "requested wake-up → on a CPU", CYCLE_START, ON_CPU),
    Part("app", "app", "on a CPU (or callback entry) → send syscall", RUNNING, TIME_ZERO),
    Part("stack", "stack", "send syscall → qdisc, or → driver", TIME_ZERO, STACK_END),
    Part("qdisc", "qdisc", "held in a queueing qdisc → driver", QDISC_HELD, DRIVER),
    Part("driver", "driver", "driver → left the device", DRIVER, WIRE),
)
CYCLE = Part("cycle", "cycle", "start → left the device", CYCLE_START, WIRE)
LAUNCH = Part("launch_error", "launch-time error", "driver entry - launch time (SO_TXTIME)",
              LAUNCH_TIME, DRIVER)
COLUMNS = (*PARTS, CYCLE, LAUNCH)  # the columns of the samples
QUANTILES = (50.0, 99.0)


def samples(times: Times) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per record: when its cycle started (ns since time zero), whether that was a wake-up
    (else its send's start), and the value and presence of each of COLUMNS. `times` holds
    every time the parts' roles name."""
    woken_at, woken = first_of(times, CYCLE_START)
    sent_at, began = first_of(times, SEND_START)
    start = np.where(woken, woken_at, sent_at), woken | began
    columns = []
    for part in COLUMNS:
        begin = start if part.start is CYCLE_START else first_of(times, part.start)
        end = first_of(times, part.end)
        columns.append((end[0] - begin[0], begin[1] & end[1]))
    values = np.stack([c[0] for c in columns], axis=1)
    present = np.stack([c[1] for c in columns], axis=1)
    return start[0], woken, values, present


@dataclass(frozen=True)
class PartRow:
    part: Part
    count: int
    quantiles: tuple[float, ...]  # at QUANTILES
    max: int
    share: float | None  # of the cycle's variance; None: no variance to share

    def summary(self) -> dict[str, object]:
        return {"count": self.count,
                **{f"p{q:g}_ns": round(v) for q, v in zip(QUANTILES, self.quantiles, strict=True)},
                "max_ns": self.max,
                "share_of_jitter": None if self.share is None else round(self.share, 4)}


@dataclass(frozen=True)
class CycleSummary:
    flow: str
    cycles: int  # distinct cycle starts among the sent datagrams
    datagrams: int
    dropped: int
    period_ns: float  # median distance between successive cycles; 0: fewer than two
    stdev_ns: float  # of the cycle's length: its jitter
    rows: list[PartRow]  # the parts seen, the cycle, and the launch-time error if any

    def summary(self) -> dict[str, object]:
        return {"flow": self.flow, "cycles": self.cycles, "datagrams": self.datagrams,
                "dropped": self.dropped, "period_ns": round(self.period_ns),
                "jitter_stdev_ns": round(self.stdev_ns),
                "parts": {r.part.name: r.summary() for r in self.rows}}


def _share(values: np.ndarray, cycle: np.ndarray) -> float | None:
    if len(cycle) < 2:
        return None
    variance = float(np.var(cycle))
    if variance == 0:
        return None
    return float(np.mean((values - values.mean()) * (cycle - cycle.mean()))) / variance


def summarize(flow: str, starts: np.ndarray, woken: np.ndarray, values: np.ndarray,
              present: np.ndarray, dropped: int) -> CycleSummary:
    """One flow's sent datagrams: their cycles' absolute starts, whether each started at a
    wake-up, COLUMNS and presence. A flow with wake-ups has cycles only where there is one,
    as the kernel's cycle span has."""
    cycle_at = COLUMNS.index(CYCLE)
    whole = present[:, cycle_at] & (woken if woken.any() else True)
    starts, values, present = starts[whole], values[whole], present[whole]
    cycle = values[:, cycle_at].astype(np.float64)
    distinct = np.unique(starts)
    period = float(np.median(np.diff(distinct))) if len(distinct) > 1 else 0.0
    rows = []
    for i, part in enumerate(COLUMNS):
        known = present[:, i]
        if not known.any():
            continue
        v = values[known, i]
        if part is LAUNCH:
            share = _share(v.astype(np.float64), cycle[known])
        else:  # an absent part took no time: the parts still add up to the cycle
            share = _share(np.where(known, values[:, i], 0).astype(np.float64), cycle)
        rows.append(PartRow(part, int(known.sum()),
                            tuple(float(np.percentile(v, q)) for q in QUANTILES), int(v.max()),
                            share))
    return CycleSummary(flow, len(distinct), len(values), dropped, period,
                        float(np.std(cycle)) if len(cycle) else 0.0, rows)


@dataclass
class _Flow:
    starts: list[np.ndarray] = field(default_factory=list)
    woken: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    present: list[np.ndarray] = field(default_factory=list)
    dropped: int = 0


class CycleView:
    """Collects the cycles of every flow, batch by batch."""

    def __init__(self) -> None:
        self.flows: dict[str, _Flow] = {}

    def add(self, flows: np.ndarray, origin: np.ndarray, times: Times, sent: np.ndarray,
            dropped: np.ndarray) -> None:
        """A batch: each record's flow label, time zero (absolute ns) and times."""
        start, woken, values, present = samples(times)
        for label in np.unique(flows).tolist():
            mine = flows == label
            flow = self.flows.setdefault(label, _Flow())
            keep = mine & sent
            flow.starts.append(origin[keep] + start[keep])
            flow.woken.append(woken[keep])
            flow.values.append(values[keep])
            flow.present.append(present[keep])
            flow.dropped += int((mine & dropped).sum())

    def add_packets(self, packets: Packets, layout: Layout) -> None:
        r = packets.records
        if not len(r):
            return
        times = PacketTimes.of(packets, layout)
        self.add(flow_labels(r), origin_ns(r, layout), times.times, times.sent,
                 r["fate"] == layout.fates_by_name["dropped"])

    def summaries(self) -> list[CycleSummary]:
        out = []
        for label, flow in sorted(self.flows.items()):
            if not flow.starts:
                continue
            out.append(summarize(label, np.concatenate(flow.starts),
                                 np.concatenate(flow.woken), np.concatenate(flow.values),
                                 np.concatenate(flow.present), flow.dropped))
        return [s for s in out if s.datagrams or s.dropped]

    def has(self, part: Part) -> bool:
        """Whether some datagram had this part (wake-ups, launch times)."""
        at = COLUMNS.index(part)
        return any(p[:, at].any() for f in self.flows.values() for p in f.present)

    @property
    def telling(self) -> bool:
        """Whether the view tells more than the stage table: wake-ups or launch times."""
        return self.has(PARTS[0]) or self.has(LAUNCH)


def flow_labels(records: np.ndarray) -> np.ndarray:
    """`comm/pid source → destination` per record."""
    comm = char_strings(records["comm"])
    saddr, daddr = address_strings(records["saddr"]), address_strings(records["daddr"])
    cols = [records[n].tolist() for n in ("pid", "sport", "dport")]
    return np.array([f"{c}/{pid} {endpoint(s, sp)} → {endpoint(d, dp)}"
                     for c, pid, s, sp, d, dp in zip(comm.tolist(), cols[0], saddr, cols[1],
                                                     daddr, cols[2], strict=True)], object)


def signed(ns: float) -> str:
    return ("-" if ns < 0 else "") + duration(abs(ns))


def share_text(share: float | None) -> str:
    return "-" if share is None else f"{round(share * 100)} %"


def cycle_title(s: CycleSummary) -> str:
    period = f"period {duration(s.period_ns)}" if s.period_ns else "one cycle"
    dropped = f", {s.dropped} dropped" if s.dropped else ""
    return (f"cycle of {s.flow}: {s.cycles} cycles, {period}, {s.datagrams} datagrams"
            f"{dropped}; jitter (stdev) {duration(s.stdev_ns)}")


def cycle_table(s: CycleSummary) -> Table:
    table = Table(title=cycle_title(s), title_justify="left", header_style="bold")
    table.add_column("part", no_wrap=True)
    table.add_column("from → to", no_wrap=True)
    for column in ("n", *(f"p{q:g}" for q in QUANTILES), "max", "share of jitter"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in s.rows:
        table.add_row(row.part.title, row.part.span, str(row.count),
                      *(signed(v) for v in row.quantiles), signed(row.max),
                      share_text(row.share), style="bold" if row.part is CYCLE else None)
    return table


def render(console: Console, summaries: list[CycleSummary]) -> None:
    if not summaries:
        console.print("cycles: no datagram was followed")
        return
    for s in summaries:
        console.print(cycle_table(s))
    console.print("(share of jitter: a part's covariance with the cycle over the cycle's "
                  "variance; the parts' shares add up to 100 %, the launch-time error's is "
                  "apart)", highlight=False)


def summaries_json(summaries: list[CycleSummary]) -> list[dict[str, object]]:
    return [s.summary() for s in summaries]
