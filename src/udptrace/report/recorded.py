"""The report of a recorded run: the live report's rows, recomputed from every record.

Counters and drops are the kernel's, as of the recording's last part (drops
include those of the peer's receive path, which end no packet record); the
distributions come from the packet records, so their percentiles are exact.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from udptrace.pubsub.headers import UadpHeaders
from udptrace.report.columns import stage_column
from udptrace.report.cycle import CycleView
from udptrace.report.distribution import Distribution
from udptrace.report.parquet import Recording, column
from udptrace.report.pubsub_groups import PubSubGroups
from udptrace.report.stage_latency import PacketTimes
from udptrace.report.terminal import Contexts, Drop, ReportData, Row
from udptrace.trace.decode import endpoint


def fates(recording: Recording) -> np.ndarray:
    return column(recording.packets, "fate", "").astype(str)


def sent(recording: Recording) -> np.ndarray:
    """Left the device: sent, or sent and then read on this host (--e2e)."""
    fate = fates(recording)
    return (fate == "sent") | (fate == "received")


# The recorded column of each time a record keeps beside its stages that a role names
KEPT_COLUMNS = {"timer_expires": "timer_expires_ns", "txtime": "txtime_launch_ns",
                "syscall_exit": "syscall_exit_ns"}


def _nullable(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A column's values and where they are set; none where the column is absent."""
    if name not in table.column_names:
        return np.zeros(table.num_rows, np.int64), np.zeros(table.num_rows, bool)
    return column(table, name, 0), pc.is_valid(table[name]).to_numpy()


def packet_times(recording: Recording) -> PacketTimes:
    table = recording.packets
    names = tuple(s["name"] for s in recording.info["stages"])
    shape = (table.num_rows, len(names))
    offsets, reached = np.zeros(shape, np.int64), np.zeros(shape, bool)
    for i, name in enumerate(names):
        offsets[:, i], reached[:, i] = _nullable(table, stage_column(name))
    return PacketTimes(names, offsets, reached,
                       {name: _nullable(table, c) for name, c in KEPT_COLUMNS.items()},
                       column(table, "syscall_packet_index") == 0, sent(recording),
                       fates(recording) == "received")


def recorded_contexts(recording: Recording) -> Contexts | None:
    """Where the sent packets' driver calls and TX completions ran, from their records."""
    table = recording.packets
    if "xmit_context" not in table.column_names:
        return None
    left = sent(recording)
    xmit = column(table, "xmit_context", "").astype(str)[left]
    completion = column(table, "completion_context", "").astype(str)[left]
    pending = column(table, "softirq_pending_ns", 0)[left]
    if not (xmit != "").any():
        return None

    def counts(names: np.ndarray) -> dict[str, int]:
        found, n = np.unique(names[names != ""], return_counts=True)
        return dict(zip(found.tolist(), n.tolist(), strict=True))

    return Contexts(counts(xmit), counts(completion),
                    Distribution.from_samples(pending[(xmit == "net_tx") & (pending > 0)]))


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
    unavailable = [s["name"] for s in info["stages"] if s["available"] is False]
    return ReportData(rows, drops, dict(info.get("counters", {})), unavailable, exact=True,
                      contexts=recorded_contexts(recording))


def _first_writer(table: pa.Table) -> np.ndarray:
    """The first DataSetWriterId of each row's list, -1 where it is empty or null."""
    lists = table["pubsub_dataset_writer_ids"].combine_chunks()
    lengths = column(pa.table({"n": pc.list_value_length(lists)}), "n", 0)
    starts = lists.offsets.to_numpy()[:-1]
    values = lists.values.to_numpy(zero_copy_only=False)
    out = np.full(len(lengths), -1, np.int64)
    out[lengths > 0] = values[starts[lengths > 0]]
    return out


def pubsub_groups(recording: Recording) -> PubSubGroups | None:
    """Latency per PubSub writer group, as `trace --pubsub` shows it; None: not recorded."""
    table = recording.packets
    if "pubsub_publisher_id" not in table.column_names:
        return None
    headers = UadpHeaders(
        valid=pc.is_valid(table["pubsub_publisher_id"]).to_numpy(),
        publisher_id_type=column(table, "pubsub_publisher_id_type"),
        publisher_id=column(table, "pubsub_publisher_id", 0).astype(np.uint64),
        writer_group_id=column(table, "pubsub_writer_group_id"),
        network_sequence=column(table, "pubsub_sequence_number"),
        dataset_writer_id=_first_writer(table),
        dataset_sequence=column(table, "pubsub_dataset_sequence_number"))
    fate = column(table, "fate", "").astype(str)
    groups = PubSubGroups()
    groups.add_labelled(headers, column(table, "total_ns"), column(table, "ts_ns"),
                        column(table, "syscall_packet_index") == 0, fate == "sent",
                        fate == "dropped")
    return groups


def cycle_view(recording: Recording) -> CycleView | None:
    """Each flow's cycles, as `trace --wakeup` shows them; None when the recording has no
    wake-ups or launch times to tell."""
    table = recording.packets
    labels = np.array([f"{c}/{pid} {endpoint(s, sp)} → {endpoint(d, dp)}" for c, pid, s, sp, d, dp
                       in zip(*(table[n].to_pylist() for n in ("comm", "pid", "saddr", "sport",
                                                               "daddr", "dport")), strict=True)],
                      object)
    times = packet_times(recording)
    view = CycleView()
    view.add(labels, column(table, "ts_ns"), times.times, times.sent,
             fates(recording) == "dropped")
    return view if view.telling else None
