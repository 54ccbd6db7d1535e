"""Tracepoints and kernel functions by glob, with what this kernel lets us attach to them."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from udptrace.kernel import symbols
from udptrace.kernel.features import Features
from udptrace.kernel.tracefs import tracefs
from udptrace.loader.btf import Btf, Kind
from udptrace.stages import STAGES, HookKind


@dataclass(frozen=True)
class ProbeInfo:
    name: str  # tracepoint:cat:name or function:name
    details: tuple[str, ...]  # fields, or the prototype
    usable: str  # the attach types that work here, or why none does
    stages: tuple[str, ...] = ()  # the stages of the catalogue it serves


def _served_stages() -> dict[str, tuple[str, ...]]:
    """Tracepoint (category:name) or function → the stages whose hooks use it."""
    served: dict[str, list[str]] = {}
    for stage in STAGES:
        for point in stage.points:
            for hook in point.hooks:
                if hook.kind != HookKind.UPROBE and stage.name not in served.get(hook.target, []):
                    served.setdefault(hook.target, []).append(stage.name)
    return {target: tuple(names) for target, names in served.items()}


def _usable(kinds: list[tuple[str, bool]]) -> str:
    ok = [name for name, allowed in kinds if allowed]
    return "usable: " + ", ".join(ok) if ok else "not usable here: " + \
        ", ".join(f"{name} refused" for name, _ in kinds)


def find_probes(pattern: str, features: Features, tracepoints: bool = True,
                functions: bool = True) -> list[ProbeInfo]:
    """Like `bpftrace -lv PATTERN`; a pattern with ':' matches 'category:event' only."""
    btf = Btf.vmlinux()
    served = _served_stages()
    found: list[ProbeInfo] = []
    if tracepoints:
        fs = tracefs()
        for category, event in fs.events():
            full = f"{category}:{event}"
            if fnmatch.fnmatchcase(full if ":" in pattern else event, pattern) or \
                    fnmatch.fnmatchcase(full, pattern):
                typed = btf.has_tracepoint(event)
                usable = _usable([("tracepoint", features.tracepoint.ok),
                                  ("raw_tp", features.raw_tp.ok and typed),
                                  ("tp_btf", features.tp_btf.ok and typed)])
                found.append(ProbeInfo(f"tracepoint:{full}",
                                       tuple(f"{f};" for f in fs.fields(category, event)),
                                       usable, served.get(full, ())))
    if functions and ":" not in pattern:
        for func in btf.iter_kind(Kind.FUNC):
            if fnmatch.fnmatchcase(func.name, pattern):
                prototype = btf.function_prototype(func.name) or func.name
                usable = _usable([
                    ("fentry", features.fentry.ok and not symbols.why_not_fentry(func.name)),
                    ("kprobe", features.kprobe.ok and not symbols.why_not_function(func.name))])
                found.append(ProbeInfo(f"function:{func.name}", (prototype,), usable,
                                       served.get(func.name, ())))
    return found
