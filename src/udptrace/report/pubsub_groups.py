"""`--pubsub`: label each traced datagram with its OPC UA PubSub identity, group latency by it.

The BPF side copies the first UDP payload bytes of datagrams on the UADP
port; :func:`udptrace.pubsub.headers.decode_headers` reads the identifying
header fields out of a whole batch at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table

from udptrace.pubsub.headers import UadpHeaders, decode_headers
from udptrace.pubsub.uadp import PublisherIdType
from udptrace.report.intervals import Flow, IntervalSummary
from udptrace.report.terminal import duration
from udptrace.trace.decode import Packets, e2e_ns, origin_ns, total_ns
from udptrace.trace.layout import Layout


def headers_of(packets: Packets, layout: Layout) -> UadpHeaders:
    r = packets.records
    has_payload = (r["flags"] & layout.flags["payload"]) != 0
    lengths = np.where(has_payload, r["payload_len"], 0)
    return decode_headers(r["payload"], lengths)


@dataclass
class _Group:
    latencies: list[np.ndarray] = field(default_factory=list)
    sends: list[np.ndarray] = field(default_factory=list)  # syscall entries, for intervals
    writers: set[int] = field(default_factory=set)
    packets: int = 0
    dropped: int = 0


def _group_keys(headers: UadpHeaders) -> np.ndarray:
    """(id type, id, writer group) of each valid header; the id's type is part of the key:
    a String id is a hash that could equal a number."""
    return np.stack([headers.publisher_id_type.astype(np.int64),
                     headers.publisher_id.astype(np.int64),
                     headers.writer_group_id.astype(np.int64)], axis=1)[headers.valid]


def _latency_cells(values: np.ndarray) -> list[str]:
    if not len(values):
        return ["-"] * 4
    return [*(duration(float(np.percentile(values, q))) for q in (50, 99)),
            duration(float(values.max())), duration(float(values.std()))]


def _shown(kind: int, pub: int) -> str:
    return f"String#{pub & (2**64 - 1):016x}" if kind == PublisherIdType.String else str(pub)


class PubSubGroups:
    """Latency per (PublisherId, WriterGroupId), and end to end per subscriber too, from the
    per-packet records."""

    def __init__(self) -> None:
        self.groups: dict[tuple[int, int, int], _Group] = {}  # (id type, id, writer group)
        # (id type, id, writer group, subscriber pid, comm) → sendto→recv return, per record
        self.subscribers: dict[tuple[int, int, int, int, str], list[np.ndarray]] = {}
        self.unlabelled = 0

    def add(self, packets: Packets, layout: Layout, headers: UadpHeaders) -> None:
        r = packets.records
        totals = total_ns(r, layout)
        dropped = r["fate"] == layout.fates_by_name["dropped"]
        sent = (totals >= 0) & ~dropped  # left the device (and, with --e2e, maybe went on)
        self.add_labelled(headers, totals, origin_ns(r, layout), r["packet_index"] == 0, sent,
                          dropped)
        self._add_subscribers(packets, layout, headers)

    def add_labelled(self, headers: UadpHeaders, totals: np.ndarray, starts: np.ndarray,
                     first: np.ndarray, sent: np.ndarray, dropped: np.ndarray) -> None:
        """Packets with their headers decoded (live) or read back (a recording)."""
        valid = headers.valid
        self.unlabelled += int((~valid).sum())
        keys = _group_keys(headers)
        unique, inverse = (np.unique(keys, axis=0, return_inverse=True) if len(keys)
                           else (keys, np.empty(0, np.int64)))
        inverse = inverse.reshape(-1)
        for g, (kind, pub, group) in enumerate(unique.tolist()):
            rows = inverse == g
            entry = self.groups.setdefault((kind, pub, group), _Group())
            entry.latencies.append(totals[valid][rows][sent[valid][rows]])
            entry.sends.append(starts[valid][rows][first[valid][rows]])
            entry.writers.update(headers.dataset_writer_id[valid][rows].tolist())
            entry.packets += int(rows.sum())
            entry.dropped += int(dropped[valid][rows].sum())

    def _add_subscribers(self, packets: Packets, layout: Layout, headers: UadpHeaders) -> None:
        """End to end per writer group and reading process (--e2e records)."""
        keys = _group_keys(headers)
        r = packets.records[headers.valid]
        latency = e2e_ns(r, layout)
        read = latency >= 0
        if not read.any():
            return
        readers = np.column_stack([keys[read], r["rx_pid"][read].astype(np.int64)])
        comms = r["rx_comm"][read]
        unique, inverse = np.unique(readers, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        for g, (kind, pub, group, pid) in enumerate(unique.tolist()):
            rows = inverse == g
            comm = comms[rows][0].decode(errors="replace")
            self.subscribers.setdefault((kind, pub, group, pid, comm), []).append(
                latency[read][rows])

    def interval_flows(self) -> list[Flow]:
        """Send intervals per writer group, exact (from every record's syscall entry)."""
        flows = []
        for (kind, pub, group), g in sorted(self.groups.items()):
            sends = np.sort(np.concatenate(g.sends)) if g.sends else np.empty(0, np.int64)
            if len(sends) > 1:
                flows.append(Flow(f"PublisherId {_shown(kind, pub)} WriterGroup {group}",
                                  IntervalSummary.from_samples(np.diff(sends))))
        return flows

    def render(self, console: Console) -> None:
        if not self.groups:
            console.print("pubsub: no UADP datagrams seen on the UADP port")
            return
        table = Table(title="latency per PubSub writer group (sendto→wire)",
                      title_justify="left", header_style="bold")
        for column in ("PublisherId", "WriterGroupId", "DataSetWriterIds", "datagrams",
                       "dropped", "p50", "p99", "max", "jitter (stdev)"):
            table.add_column(column, justify="right")
        for (kind, pub, group), g in sorted(self.groups.items()):
            values = np.concatenate(g.latencies) if g.latencies else np.empty(0, np.int64)
            cells = _latency_cells(values)
            table.add_row(_shown(kind, pub), str(group),
                          ",".join(str(w) for w in sorted(g.writers) if w >= 0) or "-",
                          str(g.packets), str(g.dropped), *cells)
        console.print(table)
        if self.subscribers:
            console.print(self._subscriber_table())
        if self.unlabelled:
            console.print(f"{self.unlabelled} datagrams on the port were not UADP")

    def _subscriber_table(self) -> Table:
        table = Table(title="end to end per PubSub writer group and subscriber (sendto→recv)",
                      title_justify="left", header_style="bold")
        for column in ("PublisherId", "WriterGroupId", "subscriber", "datagrams", "p50", "p99",
                       "max", "jitter (stdev)"):
            table.add_column(column, justify="right")
        for (kind, pub, group, pid, comm), parts in sorted(self.subscribers.items()):
            values = np.concatenate(parts)
            table.add_row(_shown(kind, pub), str(group), f"{comm}/{pid}", str(len(values)),
                          *_latency_cells(values))
        return table
