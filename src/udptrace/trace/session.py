"""One tracing session: what the attached ut_trace gathers, read, and closed.

Construction does everything that can fail (options, kernel features,
loading, attaching: attach.py) and closes what it opened if any step fails,
so an error never leaves a program attached.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from udptrace.loader.bpf_object import Map, possible_cpus
from udptrace.loader.ringbuf import RingBufferReader
from udptrace.stages import TracePath
from udptrace.trace.attach import Attachment
from udptrace.trace.clocks import to_monotonic
from udptrace.trace.layout import Layout
from udptrace.trace.options import TraceOptions
from udptrace.trace.threads import STEPS, StepThread


@dataclass(frozen=True)
class Snapshot:
    """The in-kernel aggregates at one moment, summed over CPUs."""

    counters: dict[str, int]
    hists: np.ndarray  # one ut_hist per slot (stage index, then total)
    drops: dict[tuple[int, int], int]  # (reason, stage index) → packets
    xmit_contexts: dict[str, int]  # sent packets by where the driver was called; {}: not told
    completion_contexts: dict[str, int]  # sent packets by where their TX completion ran
    net_tx_pending: np.ndarray  # one ut_hist: NET_TX raise → run, for the packets it sent
    # PREEMPT_RT: sent packets per thread that ran their driver call or completion; ()
    # elsewhere (a softirq there borrows whichever thread it interrupted: no one to name)
    threads: tuple[StepThread, ...] = ()


def percpu_values(m: Map, key: bytes, dtype: np.dtype) -> np.ndarray:
    """A per-CPU map's value on every possible CPU (zeros when the key is absent)."""
    raw = m.lookup(key)
    stride = (dtype.itemsize + 7) // 8 * 8
    if raw is None:
        return np.zeros(possible_cpus(), dtype)
    return np.ndarray(possible_cpus(), dtype, buffer=raw, strides=(stride,))


def counter_totals(m: Map, dtype: np.dtype) -> dict[str, int]:
    """A per-CPU struct of counters at key 0, each summed over the CPUs."""
    per_cpu = percpu_values(m, struct.pack("<I", 0), dtype)
    return {name: int(per_cpu[name].sum()) for name in dtype.names}


def _values(m: Map, dtype: np.dtype) -> np.ndarray:
    """Every value of a (non-per-CPU) map, as one array."""
    raw = [v for k in m.iter_keys() if (v := m.lookup(k)) is not None]
    return np.frombuffer(b"".join(raw), dtype) if raw else np.empty(0, dtype)


def merge_hists(per_cpu: np.ndarray) -> np.void:
    """One ``struct ut_hist`` from its per-CPU copies; min and max of the CPUs that saw values."""
    merged = np.zeros(1, per_cpu.dtype)
    used = per_cpu[per_cpu["count"] > 0]
    if used.size:
        merged["count"] = used["count"].sum()
        merged["sum"] = used["sum"].sum()
        merged["min"] = used["min"].min()
        merged["max"] = used["max"].max()
        merged["buckets"] = used["buckets"].sum(axis=0)
    return merged[0]


class TraceSession:
    """Reads what an Attachment's programs gather: records, aggregates, what is in flight.

    Given no `attachment`, makes one (see attach.py: the CLI makes it itself, importing
    this module and NumPy meanwhile)."""

    def __init__(self, options: TraceOptions, attachment: Attachment | None = None) -> None:
        self.attachment = attachment or Attachment(options)
        a = self.attachment
        self.options, self.uprobe, self.plans, self.left_out = (
            a.options, a.uprobe, a.plans, a.left_out)
        self.vmlinux, self.obj, self.record_bytes = a.vmlinux, a.obj, a.record_bytes
        self.reader: RingBufferReader | None = None
        try:
            self.layout = Layout.from_object(self.obj)
            if self.options.stream:
                self.reader = RingBufferReader(
                    self.obj.maps["events"].fd, self.options.ringbuf_bytes,
                    self.layout.record, self.record_bytes)
        except BaseException:
            self.close()
            raise

    @property
    def contexts_told(self) -> bool:
        return self.attachment.contexts_told

    @property
    def threads_told(self) -> bool:
        return self.attachment.threads_told

    def read(self) -> np.ndarray:
        """The records streamed since the last read (empty unless options.stream)."""
        if self.reader is None:
            return np.empty(0, self.layout.record)
        return to_monotonic(self.reader.read())

    def counters(self) -> dict[str, int]:
        return counter_totals(self.obj.maps["counters"], self.layout.counters)

    def snapshot(self) -> Snapshot:
        maps = self.obj.maps
        counters = self.counters()
        hists = np.zeros(self.layout.hist_slots, self.layout.hist)
        for slot in range(self.layout.hist_slots):
            hists[slot] = merge_hists(
                percpu_values(maps["hists"], struct.pack("<I", slot), self.layout.hist))
        drops = {}
        for key in maps["drops"].iter_keys():
            reason, stage = struct.unpack("<II", key)
            drops[(reason, stage)] = int(
                percpu_values(maps["drops"], key, np.dtype("<u8")).sum())
        contexts = percpu_values(maps["contexts"], struct.pack("<I", 0),
                                 self.layout.context_counts)
        names = self.layout.contexts

        def by_name(column: str) -> dict[str, int]:
            counts = contexts[column].sum(axis=0).tolist() if self.contexts_told else []
            return {names[i]: n for i, n in enumerate(counts) if n and i}

        return Snapshot(counters, hists, drops, by_name("xmit"), by_name("completion"),
                        merge_hists(contexts["net_tx_pending"]), self._threads())

    def _threads(self) -> tuple[StepThread, ...]:
        if not self.threads_told:
            return ()
        m, names, found = self.obj.maps["context_threads"], self.layout.contexts, []
        for key, value in ((k, v) for k in m.iter_keys() if (v := m.lookup(k)) is not None):
            tid, policy, priority, step, context = struct.unpack("<IBBBB", key)
            found.append(StepThread(STEPS[step], names[context], tid, policy, priority,
                                    struct.unpack("<Q", value)[0]))
        return tuple(sorted(found, key=lambda t: (t.step, t.context, -t.packets, t.tid)))

    def intervals(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-flow send intervals (``--interval``): the flows' keys and their state."""
        m = self.obj.maps["intervals"]
        entries = [(k, v) for k in m.iter_keys() if (v := m.lookup(k)) is not None]
        return (np.frombuffer(b"".join(k for k, _ in entries), self.layout.flow_key),
                np.frombuffer(b"".join(v for _, v in entries), self.layout.interval))

    def unfinished(self) -> np.ndarray:
        """Records still open at the end: a sent packet's waiting for its syscall's return;
        on the receive path, queued on a socket or still on the way to one (fate unread),
        or read by a syscall that has not returned yet (received). Call once, after the
        last read."""
        slots = percpu_values(self.obj.maps["current_packet"], struct.pack("<I", 0),
                              self.obj.btf().struct_dtype("ut_current"))
        waiting = slots[slots["held"] > 0]["state"]["rec"].astype(self.layout.record)
        if TracePath.RECEIVE not in self.options.paths:
            return waiting
        # concatenate packs structured dtypes: astype puts the record's padding back
        return np.concatenate([waiting, self._unfinished_receives()]).astype(self.layout.record)

    def _unfinished_receives(self) -> np.ndarray:
        btf = self.obj.btf()
        state, datagram, reads = (btf.struct_dtype(n) for n in (
            "ut_pkt_state", "ut_rx_datagram", "ut_rx_reads"))
        unread = self.layout.fates_by_name["unread"]
        maps = self.obj.maps
        queued = _values(maps["rx_queued"], state)["rec"]
        on_the_way = _values(maps["rx_datagrams"], datagram)
        on_the_way = on_the_way[on_the_way["delivered"] == 0]["state"]["rec"]
        taken = [r["recs"][:r["count"]] for r in _values(maps["rx_reads"], reads)]
        out = np.concatenate([queued, on_the_way, *taken]).astype(self.layout.record)
        out["fate"][:len(queued) + len(on_the_way)] = unread
        out["fate"][len(queued) + len(on_the_way):] = self.layout.fates_by_name["received"]
        # --e2e also follows untraced datagrams, only to keep the sockets' queues in step
        return out[out["syscall_id"] > 0] if self.options.e2e else out

    def drop_reason_names(self) -> dict[int, str]:
        """The running kernel's drop reasons; their numbers differ between versions."""
        names = {}
        for name, value in self.vmlinux.enum_values("skb_drop_reason").items():
            names[value] = name.removeprefix("SKB_DROP_REASON_").removeprefix("SKB_")
        return names

    def detach(self) -> None:
        """Start detaching every program; the maps stay readable."""
        self.attachment.detach()

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.attachment.close()

    def __enter__(self) -> TraceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

