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

from udptrace.stages import ROLES, SPANS_BY_NAME, WIRE
from udptrace.trace.decode import (
    Packets,
    Times,
    between,
    extra_offsets,
    first_of,
    origin_ns,
    stage_offsets,
)
from udptrace.trace.layout import Layout

# the names roles give their times: stages, and times records keep beside them
ROLE_TIMES = tuple(dict.fromkeys(t for role in ROLES for t in role.times))


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


@dataclass(frozen=True)
class PacketTimes:
    """A batch of packets' times, in ns since each one's time zero (stages.TIME_ZERO)."""

    stages: tuple[str, ...]
    offsets: np.ndarray  # (packets, stages)
    reached: np.ndarray  # (packets, stages) bool
    kept: Times  # the times records keep beside their stages that roles name; missing: none
    first_of_syscall: np.ndarray  # bool: the syscall's first packet (one syscall, one value)
    sent: np.ndarray  # bool: left the device (and, end to end, maybe was read too)
    read: np.ndarray  # bool: a reader's receive syscall returned it

    @property
    def times(self) -> Times:
        """Every stage and every time a role names: (ns since time zero, where known)."""
        out = {name: (self.offsets[:, i], self.reached[:, i])
               for i, name in enumerate(self.stages)}
        none = np.zeros(len(self.offsets), np.int64), np.zeros(len(self.offsets), bool)
        for name in ROLE_TIMES:
            out.setdefault(name, self.kept.get(name, none))
        return out

    @property
    def wire(self) -> np.ndarray:
        """When it left the device (stages.WIRE); -1: it did not."""
        values, known = first_of(self.times, WIRE)
        return np.where(known, values, -1)

    def per_stage(self) -> np.ndarray:
        """Sent packets' time per stage, as the kernel's stage histograms count it."""
        return per_stage(self.offsets[self.sent], self.reached[self.sent])

    def span(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Which packets have a value of this span and what it is, as the kernel's span
        histogram counts it; None: a span this version does not know."""
        span = SPANS_BY_NAME.get(name)
        if span is None:
            return None
        values, known = between(self.times, span.start, span.end)
        which = known & {"syscall": self.first_of_syscall, "received": self.read,
                         "sent": self.sent}[span.counted_for]
        return which, values[which]

    @classmethod
    def of(cls, packets: Packets, layout: Layout) -> PacketTimes:
        r = packets.records
        origin = origin_ns(r, layout)
        exits = packets.syscall_exit.astype(np.int64)
        fates = layout.fates_by_name
        read = r["fate"] == fates["received"]
        kept = {**extra_offsets(r, layout), "syscall_exit": (exits - origin, exits > 0)}
        return cls(layout.stages, stage_offsets(r, layout), r["ts"] > 0, kept,
                   r["packet_index"] == 0, (r["fate"] == fates["sent"]) | read, read)
