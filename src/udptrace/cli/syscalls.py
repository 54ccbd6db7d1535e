"""`udptrace syscalls`: every syscall of one process and its threads, like `perf trace -p`."""

from __future__ import annotations

import argparse
import os
import sys
import threading

from udptrace.cli import help_formatter
from udptrace.report.output import OutputError, write_or_fail
from udptrace.report.syscalls import SyscallLines, end_line, summary_table
from udptrace.report.terminal import report_console
from udptrace.trace.options import DEFAULT_RINGBUF_BYTES
from udptrace.trace.syscalls import SyscallOptions, SyscallSession, follow

EXAMPLES = """\
examples:
  udptrace syscalls -p 4242                  each syscall as it returns, until the process
                                             ends or Ctrl-C
  udptrace syscalls -p 4242 | grep sendto    lines are written one by one, as they come
  udptrace syscalls -p 4242 -d 10 --summary  calls, errors and latency per syscall, like
                                             perf trace -s

A line: start (ms since tracing began), duration, thread id, the syscall with its
descriptor's socket (family/type, local → peer), length, flags and the address given
in the call, then its return value or -errno and its name.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("syscalls", help="every syscall of one process, like perf trace -p",
                       description=__doc__, epilog=EXAMPLES, formatter_class=help_formatter)
    p.add_argument("-p", "--pid", type=int, required=True, help="the process (all its threads)")
    p.add_argument("-d", "--duration", type=float, default=None, metavar="SECONDS",
                   help="stop after this long (default: when the process ends, or Ctrl-C)")
    p.add_argument("--summary", action="store_true",
                   help="no lines: a table per syscall at the end, counted in the kernel")
    p.add_argument("--ringbuf-kb", type=int, default=DEFAULT_RINGBUF_BYTES // 1024,
                   help="per-syscall ring buffer size (power of two)")
    p.add_argument("-v", "--verbose", action="store_true", help="show verifier logs on errors")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    options = SyscallOptions(args.pid, stream=not args.summary,
                             ringbuf_bytes=args.ringbuf_kb * 1024)
    stop = threading.Event()
    failure: list[OutputError] = []
    with SyscallSession(options) as session:
        lines = SyscallLines(session.table, session.start_ns)

        def write(text: list[str]) -> None:
            if failure:
                return
            try:
                for line in text:  # flushed one by one: `| grep` sees each as it comes
                    write_or_fail(sys.stdout, line, "syscalls")
            except OutputError as e:
                failure.append(e)
                stop.set()

        until = f"for {args.duration:g} s" if args.duration else "until it ends or Ctrl-C"
        print(f"tracing syscalls of pid {args.pid} ({session.comm}) {until}", file=sys.stderr,
              flush=True)
        result = follow(session, args.duration, stop, lambda r: write(lines.lines(r)))
        if args.summary:
            title = (f"syscalls of pid {args.pid} ({session.comm}) in "
                     f"{result.elapsed_s:.2f} s")
            report_console().print(summary_table(result.counts, session.table, title))
        else:
            write(lines.in_flight_lines(result.in_flight))
        print(end_line(result, args.pid, session.comm, options.stream), file=sys.stderr)
    if failure:
        print(f"udptrace: {failure[0]}", file=sys.stderr)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more can reach it
        return 1
    return 0
