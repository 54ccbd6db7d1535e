"""How far two hosts' clocks can be trusted for one-way times, and which offset to use.

Every recording maps its CLOCK_MONOTONIC onto a timescale both hosts keep (TAI when both
are synchronised with a TAI offset set, as phc2sys does, else UTC) and states what its
kernel claims about that clock: the claim between two hosts is the sum of their
``maxerror`` (adjtimex, kept by chrony, ntpd or phc2sys) and of their samples' brackets;
an unsynchronised host claims nothing.

Where datagrams go both ways between two hosts the traffic measures the offset itself,
as NTP does from one exchange, but from all of them: a wire time cannot be negative, so
with d1 the least wire time seen one way and d2 the other (both measured with no
correction), the receiver's clock is ahead of the sender's by θ ∈ [-d2, d1]: the
estimate is the middle, (d1 - d2) / 2, within half the shortest round trip, (d1 + d2) / 2.
It is used where it is tighter than the claim, or where there is no claim; with traffic
one way only it still bounds θ from one side (θ ≤ d1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from udptrace.join.recordings import Host
from udptrace.report.terminal import duration


def claimed_error_ns(host: Host) -> int | None:
    """The most the host's clock claims to be off its timescale during the run, or None:
    no claim (unsynchronised at any part, or no sync state recorded)."""
    if not host.syncs or not all(s.get("synchronised") for s in host.syncs):
        return None
    return max(int(s.get("maxerror_ns", 0)) for s in host.syncs) + host.bracket_ns // 2


def signed(ns: float) -> str:
    return ("-" if ns < 0 else "+") + duration(abs(ns))


@dataclass
class PairClock:
    """The clocks of a sender's host and a receiver's host, as the join uses them."""

    sender: Host
    receiver: Host
    claimed_ns: int | None = None  # from the two hosts' sync states; None: no claim
    least_wire_ns: int | None = None  # this direction, uncorrected (unique matches)
    least_back_ns: int | None = None  # the other direction
    offset_ns: int = 0  # subtracted from the receiver's times: its clock minus the sender's
    uncertainty_ns: int | None = 0  # None: unknown
    how: str = ""
    remarks: list[str] = field(default_factory=list)

    @property
    def same_host(self) -> bool:
        return self.sender is self.receiver

    @property
    def measured(self) -> tuple[int, int] | None:
        """The two-way estimate (offset, half width), where traffic went both ways."""
        if self.same_host or self.least_wire_ns is None or self.least_back_ns is None:
            return None
        d1, d2 = self.least_wire_ns, self.least_back_ns
        width = (d1 + d2) // 2 + (self.sender.bracket_ns + self.receiver.bracket_ns) // 2
        return (d1 - d2) // 2, width

    def decide(self) -> None:
        """Choose the offset and the uncertainty, and say why."""
        self.remarks.clear()
        if self.same_host:
            self.offset_ns, self.uncertainty_ns = 0, 0
            self.how = "one clock: the same boot of the same host"
            return
        claims = {h.name: claimed_error_ns(h) for h in (self.sender, self.receiver)}
        self.claimed_ns = (None if None in claims.values() else sum(
            v for v in claims.values() if v is not None))
        for name, claim in claims.items():
            if claim is None:
                self.remarks.append(f"{name} claims no clock error: not synchronised "
                                    "(adjtimex STA_UNSYNC)")
        measured = self.measured
        if measured is not None:
            offset, width = measured
            if self.claimed_ns is not None and abs(offset) > self.claimed_ns + width:
                self.remarks.append(
                    f"the clocks claim to agree within {duration(self.claimed_ns)}, the "
                    f"traffic measures {signed(offset)} ± {duration(width)}: the claim is wrong")
            if self.claimed_ns is None or width < self.claimed_ns:
                self.offset_ns, self.uncertainty_ns = offset, width
                self.how = "measured from the traffic both ways"
                if self.claimed_ns is not None:
                    self.remarks.append(f"the claimed error ({duration(self.claimed_ns)}) "
                                        f"is larger than the measured one ({duration(width)})")
                return
        self.offset_ns, self.uncertainty_ns = 0, self.claimed_ns
        self.how = ("as the clocks claim" if self.claimed_ns is not None
                    else "unknown: no claim, and no traffic back to measure it")
        if measured is None and self.least_wire_ns is not None:
            least = self.least_wire_ns
            self.remarks.append(
                f"traffic one way only: {self.receiver.name}'s clock is at most "
                f"{duration(least)} ahead of {self.sender.name}'s" if least >= 0 else
                f"traffic one way only: {self.receiver.name}'s clock is at least "
                f"{duration(-least)} behind {self.sender.name}'s")

    def to_json(self) -> dict[str, object]:
        measured = self.measured
        return {"sender_host": self.sender.name, "receiver_host": self.receiver.name,
                "same_host": self.same_host, "claimed_error_ns": self.claimed_ns,
                "measured_offset_ns": measured[0] if measured else None,
                "measured_error_ns": measured[1] if measured else None,
                "least_wire_ns": self.least_wire_ns, "least_wire_back_ns": self.least_back_ns,
                "offset_ns": self.offset_ns, "uncertainty_ns": self.uncertainty_ns,
                "how": self.how, "remarks": list(self.remarks)}
