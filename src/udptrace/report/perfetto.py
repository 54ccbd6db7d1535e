"""`--perfetto`: a recorded run as a timeline, in Chrome's trace-event JSON.

Perfetto (ui.perfetto.dev) and chrome://tracing open it. One process per
socket (its process and source address): each packet is a slice from its
send syscall's entry to the last stage it reached, with a child slice per
stage (the time since the stage before), and a drop is an instant event.
One process for the CPUs: per CPU, the send syscalls made there and, in a
recording made with ``--sched``, what ran: tasks between scheduler switches,
and the softirqs and hardirqs inside them.

Slices on one track must nest, so overlapping packets of one socket (a
queue holding several) go to extra lanes, like threads of the socket.
"""

from __future__ import annotations

import json
from typing import IO

import numpy as np
import pyarrow as pa

from udptrace.report.parquet import Recording, column
from udptrace.report.recorded import packet_times
from udptrace.report.stage_latency import per_stage

CPUS_PID = 1
SOCKET_PID_BASE = 100


def _us(ns: int) -> float:
    """Trace-event time (µs) from Python ints: a float keeps ns precision for ~100 days of
    CLOCK_MONOTONIC, and NumPy scalars here would cost 25 µs each in round()."""
    return ns / 1000


def lanes(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Greedy lane per slice (in start order) so that slices in one lane never overlap."""
    lane_end: list[int] = []
    out = np.zeros(len(starts), np.int64)
    for i in np.argsort(starts, kind="stable").tolist():
        free = [k for k, end in enumerate(lane_end) if end <= starts[i]]
        lane = free[0] if free else len(lane_end)
        if not free:
            lane_end.append(0)
        lane_end[lane] = int(ends[i])
        out[i] = lane
    return out


class Tracks:
    """Processes and threads with their names, numbered as they first appear."""

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []
        self.threads: dict[tuple[int, str], int] = {}

    def process(self, pid: int, name: str, sort: int) -> None:
        self.events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                            "args": {"name": name}})
        self.events.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                            "args": {"sort_index": sort}})

    def thread(self, pid: int, name: str) -> int:
        key = (pid, name)
        if key not in self.threads:
            tid = pid * 1000 + len([k for k in self.threads if k[0] == pid]) + 1
            self.threads[key] = tid
            self.events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                                "args": {"name": name}})
        return self.threads[key]

    def slice(self, pid: int, tid: int, name: str, start_ns: int, dur_ns: int,
              args: dict[str, object] | None = None, cat: str = "") -> None:
        event: dict[str, object] = {"ph": "X", "name": name, "pid": pid, "tid": tid,
                                    "ts": _us(start_ns), "dur": _us(max(dur_ns, 0))}
        if cat:
            event["cat"] = cat
        if args:
            event["args"] = args
        self.events.append(event)

    def instant(self, pid: int, tid: int, name: str, at_ns: int,
                args: dict[str, object]) -> None:
        self.events.append({"ph": "i", "s": "t", "name": name, "pid": pid, "tid": tid,
                            "ts": _us(at_ns), "args": args, "cat": "drop"})


def _packets(tracks: Tracks, recording: Recording) -> None:
    table = recording.packets
    if not table.num_rows:
        return
    times = packet_times(recording)
    stages, offsets, reached = times.stages, times.offsets, times.reached
    spent = per_stage(offsets, reached)
    # a packet's slice: from its first stage (the app's callback, or the syscall) to its last
    begin = np.where(reached, offsets, np.iinfo(np.int64).max).min(axis=1)
    end = np.where(reached, offsets, np.iinfo(np.int64).min).max(axis=1)
    entry = column(table, "ts_ns") + begin
    end = end - begin
    offsets = offsets - begin[:, None]
    text = {name: column(table, name, "").astype(str) for name in (
        "comm", "saddr", "daddr", "fate", "drop_reason", "drop_stage")}
    pid, sport, dport = column(table, "pid"), column(table, "sport"), column(table, "dport")
    sockets = np.stack([pid, sport], axis=1)
    distinct, which = np.unique(sockets, axis=0, return_inverse=True)
    which = which.reshape(-1)
    for s, (proc, port) in enumerate(distinct.tolist()):
        rows = np.flatnonzero(which == s)
        first = rows[0]
        socket_pid = SOCKET_PID_BASE + s
        tracks.process(socket_pid, f"socket {text['comm'][first]} [{proc}] "
                                   f"{text['saddr'][first]}:{port}", 10 + s)
        lane = lanes(entry[rows], entry[rows] + end[rows])
        # Python ints from here: one packet at a time is Python work, NumPy scalars are slower
        starts, ends = entry[rows].tolist(), end[rows].tolist()
        at, took, seen = offsets[rows].tolist(), spent[rows].tolist(), reached[rows].tolist()
        for n, (i, k) in enumerate(zip(rows.tolist(), lane.tolist(), strict=True)):
            tid = tracks.thread(socket_pid, "packets" if k == 0 else f"packets (lane {k + 1})")
            fate = text["fate"][i]
            tracks.slice(socket_pid, tid, f"packet → {text['daddr'][i]}:{dport[i]}", starts[n],
                         ends[n], {"fate": fate, "stages_ns": {
                             stage: at[n][j] for j, stage in enumerate(stages) if seen[n][j]}},
                         cat="packet")
            for j, stage in enumerate(stages):
                if took[n][j] >= 0:
                    tracks.slice(socket_pid, tid, stage, starts[n] + at[n][j] - took[n][j],
                                 took[n][j], cat="stage")
            if fate == "dropped":
                tracks.instant(socket_pid, tid, f"drop: {text['drop_reason'][i]}",
                               starts[n] + ends[n], {"after_stage": text["drop_stage"][i]})


def _syscalls(tracks: Tracks, recording: Recording) -> None:
    """Each send syscall (entry to return) on the CPU it ran on."""
    table = recording.packets
    exits = column(table, "syscall_exit_ns")
    first = (column(table, "syscall_packet_index") == 0) & (exits >= 0)
    entry, cpu = column(table, "ts_ns")[first], column(table, "cpu")[first]
    names = column(table, "syscall_name", "").astype(str)[first]
    comms = column(table, "comm", "").astype(str)[first]
    exits = exits[first]
    for c in np.unique(cpu).tolist():
        rows = np.flatnonzero(cpu == c)
        lane = lanes(entry[rows], entry[rows] + exits[rows])
        starts, took = entry[rows].tolist(), exits[rows].tolist()
        for n, (i, k) in enumerate(zip(rows.tolist(), lane.tolist(), strict=True)):
            tid = tracks.thread(CPUS_PID, f"CPU {c} send syscalls"
                                + (f" (lane {k + 1})" if k else ""))
            tracks.slice(CPUS_PID, tid, f"{names[i]} ({comms[i]})", starts[n], took[n],
                         cat="syscall")


def entry_exit_pairs(is_entry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry → exit pairs in one CPU's time-ordered events (these do not nest in themselves);
    an exit without its entry (recording began inside) or the reverse is left out."""
    entries = np.flatnonzero(is_entry[:-1] & ~is_entry[1:])
    return entries, entries + 1


def _sched(tracks: Tracks, sched: pa.Table) -> None:
    ts, cpu = column(sched, "ts_ns"), column(sched, "cpu")
    kind = column(sched, "kind", "").astype(str)
    comm, pid = column(sched, "comm", "").astype(str), column(sched, "pid")
    number = column(sched, "number")
    ts_, pid_, number_ = ts.tolist(), pid.tolist(), number.tolist()  # Python ints, as above
    for c in np.unique(cpu).tolist():
        mine = np.flatnonzero(cpu == c)
        mine = mine[np.argsort(ts[mine], kind="stable")]
        tid = tracks.thread(CPUS_PID, f"CPU {c}")
        switches = mine[kind[mine] == "switch"]
        for a, b in zip(switches[:-1].tolist(), switches[1:].tolist(), strict=True):
            name = "idle" if pid_[a] == 0 else f"{comm[a]} [{pid_[a]}]"
            tracks.slice(CPUS_PID, tid, name, ts_[a], ts_[b] - ts_[a], {"tid": pid_[a]},
                         cat="task")
        for prefix, label in (("softirq", "softirq"), ("irq", "irq")):
            events = mine[np.char.startswith(kind[mine].astype(str), prefix + "_")]
            starts, stops = entry_exit_pairs(kind[events] == f"{prefix}_entry")
            for a, b in zip(events[starts].tolist(), events[stops].tolist(), strict=True):
                tracks.slice(CPUS_PID, tid, f"{label} {comm[a] or number_[a]}", ts_[a],
                             ts_[b] - ts_[a], {"number": number_[a]}, cat=label)


def trace_events(recording: Recording) -> dict[str, object]:
    tracks = Tracks()
    tracks.process(CPUS_PID, "CPUs", 1)
    _packets(tracks, recording)
    _syscalls(tracks, recording)
    if recording.sched is not None:
        _sched(tracks, recording.sched)
    return {"traceEvents": tracks.events, "displayTimeUnit": "ns",
            "otherData": {"udptrace": recording.info.get("version"),
                          "kernel": recording.info.get("kernel"),
                          "command": " ".join(recording.info.get("command", [])),
                          "clock": "CLOCK_MONOTONIC"}}


def write(recording: Recording, out: IO[bytes]) -> None:
    out.write(json.dumps(trace_events(recording), separators=(",", ":")).encode())
