"""The kernel side of a tracing session: hooks chosen, ut_trace configured, loaded, attached.

Free of NumPy and of the reporting modules, so the CLI can import those while the
verifier checks the programs (cli/trace.py): NumPy alone took 0.1-0.2 s to import here.
Construction does everything that can fail (options, kernel features, loading,
attaching) and closes what it opened if any step fails, so an error never leaves a
program attached.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable

from udptrace import bpf
from udptrace.errors import KernelFeatureError, require_root
from udptrace.kernel import symbols
from udptrace.kernel.features import detect
from udptrace.kernel.plan import PointPlan, StagePlan, plans_to_trace
from udptrace.kernel.syscall_table import syscall_numbers
from udptrace.loader.bpf_object import BpfObject, Program, destroy_links
from udptrace.loader.btf import Btf, Kind
from udptrace.stages import CONTEXT_POINTS, UNISTD_NAMES, HookKind, Stage, TracePath
from udptrace.trace.layout import enum_names, ring_record_bytes
from udptrace.trace.options import (
    TraceOptions,
    config_bytes,
    parse_network,
    stage_chosen,
    validate,
)
from udptrace.trace.uprobe_target import UprobeTarget, resolve

# hooks handed kernel pointers as plain numbers: the programs read through them by probe
UNTYPED_HOOKS = (HookKind.RAW_TP, HookKind.KPROBE)


def _kfree_has_reason(btf: Btf) -> bool:
    """Since 5.17 the kfree_skb tracepoint passes a drop reason as its third argument."""
    typedef = btf.find("btf_trace_kfree_skb", Kind.TYPEDEF)
    if typedef is None:
        return btf.find("skb_drop_reason", Kind.ENUM) is not None
    proto = btf.skip_modifiers(btf.skip_modifiers(typedef).size_or_type)
    return proto.vlen >= 4  # void *ctx, skb, location, reason[, rx_sk]


class Attachment:
    """ut_trace loaded with the programs `options` need and attached; closed detaches."""

    def __init__(self, options: TraceOptions,
                 while_loading: Callable[[], object] | None = None) -> None:
        """`while_loading` is called as the verifier starts: its CPU is free then."""
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
        self._detaching: threading.Thread | None = None
        try:
            self._load(while_loading)
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

    def _load(self, while_loading: Callable[[], object] | None) -> None:
        chosen = {h.program for p in self.plans for h in p.hooks}
        for name, prog in self.obj.programs.items():
            prog.autoload = name in chosen
        btf = self.obj.btf()
        self.record_bytes = ring_record_bytes(
            btf.member_offsets("ut_record"),
            payload=bool(self.options.payload_port),
            receive=TracePath.RECEIVE in self.options.paths,
            snaplen=self.options.snaplen if self.options.stream else 0)
        syscalls = enum_names(btf.enum_values("ut_syscall"), "UT_SYS_")
        self.obj.write_global(".rodata", "cfg", config_bytes(
            self.options, btf.struct_ctype("ut_config"), _kfree_has_reason(self.vmlinux),
            self.contexts_told,
            typed=not any(h.kind in UNTYPED_HOOKS for p in self.plans for h in p.hooks),
            record_bytes=self.record_bytes, threads=self.threads_told,
            hrtimer_wakeup=symbols.address("hrtimer_wakeup") if self.options.wakeup else 0,
            syscall_nr=syscall_numbers(
                UNISTD_NAMES.get(name, name) for _, name in sorted(syscalls.items()))))
        self.obj.maps["events"].max_entries = self.options.ringbuf_bytes
        if while_loading is not None:
            while_loading()
        self.obj.load(1)
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

    def detach(self) -> None:
        """Start detaching every program; the maps stay readable. The kernel's grace periods
        of the perf-event links then pass while the report is made."""
        if self._detaching is None:
            links = list(self.obj.links)
            self.obj.links.clear()
            self._detaching = threading.Thread(target=destroy_links, args=(links,),
                                               name="detach")
            self._detaching.start()

    def close(self) -> None:
        if self._detaching is not None:
            self._detaching.join()
        self.obj.close()

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
