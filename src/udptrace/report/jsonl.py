"""`--json`: one JSON object per packet, then one summary object.

Columns are converted once per batch (``tolist``, distinct addresses
formatted once); only the final ``json.dumps`` runs per packet.
"""

from __future__ import annotations

import json
from typing import IO

import numpy as np

from udptrace.report.distribution import Distribution
from udptrace.report.output import write_or_fail
from udptrace.trace.clocks import clock_name
from udptrace.trace.decode import (
    Packets,
    address_strings,
    e2e_ns,
    extra_offsets,
    launch_errors,
    origin_ns,
    rx_ns,
    stage_offsets,
    total_ns,
)
from udptrace.trace.layout import Layout
from udptrace.trace.session import Snapshot

FAMILIES = {2: "ipv4", 10: "ipv6"}
UNKNOWN = '"unknown"'


def drops_summary(snapshot: Snapshot, layout: Layout, names: dict[int, str]) -> list[dict]:
    """Drops by kernel reason and the stage they followed, for the summary object."""
    return [{"reason": names.get(reason, str(reason)), "after_stage": layout.stages[stage],
             "packets": n} for (reason, stage), n in sorted(snapshot.drops.items())]


def contexts_summary(snapshot: Snapshot) -> dict[str, object]:
    """Sent packets by where their driver call and their TX completion ran."""
    pending = Distribution.from_hist(snapshot.net_tx_pending)
    return {"xmit": snapshot.xmit_contexts, "completion": snapshot.completion_contexts,
            "softirq_pending_ns": {"count": pending.count, "p50": round(pending.percentile(50)),
                                   "p99": round(pending.percentile(99)), "max": pending.max}
            if pending.count else None}


def summary_object(snapshot: Snapshot, layout: Layout, names: dict[int, str], records: int,
                   **extra: object) -> dict[str, object]:
    return {"counters": snapshot.counters, "records": records,
            "lost": snapshot.counters["lost"], "drops": drops_summary(snapshot, layout, names),
            "contexts": contexts_summary(snapshot), **extra}


def _text(column: np.ndarray) -> list[str]:
    return [b.decode(errors="replace") for b in column.tolist()]


def _quoted(texts: list[str]) -> list[str]:
    """JSON string literals, escaping each distinct text once."""
    cache: dict[str, str] = {}
    return [cache.get(t) or cache.setdefault(t, json.dumps(t)) for t in texts]


def _ns(value: int, known: bool) -> str:
    return str(value) if known else "null"


def timing_fields(r: np.ndarray, layout: Layout) -> list[str]:
    """Per record the times the kernel keeps beside our stages, as JSON members (empty for
    most): the waking timer's requested expiry, the launch time and how early (negative) or
    late each step was against it, the socket's own TX timestamps. Times in ns since time
    zero, but a NIC's stamp, which is in the NIC's own clock."""
    extra = extra_offsets(r, layout)
    errors = launch_errors(r, layout)
    out = [""] * len(r)
    for i in np.flatnonzero(extra["timer_expires"][1] | extra["txtime"][1] | extra["tstamp_sw"][1]
                            | (r["tstamp_hw"] > 0)).tolist():
        text = ""
        if extra["timer_expires"][1][i]:
            text += f',"timer_expires_ns":{extra["timer_expires"][0][i]}'
        if extra["txtime"][1][i]:
            steps = ",".join(f'"{stage}_ns":{_ns(int(v[i]), bool(k[i]))}'
                             for stage, (v, k) in errors.items())
            text += (f',"txtime":{{"clock":"{clock_name(int(r["txtime_clock"][i]))}",'
                     f'"launch_ns":{extra["txtime"][0][i]},{steps}}}')
        hw = int(r["tstamp_hw"][i])
        if extra["tstamp_sw"][1][i] or hw:
            sw, known = extra["tstamp_sw"][0][i], bool(extra["tstamp_sw"][1][i])
            text += (f',"tx_timestamp":{{"software_ns":{_ns(int(sw), known)},'
                     f'"hardware_ns":{_ns(hw, bool(hw))}}}')
        out[i] = text
    return out


class JsonLines:
    def __init__(self, out: IO[str], layout: Layout, drop_names: dict[int, str]) -> None:
        self.out = out
        self.layout = layout
        self.drop_names = drop_names
        self.flags = layout.flags
        self.written = 0

    def packet_lines(self, packets: Packets,
                     pubsub: list[dict[str, object] | None] | None = None) -> list[str]:
        """One JSON text per packet, built from pre-escaped pieces (json.dumps per packet
        was a third of the tracer's time at high rates)."""
        r = packets.records
        if not len(r):
            return []
        layout = self.layout
        names = [json.dumps(n) for n in layout.stages]
        offsets = stage_offsets(r, layout).tolist()
        reached = (r["ts"] > 0).tolist()
        totals = total_ns(r, layout).tolist()
        saddr = _quoted(address_strings(r["saddr"]))
        daddr = _quoted(address_strings(r["daddr"]))
        comm, ifname = _quoted(_text(r["comm"])), _quoted(_text(r["ifname"]))
        flags = r["flags"].tolist()
        cols = {name: r[name].tolist() for name in (
            "pid", "tid", "cpu", "family", "sport", "dport", "len", "netns", "fate",
            "drop_reason", "drop_stage", "syscall_id", "syscall", "packet_index", "xmit_rc",
            "rx_pid", "rx_tid", "rx_cpu", "rx_syscall", "rx_ret", "rx_netns",
            "xmit_context", "completion_context", "softirq_pending_ns", "udp_len", "gso_segs",
            "gso_size")}
        rx_comm, rx_ifname = _quoted(_text(r["rx_comm"])), _quoted(_text(r["rx_ifname"]))
        e2e, rx = e2e_ns(r, layout).tolist(), rx_ns(r, layout).tolist()
        receive = self.flags["receive"]
        entry = origin_ns(r, layout).tolist()
        intervals = r["interval_ns"].tolist()
        exits = packets.syscall_exit.tolist()
        rets = packets.syscall_ret.tolist()
        fates = {k: json.dumps(v) for k, v in layout.fates.items()}
        syscalls = {k: json.dumps(v) for k, v in layout.syscalls.items()}
        reasons = {k: json.dumps(v) for k, v in self.drop_names.items()}
        contexts = ["null", *(json.dumps(n) for n in layout.contexts[1:])]  # 0: unknown
        fragment, neigh = self.flags["fragment"], self.flags["neigh_queued"]
        dropped_fate = layout.fates_by_name["dropped"]
        timing = timing_fields(r, layout)
        lines = []
        for i in range(len(r)):
            dropped = cols["fate"][i] == dropped_fate
            stages = ",".join(f"{names[s]}:{off}" for s, (off, seen) in
                              enumerate(zip(offsets[i], reached[i], strict=True)) if seen)
            reason = cols["drop_reason"][i]
            reason_text = reasons.get(reason) or json.dumps(str(reason))
            exit_ns, ret = ("null", "null") if not exits[i] else (exits[i] - entry[i], rets[i])
            fate = fates.get(cols["fate"][i], UNKNOWN)
            syscall = syscalls.get(cols["syscall"][i], UNKNOWN)
            line = (
                f'{{"type":"packet","ts_ns":{entry[i]},"pid":{cols["pid"][i]},'
                f'"tid":{cols["tid"][i]},"comm":{comm[i]},"cpu":{cols["cpu"][i]},'
                f'"family":"{FAMILIES.get(cols["family"][i], cols["family"][i])}",'
                f'"saddr":{saddr[i]},"sport":{cols["sport"][i]},'
                f'"daddr":{daddr[i]},"dport":{cols["dport"][i]},"len":{cols["len"][i]},'
                f'"udp_len":{cols["udp_len"][i]},"gso_segs":{cols["gso_segs"][i] or "null"},'
                f'"gso_size":{cols["gso_size"][i] or "null"},'
                f'"ifname":{ifname[i]},"netns":{cols["netns"][i]},"stages":{{{stages}}},'
                f'"total_ns":{totals[i] if totals[i] >= 0 and not dropped else "null"},'
                f'"fate":{fate},"drop_reason":{reason_text if dropped else "null"},'
                f'"drop_stage":{names[cols["drop_stage"][i]] if dropped else "null"},'
                f'"syscall":{{"id":{cols["syscall_id"][i]},'
                f'"name":{syscall},'
                f'"packet_index":{cols["packet_index"][i]},"exit_ns":{exit_ns},"ret":{ret}}},'
                f'"interval_ns":{intervals[i] or "null"},'
                f'"xmit_rc":{cols["xmit_rc"][i]},'
                f'"xmit_context":{contexts[cols["xmit_context"][i]]},'
                f'"softirq_pending_ns":{cols["softirq_pending_ns"][i] or "null"},'
                f'"completion_context":{contexts[cols["completion_context"][i]]},'
                f'"fragment":{"true" if flags[i] & fragment else "false"},'
                f'"neigh_queued":{"true" if flags[i] & neigh else "false"}'
            )
            if flags[i] & receive:
                line += (f',"e2e_ns":{e2e[i] if e2e[i] >= 0 else "null"},'
                         f'"rx_ns":{rx[i] if rx[i] >= 0 else "null"},'
                         f'"receiver":{self._receiver(cols, i, rx_comm, rx_ifname, syscalls)}')
            line += timing[i]
            label = pubsub[i] if pubsub is not None else None
            if label is not None:
                line += ',"pubsub":' + json.dumps(label, separators=(",", ":"))
            lines.append(line + "}\n")
        return lines

    @staticmethod
    def _receiver(cols: dict[str, list], i: int, comm: list[str], ifname: list[str],
                  syscalls: dict[int, str]) -> str:
        """The receiving side: the device it arrived on, and the reader when one took it."""
        device = f'"ifname":{ifname[i]},"netns":{cols["rx_netns"][i]}'
        if not cols["rx_pid"][i]:
            return "{" + device + "}"
        return (f'{{"pid":{cols["rx_pid"][i]},"tid":{cols["rx_tid"][i]},"comm":{comm[i]},'
                f'"cpu":{cols["rx_cpu"][i]},'
                f'"syscall":{syscalls.get(cols["rx_syscall"][i], "null")},'
                f'"ret":{cols["rx_ret"][i] if cols["rx_syscall"][i] else "null"},{device}}}')

    def write_packets(self, packets: Packets,
                      pubsub: list[dict[str, object] | None] | None = None) -> None:
        lines = self.packet_lines(packets, pubsub)
        if lines:
            self._write("".join(lines))
            self.written += len(lines)

    def write_summary(self, summary: dict[str, object]) -> None:
        self._write(json.dumps({"type": "summary", **summary}, separators=(",", ":")) + "\n")

    def _write(self, text: str) -> None:
        write_or_fail(self.out, text, "--json")
