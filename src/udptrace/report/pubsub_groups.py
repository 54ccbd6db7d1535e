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
from udptrace.trace.decode import Packets, origin_ns, total_ns
from udptrace.trace.layout import Layout


def _optional(value: int) -> int | None:
    return None if value < 0 else value


def headers_of(packets: Packets, layout: Layout) -> UadpHeaders:
    r = packets.records
    has_payload = (r["flags"] & layout.flags["payload"]) != 0
    lengths = np.where(has_payload, r["payload_len"], 0)
    return decode_headers(r["payload"], lengths)


def labels(headers: UadpHeaders) -> list[dict[str, object] | None]:
    """The `pubsub` object of each packet's JSON record (None: not UADP)."""
    cols = [c.tolist() for c in (headers.valid, headers.publisher_id, headers.writer_group_id,
                                 headers.dataset_writer_id, headers.network_sequence,
                                 headers.dataset_sequence)]
    out: list[dict[str, object] | None] = []
    for valid, pub, group, writer, net_seq, ds_seq in zip(*cols, strict=True):
        out.append({
            "publisher_id": pub,
            "writer_group_id": _optional(group),
            "dataset_writer_ids": [] if writer < 0 else [writer],
            "sequence_number": _optional(net_seq),
            "dataset_sequence_number": _optional(ds_seq),
        } if valid else None)
    return out


@dataclass
class _Group:
    latencies: list[np.ndarray] = field(default_factory=list)
    sends: list[np.ndarray] = field(default_factory=list)  # syscall entries, for intervals
    writers: set[int] = field(default_factory=set)
    packets: int = 0
    dropped: int = 0


def _shown(kind: int, pub: int) -> str:
    return f"String#{pub & (2**64 - 1):016x}" if kind == PublisherIdType.String else str(pub)


class PubSubGroups:
    """Latency per (PublisherId, WriterGroupId), from the per-packet records."""

    def __init__(self) -> None:
        self.groups: dict[tuple[int, int, int], _Group] = {}  # (id type, id, writer group)
        self.unlabelled = 0

    def add(self, packets: Packets, layout: Layout) -> UadpHeaders:
        headers = headers_of(packets, layout)
        r = packets.records
        self.add_labelled(headers, total_ns(r, layout), origin_ns(r, layout),
                          r["packet_index"] == 0, r["fate"] == layout.fates_by_name["sent"],
                          r["fate"] == layout.fates_by_name["dropped"])
        return headers

    def add_labelled(self, headers: UadpHeaders, totals: np.ndarray, starts: np.ndarray,
                     first: np.ndarray, sent: np.ndarray, dropped: np.ndarray) -> None:
        """Packets with their headers decoded (live) or read back (a recording)."""
        valid = headers.valid
        self.unlabelled += int((~valid).sum())
        # the id's type is part of the key: a String id is a hash that could equal a number
        keys = np.stack([headers.publisher_id_type.astype(np.int64),
                         headers.publisher_id.astype(np.int64),
                         headers.writer_group_id.astype(np.int64)], axis=1)[valid]
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
            cells = ["-"] * 4
            if len(values):
                cells = [duration(float(np.percentile(values, q))) for q in (50, 99)]
                cells += [duration(float(values.max())), duration(float(values.std()))]
            table.add_row(_shown(kind, pub), str(group),
                          ",".join(str(w) for w in sorted(g.writers) if w >= 0) or "-",
                          str(g.packets), str(g.dropped), *cells)
        console.print(table)
        if self.unlabelled:
            console.print(f"{self.unlabelled} datagrams on the port were not UADP")

