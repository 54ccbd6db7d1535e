"""Every per-packet field, once: what a `--json` record says and what `record` stores.

Each :class:`Field` names its JSON member (maybe inside an object, a :class:`Group`),
the Parquet column it becomes, how its values come from a batch of records, and
where it is null. Where a member is absent from a JSON record (a stage not
reached, the receiver of a datagram nobody read) its column is null too, so
both outputs say the same of every packet. Fields of ``struct ut_record`` the
table does not name pass through to both under their C name (numbers as they
are, char[] as text, 16-byte arrays as addresses): a field added to
``ut_record.h`` reaches every output unasked.

A :class:`Batch` computes each field's values once, whichever outputs ask
(report/ndjson.py writes the JSON text, report/columns.py the Arrow columns).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from udptrace.pubsub.headers import UadpHeaders
from udptrace.report.pubsub_groups import headers_of
from udptrace.trace import threads
from udptrace.trace.clocks import clock_name
from udptrace.trace.decode import (
    Packets,
    distinct_addresses,
    distinct_chars,
    e2e_ns,
    extra_offsets,
    launch_errors,
    origin_ns,
    rx_ns,
    span_ns,
    stage_offsets,
    total_ns,
)
from udptrace.trace.layout import Layout

FAMILIES = {2: "ipv4", 10: "ipv6"}
ADDRESS_BYTES = 16
UNKNOWN = "unknown"
# record fields no output shows: kind (always a packet here), the payload (its PubSub
# fields instead)
HIDDEN = ("kind", "payload")
JSON_FLAGS = ("fragment", "neigh_queued")  # the record's other flags are columns only


class Kind(enum.Enum):
    NUMBER = "number"
    TEXT = "text"
    BOOL = "bool"
    IDS = "ids"  # a list of numbers, here at most one: empty where not valid
    BYTES = "bytes"  # each row's first ``lengths`` bytes of a byte matrix


@dataclass(frozen=True)
class Values:
    """One field over a batch: numbers, booleans, or for text indices into ``texts``."""

    data: np.ndarray
    valid: np.ndarray | None = None  # False: null (IDS: the empty list); None: all valid
    texts: tuple[str, ...] = ()
    lengths: np.ndarray | None = None  # BYTES: how many of each row's bytes count


Present = Callable[["Batch"], np.ndarray]


@dataclass(frozen=True, eq=False)
class Field:
    name: str  # the JSON member
    values: Callable[[Batch], Values]
    kind: Kind = Kind.NUMBER
    column: str = ""  # the Parquet column; "" = the group's prefix and the name
    present: Present | None = None  # the JSON member exists only there (elsewhere: null)
    json: bool = True  # False: a column only
    parquet: bool = True  # False: JSON only
    sources: tuple[str, ...] = ()  # the record fields it shows (the rest pass through)


@dataclass(frozen=True, eq=False)
class Group:
    """A JSON object of fields; its columns are its fields' names under ``prefix``."""

    name: str
    members: tuple[Field | Group, ...]
    present: Present | None = None
    prefix: str | None = None  # None: the name and "_"


Member = Field | Group


@dataclass(frozen=True)
class Leaf:
    """A field with where it sits: its JSON path, its column, the presences it is under."""

    field: Field
    path: tuple[str, ...]
    column: str
    presences: tuple[Present, ...]  # outermost first, the field's own last


@dataclass(frozen=True)
class Table:
    members: tuple[Member, ...]

    @cached_property
    def leaves(self) -> tuple[Leaf, ...]:
        return tuple(_leaves(self.members, (), "", ()))

    @property
    def columns(self) -> tuple[Leaf, ...]:
        return tuple(leaf for leaf in self.leaves if leaf.field.parquet)


def _leaves(members: tuple[Member, ...], path: tuple[str, ...], prefix: str,
            presences: tuple[Present, ...]) -> Iterator[Leaf]:
    for m in members:
        inner = (*presences, m.present) if m.present is not None else presences
        if isinstance(m, Group):
            yield from _leaves(m.members, (*path, m.name),
                               prefix + (m.prefix if m.prefix is not None else m.name + "_"),
                               inner)
        else:
            yield Leaf(m, (*path, m.name), m.column or prefix + m.name, inner)


class Batch:
    """A batch of packets for the outputs: each field's values computed once."""

    def __init__(self, packets: Packets, layout: Layout, drop_names: dict[int, str],
                 headers: UadpHeaders | None = None) -> None:
        self.packets = packets
        self.records = packets.records
        self.layout = layout
        self.drop_names = drop_names
        self._headers = headers
        self._values: dict[Field, Values] = {}
        self._present: dict[Present, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.records)

    def values(self, f: Field) -> Values:
        if f not in self._values:
            self._values[f] = f.values(self)
        return self._values[f]

    def present(self, rule: Present) -> np.ndarray:
        if rule not in self._present:
            self._present[rule] = rule(self)
        return self._present[rule]

    def presence(self, leaf: Leaf) -> np.ndarray | None:
        """Where the leaf's member is in the JSON record, with its groups (None: always)."""
        mask = None
        for rule in leaf.presences:
            present = self.present(rule)
            mask = present if mask is None else mask & present
        return mask

    @cached_property
    def headers(self) -> UadpHeaders:
        return self._headers if self._headers is not None else headers_of(self.packets,
                                                                           self.layout)

    @cached_property
    def origin(self) -> np.ndarray:
        return origin_ns(self.records, self.layout)

    @cached_property
    def offsets(self) -> np.ndarray:
        return stage_offsets(self.records, self.layout)

    @cached_property
    def reached(self) -> np.ndarray:
        return self.records["ts"] > 0

    @cached_property
    def dropped(self) -> np.ndarray:
        return self.records["fate"] == self.layout.fates_by_name["dropped"]

    @cached_property
    def extra(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return extra_offsets(self.records, self.layout)

    @cached_property
    def launch(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return launch_errors(self.records, self.layout)

    def flag(self, name: str) -> np.ndarray:
        return (self.records["flags"] & self.layout.flags[name]) != 0


def _runs(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows as the first row of each run of equal rows, and which run each row is in: a
    batch is in time order, so one flow's rows come in runs and only their heads need
    sorting (np.unique on every row was most of the time here)."""
    if not len(raw):
        return raw, np.empty(0, np.intp)
    rows = np.ascontiguousarray(raw).view(np.uint8).reshape(len(raw), -1)
    changed = np.empty(len(raw), bool)
    changed[0] = True
    np.any(rows[1:] != rows[:-1], axis=1, out=changed[1:])
    return raw[changed], np.cumsum(changed) - 1


def _distinct(raw: np.ndarray,
              decode: Callable[[np.ndarray], tuple[list[str], np.ndarray]]) -> Values:
    heads, run = _runs(raw)
    texts, inverse = decode(heads)
    return Values(np.take(inverse, run).astype(np.int32), texts=tuple(texts))


def _named(codes: np.ndarray, name_of: Callable[[int], str],
           valid: np.ndarray | None = None) -> Values:
    """Enum values as their names, looking each distinct value up once."""
    codes = codes.astype(np.int64)
    if len(codes) and codes.min() >= 0 and codes.max() < 1 << 16:
        seen = np.flatnonzero(np.bincount(codes))
        index = np.zeros(int(seen[-1]) + 1, np.int32)
        index[seen] = np.arange(len(seen), dtype=np.int32)
        distinct, inverse = seen, np.take(index, codes)
    else:
        distinct, inverse = np.unique(codes, return_inverse=True)
    return Values(inverse.reshape(-1).astype(np.int32), valid,
                  tuple(name_of(int(c)) for c in distinct.tolist()))


def _lookup(names: dict[int, str], missing: Callable[[int], str] = str) -> Callable[[int], str]:
    return lambda code: names[code] if code in names else missing(code)


def _set(values: np.ndarray) -> Values:
    """A count or time where 0 means none; signed, as every time is."""
    return Values(values.astype(np.int64), values > 0)


def _text_of(name: str, decode: Callable[[np.ndarray], tuple[list[str], np.ndarray]]
             ) -> Callable[[Batch], Values]:
    return lambda b: _distinct(b.records[name], decode)


def _number_of(name: str, zero_is_null: bool) -> Callable[[Batch], Values]:
    if zero_is_null:
        return lambda b: _set(b.records[name])
    return lambda b: Values(b.records[name])


@dataclass
class _Builder:
    """Makes the table's fields, noting which record fields they show."""

    layout: Layout
    used: set[str] = field(default_factory=set)

    def stored(self, name: str, *, member: str = "", column: str = "", zero_is_null: bool = False,
               present: Present | None = None, json: bool = True) -> Field:
        """A record field as it is: numbers, char[] as text, 16-byte arrays as addresses."""
        self.used.add(name)
        kind = self.layout.record.fields[name][0]
        if kind.kind == "S":
            values, shown = _text_of(name, distinct_chars), Kind.TEXT
        elif kind.subdtype is not None:
            if kind.shape != (ADDRESS_BYTES,) or kind.subdtype[0] != np.uint8:
                raise ValueError(f"ut_record.{name}: an array with no flat form; name it in "
                                 "report/fields.py")
            values, shown = _text_of(name, distinct_addresses), Kind.TEXT
        else:
            values, shown = _number_of(name, zero_is_null), Kind.NUMBER
        return Field(member or name, values, shown, column=column, present=present, json=json,
                     sources=(name,))

    def context(self, name: str) -> Field:
        """Where a step of the packet ran (enum ut_context): null where not told (0)."""
        contexts = dict(enumerate(self.layout.contexts))
        return Field(name, lambda b: _named(b.records[name], _lookup(contexts),
                                            b.records[name] > 0),
                     Kind.TEXT, sources=self.uses(name))

    def thread(self, name: str) -> Field:
        """PREEMPT_RT: the thread that ran a step (struct ut_thread), as `comm (pid N, FIFO
        50)`; null where not told (tid 0: not RT, or the step not reached)."""
        def values(b: Batch) -> Values:
            t = b.records[name]
            code = (t["tid"].astype(np.uint64) << np.uint64(16)
                    | t["policy"].astype(np.uint64) << np.uint64(8) | t["rt_priority"])
            return _named(code.astype(np.int64),
                          lambda c: threads.title(c >> 16, c >> 8 & 0xFF, c & 0xFF),
                          t["tid"] > 0)
        return Field(name, values, Kind.TEXT, sources=self.uses(name))

    def uses(self, *names: str) -> tuple[str, ...]:
        self.used.update(names)
        return names

    def passthrough(self) -> list[Field]:
        """Every record field no other field shows."""
        return [self.stored(name) for name in self.layout.record.names
                if name not in self.used and name not in HIDDEN]


def _stage_field(index: int, stage: str) -> Field:
    return Field(stage, lambda b: Values(b.offsets[:, index]), column=f"stage_{stage}_ns",
                 present=lambda b: b.reached[:, index])


def _extra(name: str) -> Callable[[Batch], Values]:
    return lambda b: Values(*b.extra[name])


def _launch(stage: str) -> Callable[[Batch], Values]:
    return lambda b: Values(*b.launch[stage])


def _total(b: Batch) -> Values:
    """Syscall to wire; none for a dropped packet, whatever it reached."""
    totals = total_ns(b.records, b.layout)
    return Values(totals, (totals >= 0) & ~b.dropped)


def _frame(b: Batch) -> Values:
    lengths = b.records["frame_caplen"]
    return Values(b.records["frame"], lengths > 0, lengths=lengths)


def _received(b: Batch) -> np.ndarray:
    return b.flag("receive")


def _read(b: Batch) -> np.ndarray:
    return b.records["rx_pid"] != 0


def launch_time(b: Batch) -> np.ndarray:
    """Datagrams with an SO_TXTIME launch time."""
    return b.records["txtime"] > 0


def _stamped(b: Batch) -> np.ndarray:
    return (b.records["tstamp_sw"] > 0) | (b.records["tstamp_hw"] > 0)


def _timer(b: Batch) -> np.ndarray:
    return b.records["timer_expires"] > 0


def _uadp(b: Batch) -> np.ndarray:
    return b.headers.valid


def _header(name: str) -> Callable[[Batch], Values]:
    """A UADP header field, -1 where the message lacks it."""
    def values(b: Batch) -> Values:
        column = getattr(b.headers, name).astype(np.int64)
        return Values(column, column >= 0)
    return values


def _pubsub() -> Group:
    return Group("pubsub", (
        Field("publisher_id", lambda b: Values(b.headers.publisher_id)),
        # tells a String id's hash from a number
        Field("publisher_id_type", lambda b: Values(b.headers.publisher_id_type.astype(np.int64)),
              json=False),
        Field("writer_group_id", _header("writer_group_id")),
        Field("dataset_writer_ids", _header("dataset_writer_id"), Kind.IDS),
        Field("sequence_number", _header("network_sequence")),
        Field("dataset_sequence_number", _header("dataset_sequence")),
    ), _uadp)


def packet_table(layout: Layout, pubsub: bool = False) -> Table:
    """The fields of a packet, in the order of a JSON record; ``pubsub``: with the UADP
    labels (--pubsub)."""
    f = _Builder(layout)
    stage_names = dict(enumerate(layout.stages))
    empty = np.empty(0, layout.record)
    members: list[Member] = [
        Field("type", lambda b: Values(np.zeros(len(b), np.int32), texts=("packet",)),
              Kind.TEXT, parquet=False),
        Field("ts_ns", lambda b: Values(b.origin), sources=f.uses("ts")),
        f.stored("pid"), f.stored("tid"), f.stored("comm"), f.stored("cpu"),
        Field("family", lambda b: _named(b.records["family"], _lookup(FAMILIES)), Kind.TEXT,
              sources=f.uses("family")),
        f.stored("saddr"), f.stored("sport"), f.stored("daddr"), f.stored("dport"),
        f.stored("len"), f.stored("udp_len"), f.stored("payload_len", json=False),
        f.stored("gso_segs", zero_is_null=True), f.stored("gso_size", zero_is_null=True),
        f.stored("ifname"), f.stored("ifindex", json=False), f.stored("netns"),
        Group("stages", tuple(_stage_field(i, s) for i, s in enumerate(layout.stages)),
              prefix=""),
        Field("total_ns", _total),
        # --uprobe: the datagrams sent inside the callback
        Field("app_to_wire_ns", lambda b: _span(span_ns(b.records, b.layout, "app_to_wire")),
              present=lambda b: b.reached[:, b.layout.stage_index("app")]),
        Field("fate", lambda b: _named(b.records["fate"], _lookup(layout.fates, lambda _: UNKNOWN)),
              Kind.TEXT, sources=f.uses("fate")),
        Field("drop_reason", lambda b: _named(b.records["drop_reason"], _lookup(b.drop_names),
                                              b.dropped), Kind.TEXT, sources=f.uses("drop_reason")),
        Field("drop_stage", lambda b: _named(b.records["drop_stage"], _lookup(stage_names),
                                             b.dropped), Kind.TEXT, sources=f.uses("drop_stage")),
        Group("syscall", (
            f.stored("syscall_id", member="id", column="syscall_id"),
            Field("name", lambda b: _named(b.records["syscall"],
                                           _lookup(layout.syscalls, lambda _: UNKNOWN)),
                  Kind.TEXT, sources=f.uses("syscall")),
            f.stored("packet_index"),
            # joined from the syscall's own record where the packet did not carry them
            Field("exit_ns", lambda b: Values(b.packets.syscall_exit.astype(np.int64) - b.origin,
                                               b.packets.syscall_exit > 0),
                  sources=f.uses("syscall_exit")),
            Field("ret", lambda b: Values(b.packets.syscall_ret, b.packets.syscall_exit > 0),
                  sources=f.uses("syscall_ret")),
        )),
        f.stored("interval_ns", zero_is_null=True),
        f.stored("xmit_rc"),
        f.context("xmit_context"),
        f.stored("softirq_pending_ns", zero_is_null=True),
        f.context("completion_context"),
        f.thread("xmit_thread"),
        f.thread("completion_thread"),
        *(Field(flag, lambda b, flag=flag: Values(b.flag(flag)), Kind.BOOL,
                json=flag in JSON_FLAGS, sources=f.uses("flags"))
          for flag in (*JSON_FLAGS, *(o for o in layout.flags if o not in JSON_FLAGS))),
        Field("e2e_ns", lambda b: _span(e2e_ns(b.records, b.layout)), present=_received),
        Field("rx_ns", lambda b: _span(rx_ns(b.records, b.layout)), present=_received),
        Group("receiver", (
            f.stored("rx_pid", member="pid", present=_read),
            f.stored("rx_tid", member="tid", present=_read),
            f.stored("rx_comm", member="comm", present=_read),
            f.stored("rx_cpu", member="cpu", present=_read),
            Field("syscall", lambda b: _named(b.records["rx_syscall"], _lookup(layout.syscalls),
                                              np.isin(b.records["rx_syscall"],
                                                      list(layout.syscalls))),
                  Kind.TEXT, present=_read, sources=f.uses("rx_syscall")),
            Field("ret", lambda b: Values(b.records["rx_ret"], b.records["rx_syscall"] != 0),
                  present=_read, sources=f.uses("rx_ret")),
            f.stored("rx_ifname", member="ifname"),
            f.stored("rx_netns", member="netns"),
            f.stored("rx_ifindex", member="ifindex", json=False),
        ), _received, prefix="rx_"),
        Field("timer_expires_ns", _extra("timer_expires"), present=_timer,
              sources=f.uses("timer_expires")),
        Group("txtime", (
            Field("clock", lambda b: _named(b.records["txtime_clock"], clock_name), Kind.TEXT,
                  sources=f.uses("txtime_clock")),
            Field("launch_ns", _extra("txtime"), sources=f.uses("txtime")),
            *(Field(f"{stage}_ns", _launch(stage)) for stage in launch_errors(empty, layout)),
        ), launch_time),
        # --snaplen: the frame as the device had it, for pcapng (report/pcapng.py)
        Field("frame", _frame, Kind.BYTES, json=False, sources=f.uses("frame", "frame_caplen")),
        *(f.stored(name, json=False) for name in ("frame_len", "frame_l3", "dev_type")),
        Group("tx_timestamp", (
            Field("software_ns", _extra("tstamp_sw"), sources=f.uses("tstamp_sw")),
            Field("hardware_ns", lambda b: _set(b.records["tstamp_hw"]),
                  sources=f.uses("tstamp_hw")),
        ), _stamped),
    ]
    if pubsub:
        members.append(_pubsub())
    members.extend(f.passthrough())
    return Table(tuple(members))


def _span(values: np.ndarray) -> Values:
    """A span, -1 where it has no end or no start."""
    return Values(values, values >= 0)
