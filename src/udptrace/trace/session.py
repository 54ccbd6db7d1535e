"""One tracing session: the send-path object configured, loaded, attached, read, closed.

Construction does everything that can fail (options, kernel features,
loading, attaching) and closes what it opened if any step fails, so an
error never leaves a program attached.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import numpy as np

from udptrace import bpf
from udptrace.errors import KernelFeatureError, require_root
from udptrace.kernel import symbols
from udptrace.kernel.features import detect
from udptrace.kernel.plan import PointPlan, StagePlan, plans_to_trace
from udptrace.loader.bpf_object import BpfObject, Map, Program, destroy_links, possible_cpus
from udptrace.loader.btf import Btf, Kind
from udptrace.loader.ringbuf import RingBufferReader
from udptrace.stages import CONTEXT_POINTS, HookKind, Stage, TracePath
from udptrace.trace.clocks import to_monotonic
from udptrace.trace.layout import Layout
from udptrace.trace.options import (
    TraceOptions,
    config_bytes,
    parse_network,
    stage_chosen,
    validate,
)
from udptrace.trace.threads import STEPS, StepThread
from udptrace.trace.uprobe_target import UprobeTarget, resolve


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


# hooks handed kernel pointers as plain numbers: the programs read through them by probe
UNTYPED_HOOKS = (HookKind.RAW_TP, HookKind.KPROBE)


def _kfree_has_reason(btf: Btf) -> bool:
    """Since 5.17 the kfree_skb tracepoint passes a drop reason as its third argument."""
    typedef = btf.find("btf_trace_kfree_skb", Kind.TYPEDEF)
    if typedef is None:
        return btf.find("skb_drop_reason", Kind.ENUM) is not None
    proto = btf.skip_modifiers(btf.skip_modifiers(typedef).size_or_type)
    return proto.vlen >= 4  # void *ctx, skb, location, reason[, rx_sk]


class TraceSession:
    def __init__(self, options: TraceOptions) -> None:
        require_root()
        validate(options)
        self.options = options
        self.uprobe: UprobeTarget | None = (
            resolve(options.uprobe, options.pids) if options.uprobe else None)
        planned = [self._without_unasked_points(p)
                   for p in plans_to_trace(detect(), options.paths)]
        self.plans: list[StagePlan] = [p for p in planned if self._asked_for(p.stage)]
        # optional stages --stages did not ask for: their hooks stay out, and the report says so
        self.left_out = [p.stage.name for p in planned
                         if self._optional_hook_wanted(p.stage) and p not in self.plans]
        for plan in self.plans:
            if plan.stage.needs and not plan.available:
                raise KernelFeatureError(f"{plan.stage.needs} cannot be served here: "
                                         f"{plan.describe()}")
        self.vmlinux = Btf.vmlinux()
        self.obj = BpfObject(bpf.object_bytes("ut_trace"), "ut_trace")
        self.reader: RingBufferReader | None = None
        self._detaching: threading.Thread | None = None
        try:
            self.layout = Layout.from_object(self.obj)
            self._load()
            self._attach()
        except BaseException:
            self.close()
            raise

    @property
    def contexts_told(self) -> bool:
        """Every softirq hook is attached: records say where their driver call and their
        completion ran."""
        chosen = {pp.point for p in self.plans for pp in p.points if pp.hook}
        return all(point in chosen for point in CONTEXT_POINTS)

    @property
    def threads_told(self) -> bool:
        """PREEMPT_RT, with the contexts: records and the snapshot name each step's thread."""
        return self.contexts_told and detect().preempt_rt.ok

    def _optional_hook_wanted(self, stage: Stage) -> bool:
        return self.options.asks_for(stage.needs)

    def _asked_for(self, stage: Stage) -> bool:
        return self._optional_hook_wanted(stage) and stage_chosen(stage, self.options.stages)

    def _without_unasked_points(self, plan: StagePlan) -> StagePlan:
        """The plan minus the softirq hooks when the contexts are not wanted: --no-contexts,
        or --stages core (the fewest hooks: the contexts refine xmit_start, they are not it)."""
        fewest = self.options.stages == ("core",)
        if self.options.contexts and not fewest:
            return plan
        why = "not asked for (--stages core)" if fewest else "not asked for (--no-contexts)"
        return StagePlan(plan.stage, tuple(
            PointPlan(p.point, None, why) if p.point in CONTEXT_POINTS else p
            for p in plan.points))

    def _load(self) -> None:
        chosen = {h.program for p in self.plans for h in p.hooks}
        for name, prog in self.obj.programs.items():
            prog.autoload = name in chosen
        self.record_bytes = self.layout.record_bytes(
            payload=bool(self.options.payload_port),
            receive=TracePath.RECEIVE in self.options.paths,
            snaplen=self.options.snaplen if self.options.stream else 0)
        self.obj.write_global(".rodata", "cfg", config_bytes(
            self.options, self.layout.config, _kfree_has_reason(self.vmlinux),
            self.contexts_told,
            typed=not any(h.kind in UNTYPED_HOOKS for p in self.plans for h in p.hooks),
            record_bytes=self.record_bytes, threads=self.threads_told,
            hrtimer_wakeup=symbols.address("hrtimer_wakeup") if self.options.wakeup else 0))
        self.obj.maps["events"].max_entries = self.options.ringbuf_bytes
        self.obj.load()
        maps = self.obj.maps
        for pid in self.options.pids:
            maps["pids"].update(struct.pack("<I", pid), b"\x01")
        for port in self.options.ports:
            maps["ports"].update(struct.pack("<H", port), b"\x01")
        for name, texts in (("src_nets", self.options.src), ("dst_nets", self.options.dst)):
            for text in texts:
                net = parse_network(text)
                key = struct.pack("<I", net.prefixlen) + net.network_address.packed
                maps[name].update(key, b"\x01")
        if self.options.stream:
            self.reader = RingBufferReader(maps["events"].fd, self.options.ringbuf_bytes,
                                           self.layout.record, self.record_bytes)

    def _attach(self) -> None:
        attached = set()  # a tracepoint shared by stages (netif_rx, the frees) runs one program
        for plan in self.plans:
            for hook in plan.hooks:
                if hook.program in attached:
                    continue
                attached.add(hook.program)
                program = self.obj.programs[hook.program]
                if hook.kind == HookKind.UPROBE:
                    self._attach_uprobe(program, retprobe=hook.target == "return")
                else:
                    program.attach()

    def _attach_uprobe(self, program: Program, retprobe: bool) -> None:
        assert self.uprobe is not None
        pids = self.options.pids
        program.attach_uprobe(self.uprobe.binary, offset=self.uprobe.offset,
                              pid=pids[0] if len(pids) == 1 else -1, retprobe=retprobe)

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
        """Start detaching every program; the maps stay readable. The kernel's grace periods
        of the perf-event links (0.3-1 s in all) then pass while the report is made."""
        if self._detaching is None:
            links = list(self.obj.links)
            self.obj.links.clear()
            self._detaching = threading.Thread(target=destroy_links, args=(links,),
                                               name="detach")
            self._detaching.start()

    def close(self) -> None:
        if self._detaching is not None:
            self._detaching.join()
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.obj.close()

    def __enter__(self) -> TraceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

