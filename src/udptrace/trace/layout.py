"""The record and config layouts, read from the compiled object's BTF.

``bpf/ut_record.h`` is the one definition; nothing here restates a field,
an offset or a stage number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from udptrace.loader.bpf_object import BpfObject

if TYPE_CHECKING:
    import numpy as np


def enum_names(values: dict[str, int], prefix: str) -> dict[int, str]:
    return {v: k.removeprefix(prefix).lower() for k, v in values.items()}


def ring_record_bytes(offsets: dict[str, int], payload: bool, receive: bool,
                      snaplen: int = 0) -> int:
    """How much of each record the ring buffer carries, from the byte offsets of
    ``struct ut_record``'s fields: ``payload``, the rx_* fields and then ``frame`` end
    it, each sent only in the modes that fill it (of the frame, its first ``snaplen``
    bytes)."""
    if snaplen:
        return offsets["frame"] + snaplen
    if receive:
        return offsets["frame"]
    return offsets["rx_ret" if payload else "payload"]


@dataclass(frozen=True)
class Layout:
    record: np.dtype
    counters: np.dtype
    hist: np.dtype
    interval: np.dtype  # per-flow send intervals
    flow_key: np.dtype
    context_counts: np.dtype  # struct ut_contexts: packets per context, NET_TX pending
    stages: tuple[str, ...]  # index in ts[] → stage name
    spans: tuple[str, ...]  # their histograms follow the stages'
    kinds: dict[int, str]
    fates: dict[int, str]
    syscalls: dict[int, str]
    flags: dict[str, int]
    flow_kinds: dict[int, str]
    contexts: tuple[str, ...]  # enum ut_context value → name ("unknown", "sender", ...)
    hist_slots: int  # one per stage, then one per span

    def span_slot(self, name: str) -> int:
        return len(self.stages) + self.spans.index(name)

    @classmethod
    def from_object(cls, obj: BpfObject) -> Layout:
        btf = obj.btf()
        stages = enum_names(btf.enum_values("ut_stage"), "UT_STAGE_")
        stages.pop(max(stages))  # UT_STAGE_COUNT
        spans = enum_names(btf.enum_values("ut_span"), "UT_SPAN_")
        spans.pop(max(spans))  # UT_SPAN_COUNT
        contexts = enum_names(btf.enum_values("ut_context"), "UT_CTX_")
        contexts.pop(max(contexts))  # UT_CTX_COUNT
        return cls(
            record=btf.struct_dtype("ut_record"),
            counters=btf.struct_dtype("ut_counters"),
            hist=btf.struct_dtype("ut_hist"),
            interval=btf.struct_dtype("ut_interval"),
            flow_key=btf.struct_dtype("ut_flow_key"),
            context_counts=btf.struct_dtype("ut_contexts"),
            stages=tuple(stages[i] for i in sorted(stages)),
            spans=tuple(spans[i] for i in sorted(spans)),
            kinds=enum_names(btf.enum_values("ut_record_kind"), "UT_KIND_"),
            fates=enum_names(btf.enum_values("ut_fate"), "UT_FATE_"),
            syscalls=enum_names(btf.enum_values("ut_syscall"), "UT_SYS_"),
            flags={k.removeprefix("UT_F_").lower(): v
                   for k, v in btf.enum_values("ut_record_flags").items()},
            flow_kinds=enum_names(btf.enum_values("ut_flow_kind"), "UT_FLOW_"),
            contexts=tuple(contexts[i] for i in sorted(contexts)),
            hist_slots=obj.maps["hists"].max_entries,
        )

    def record_bytes(self, payload: bool, receive: bool, snaplen: int = 0) -> int:
        """See ring_record_bytes."""
        offsets = {name: field[1] for name, field in self.record.fields.items()}
        return ring_record_bytes(offsets, payload, receive, snaplen)

    @property
    def fates_by_name(self) -> dict[str, int]:
        return {v: k for k, v in self.fates.items()}

    def stage_index(self, name: str) -> int:
        return self.stages.index(name)

    def kind(self, name: str) -> int:
        return next(k for k, v in self.kinds.items() if v == name)
