"""`udptrace syscalls` output: one line per syscall as perf trace prints it, and the summary.

Lines are built from whole batches: columns are converted once (``tolist``, each
distinct address formatted once), then one f-string per syscall.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

import numpy as np
from rich.table import Table

from udptrace.kernel.syscall_table import Signature, SyscallTable
from udptrace.report.distribution import Distribution
from udptrace.report.terminal import duration
from udptrace.trace.decode import address_strings, endpoint
from udptrace.trace.syscalls import FollowResult, InFlight, SyscallCount

MAX_ERRNO = 4095
INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)
NO_SIGNATURE = Signature(params=())


def _name(enum: type[socket.AddressFamily] | type[socket.SocketKind], value: int,
          prefix: str) -> str:
    try:
        return enum(value).name.removeprefix(prefix)
    except ValueError:
        return str(value)


def msg_flags(value: int) -> str:
    """``MSG_DONTWAIT|MSG_CONFIRM``, named by Python's socket module; unknown bits in hex."""
    names = [flag.name for flag in socket.MsgFlag if flag.value & value and flag.name]
    rest = value & ~sum(flag.value for flag in socket.MsgFlag if flag.value & value)
    return "|".join(names + ([hex(rest)] if rest else [])) or "0"


def return_text(ret: int) -> str:
    """``64``, ``-11 EAGAIN``, or an address in hex (mmap, brk)."""
    if -MAX_ERRNO <= ret < 0:
        name = errno.errorcode.get(-ret)
        return f"{ret} {name}" if name else str(ret)
    return hex(ret) if ret >= 1 << 32 else str(ret)


def _int(arg: int) -> int:
    """An ``int`` argument (a descriptor) from its 64-bit register: -1 arrives as 2**32 - 1."""
    low = arg & 0xFFFFFFFF
    return low - (1 << 32) if low >> 31 else low


class SyscallLines:
    """perf-trace-style lines: ``start (duration): tid name(arguments) = return``."""

    def __init__(self, table: SyscallTable, start_ns: int) -> None:
        self.table = table
        self.start_ns = start_ns

    def lines(self, records: np.ndarray) -> list[str]:
        if not len(records):
            return []
        local = address_strings(records["local_addr"])
        peer = address_strings(records["peer_addr"])
        called = address_strings(records["call_addr"])
        cols = {name: records[name].tolist() for name in (
            "start", "duration", "ret", "tid", "nr", "sock_family", "sock_type", "local_port",
            "peer_port", "call_family", "call_port")}
        args = records["args"].tolist()
        lines = []
        for i in range(len(records)):
            nr = cols["nr"][i]
            sig = self.table.signatures.get(nr, NO_SIGNATURE)
            family = cols["sock_family"][i]
            parts = []
            if sig.fd >= 0:
                fd = f"fd: {_int(args[i][sig.fd])}"
                if family:
                    sock = (f"{_name(socket.AddressFamily, family, 'AF_')}/"
                            f"{_name(socket.SocketKind, cols['sock_type'][i], 'SOCK_')}")
                    if family in INET_FAMILIES:
                        sock += " " + endpoint(local[i], cols["local_port"][i])
                        if cols["peer_port"][i]:
                            sock += " → " + endpoint(peer[i], cols["peer_port"][i])
                    fd += f"<{sock}>"
                parts.append(fd)
            if family:
                if sig.length >= 0:
                    parts.append(f"len: {args[i][sig.length]}")
                if sig.flags >= 0:
                    flags = args[i][sig.flags]
                    data_call = sig.length >= 0 or sig.msghdr >= 0
                    parts.append(f"flags: {msg_flags(flags) if data_call else hex(flags)}")
                call_family = cols["call_family"][i]
                if call_family in INET_FAMILIES:
                    parts.append(f"addr: {endpoint(called[i], cols['call_port'][i])}")
                elif call_family:
                    parts.append(f"addr: {_name(socket.AddressFamily, call_family, 'AF_')}")
            lines.append(
                f"{(cols['start'][i] - self.start_ns) / 1e6:10.3f} "
                f"({cols['duration'][i] / 1e6:8.3f} ms): {cols['tid'][i]} "
                f"{self.table.name(nr)}({', '.join(parts)}) = {return_text(cols['ret'][i])}\n")
        return lines

    def in_flight_lines(self, calls: Iterable[InFlight]) -> list[str]:
        """Syscalls entered and not returned when tracing ended, as perf trace shows them."""
        return [f"{(c.start - self.start_ns) / 1e6:10.3f} ({'?':>8}   ): {c.tid} "
                f"{self.table.name(c.nr)}() = ?\n" for c in calls]


def summary_table(counts: dict[int, SyscallCount], table: SyscallTable, title: str) -> Table:
    """Per syscall, busiest first: like `perf trace -s`, percentiles from the kernel's
    log-linear histograms (within 3.125 %), count, errors, total and max exact."""
    out = Table(title=title, title_justify="left", header_style="bold")
    out.add_column("syscall", no_wrap=True)
    for column in ("calls", "errors", "total", "min", "p50", "p99", "max"):
        out.add_column(column, justify="right", no_wrap=True)
    rows = sorted(((table.name(nr), c.errors, Distribution.from_hist(c.hist))
                   for nr, c in counts.items()), key=lambda row: -row[2].total)
    for name, errors, d in rows:
        out.add_row(name, str(d.count), str(errors), duration(d.total), duration(d.min),
                    duration(d.percentile(50)), duration(d.percentile(99)), duration(d.max))
    return out


def end_line(result: FollowResult, pid: int, comm: str, streamed: bool) -> str:
    """What was traced and how it ended; lost records are always named."""
    counters = result.counters
    how = ("the process ended" if result.process_ended else
           f"stopped after {result.elapsed_s:.1f} s")
    text = f"pid {pid} ({comm}): {counters['syscalls']} syscalls, {how}"
    if streamed:
        text += f"; {result.records} shown, {counters['lost']} lost"
        if counters["lost"]:
            text += " (the ring buffer was full: raise --ringbuf-kb)"
    if counters["unmatched"]:
        text += f"; {counters['unmatched']} returned from calls made before tracing began"
    return text
