"""The `udptrace` command: one module per subcommand, wired here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from udptrace.errors import UdptraceError

SUBCOMMANDS = ("check", "list", "trace", "syscalls", "publish", "subscribe", "demo",
               "record", "report", "join", "exporter")


class VersionAction(argparse.Action):
    """--version opens libbpf to say which one it is: only when asked."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from udptrace.provenance import describe

        print(describe())
        parser.exit()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="udptrace",
        description="Follow every UDP packet through the Linux kernel with eBPF: "
                    "per-stage latency from sendto() to the wire, jitter, and drops.",
    )
    top.add_argument("--version", action=VersionAction, nargs=0,
                     help="show the version, the libbpf and the BPF objects in use, and exit")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = __import__(f"udptrace.cli.{name.replace('-', '_')}", fromlist=["register"])
        module.register(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UdptraceError as e:
        first, *detail = str(e).splitlines() or [type(e).__name__]
        print(f"udptrace: {first}", file=sys.stderr)
        if detail and getattr(args, "verbose", False):
            print("\n".join(detail), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def help_formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)
