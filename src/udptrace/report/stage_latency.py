"""Each packet's time per stage, counted the way the kernel's histograms count it.

A stage's time is the time since the stage the packet reached before it, so
the stages of one packet add up to its whole journey; the first stage it
reached has no time of its own. Recorded runs and the exporter compute it
here from per-packet times; live histograms get it from the BPF side, which
does the same walk in ``finish()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from udptrace.trace.decode import Packets, e2e_ns, origin_ns, rx_ns, stage_offsets, wire_ns
from udptrace.trace.layout import Layout


def per_stage(times: np.ndarray, reached: np.ndarray) -> np.ndarray:
    """(packets, stages) ns since the stage reached before; -1 where there is none.

    ``times`` are per stage in any one time base (absolute, or since time zero);
    ``reached`` says which stages each packet reached.
    """
    times = np.asarray(times, np.int64)
    out = np.full(times.shape, -1, np.int64)
    prev = np.zeros(len(times), np.int64)
    seen = np.zeros(len(times), bool)
    for i in range(times.shape[1] if times.ndim == 2 else 0):
        t = times[:, i]
        # a stage stamped before the one before it (a clock race across CPUs) is skipped
        ok = reached[:, i] & (~seen | (t >= prev))
        out[:, i] = np.where(ok & seen, t - prev, -1)
        prev = np.where(ok, t, prev)
        seen |= ok
    return out


# Spans that end where the packet left the device, by the stage they start at; the send
# syscall's own span ends at its return instead (see PacketTimes.span).
WIRE_SPANS = {"total": "syscall", "app_to_wire": "app"}


@dataclass(frozen=True)
class PacketTimes:
    """A batch of packets' times, in ns since each one's time zero (its send syscall's entry)."""

    stages: tuple[str, ...]
    offsets: np.ndarray  # (packets, stages)
    reached: np.ndarray  # (packets, stages) bool
    wire: np.ndarray  # when it left the device; -1: it did not
    syscall_return: np.ndarray  # -1: the syscall record was not seen
    first_of_syscall: np.ndarray  # bool: the syscall's first packet (one syscall, one value)
    sent: np.ndarray  # bool: left the device (and, end to end, maybe was read too)
    received: dict[str, np.ndarray]  # the receive spans (e2e, rx) of read records; -1: none

    def per_stage(self) -> np.ndarray:
        """Sent packets' time per stage, as the kernel's stage histograms count it."""
        return per_stage(self.offsets[self.sent], self.reached[self.sent])

    def span(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Which packets have a value of this span and what it is, as the kernel's span
        histogram counts it; None: a span this version cannot recompute from records."""
        if name == "send_syscall":
            which = self.first_of_syscall & (self.syscall_return >= 0)
            return which, self.syscall_return[which]
        if name in self.received:
            which = self.received[name] >= 0
            return which, self.received[name][which]
        start = WIRE_SPANS.get(name)
        if start not in self.stages:
            return None
        i = self.stages.index(start)
        which = self.sent & self.reached[:, i] & (self.wire >= 0)
        return which, self.wire[which] - self.offsets[which, i]

    @classmethod
    def of(cls, packets: Packets, layout: Layout) -> PacketTimes:
        r = packets.records
        origin = origin_ns(r, layout)
        wire = wire_ns(r, layout)
        exits = packets.syscall_exit.astype(np.int64)
        fates = layout.fates_by_name
        read = r["fate"] == fates["received"]
        return cls(layout.stages, stage_offsets(r, layout), r["ts"] > 0,
                   np.where(wire > 0, wire - origin, -1), np.where(exits > 0, exits - origin, -1),
                   r["packet_index"] == 0, (r["fate"] == fates["sent"]) | read,
                   {"e2e": np.where(read, e2e_ns(r, layout), -1),
                    "rx": np.where(read, rx_ns(r, layout), -1)})
