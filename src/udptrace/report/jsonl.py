"""`--json`: one JSON object per packet (report/fields.py names them, report/ndjson.py
writes them), then one summary object."""

from __future__ import annotations

import json
from typing import IO

from udptrace.report import ndjson
from udptrace.report.distribution import Distribution
from udptrace.report.fields import Batch, packet_table
from udptrace.report.output import write_or_fail
from udptrace.trace.layout import Layout
from udptrace.trace.session import Snapshot


def drops_summary(snapshot: Snapshot, layout: Layout, names: dict[int, str]) -> list[dict]:
    """Drops by kernel reason and the stage they followed, for the summary object."""
    return [{"reason": names.get(reason, str(reason)), "after_stage": layout.stages[stage],
             "packets": n} for (reason, stage), n in sorted(snapshot.drops.items())]


def contexts_summary(snapshot: Snapshot) -> dict[str, object]:
    """Sent packets by where their driver call and their TX completion ran (on PREEMPT_RT
    also by the thread that ran them)."""
    pending = Distribution.from_hist(snapshot.net_tx_pending)
    return {"xmit": snapshot.xmit_contexts, "completion": snapshot.completion_contexts,
            "softirq_pending_ns": {"count": pending.count, "p50": round(pending.percentile(50)),
                                   "p99": round(pending.percentile(99)), "max": pending.max}
            if pending.count else None,
            **({"threads": [t.as_dict() for t in snapshot.threads]} if snapshot.threads else {})}


def summary_object(snapshot: Snapshot, layout: Layout, names: dict[int, str], records: int,
                   **extra: object) -> dict[str, object]:
    return {"counters": snapshot.counters, "records": records,
            "lost": snapshot.counters["lost"], "drops": drops_summary(snapshot, layout, names),
            "contexts": contexts_summary(snapshot), **extra}


class JsonLines:
    """`--json` to a binary stream: a batch of records at a time, then the summary."""

    def __init__(self, out: IO[bytes], layout: Layout, drop_names: dict[int, str],
                 pubsub: bool = False) -> None:
        self.out = out
        self.layout = layout
        self.drop_names = drop_names
        self.table = packet_table(layout, pubsub)
        self.written = 0

    def packet_text(self, batch: Batch) -> bytes:
        return b"".join(ndjson.encode(self.table, batch))

    def write_packets(self, batch: Batch) -> None:
        for text in ndjson.encode(self.table, batch):
            self._write(text)
        self.written += len(batch)

    def write_summary(self, summary: dict[str, object]) -> None:
        self._write(json.dumps({"type": "summary", **summary}, separators=(",", ":")).encode()
                    + b"\n")

    def _write(self, text: bytes) -> None:
        write_or_fail(self.out, text, "--json")
