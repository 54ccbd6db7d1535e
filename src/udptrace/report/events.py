"""`--events`: a live log, one line per datagram as its record completes.

Each line: seconds since the trace started, process, addresses, length, each
stage reached with the time since the stage before it (as in the report's
table), where the driver was called (with the NET_TX softirq's wait) and where
a TX completion ran, the total and the fate. Written and flushed per batch, so `| grep`
and `| tee` see lines while the trace runs.
"""

from __future__ import annotations

from typing import IO

import numpy as np

from udptrace.report.output import write_or_fail
from udptrace.report.terminal import duration
from udptrace.trace.decode import Packets, address_strings, e2e_ns, endpoint, origin_ns, total_ns
from udptrace.trace.layout import Layout


class EventLog:
    def __init__(self, out: IO[str], layout: Layout, drop_names: dict[int, str],
                 start_ns: int) -> None:
        self.out = out
        self.layout = layout
        self.drop_names = drop_names
        self.start_ns = start_ns

    def lines(self, packets: Packets) -> list[str]:
        r = packets.records
        if not len(r):
            return []
        layout = self.layout
        ts = r["ts"].astype(np.int64)
        since = ((origin_ns(r, layout) - self.start_ns) / 1e9).tolist()
        totals = total_ns(r, layout).tolist()
        saddr, daddr = address_strings(r["saddr"]), address_strings(r["daddr"])
        comm = [c.decode(errors="replace") for c in r["comm"].tolist()]
        rx_comm = [c.decode(errors="replace") for c in r["rx_comm"].tolist()]
        e2e = e2e_ns(r, layout).tolist()
        cols = {n: r[n].tolist() for n in ("pid", "sport", "dport", "len", "fate", "rx_pid",
                                           "drop_reason", "drop_stage", "interval_ns",
                                           "xmit_context", "softirq_pending_ns",
                                           "completion_context")}
        dropped = layout.fates_by_name["dropped"]
        lines = []
        for i, row in enumerate(ts.tolist()):
            steps, previous = [], 0
            for stage, t in enumerate(row):
                if t:
                    steps.append(f"{layout.stages[stage]} +{duration(t - previous)}"
                                 if previous else layout.stages[stage])
                    previous = t
            fate = layout.fates.get(cols["fate"][i], "?")
            if cols["fate"][i] == dropped:
                reason = self.drop_names.get(cols["drop_reason"][i], str(cols["drop_reason"][i]))
                fate += f" {reason} after {layout.stages[cols['drop_stage'][i]]}"
            elif e2e[i] >= 0:
                fate = f"e2e {duration(e2e[i])} {fate}"
            elif totals[i] >= 0:
                fate = f"total {duration(totals[i])} {fate}"
            if cols["rx_pid"][i]:
                fate += f" by {rx_comm[i]}/{cols['rx_pid'][i]}"
            sender = f"{comm[i]}/{cols['pid'][i]}" if cols["pid"][i] else "-"
            interval = (f"  interval {duration(cols['interval_ns'][i])}"
                        if cols["interval_ns"][i] else "")
            contexts = self._contexts(cols["xmit_context"][i], cols["softirq_pending_ns"][i],
                                      cols["completion_context"][i])
            lines.append(
                f"{since[i]:12.6f}  {sender}  "
                f"{endpoint(saddr[i], cols['sport'][i])} → {endpoint(daddr[i], cols['dport'][i])}"
                f"  {cols['len'][i]} B  {'  '.join(steps)}{contexts}  {fate}{interval}\n")
        return lines

    def _contexts(self, xmit: int, pending_ns: int, completion: int) -> str:
        """`  xmit: net_tx (pending 3.1 µs)  completion: net_rx`; empty where not told."""
        text = ""
        if xmit:
            text += f"  xmit: {self.layout.contexts[xmit]}"
            if pending_ns:
                text += f" (pending {duration(pending_ns)})"
        if completion:
            text += f"  completion: {self.layout.contexts[completion]}"
        return text

    def write(self, packets: Packets) -> None:
        text = "".join(self.lines(packets))
        if text:
            write_or_fail(self.out, text, "--events")
