"""The flight recorder (`--trigger EXPR --snapshots DIR`): a window of history always kept,
written out around each datagram that fires a trigger.

The kernel streams its per-datagram records and, on the CPUs that sent them, the
scheduler, softirq and hardirq events (trace/sched.py), as `record --sched` does; here
they are only held, raw, for `--before` + `--after` plus the time a record may take to
arrive, and dropped after. Nothing is decoded or written in steady state: the triggers
are a few NumPy comparisons per batch (report/triggers.py). A snapshot is written once
its `--after` has passed, as a recording of its own (report/parquet.py), so `udptrace
report DIR/snapshot-N` and its Perfetto timeline work on it as on any recording:

  DIR/snapshot-N/packets/, sched/   the window's records and CPU events
  DIR/snapshot-N/timeline.json      the window as a Perfetto timeline
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from udptrace.errors import UsageError
from udptrace.report import perfetto
from udptrace.report.columns import PacketColumns, sched_columns
from udptrace.report.cycle import COLUMNS, PARTS, samples
from udptrace.report.fields import Batch, packet_table
from udptrace.report.parquet import (
    Recording,
    RecordingWriter,
    open_recording,
    progress,
    recording_parts,
    run_info,
)
from udptrace.report.perfetto import entry_exit_pairs
from udptrace.report.stage_latency import PacketTimes
from udptrace.report.triggers import MS, FlightOptions, Trigger, Triggers
from udptrace.trace.decode import Packets, char_strings
from udptrace.trace.run import StatusCallback
from udptrace.trace.sched import SchedSession, softirq_names
from udptrace.trace.session import TraceSession

# how long after its end a record may still arrive: the reading thread hands batches on
# every 0.1 s and the syscall join holds a packet up to 1 s for its syscall's record
SETTLE_NS = 1200 * MS
TIMELINE = "timeline.json"


@dataclass
class _Pending:
    number: int
    trigger: Trigger
    record: np.ndarray  # the one record that fired, kept apart from the history
    begin_ns: int
    end_ns: int


@dataclass
class FlightRecorder:
    options: FlightOptions
    session: TraceSession
    sched: SchedSession
    command: list[str]
    notices: IO[str] = field(default_factory=lambda: sys.stderr)
    snapshots: list[dict[str, object]] = field(default_factory=list)
    suppressed: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        self.drop_names = self.session.drop_reason_names()
        known = set(self.drop_names.values())
        for t in self.options.triggers:
            if t.reason and t.reason not in known:
                raise UsageError(f"--trigger '{t.text}': this kernel has no drop reason "
                                 f"{t.reason}; it has {', '.join(sorted(known))}")
        directory = self.options.directory
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise UsageError(f"--snapshots {directory}: exists and is not an empty directory: "
                             "remove it or choose another")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--snapshots {directory}: {e.strerror}") from None
        layout = self.session.layout
        self.softirqs = softirq_names()
        self.triggers = Triggers(self.options.triggers, layout, self.drop_names)
        # the traced processes' CPUs from the start: a late first cycle has its history too
        for pid in self.session.options.pids:
            with contextlib.suppress(OSError):
                self.sched.watch(os.sched_getaffinity(pid))
        self._packets: deque[tuple[int, Packets, np.ndarray, np.ndarray]] = deque()
        self._events: deque[np.ndarray] = deque()
        self._pending: list[_Pending] = []
        self._last_trigger_ns: int | None = None
        empty = Batch(Packets.empty(layout), layout, self.drop_names)
        self._columns = PacketColumns(
            packet_table(layout, pubsub=bool(self.session.options.payload_port)), empty)

    @property
    def keep_ns(self) -> int:
        return self.options.before_ns + self.options.after_ns + SETTLE_NS

    def packets(self, batch: Batch) -> None:
        """A batch of datagrams: kept, and checked against the triggers."""
        packets = batch.packets
        if len(packets):
            self.sched.watch(np.unique(packets.records["cpu"]).tolist())
            begin, end = extent_ns(packets.records)
            self._packets.append((int(end.max()), packets, begin, end))
            fired = self.triggers.evaluate(packets)
            for row in np.flatnonzero(fired >= 0).tolist():
                self._fire(self.options.triggers[fired[row]], packets.records[row:row + 1],
                           int(begin[row]), int(end[row]))
        self.tick()

    def _fire(self, trigger: Trigger, record: np.ndarray, begin: int, end: int) -> None:
        self.fired += 1
        held = (self._last_trigger_ns is not None
                and begin - self._last_trigger_ns < self.options.holdoff_ns)
        if held or len(self.snapshots) + len(self._pending) >= self.options.max_snapshots:
            self.suppressed += 1
            return
        self._last_trigger_ns = begin
        number = len(self.snapshots) + len(self._pending) + 1
        self._pending.append(_Pending(number, trigger, record.copy(), begin, end))

    def tick(self, now_ns: int | None = None) -> None:
        """Read the CPU events, write the snapshots whose --after has passed, forget what no
        snapshot can need any more."""
        events = self.sched.read()
        if len(events):
            self._events.append(events)
        now = time.monotonic_ns() if now_ns is None else now_ns
        for pending in [p for p in self._pending
                        if p.end_ns + self.options.after_ns + SETTLE_NS <= now]:
            self._write(pending)
        oldest = min([now - self.keep_ns,
                      *(p.begin_ns - self.options.before_ns for p in self._pending)])
        while self._packets and self._packets[0][0] < oldest:
            self._packets.popleft()
        while self._events and int(self._events[0]["ts"].max()) < oldest - SETTLE_NS:
            self._events.popleft()

    def status(self, then: StatusCallback | None = None) -> StatusCallback:
        def tick(counters: dict[str, int], elapsed: float, records: int | None) -> None:
            self.tick()
            if then is not None:
                then(counters, elapsed, records)
        return tick

    def finish(self) -> dict[str, object]:
        """At the run's end: the snapshots still waiting for their --after, written with
        what there is; the summary's part."""
        events = self.sched.read()
        if len(events):
            self._events.append(events)
        for pending in list(self._pending):
            self._write(pending)
        return self.summary()

    def summary(self) -> dict[str, object]:
        return {"directory": str(self.options.directory), "fired": self.fired,
                "written": len(self.snapshots), "suppressed": self.suppressed,
                "max_snapshots": self.options.max_snapshots,
                "holdoff_ns": self.options.holdoff_ns, "snapshots": self.snapshots}

    def _window(self, pending: _Pending) -> tuple[Packets, np.ndarray]:
        lo = pending.begin_ns - self.options.before_ns
        hi = pending.end_ns + self.options.after_ns
        parts = [(p, (end >= lo) & (begin <= hi)) for _, p, begin, end in self._packets]
        parts = [(p, m) for p, m in parts if m.any()]
        layout = self.session.layout
        if not parts:
            packets = Packets.empty(layout)
        else:
            # concatenate packs structured dtypes: astype puts the record's padding back
            packets = Packets(np.concatenate([p.records[m] for p, m in parts]).astype(
                layout.record), np.concatenate([p.syscall_exit[m] for p, m in parts]),
                np.concatenate([p.syscall_ret[m] for p, m in parts]))
        events = (np.concatenate(list(self._events)) if self._events
                  else np.empty(0, self.sched.event))
        events = events[np.argsort(events["ts"], kind="stable")]
        inside = (events["ts"] >= lo) & (events["ts"] <= hi)
        # each CPU's last switch before the window: what was running when it opened
        kinds = {v: k for k, v in self.sched.kinds.items()}
        before = np.flatnonzero((events["ts"] < lo) & (events["kind"] == kinds["switch"]))
        last = {int(events["cpu"][i]): i for i in before.tolist()}
        inside[list(last.values())] = True
        return packets, events[inside]

    def _write(self, pending: _Pending) -> None:
        self._pending.remove(pending)
        packets, events = self._window(pending)
        path = self.options.directory / f"snapshot-{pending.number}"
        verdict = explain(pending, packets, events, self.session, self.sched.kinds,
                          self.softirqs)
        about = {"number": pending.number, "trigger": pending.trigger.text,
                 "value_ns": trigger_value(self.triggers, pending),
                 "begin_ns": pending.begin_ns, "end_ns": pending.end_ns,
                 "window_ns": [pending.begin_ns - self.options.before_ns,
                               pending.end_ns + self.options.after_ns],
                 "datagrams": len(packets), "sched_events": len(events), **verdict}
        writer = RecordingWriter(path)
        writer.info = {**run_info(self.session, self.command, True), "snapshot": about}
        layout = self.session.layout
        writer.add("packets", self._columns(Batch(packets, layout, self.drop_names)))
        writer.add("sched", pa.table(sched_columns(events, self.sched.kinds, self.softirqs)))
        writer.flush(progress(self.session.snapshot(), layout, self.drop_names, len(packets),
                              0.0), final=True)
        timeline = perfetto.trace_events(open_recording(path))
        events = timeline["traceEvents"]
        assert isinstance(events, list)
        # a global marker where the late datagram began, so the eye lands on it
        events.append({
            "ph": "i", "s": "g", "name": f"trigger {pending.trigger.text}",
            "ts": pending.begin_ns / 1000, "pid": perfetto.CPUS_PID, "tid": 0,
            "cat": "trigger", "args": {"value_ns": about["value_ns"],
                                       "verdict": about["verdict"]}})
        (path / TIMELINE).write_text(json.dumps(timeline, separators=(",", ":")))
        self.snapshots.append({"path": str(path), **about})
        if self.notices.isatty():  # over the live status line, not after it
            self.notices.write("\r\x1b[K")
        self.notices.write(f"udptrace: snapshot {pending.number}: {pending.trigger.text} "
                           f"({duration_text(about['value_ns'])}) → {path}: "
                           f"{about['verdict']}\n")
        self.notices.flush()


def extent_ns(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per record its first and last time (a cycle starts at its timer's expiry)."""
    ts = records["ts"].astype(np.int64)
    expires = records["timer_expires"].astype(np.int64)
    big = np.iinfo(np.int64).max
    begin = np.where(ts > 0, ts, big).min(axis=1)
    begin = np.where(expires > 0, np.minimum(begin, expires), begin)
    end = ts.max(axis=1)
    return np.where(begin < big, begin, end), end


def trigger_value(triggers: Triggers, pending: _Pending) -> int | None:
    if pending.trigger.kind in ("span", "stage"):
        return int(triggers.value_ns(pending.trigger, pending.record)[0])
    return None


def duration_text(ns: object) -> str:
    if not isinstance(ns, int):
        return "fired"
    return f"{ns / MS:.2f} ms" if ns >= MS else f"{ns / 1000:.1f} µs"


def explain(pending: _Pending, packets: Packets, events: np.ndarray, session: TraceSession,
            kinds: dict[int, str], softirqs: dict[int, str]) -> dict[str, object]:
    """Which part of the cycle was late (against the median of its flow's other cycles in
    the window), and what ran on its CPU from the cycle's start until it sent."""
    layout = session.layout
    record = pending.record
    both = Packets(np.concatenate([record, packets.records]).astype(layout.record),
                   np.zeros(len(packets) + 1, np.uint64), np.zeros(len(packets) + 1, np.int64))
    _, _, values, present = samples(PacketTimes.of(both, layout).times)
    flow = (both.records["pid"] == record["pid"][0]) & (both.records["sport"]
                                                        == record["sport"][0])
    late: dict[str, object] = {}
    excess = []
    for j, part in enumerate(COLUMNS[:len(PARTS)]):
        others = present[1:, j] & flow[1:]
        if present[0, j] and others.any():
            median = int(np.median(values[1:, j][others]))
            excess.append((int(values[0, j]) - median, part.title, median))
    if excess:
        over, title, median = max(excess)
        late = {"late_part": title, "late_by_ns": over, "part_median_ns": median}
    cpu = int(record["cpu"][0])
    held = cpu_holders(events, kinds, softirqs, cpu, pending.begin_ns, pending.end_ns,
                       int(record["tid"][0]))
    text = []
    if late:
        text.append(f"{late['late_part']} late by {duration_text(late['late_by_ns'])} "
                    f"(its median {duration_text(late['part_median_ns'])})")
    if held:
        name, ns = held[0]
        text.append(f"{name} held CPU {cpu} for {duration_text(ns)}")
    return {**late, "cpu": cpu,
            "held_by": [{"task": n, "ns": ns} for n, ns in held[:5]],
            "verdict": "; ".join(text) or "nothing stood out"}


def cpu_holders(events: np.ndarray, kinds: dict[int, str], softirqs: dict[int, str],
                cpu: int, lo: int, hi: int, traced_tid: int) -> list[tuple[str, int]]:
    """What ran on `cpu` between lo and hi, longest first: the tasks other than the traced
    thread (and idle), from the scheduler switches, and the softirqs and hardirqs (their
    time is inside some task's)."""
    mine = events[events["cpu"] == cpu]
    kind = np.array([kinds.get(k, "") for k in mine["kind"].tolist()], dtype=object)
    ts = mine["ts"].astype(np.int64)
    names = char_strings(mine["comm"])
    ran: dict[str, int] = {}

    def add(name: str, a: int, b: int) -> None:
        a, b = max(a, lo), min(b, hi)
        if b > a:
            ran[name] = ran.get(name, 0) + b - a

    switches = np.flatnonzero(kind == "switch")
    ends = np.append(ts[switches][1:], hi)[:len(switches)]
    for i, end in zip(switches.tolist(), ends.tolist(), strict=True):
        pid = int(mine["pid"][i])
        if pid not in (0, traced_tid):
            add(f"{names[i]} [{pid}]", int(ts[i]), end)
    for prefix in ("softirq", "irq"):
        which = np.flatnonzero(np.char.startswith(kind.astype(str), prefix + "_"))
        starts, stops = entry_exit_pairs(kind[which] == f"{prefix}_entry")
        for a, b in zip(which[starts].tolist(), which[stops].tolist(), strict=True):
            number = int(mine["number"][a])
            label = softirqs.get(number, str(number)) if prefix == "softirq" else (
                names[a] or str(number))
            add(f"{prefix} {label}", int(ts[a]), int(ts[b]))
    return sorted(ran.items(), key=lambda kv: -kv[1])

def snapshot_dirs(path: Path) -> list[Path]:
    """A --snapshots directory's snapshots in their order; [] if `path` is none."""
    found = [p for p in path.glob("snapshot-*") if p.name.removeprefix("snapshot-").isdigit()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("snapshot-")))


def snapshot_recordings(path: Path) -> list[tuple[str, dict, Recording]]:
    """Each snapshot's name, what its trigger found, and its recording."""
    out = []
    for directory in snapshot_dirs(path):
        recording = open_recording(directory)
        out.append((directory.name, recording.info.get("snapshot", {}), recording))
    return out


def render_snapshots(console: Console, path: Path) -> None:
    """`udptrace report DIR`: each snapshot with its trigger and verdict."""
    table = Table(title=f"snapshots in {path}", title_justify="left")
    for name in ("snapshot", "trigger", "value", "datagrams", "verdict"):
        table.add_column(name, overflow="fold")
    for directory in snapshot_dirs(path):
        about = recording_parts(directory).info.get("snapshot", {})
        table.add_row(directory.name, str(about.get("trigger")),
                      duration_text(about.get("value_ns")), str(about.get("datagrams")),
                      str(about.get("verdict")))
    console.print(table)
    console.print(f"each is a recording: 'udptrace report {path}/snapshot-N'; its timeline "
                  f"is {path}/snapshot-N/{TIMELINE} (https://ui.perfetto.dev)", highlight=False)
