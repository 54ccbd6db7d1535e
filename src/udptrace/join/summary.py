"""A join's summary: the recordings, the clocks, and per flow what became of its datagrams.

One plain dictionary (JSON as it is): the terminal, HTML and JSON outputs all show it.
"""

from __future__ import annotations

from udptrace.join.clocks import claimed_error_ns
from udptrace.join.engine import JoinEngine
from udptrace.join.recordings import TELLING, Recording
from udptrace.report.terminal import duration

# the hops of a datagram's path, in order: (column, name, from → to)
HOPS = (("sender_app_ns", "sender app", "callback entry → send syscall"),
        ("sender_stack_ns", "sender stack", "send syscall → the sender's driver called"),
        ("wire_ns", "wire", "the sender's driver → the receiver's driver"),
        ("receiver_stack_ns", "receiver stack", "the receiver's driver → queued on its socket"),
        ("reader_ns", "reader", "queued → the reader's receive syscall returned"),
        ("one_way_ns", "one way", "callback (or send syscall) → the reader's syscall returned"))
CLOCKED = frozenset({"wire_ns", "one_way_ns"})  # the hops that cross from clock to clock


def _recording(rec: Recording, roles: dict[int, str]) -> dict[str, object]:
    info = rec.info
    start, end = rec.span_mono
    return {"index": rec.index, "path": str(rec.path), "role": roles.get(rec.index, "none"),
            "host": rec.host.name if rec.host else None,
            "boot_id": rec.host.boot_id if rec.host else None, "kernel": info.get("kernel"),
            "command": " ".join(info.get("command", [])), "records": info.get("records"),
            "lost_records": rec.lost, "finished": bool(info.get("final")),
            "seconds": round((end - start) / 1e9, 3)}


def _remarks(engine: JoinEngine, flows: list[dict]) -> list[str]:
    out = []
    blind = [r.path.name for r in engine.recordings if not any(c in r.columns for c in TELLING)]
    if blind:
        out.append(f"{', '.join(blind)} carries nothing that tells one datagram of a flow from "
                   "the next (no fingerprint, no PubSub sequence numbers): such datagrams are "
                   "ambiguous, not joined")
    for rec in engine.recordings:
        if rec.lost:
            out.append(f"{rec.path.name} lost {rec.lost} records (its ring buffer was full): "
                       "datagrams counted as lost between the hosts may be among them")
    for flow in flows:
        wire, band = flow.get("wire_ns_p50"), flow.get("uncertainty_ns")
        label = f"flow {flow['flow']} → recording {flow['receiver_rec']}"
        if band is None and flow["arrived"]:
            out.append(f"{label}: the clocks' error is unknown, so are its wire and one-way "
                       "times; they are shown as measured on the clocks as they stand")
        elif wire is not None and band is not None and band > wire:
            out.append(f"{label}: the clocks' uncertainty (± {duration(band)}) is larger than "
                       f"the wire time measured ({duration(wire)} at the median): the wire and "
                       "one-way times are only known within it")
        below = flow["below_zero_within_error"] + flow["below_zero_beyond_error"]
        if below:
            out.append(f"{label}: {below} datagrams arrived before they left on these clocks "
                       f"({flow['below_zero_beyond_error']} beyond the clocks' stated error): "
                       "their wire and one-way times are left out")
    return out


def summarise(engine: JoinEngine, timescale: str) -> dict[str, object]:
    flows = engine.flows()
    roles = {}
    for index, in engine.rows("SELECT DISTINCT rec FROM d"):
        roles[index] = "sends"
    for index, in engine.rows("SELECT DISTINCT rec FROM a"):
        roles[index] = "receives" if index not in roles else "both"
    hosts = [{"name": h.name, "boot_id": h.boot_id, "recordings": h.recordings,
              "claimed_error_ns": claimed_error_ns(h), "sample_bracket_ns": h.bracket_ns,
              "samples": len(h.mono), "sync": h.syncs[-1] if h.syncs else None, "ptp": h.ptp}
             for h in engine.hosts]
    unreceived = engine.rows("""
        SELECT count(*) FROM d WHERE dep_id NOT IN (SELECT dep_id FROM outcome)""")[0][0]
    return {"type": "summary", "timescale": timescale,
            "identity": ["sport", "dport", "udp_len", *engine.identity],
            "window_ns": engine.window.latency_ns,
            "recordings": [_recording(r, roles) for r in engine.recordings],
            "hosts": hosts, "clocks": [p.to_json() for p in engine.linked_pairs()],
            "flows": flows, "lost_between_hosts": engine.lost_ranges(),
            "drops": engine.drops(), "ambiguous_examples": engine.ambiguous(),
            "unmatched_arrivals": engine.unmatched_arrivals(),
            "departures_no_recording_received": unreceived,
            "remarks": _remarks(engine, flows)}
