"""Turning batches of raw records into packets with their syscall, column by column.

A packet's record is written when the packet ends and its syscall's record
when the syscall returns; either can come first (a packet held by a qdisc
outlives its syscall). A packet that ended inside its syscall, its only one,
waits in the kernel and comes with the syscall's end instead. Packets wait
in :class:`SyscallJoin` until their syscall record arrives, or until
``hold_s`` has passed. Everything is NumPy over whole batches.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from udptrace.stages import LAUNCH_STAGES, SPANS_BY_NAME, TIME_ZERO, WIRE, Role, Span
from udptrace.trace.layout import Layout

KEEP_SYSCALLS = 1 << 16  # recent syscall records kept for late packets


@dataclass(frozen=True)
class Packets:
    """Packet records plus what their syscall record said (exit 0: not seen)."""

    records: np.ndarray
    syscall_exit: np.ndarray
    syscall_ret: np.ndarray

    def __len__(self) -> int:
        return len(self.records)

    @classmethod
    def empty(cls, layout: Layout) -> Packets:
        return cls(np.empty(0, layout.record), np.empty(0, np.uint64), np.empty(0, np.int64))


def _opaque(records: np.ndarray) -> np.ndarray:
    """Records as opaque byte strings: selecting and joining those is a plain memory copy,
    several times faster than NumPy's field-by-field copy of a structured array."""
    return np.ascontiguousarray(records).view(f"V{records.dtype.itemsize}")


def _select(records: np.ndarray, which: np.ndarray) -> np.ndarray:
    """The records a mask or an index array picks. Picking by index is 3-4 times faster
    than by mask for records this large; picking all of them copies nothing."""
    if which.dtype == bool:
        if which.all():
            return records
        which = np.flatnonzero(which)
    elif len(which) == len(records) and (np.diff(which) == 1).all():
        return records
    return np.take(_opaque(records), which).view(records.dtype)


def _join(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not len(a):
        return b
    return np.concatenate([_opaque(a), _opaque(b)]).view(a.dtype)


class SyscallJoin:
    def __init__(self, layout: Layout, hold_s: float = 1.0) -> None:
        self.layout = layout
        self.hold_ns = int(hold_s * 1e9)
        self.packet_kind = layout.kind("packet")
        self.syscall_kind = layout.kind("syscall")
        self.pending = np.empty(0, layout.record)
        self.call_ids = np.empty(0, np.uint64)
        self.call_exit = np.empty(0, np.uint64)
        self.call_ret = np.empty(0, np.int64)

    def add(self, records: np.ndarray, now_ns: int | None = None) -> Packets:
        kind = records["kind"]
        calls = _select(records, kind == self.syscall_kind)
        if len(calls):
            ids = np.concatenate([self.call_ids, calls["syscall_id"]])
            exits = np.concatenate([self.call_exit, calls["syscall_exit"]])
            # the latest to return are kept (ids count per CPU: they tell nothing of age),
            # sorted by id for the lookup
            recent = (np.argsort(exits)[-KEEP_SYSCALLS:] if len(ids) > KEEP_SYSCALLS
                      else np.arange(len(ids)))
            order = recent[np.argsort(ids[recent], kind="stable")]
            self.call_ids = ids[order]
            self.call_exit = exits[order]
            self.call_ret = np.concatenate([self.call_ret, calls["syscall_ret"]])[order]
        candidates = _join(self.pending, _select(records, kind == self.packet_kind))
        if not len(candidates):
            return Packets.empty(self.layout)
        ids = candidates["syscall_id"]
        found = np.zeros(len(candidates), bool)
        exits = np.zeros(len(candidates), np.uint64)
        rets = np.zeros(len(candidates), np.int64)
        if len(self.call_ids):
            where = np.minimum(np.searchsorted(self.call_ids, ids), len(self.call_ids) - 1)
            found = self.call_ids[where] == ids
            exits[found] = self.call_exit[where[found]]
            rets[found] = self.call_ret[where[found]]
        # a packet that ended inside its syscall came with the syscall's end
        carried = candidates["syscall_exit"] > 0
        found |= carried
        exits[carried] = candidates["syscall_exit"][carried]
        rets[carried] = candidates["syscall_ret"][carried]
        now = time.monotonic_ns() if now_ns is None else now_ns
        ended = candidates["ts"].max(axis=1)
        # a datagram that came from elsewhere (--rx) has no send syscall to wait for
        ready = found | (ids == 0) | (now - ended.astype(np.int64) > self.hold_ns)
        self.pending = _select(candidates, ~ready)
        done = _select(candidates, ready)
        order = np.lexsort((done["packet_index"], origin_ns(done, self.layout)))
        return Packets(_select(done, order), exits[ready][order], rets[ready][order])

    def flush(self) -> Packets:
        """Everything still waiting (their syscalls never returned while we watched)."""
        return self.add(np.empty(0, self.layout.record), now_ns=np.iinfo(np.int64).max)


def distinct_addresses(raw: np.ndarray) -> tuple[list[str], np.ndarray]:
    """16-byte addresses (IPv4 as ::ffff:a.b.c.d): each distinct one as text, and which
    of them each row holds."""
    if not len(raw):
        return [], np.empty(0, np.int64)
    # one 16-byte opaque value per row: np.unique on those is far faster than with axis=0
    rows = np.ascontiguousarray(raw.reshape(len(raw), 16)).view("V16").reshape(-1)
    unique, inverse = np.unique(rows, return_inverse=True)
    texts = []
    for value in unique:
        address = ipaddress.IPv6Address(value.tobytes())
        texts.append(str(address.ipv4_mapped or address))
    return texts, inverse.reshape(-1)


def address_strings(raw: np.ndarray) -> list[str]:
    """16-byte addresses as text, formatting each distinct one once."""
    texts, inverse = distinct_addresses(raw)
    return [texts[i] for i in inverse]


def distinct_chars(raw: np.ndarray) -> tuple[list[str], np.ndarray]:
    """NUL-padded char[] fields (comm, ifname): each distinct one decoded, and which of them
    each row holds."""
    distinct, inverse = np.unique(raw, return_inverse=True)
    return [v.decode(errors="replace") for v in distinct.tolist()], inverse.reshape(-1)


def char_strings(raw: np.ndarray) -> np.ndarray:
    """NUL-padded char[] fields as str objects, decoding each distinct one once."""
    texts, inverse = distinct_chars(raw)
    return np.array([*texts, ""], object)[inverse]


# name → (ns, where the record has it): stages and the times records keep beside them
Times = Mapping[str, tuple[np.ndarray, np.ndarray]]


def first_of(times: Times, role: Role) -> tuple[np.ndarray, np.ndarray]:
    """Per record the first of the role's times it has, and whether it has one."""
    values, known = times[role.times[-1]]
    values, known = values.copy(), known.copy()
    for name in reversed(role.times[:-1]):
        v, k = times[name]
        values = np.where(k, v, values)
        known |= k
    return values, known


def between(times: Times, start: Role, end: Role) -> tuple[np.ndarray, np.ndarray]:
    """From one role to another per record, and where both are known."""
    (begin, has_begin), (until, has_until) = first_of(times, start), first_of(times, end)
    return until - begin, has_begin & has_until


def record_times(records: np.ndarray, layout: Layout, names: tuple[str, ...]) -> Times:
    """The named stages and record fields, absolute ns (CLOCK_MONOTONIC), 0: none."""
    out = {}
    for name in names:
        values = (records["ts"][:, layout.stage_index(name)] if name in layout.stages
                  else records[name]).astype(np.int64)
        out[name] = (values, values > 0)
    return out


def role_ns(records: np.ndarray, layout: Layout, role: Role) -> np.ndarray:
    """When each record reached the role (absolute ns), 0 where it did not."""
    values, known = first_of(record_times(records, layout, role.times), role)
    return np.where(known, values, 0)


def span_ns(records: np.ndarray, layout: Layout, span: str | Span) -> np.ndarray:
    """A span of stages.SPANS per record, from the record alone; -1 where it lacks the start
    or the end. (The send syscall's return comes with its own record: see Packets.)"""
    span = SPANS_BY_NAME[span] if isinstance(span, str) else span
    values, known = between(record_times(records, layout, (*span.start.times, *span.end.times)),
                            span.start, span.end)
    return np.where(known, values, -1)


def origin_ns(records: np.ndarray, layout: Layout) -> np.ndarray:
    """Each record's time zero (stages.TIME_ZERO), or its first stage without one."""
    ts = records["ts"].astype(np.int64)
    zero = role_ns(records, layout, TIME_ZERO)
    first = np.where(ts > 0, ts, np.iinfo(np.int64).max).min(axis=1, initial=np.iinfo(np.int64).max)
    return np.where(zero > 0, zero, np.where(first < np.iinfo(np.int64).max, first, 0))


# Times a record keeps beside its stages, CLOCK_MONOTONIC once read (trace/clocks.py)
EXTRA_TIMES = ("timer_expires", "txtime", "tstamp_sw")


def extra_offsets(records: np.ndarray, layout: Layout) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each of EXTRA_TIMES as ns since the record's time zero, and where it is set."""
    origin = origin_ns(records, layout)
    return {name: (records[name].astype(np.int64) - origin, records[name] > 0)
            for name in EXTRA_TIMES}


def launch_errors(records: np.ndarray, layout: Layout) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per stages.LAUNCH_STAGES: when the datagram reached it minus its launch time
    (negative: early), and where both are known."""
    ts = records["ts"].astype(np.int64)
    launch = records["txtime"].astype(np.int64)
    out = {}
    for stage in LAUNCH_STAGES:
        reached = ts[:, layout.stage_index(stage)]
        out[stage] = (reached - launch, (reached > 0) & (launch > 0))
    return out


def endpoint(address: str, port: int) -> str:
    """``10.0.0.1:4840``, ``[fd00::1]:4840``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def stage_offsets(records: np.ndarray, layout: Layout) -> np.ndarray:
    """ns since time zero per stage, negative before it (the callback); meaningless where
    the stage was not reached (``records["ts"] == 0``)."""
    ts = records["ts"].astype(np.int64)
    return ts - origin_ns(records, layout)[:, None]


def wire_ns(records: np.ndarray, layout: Layout) -> np.ndarray:
    """When the packet left the device (stages.WIRE), or 0."""
    return role_ns(records, layout, WIRE)


def rx_ns(records: np.ndarray, layout: Layout) -> np.ndarray:
    """The span rx: entering the receive path until the reader's syscall returned (its
    read, without the return); -1 for records that did not reach a reader."""
    return span_ns(records, layout, "rx")


def e2e_ns(records: np.ndarray, layout: Layout) -> np.ndarray:
    """The span e2e: the sender's syscall entry until the reader's syscall returned; -1
    where not both."""
    return span_ns(records, layout, "e2e")


def total_ns(records: np.ndarray, layout: Layout) -> np.ndarray:
    """The span total: send syscall entry until the packet left the device; -1 where
    either is missing."""
    return span_ns(records, layout, "total")
