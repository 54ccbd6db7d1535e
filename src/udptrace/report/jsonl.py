"""`--json`: one JSON object per packet, then one summary object.

Columns are converted once per batch (``tolist``, distinct addresses
formatted once); only the final ``json.dumps`` runs per packet.
"""

from __future__ import annotations

import errno
import json
from typing import IO

import numpy as np

from udptrace.errors import UdptraceError
from udptrace.trace.decode import Packets, address_strings, stage_offsets, total_ns
from udptrace.trace.layout import Layout

FAMILIES = {2: "ipv4", 10: "ipv6"}


class OutputError(UdptraceError):
    """The JSON destination stopped accepting output (full disk, closed pipe)."""


def _text(column: np.ndarray) -> list[str]:
    return [b.decode(errors="replace") for b in column.tolist()]


class JsonLines:
    def __init__(self, out: IO[str], layout: Layout, drop_names: dict[int, str]) -> None:
        self.out = out
        self.layout = layout
        self.drop_names = drop_names
        self.flags = layout.flags
        self.written = 0

    def packet_objects(self, packets: Packets,
                       pubsub: list[dict[str, object] | None] | None = None) -> list[dict]:
        r = packets.records
        if not len(r):
            return []
        layout = self.layout
        offsets = stage_offsets(r).tolist()
        totals = total_ns(r, layout).tolist()
        saddr, daddr = address_strings(r["saddr"]), address_strings(r["daddr"])
        comm, ifname = _text(r["comm"]), _text(r["ifname"])
        flags = r["flags"].tolist()
        cols = {name: r[name].tolist() for name in (
            "pid", "tid", "cpu", "family", "sport", "dport", "len", "netns", "fate",
            "drop_reason", "drop_stage", "syscall_id", "syscall", "packet_index", "xmit_rc")}
        entry = r["ts"][:, 0].tolist()
        exits = packets.syscall_exit.tolist()
        rets = packets.syscall_ret.tolist()
        objects = []
        for i in range(len(r)):
            fate = layout.fates.get(cols["fate"][i], "unknown")
            dropped = fate == "dropped"
            obj = {
                "type": "packet",
                "ts_ns": entry[i],
                "pid": cols["pid"][i], "tid": cols["tid"][i], "comm": comm[i],
                "cpu": cols["cpu"][i],
                "family": FAMILIES.get(cols["family"][i], str(cols["family"][i])),
                "saddr": saddr[i], "sport": cols["sport"][i],
                "daddr": daddr[i], "dport": cols["dport"][i],
                "len": cols["len"][i], "ifname": ifname[i], "netns": cols["netns"][i],
                "stages": {layout.stages[s]: off for s, off in enumerate(offsets[i][:len(
                    layout.stages)]) if off >= 0},
                "total_ns": totals[i] if totals[i] >= 0 and not dropped else None,
                "fate": fate,
                "drop_reason": self.drop_names.get(cols["drop_reason"][i],
                                                   str(cols["drop_reason"][i]))
                if dropped else None,
                "drop_stage": layout.stages[cols["drop_stage"][i]] if dropped else None,
                "syscall": {
                    "id": cols["syscall_id"][i],
                    "name": layout.syscalls.get(cols["syscall"][i], "?"),
                    "packet_index": cols["packet_index"][i],
                    "exit_ns": exits[i] - entry[i] if exits[i] else None,
                    "ret": rets[i] if exits[i] else None,
                },
                "xmit_rc": cols["xmit_rc"][i],
                "fragment": bool(flags[i] & self.flags["fragment"]),
                "neigh_queued": bool(flags[i] & self.flags["neigh_queued"]),
            }
            if pubsub is not None and pubsub[i] is not None:
                obj["pubsub"] = pubsub[i]
            objects.append(obj)
        return objects

    def write_packets(self, packets: Packets,
                      pubsub: list[dict[str, object] | None] | None = None) -> None:
        objects = self.packet_objects(packets, pubsub)
        if objects:
            self._write("".join(json.dumps(o, separators=(",", ":")) + "\n" for o in objects))
            self.written += len(objects)

    def write_summary(self, summary: dict[str, object]) -> None:
        self._write(json.dumps({"type": "summary", **summary}, separators=(",", ":")) + "\n")

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except BrokenPipeError:
            raise OutputError("--json output closed (the reader went away): tracing stopped") \
                from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise OutputError("--json output: no space left on device: tracing stopped") \
                    from None
            raise OutputError(f"--json output: {e.strerror}: tracing stopped") from None
