"""`udptrace check`: what this kernel lets udptrace trace, and with which hooks."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from udptrace import bpf, provenance
from udptrace.cli import help_formatter
from udptrace.errors import require_root
from udptrace.kernel.features import detect
from udptrace.kernel.plan import StagePlan, missing_core, plans_for, syscall_view_plan
from udptrace.loader.bpf_object import BpfObject
from udptrace.report.terminal import report_console
from udptrace.stages import RECEIVE
from udptrace.trace.options import parse_stages, stage_chosen

EXAMPLES = """\
examples:
  udptrace check           features and the hook chosen for every stage
  udptrace check --json    the same as one JSON object

Exit status 0 when the core send path (syscall, device queue, driver transmit,
skb free) can be traced here, 1 otherwise.
"""

FEATURE_TITLES = {
    "bpf_syscall": "BPF syscall", "privileges": "privileges", "memlock": "memlock",
    "btf": "vmlinux BTF", "tracefs": "tracefs", "ringbuf": "ring buffer",
    "tracepoint": "tracepoint", "raw_tp": "raw_tp", "tp_btf": "tp_btf", "fentry": "fentry",
    "kprobe": "kprobe", "uprobe": "uprobe", "lockdown": "lockdown off",
    "preempt_rt": "PREEMPT_RT",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="kernel features and the hook for every stage",
                       description=__doc__, epilog=EXAMPLES, formatter_class=help_formatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--stages", type=parse_stages, default=(), metavar="LIST",
                   help="mark the optional stages 'trace --stages LIST' would leave out")
    p.set_defaults(func=main)


def _left_out(plan: StagePlan, chosen: tuple[str, ...]) -> bool:
    return not stage_chosen(plan.stage, chosen)


def main(args: argparse.Namespace) -> int:
    require_root()
    features = detect(cached=False)
    plans = plans_for(features)
    with BpfObject(bpf.object_bytes("ut_syscalls"), "ut_syscalls") as obj:
        view = syscall_view_plan(features, obj.programs)
    view_ok = all(point.hook for point in view.points)
    missing = missing_core(plans)
    missing_rx = missing_core(plans, RECEIVE)
    verdict = ("the core send path is traceable" if not missing else
               f"cannot trace the send path: {', '.join(missing)} unavailable")
    verdict += ("; the receive path too" if not missing_rx else
                f"; cannot trace the receive path: {', '.join(missing_rx)} unavailable")
    if args.json:
        print(json.dumps({
            "kernel": features.kernel,
            **provenance.as_dict(),
            "features": {k: v for k, v in features.as_dict().items() if k != "kernel"},
            "stages": {p.stage.name: {
                "available": p.available,
                "hooks": [str(h) for h in p.hooks],
                "unavailable": {pp.point.name: pp.why_not for pp in p.points if not pp.hook},
                "core": p.stage.core,
                "left_out": _left_out(p, args.stages),
                "paths": sorted(p.stage.paths),
            } for p in plans},
            "syscall_view": {"available": view_ok,
                             "hooks": [str(h) for h in view.hooks]},
            "send_path_traceable": not missing,
            "receive_path_traceable": not missing_rx,
            "verdict": verdict,
        }, indent=2))
        return 0 if not missing else 1
    console = report_console()
    console.print(provenance.describe(), highlight=False, markup=False)
    table = Table(title=f"kernel {features.kernel}", title_justify="left", header_style="bold")
    table.add_column("feature")
    table.add_column("", justify="center")
    table.add_column("detail")
    for key, title in FEATURE_TITLES.items():
        probe = getattr(features, key)
        table.add_row(title, "[green]yes[/]" if probe.ok else "[red]no[/]", probe.detail)
    console.print(table)
    stages = Table(title="stages", title_justify="left", header_style="bold")
    stages.add_column("stage")
    stages.add_column("path")
    stages.add_column("hook on this kernel")
    for plan in plans:
        text = plan.describe()
        style = None if plan.available else ("bold red" if plan.stage.core else "yellow")
        if _left_out(plan, args.stages):
            text, style = f"left out (--stages); {text}", "dim"
        stages.add_row(plan.stage.name + (" *" if plan.stage.core else ""),
                       "/".join(sorted(plan.stage.paths)), text, style=style)
    stages.add_row("(syscalls)", "", view.describe(), style=None if view_ok else "yellow")
    console.print(stages)
    console.print("* core stage of its path. (syscalls): what 'udptrace syscalls' hooks. "
                  + verdict)
    return 0 if not missing else 1
