"""One tracing session: the send-path object configured, loaded, attached, read, closed.

Construction does everything that can fail (options, kernel features,
loading, attaching) and closes what it opened if any step fails, so an
error never leaves a program attached.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from udptrace import bpf
from udptrace.errors import KernelFeatureError, require_root
from udptrace.kernel.features import detect
from udptrace.kernel.plan import PointPlan, StagePlan, send_path_plans
from udptrace.loader.bpf_object import BpfObject, Map, Program, possible_cpus
from udptrace.loader.btf import Btf, Kind
from udptrace.loader.ringbuf import RingBufferReader
from udptrace.stages import CONTEXT_POINTS, HookKind, Stage
from udptrace.trace.layout import Layout
from udptrace.trace.options import TraceOptions, config_bytes, parse_network, validate
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


def _percpu(m: Map, key: bytes, dtype: np.dtype) -> np.ndarray:
    raw = m.lookup(key)
    stride = (dtype.itemsize + 7) // 8 * 8
    if raw is None:
        return np.zeros(possible_cpus(), dtype)
    return np.ndarray(possible_cpus(), dtype, buffer=raw, strides=(stride,))


def _summed(hists: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Per-CPU histograms as one."""
    total = np.zeros((), dtype)
    used = hists[hists["count"] > 0]
    if used.size:
        total["count"] = used["count"].sum()
        total["sum"] = used["sum"].sum()
        total["min"] = used["min"].min()
        total["max"] = used["max"].max()
        total["buckets"] = used["buckets"].sum(axis=0)
    return total


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
        self.plans: list[StagePlan] = [self._without_unasked_points(p)
                                       for p in send_path_plans(detect())
                                       if self._asked_for(p.stage)]
        for plan in self.plans:
            if plan.stage.needs and not plan.available:
                raise KernelFeatureError(f"{plan.stage.needs} cannot be served here: "
                                         f"{plan.describe()}")
        self.vmlinux = Btf.vmlinux()
        self.obj = BpfObject(bpf.object_bytes("ut_trace"), "ut_trace")
        self.reader: RingBufferReader | None = None
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

    def _asked_for(self, stage: Stage) -> bool:
        return stage.needs != "--uprobe" or self.uprobe is not None

    def _without_unasked_points(self, plan: StagePlan) -> StagePlan:
        """The plan minus the softirq hooks when the contexts are not wanted."""
        if self.options.contexts:
            return plan
        return StagePlan(plan.stage, tuple(
            PointPlan(p.point, None, "not asked for (--no-contexts)")
            if p.point in CONTEXT_POINTS else p for p in plan.points))

    def _load(self) -> None:
        chosen = {h.program for p in self.plans for h in p.hooks}
        for name, prog in self.obj.programs.items():
            prog.autoload = name in chosen
        self.obj.write_global(".rodata", "cfg", config_bytes(
            self.options, self.layout.config, _kfree_has_reason(self.vmlinux),
            self.contexts_told))
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
                                           self.layout.record)

    def _attach(self) -> None:
        for plan in self.plans:
            for hook in plan.hooks:
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
        return self.reader.read()

    def counters(self) -> dict[str, int]:
        per_cpu = _percpu(self.obj.maps["counters"], struct.pack("<I", 0), self.layout.counters)
        return {name: int(per_cpu[name].sum()) for name in self.layout.counters.names}

    def snapshot(self) -> Snapshot:
        maps = self.obj.maps
        counters = self.counters()
        hists = np.zeros(self.layout.hist_slots, self.layout.hist)
        for slot in range(self.layout.hist_slots):
            hists[slot] = _summed(_percpu(maps["hists"], struct.pack("<I", slot),
                                          self.layout.hist), self.layout.hist)
        drops = {}
        for key in maps["drops"].iter_keys():
            reason, stage = struct.unpack("<II", key)
            drops[(reason, stage)] = int(_percpu(maps["drops"], key, np.dtype("<u8")).sum())
        contexts = _percpu(maps["contexts"], struct.pack("<I", 0), self.layout.context_counts)
        names = self.layout.contexts

        def by_name(column: str) -> dict[str, int]:
            counts = contexts[column].sum(axis=0).tolist() if self.contexts_told else []
            return {names[i]: n for i, n in enumerate(counts) if n and i}

        return Snapshot(counters, hists, drops, by_name("xmit"), by_name("completion"),
                        _summed(contexts["net_tx_pending"], self.layout.hist))

    def intervals(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-flow send intervals (``--interval``): the flows' keys and their state."""
        m = self.obj.maps["intervals"]
        entries = [(k, v) for k in m.iter_keys() if (v := m.lookup(k)) is not None]
        return (np.frombuffer(b"".join(k for k, _ in entries), self.layout.flow_key),
                np.frombuffer(b"".join(v for _, v in entries), self.layout.interval))

    def drop_reason_names(self) -> dict[int, str]:
        """The running kernel's drop reasons; their numbers differ between versions."""
        names = {}
        for name, value in self.vmlinux.enum_values("skb_drop_reason").items():
            names[value] = name.removeprefix("SKB_DROP_REASON_").removeprefix("SKB_")
        return names

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.obj.close()

    def __enter__(self) -> TraceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

