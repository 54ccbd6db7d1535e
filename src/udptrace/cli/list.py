"""`udptrace list`: tracepoints and kernel functions matching a glob, like `bpftrace -lv`."""

from __future__ import annotations

import argparse

from udptrace.cli import help_formatter
from udptrace.errors import UsageError, require_root
from udptrace.kernel.features import detect
from udptrace.kernel.probes import find_probes
from udptrace.report.terminal import report_console

EXAMPLES = """\
examples:
  udptrace list '*sendto*'          the sendto tracepoints and __sys_sendto's prototype
  udptrace list 'net:*'             every tracepoint of the net category
  udptrace list 'udp_*' --functions kernel functions only
  udptrace list 'ip_send_skb'       a function a stage hooks: which one, and how here
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="tracepoints and kernel functions matching a glob",
                       description=__doc__, epilog=EXAMPLES, formatter_class=help_formatter)
    p.add_argument("glob", nargs="?", default="*", help="pattern, e.g. '*sendto*' or 'net:*'")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--tracepoints", action="store_true", help="tracepoints only")
    kind.add_argument("--functions", action="store_true", help="kernel functions only")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    require_root()
    probes = find_probes(args.glob, detect(), tracepoints=not args.functions,
                         functions=not args.tracepoints)
    if not probes:
        raise UsageError(
            f"nothing matches '{args.glob}': try a wider glob such as '*{args.glob.strip('*')}*'"
        )
    console = report_console()
    for probe in probes:
        serves = f"; stage {', '.join(probe.stages)}" if probe.stages else ""
        console.print(f"{probe.name}  [dim]({probe.usable}{serves})[/]", highlight=False)
        for detail in probe.details:
            console.print(f"    {detail}", highlight=False, markup=False)
    return 0
