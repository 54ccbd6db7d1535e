"""The report of a recorded run: the live report's rows, recomputed from every record.

Counters and drops are the kernel's, as of the recording's last part (drops
include those of the peer's receive path, which end no packet record); the
distributions come from the packet records, so their percentiles are exact.
"""

from __future__ import annotations

import numpy as np

from udptrace.report.columns import stage_column
from udptrace.report.distribution import Distribution
from udptrace.report.parquet import Recording, column
from udptrace.report.stage_latency import per_stage
from udptrace.report.terminal import Drop, ReportData, Row


def stage_offsets(recording: Recording) -> np.ndarray:
    """(packets, stages) ns since time zero, -1 where not reached."""
    names = [s["name"] for s in recording.info["stages"]]
    table = recording.packets
    if not table.num_rows:
        return np.empty((0, len(names)), np.int64)
    return np.stack([column(table, stage_column(n)) for n in names], axis=1).astype(np.int64)


def sent(recording: Recording) -> np.ndarray:
    return column(recording.packets, "fate", "").astype(str) == "sent"


def syscall_durations(recording: Recording) -> np.ndarray:
    """Entry to return of each syscall that made packets, once per syscall."""
    table = recording.packets
    exits = column(table, "syscall_exit_ns")
    seen = exits >= 0
    _, first = np.unique(column(table, "syscall_id")[seen], return_index=True)
    return exits[seen][first]


def recorded_report(recording: Recording) -> ReportData:
    info = recording.info
    stages = info["stages"]
    is_sent = sent(recording)
    per = per_stage(stage_offsets(recording)[is_sent])
    rows = []
    for index, stage in enumerate(stages):
        # time zero has no time before it: its row is the whole send syscall, as live
        values = syscall_durations(recording) if index == 0 else per[:, index]
        values = values[values >= 0]
        if len(values):
            rows.append(Row(stage["name"], stage["title"], stage["meaning"],
                            Distribution.from_values(values)))
    totals = column(recording.packets, "total_ns")[is_sent]
    totals = totals[totals >= 0]
    if len(totals):
        total = info["total"]
        rows.append(Row(total["name"], total["title"], total["meaning"],
                        Distribution.from_values(totals)))
    drops = [Drop(d["reason"], d["after_stage"], d["packets"]) for d in info.get("drops", [])]
    unavailable = [s["name"] for s in stages if not s["available"]]
    return ReportData(rows, drops, dict(info.get("counters", {})), unavailable)
