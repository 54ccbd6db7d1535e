"""What the CPUs did while packets were traced: the ut_sched object, loaded beside ut_send.

Scheduler switches and softirq/hardirq entry and exit, recorded only on the
CPUs marked with :meth:`SchedSession.watch` (those that sent traced packets).
Each hook has a tp_btf and a raw_tp form; the kernel plan's rules pick one.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable

import numpy as np

from udptrace import bpf
from udptrace.errors import KernelFeatureError, require_root
from udptrace.kernel.features import detect
from udptrace.kernel.plan import why_not
from udptrace.kernel.tracefs import tracefs
from udptrace.loader.bpf_object import BpfObject, possible_cpus
from udptrace.loader.btf import Btf
from udptrace.loader.ringbuf import RingBufferReader
from udptrace.stages import Hook, HookKind, HookPoint

RINGBUF_BYTES = 4 << 20
TRACEPOINTS = (("sched", "sched_switch"), ("irq", "softirq_entry"), ("irq", "softirq_exit"),
               ("irq", "irq_handler_entry"), ("irq", "irq_handler_exit"))
POINTS = tuple(HookPoint(name, (Hook(HookKind.TP_BTF, f"{category}:{name}", f"ut_btf_{name}"),
                                Hook(HookKind.RAW_TP, f"{category}:{name}", f"ut_raw_{name}")))
               for category, name in TRACEPOINTS)
_SYMBOL = re.compile(r'\{\s*(\d+),\s*"(\w+)"\s*\}')


def softirq_names() -> dict[int, str]:
    """Vector → name (NET_RX, TIMER, ...), as the running kernel prints them."""
    try:
        text = (tracefs().root / "events/irq/softirq_entry/format").read_text()
    except OSError:
        return {}
    return {int(n): name for n, name in _SYMBOL.findall(text)}


class SchedSession:
    def __init__(self) -> None:
        require_root()
        features, btf, fs = detect(), Btf.vmlinux(), tracefs()
        hooks = []
        for point in POINTS:
            reasons = [why_not(h, features, btf, fs) for h in point.hooks]
            usable = [h for h, reason in zip(point.hooks, reasons, strict=True) if not reason]
            if not usable:
                raise KernelFeatureError(f"--sched: cannot hook {point.name} ({reasons[0]})")
            hooks.append(usable[0])
        self.hooks = hooks
        self.obj = BpfObject(bpf.object_bytes("ut_sched"), "ut_sched")
        self.reader: RingBufferReader | None = None
        self._watched: set[int] = set()
        try:
            obj_btf = self.obj.btf()
            self.event = obj_btf.struct_dtype("ut_sched_event")
            self.counters_dtype = obj_btf.struct_dtype("ut_sched_counters")
            self.kinds = {v: k.removeprefix("UT_SCHED_").lower()
                          for k, v in obj_btf.enum_values("ut_sched_kind").items()}
            chosen = {h.program for h in hooks}
            for name, prog in self.obj.programs.items():
                prog.autoload = name in chosen
            self.obj.maps["watched"].max_entries = possible_cpus()
            self.obj.maps["sched_events"].max_entries = RINGBUF_BYTES
            self.obj.load()
            self.reader = RingBufferReader(self.obj.maps["sched_events"].fd, RINGBUF_BYTES,
                                           self.event)
            for hook in hooks:
                self.obj.programs[hook.program].attach()
        except BaseException:
            self.close()
            raise

    def watch(self, cpus: Iterable[int]) -> None:
        """Record on these CPUs from now on (those that sent traced packets)."""
        for cpu in set(int(c) for c in cpus) - self._watched:
            self.obj.maps["watched"].update(struct.pack("<I", cpu), b"\x01")
            self._watched.add(cpu)

    def read(self) -> np.ndarray:
        return self.reader.read() if self.reader is not None else np.empty(0, self.event)

    def counters(self) -> dict[str, int]:
        raw = self.obj.maps["sched_counters"].lookup(struct.pack("<I", 0))
        stride = (self.counters_dtype.itemsize + 7) // 8 * 8
        if raw is None:
            return dict.fromkeys(self.counters_dtype.names, 0)
        per_cpu = np.ndarray(possible_cpus(), self.counters_dtype, buffer=raw, strides=(stride,))
        return {name: int(per_cpu[name].sum()) for name in self.counters_dtype.names}

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.obj.close()

    def __enter__(self) -> SchedSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
