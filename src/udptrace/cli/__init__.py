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


def parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: with only its subcommand when it names one, since importing
    every subcommand (and all they need) took 0.2 s of the traced process's first sends."""
    top = argparse.ArgumentParser(
        prog="udptrace",
        description="Follow every UDP packet through the Linux kernel with eBPF: "
                    "per-stage latency from sendto() to the wire, jitter, and drops.",
    )
    top.add_argument("--version", action=VersionAction, nargs=0,
                     help="show the version, the libbpf and the BPF objects in use, and exit")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    args = sys.argv[1:] if argv is None else argv
    for name in args[:1] if args[:1] and args[0] in SUBCOMMANDS else SUBCOMMANDS:
        module = __import__(f"udptrace.cli.{name.replace('-', '_')}", fromlist=["register"])
        module.register(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser(argv).parse_args(argv)
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
