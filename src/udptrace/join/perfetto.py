"""`join --perfetto`: the joined datagrams as a timeline (Chrome trace-event JSON).

One process per flow and receiving recording; each datagram a slice from the sender's
callback (or send syscall) to the reader's return, with a child slice per hop (sender
app, sender stack, wire, receiver stack, reader), on the sender's clock set on the
timescale. A datagram lost between the hosts or dropped in a kernel is an instant event
where it was last seen. Tracks and lanes are report/perfetto.py's.
"""

from __future__ import annotations

import json

import numpy as np

from udptrace.join.engine import JoinEngine
from udptrace.join.terminal import flow_label
from udptrace.report.atomic import AtomicFile
from udptrace.report.perfetto import Tracks, lanes

FLOW_PID_BASE = 100
HOP_SLICES = ("sender app", "sender stack", "wire", "receiver stack", "reader")


def trace_events(engine: JoinEngine, summary: dict) -> dict[str, object]:
    tracks = Tracks()
    (origin,) = engine.rows("SELECT min(sent_at_ns) FROM datagrams")[0]
    origin = origin or 0
    for n, f in enumerate(summary["flows"]):
        pid = FLOW_PID_BASE + n
        tracks.process(pid, f"{flow_label(f)} → recording {f['receiver_rec']}", 10 + n)
        rows = engine.rows("""
            SELECT sent_at_ns - ?, coalesce(sender_app_ns, 0), sender_stack_ns, wire_ns,
                   receiver_stack_ns, reader_ns, outcome, pubsub_sequence_number,
                   drop_reason, drop_stage
            FROM datagrams WHERE flow = ? AND receiver_rec = ? ORDER BY sent_at_ns""",
                           origin, f["flow"], f["receiver_rec"])
        if not rows:
            continue
        begin = np.array([r[0] - r[1] for r in rows], np.int64)
        spans = [[r[1], r[2] or 0, r[3] or 0, r[4] or 0, r[5] or 0] for r in rows]
        end = begin + np.array([sum(s) for s in spans], np.int64)
        for (row, hops, start, lane) in zip(rows, spans, begin.tolist(),
                                            lanes(begin, end).tolist(), strict=True):
            tid = tracks.thread(pid, "datagrams" if lane == 0 else f"datagrams (lane {lane + 1})")
            outcome, sequence = row[6], row[7]
            args = {"outcome": outcome, **({"sequence": sequence} if sequence is not None
                                           else {})}
            if outcome == "arrived":
                tracks.slice(pid, tid, "datagram" if sequence is None else f"datagram {sequence}",
                             start, sum(hops), args, cat="datagram")
                at = start
                for name, took in zip(HOP_SLICES, hops, strict=True):
                    if took:
                        tracks.slice(pid, tid, name, at, took, cat="hop")
                    at += took
            else:
                # where it was last seen: it left the sender (lost, dropped by the receiver),
                # or the sender's kernel dropped it
                seen = start + hops[0] + (hops[1] if outcome != "dropped by the sender" else 0)
                tracks.instant(pid, tid, outcome, seen, {
                    **args, "drop_reason": row[8], "drop_stage": row[9]})
    return {"traceEvents": tracks.events, "displayTimeUnit": "ns",
            "otherData": {"udptrace": "join", "timescale": summary["timescale"],
                          "origin_ns": origin,
                          "recordings": [r["path"] for r in summary["recordings"]]}}


def write(engine: JoinEngine, summary: dict, out: AtomicFile) -> None:
    out.file.write(json.dumps(trace_events(engine, summary), separators=(",", ":"),
                              default=str).encode())
    out.commit()
