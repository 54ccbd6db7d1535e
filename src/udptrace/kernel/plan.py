"""The hook plan: for every stage, which hook serves it on this kernel, or why none can."""

from __future__ import annotations

import platform
from collections.abc import Collection
from dataclasses import dataclass, replace

from udptrace.errors import KernelFeatureError
from udptrace.kernel import symbols
from udptrace.kernel.features import Features
from udptrace.kernel.tracefs import Tracefs, tracefs
from udptrace.loader.btf import Btf
from udptrace.stages import SEND, STAGES, SYSCALL_VIEW, Hook, HookKind, HookPoint, Stage, TracePath

# where bpf/ut_types.h lays out the registers kprobe programs read arguments from
KPROBE_MACHINES = frozenset({"x86_64", "aarch64"})


@dataclass(frozen=True)
class PointPlan:
    point: HookPoint
    hook: Hook | None
    why_not: str = ""  # set when hook is None


@dataclass(frozen=True)
class StagePlan:
    stage: Stage
    points: tuple[PointPlan, ...]

    @property
    def available(self) -> bool:
        return any(p.hook for p in self.points if not p.point.refines)

    @property
    def hooks(self) -> list[Hook]:
        """The hooks to attach: none when the stage cannot be reached here."""
        return [p.hook for p in self.points if p.hook] if self.available else []

    def describe(self) -> str:
        if not self.available:
            return f"unavailable: {self.points[0].why_not}"
        kinds = sorted({str(h.kind) for h in self.hooks})
        if self.stage.needs:
            return f"{'/'.join(kinds)}, with {self.stage.needs}"
        main = [p.hook for p in self.points if p.hook and not p.point.refines]
        detail = [p.hook for p in self.points if p.hook and p.point.refines]
        missing = [p.point.name for p in self.points if not p.hook]
        text = f"{'/'.join(kinds)}: " + ", ".join(h.tracepoint for h in main[:3])
        if len(main) > 3:
            text += f" (+{len(main) - 3})"
        if detail:
            text += "; detail from " + ", ".join(h.tracepoint for h in detail)
        if missing:
            text += f"; without {', '.join(missing)}"
        return text


def why_not(hook: Hook, features: Features, btf: Btf | None, fs: Tracefs | None) -> str:
    """Empty when this kernel allows the hook, else the reason it does not."""
    category, _, name = hook.target.rpartition(":")
    has_btf_tp = btf is not None and btf.has_tracepoint(name)
    has_event = fs is not None and fs.has_event(category, name)
    match hook.kind:
        case HookKind.TP_BTF:
            if not features.tp_btf.ok:
                return f"tp_btf refused ({features.tp_btf.detail})"
            return "" if has_btf_tp else f"no tracepoint {name} in this kernel"
        case HookKind.RAW_TP:
            if not features.raw_tp.ok:
                return f"raw_tp refused ({features.raw_tp.detail})"
            return "" if has_btf_tp or has_event else f"no tracepoint {name} in this kernel"
        case HookKind.TRACEPOINT:
            if not features.tracepoint.ok:
                return f"tracepoints refused ({features.tracepoint.detail})"
            return "" if has_event else f"no tracepoint {hook.target} in this kernel"
        case HookKind.FENTRY:
            if not features.fentry.ok:
                return f"fentry refused ({features.fentry.detail})"
            if not (btf and btf.has_function(name)):
                return f"no BTF for function {name}"
            return symbols.why_not_fentry(name)
        case HookKind.KPROBE:
            if not features.kprobe.ok:
                return f"kprobes refused ({features.kprobe.detail})"
            if platform.machine() not in KPROBE_MACHINES:
                return f"no kprobe argument layout for {platform.machine()} yet"
            return symbols.why_not_function(name)
        case HookKind.UPROBE:
            return "" if features.uprobe.ok else f"uprobes refused ({features.uprobe.detail})"
    return f"unknown hook kind {hook.kind}"


def plan_stage(stage: Stage, features: Features, btf: Btf | None,
               fs: Tracefs | None) -> StagePlan:
    """Each hook point of the stage served by its first hook this kernel allows."""
    points = []
    for point in stage.points:
        reasons = []
        # the fallbacks are looked at only when needed: their checks cost (a fentry's
        # reads all of kallsyms)
        for hook in point.hooks:
            if not (reason := why_not(hook, features, btf, fs)):
                points.append(PointPlan(point, hook))
                break
            reasons.append(reason)
        else:
            points.append(PointPlan(point, None, "; ".join(reasons)))
    return StagePlan(stage, tuple(points))


def plan_stages(features: Features, btf: Btf | None, fs: Tracefs | None) -> list[StagePlan]:
    return [plan_stage(stage, features, btf, fs) for stage in STAGES]


def missing_core(plans: list[StagePlan], paths: frozenset[TracePath] = SEND) -> list[str]:
    """Core stages of these paths this kernel cannot trace (empty: the paths are traceable)."""
    return [p.stage.name for p in plans
            if p.stage.core and p.stage.paths & paths and not p.available]


def _btf_and_tracefs(features: Features) -> tuple[Btf | None, Tracefs | None]:
    """What hooks are looked up in; without BTF or tracefs the hooks needing them are out."""
    return (Btf.vmlinux() if features.btf.ok else None,
            tracefs() if features.tracefs.ok else None)


def plans_for(features: Features) -> list[StagePlan]:
    """The plan on this kernel."""
    return plan_stages(features, *_btf_and_tracefs(features))


def syscall_view_plan(features: Features, programs: Collection[str]) -> StagePlan:
    """The hooks of `udptrace syscalls`, among those with a program in the object (it
    builds the register-based ones only for architectures whose registers it knows)."""
    points = tuple(replace(p, hooks=tuple(h for h in p.hooks if h.program in programs))
                   for p in SYSCALL_VIEW.points)
    return plan_stage(replace(SYSCALL_VIEW, points=points), features,
                      *_btf_and_tracefs(features))


def plans_to_trace(features: Features, paths: frozenset[TracePath] = SEND) -> list[StagePlan]:
    """The plan for tracing these paths, or one actionable error when one is out of reach."""
    for probe in (features.btf, features.tracefs):
        if not probe.ok:
            raise KernelFeatureError(f"{probe.detail} (see 'udptrace check')")
    plans = plans_for(features)
    missing = missing_core(plans, paths)
    if missing:
        which = " and ".join(sorted(paths))
        raise KernelFeatureError(
            f"this kernel cannot trace the {which} path ({', '.join(missing)} unavailable): "
            "run 'udptrace check' for the reasons"
        )
    return [p for p in plans if p.stage.paths & paths]
