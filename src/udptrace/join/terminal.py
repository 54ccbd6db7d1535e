"""A join's summary in the terminal: recordings, clocks, flows, hops, losses, drops."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from udptrace.join.clocks import signed
from udptrace.join.summary import CLOCKED, HOPS
from udptrace.report.terminal import duration


def _ns(value: object) -> str:
    return "" if value is None else duration(float(value))  # type: ignore[arg-type]


def wall(ns: int | None, timescale: str) -> str:
    if ns is None:
        return ""
    when = datetime.fromtimestamp(ns / 1e9, UTC).strftime("%H:%M:%S.%f")
    return f"{when} {'TAI' if timescale == 'tai' else 'UTC'}"


def flow_label(flow: dict[str, object]) -> str:
    return (f"{flow['comm']}/{flow['pid']} {flow['saddr']}:{flow['sport']} → "
            f"{flow['daddr']}:{flow['dport']}")


def _recordings(console: Console, summary: dict) -> None:
    table = Table(title="recordings", title_justify="left")
    for head in ("#", "recording", "role", "host", "kernel", "records", "lost", "seconds"):
        table.add_column(head, justify="right" if head in ("#", "records", "lost", "seconds")
                         else "left")
    for r in summary["recordings"]:
        table.add_row(str(r["index"]), r["path"], r["role"], r["host"] or "?", r["kernel"] or "",
                      str(r["records"]), str(r["lost_records"]), f"{r['seconds']:.1f}")
    console.print(table)


def ptp_text(ptp: dict | None) -> str:
    if not ptp or not ptp.get("available"):
        return (ptp or {}).get("why", "not recorded")
    offset = ptp.get("master_offset_ns")
    return f"ptp4l {ptp.get('port_state')}" + (f", {offset} ns from its master"
                                               if offset is not None else "")


def sync_text(sync: dict | None) -> str:
    if not sync:
        return "not recorded"
    if not sync.get("synchronised"):
        return f"not synchronised ({sync.get('clock_state')})"
    return (f"synchronised: maxerror {duration(sync['maxerror_ns'])}, esterror "
            f"{duration(sync['esterror_ns'])}, freq {sync['freq_ppm']:+.3f} ppm, "
            f"TAI offset {sync['tai_offset_s']} s")


def _hosts(console: Console, summary: dict) -> None:
    table = Table(title="hosts (as each recording states them)", title_justify="left")
    for head in ("host", "boot id", "recordings", "clock samples", "kernel's clock", "PTP"):
        table.add_column(head)
    for h in summary["hosts"]:
        table.add_row(h["name"], h["boot_id"][:8], ", ".join(map(str, h["recordings"])),
                      f"{h['samples']} (bracket ≤ {duration(h['sample_bracket_ns'])})",
                      sync_text(h["sync"]), ptp_text(h["ptp"]))
    console.print(table)


def _clocks(console: Console, summary: dict) -> None:
    table = Table(title=f"clocks (set beside each other on {summary['timescale'].upper()})",
                  title_justify="left")
    for head in ("sender host → receiver host", "claimed error", "measured both ways",
                 "offset used", "uncertainty", "how"):
        table.add_column(head)
    for c in summary["clocks"]:
        claimed = "none (not synchronised)" if c["claimed_error_ns"] is None else duration(
            c["claimed_error_ns"])
        if c["same_host"]:
            claimed = "-"
        measured = ("" if c["measured_offset_ns"] is None else
                    f"{signed(c['measured_offset_ns'])} ± {duration(c['measured_error_ns'])}")
        table.add_row(f"{c['sender_host']} → {c['receiver_host']}", claimed, measured,
                      signed(c["offset_ns"]), "unknown" if c["uncertainty_ns"] is None
                      else f"± {duration(c['uncertainty_ns'])}", c["how"])
    console.print(table)
    for c in summary["clocks"]:
        for remark in c["remarks"]:
            console.print(f"  {c['sender_host']} → {c['receiver_host']}: {remark}")


def _flows(console: Console, summary: dict) -> None:
    table = Table(title="per flow and receiving recording", title_justify="left")
    heads = ("flow", "→ #", "sent", "arrived", "lost between the hosts", "dropped by sender",
             "dropped by receiver", "ambiguous", "not covered")
    for head in heads:
        table.add_column(head, justify="left" if head == "flow" else "right")
    for f in summary["flows"]:
        table.add_row(flow_label(f), str(f["receiver_rec"]), str(f["sent"]), str(f["arrived"]),
                      str(f["lost"]), str(f["dropped_sender"]), str(f["dropped_receiver"]),
                      str(f["ambiguous"]), str(f["not_covered"]))
    console.print(table)


def _hops(console: Console, summary: dict) -> None:
    for f in summary["flows"]:
        band = f["uncertainty_ns"]
        table = Table(title=f"hops of {flow_label(f)} → recording {f['receiver_rec']}",
                      title_justify="left")
        for head in ("hop", "from → to", "n", "min", "p50", "p99", "max", "± clocks"):
            table.add_column(head, justify="left" if head in ("hop", "from → to") else "right")
        for column, name, span in HOPS:
            if not f[f"{column}_n"]:
                continue
            clocked = column in CLOCKED
            table.add_row(name, span, str(f[f"{column}_n"]),
                          *(_ns(f[f"{column}_{q}"]) for q in ("min", "p50", "p99", "max")),
                          ("unknown" if band is None else duration(band)) if clocked else "")
        console.print(table)


def _losses(console: Console, summary: dict) -> None:
    ranges = summary["lost_between_hosts"]
    if not ranges:
        console.print("lost between the hosts: none")
        return
    table = Table(title="lost between the hosts (left the sender's device, never reached the "
                        "receiver's driver)", title_justify="left")
    for head in ("flow", "→ #", "datagrams", "sequence numbers", "sent from", "to"):
        table.add_column(head, justify="right" if head in ("datagrams",) else "left")
    for r in ranges:
        seq = ("" if r["first_sequence"] is None else
               f"{r['first_sequence']} to {r['last_sequence']}")
        table.add_row(str(r["flow"]), str(r["receiver_rec"]), str(r["datagrams"]), seq,
                      wall(r["first_sent_at_ns"], summary["timescale"]),
                      wall(r["last_sent_at_ns"], summary["timescale"]))
    console.print(table)


def _drops(console: Console, summary: dict) -> None:
    if not summary["drops"]:
        console.print("dropped in either kernel: none")
        return
    table = Table(title="dropped in a kernel", title_justify="left")
    for head in ("flow", "→ #", "kernel", "reason", "after stage", "datagrams"):
        table.add_column(head, justify="right" if head == "datagrams" else "left")
    for d in summary["drops"]:
        table.add_row(str(d["flow"]), str(d["receiver_rec"]), d["kernel"], d["drop_reason"] or "",
                      d["drop_stage"] or "", str(d["datagrams"]))
    console.print(table)


def render(console: Console, summary: dict) -> None:
    _recordings(console, summary)
    _hosts(console, summary)
    _clocks(console, summary)
    _flows(console, summary)
    _hops(console, summary)
    _losses(console, summary)
    _drops(console, summary)
    ambiguous = sum(f["ambiguous"] for f in summary["flows"])
    if ambiguous:
        console.print(f"ambiguous: {ambiguous} datagrams had several candidates with the same "
                      "identity within the window and were not joined (JSON: "
                      "ambiguous_examples)")
    unmatched = sum(u["datagrams"] for u in summary["unmatched_arrivals"])
    if unmatched:
        console.print(f"arrivals that no recorded send explains: {unmatched}")
    if summary["departures_no_recording_received"]:
        console.print(f"sends of flows no recording received: "
                      f"{summary['departures_no_recording_received']}")
    for remark in summary["remarks"]:
        console.print(f"note: {remark}")
