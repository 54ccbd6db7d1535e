"""The report of a recorded run: the live report's rows, recomputed from every record.

Counters and drops are the kernel's, as of the recording's last part (drops
include those of the peer's receive path, which end no packet record); the
distributions come from the packet records, so their percentiles are exact.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from udptrace.report.columns import stage_column
from udptrace.report.distribution import Distribution
from udptrace.report.parquet import Recording, column
from udptrace.report.stage_latency import PacketTimes
from udptrace.report.terminal import Drop, ReportData, Row


def sent(recording: Recording) -> np.ndarray:
    return column(recording.packets, "fate", "").astype(str) == "sent"


def packet_times(recording: Recording) -> PacketTimes:
    table = recording.packets
    names = tuple(s["name"] for s in recording.info["stages"])
    shape = (table.num_rows, len(names))
    offsets, reached = np.zeros(shape, np.int64), np.zeros(shape, bool)
    for i, name in enumerate(names):
        offsets[:, i] = column(table, stage_column(name), 0)
        reached[:, i] = pc.is_valid(table[stage_column(name)]).to_numpy()
    return PacketTimes(names, offsets, reached, column(table, "total_ns"),
                       column(table, "syscall_exit_ns"),
                       column(table, "syscall_packet_index") == 0, sent(recording))


def recorded_report(recording: Recording) -> ReportData:
    info = recording.info
    times = packet_times(recording)
    per = times.per_stage()
    rows = []
    for index, stage in enumerate(info["stages"]):
        values = per[:, index][per[:, index] >= 0]
        if len(values):
            rows.append(Row(stage["name"], stage["title"], stage["meaning"],
                            Distribution.from_samples(values)))
    for span in info["spans"]:
        found = times.span(span["name"])
        values = found[1] if found is not None else np.empty(0)
        if len(values):
            rows.append(Row(span["name"], span["title"], span["meaning"],
                            Distribution.from_samples(values)))
    drops = [Drop(d["reason"], d["after_stage"], d["packets"]) for d in info.get("drops", [])]
    unavailable = [s["name"] for s in info["stages"] if not s["available"]]
    return ReportData(rows, drops, dict(info.get("counters", {})), unavailable, exact=True)
