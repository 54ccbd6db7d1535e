"""The modes of the flood benchmark: what sends, and what traces it.

A mode is one `Mode(...)` in MODES: its sender (how the datagrams are sent), its tracer
(nothing, the empty hooks, `udptrace trace` with some options, bpftrace) and the mode whose
rate it is divided by in each round. trial.py runs any of them the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import accounting
from processes import STOP_TIMEOUT_S

BENCH = Path(__file__).resolve().parent
PORT = 9
SENDER_CPU, RECEIVER_CPU = "0", "1"
MAX_DATAGRAMS = 100_000_000  # a bound besides --seconds; never reached on this hardware


@dataclass(frozen=True)
class Setting:
    """What a sender or tracer command is made from in one trial."""

    flood: Path  # the udp_flood binary
    address: str  # the receiver's, in the peer namespace
    size: int  # UDP payload bytes
    seconds: float  # sending time
    bound_s: float  # the receiver (and an idle traced process) ends by then
    threads: int  # the threads sender's
    count: int  # datagrams the threads sender sends in all
    output: Path  # where a streaming tracer writes (in memory: this measures udptrace, not a disk)


@dataclass(frozen=True)
class Sender:
    """A process that prints `ready pid=N`, sends on a `go` line, and ends with
    `sent=N errors=N elapsed_ns=N utime_ns=N stime_ns=N`."""

    argv: Callable[[Setting], list[str]]
    # on SENDER_CPU, its tracer beside the receiver; else every process placed by the scheduler
    pinned: bool


def _flood(s: Setting) -> list[str]:
    return [str(s.flood), "-d", s.address, "-p", str(PORT), "-s", str(s.size), "-w"]


FLOOD = Sender(lambda s: ["taskset", "-c", SENDER_CPU, *_flood(s), "-n", str(MAX_DATAGRAMS),
                          "-t", str(s.seconds)], pinned=True)
# several threads on every CPU; ends after its count
THREADS = Sender(lambda s: [*_flood(s), "-T", str(s.threads), "-n", str(s.count),
                            "-t", str(STOP_TIMEOUT_S)], pinned=False)


Accounting = Callable[[Path, int], dict]  # the output and the datagrams sent → its accounts


@dataclass(frozen=True)
class Udptrace:
    """`udptrace COMMAND -p PID ARGS`, stopped with SIGINT. With `output` (the option naming
    a file), it writes every record there, and `accounting` must find every datagram in it."""

    args: tuple[str, ...] = ()
    command: str = "trace"
    output: str | None = None
    accounting: Accounting | None = None
    attached: str = "tracing UDP sends"  # printed once its programs are attached

    def argv(self, pid: int, s: Setting) -> list[str]:
        output = [self.output, str(s.output)] if self.output else []
        return [sys.executable, "-m", "udptrace", self.command, "-p", str(pid),
                "-d", str(s.seconds + STOP_TIMEOUT_S), *self.args, *output]  # -d: a bound


JSON = Udptrace(output="--json", accounting=accounting.json_lines)


@dataclass(frozen=True)
class Bpftrace:
    script: Path
    accounting: Accounting | None = None
    attached: str = "attached"  # its BEGIN, which bpftrace fires once every probe is attached

    def argv(self, pid: int, s: Setting) -> list[str]:
        return ["bpftrace", str(self.script), str(pid)]


class EmptyHooks:
    """Every hook udptrace attaches by default with empty programs (empty_hooks.bpf.c),
    attached by the bench's own process."""

    accounting: Accounting | None = None


EMPTY_HOOKS = EmptyHooks()
Tracer = Udptrace | Bpftrace | EmptyHooks


@dataclass(frozen=True)
class Mode:
    name: str
    what: str
    tracer: Tracer | None = None  # None: nothing attached
    sender: Sender = FLOOD
    reference: str = "untraced"  # its rate is divided by this mode's in the same round
    on_floor: bool = False  # and by the floor's (empty-hooks) too
    traces_idle: bool = False  # the tracer follows an idle process, not the sender


FLOOR = "empty-hooks"
MODES = (
    Mode("untraced", "nothing attached: the reference rate"),
    Mode(FLOOR, "every hook udptrace attaches by default, with empty programs "
         "(empty_hooks.bpf.c): the floor under the traced modes", EMPTY_HOOKS),
    Mode("histogram", "udptrace trace -p PID (in-kernel aggregation only)", Udptrace(),
         on_floor=True),
    Mode("core", "udptrace trace -p PID --stages core (the fewest hooks)",
         Udptrace(("--stages", "core")), on_floor=True),
    # the scheduler hooks run at every context switch of the machine
    Mode("wakeup", "udptrace trace -p PID --wakeup (the cycle view's scheduler hooks)",
         Udptrace(("--wakeup",)), on_floor=True),
    # the flight recorder streams every record and the sending CPU's scheduler events, held
    # in user space; a threshold never crossed, so this is its steady state
    Mode("flight", "udptrace trace -p PID --trigger 'total>1s' --snapshots DIR (flight "
         "recorder, never triggered)",
         Udptrace(("--trigger", "total>1s"), output="--snapshots"), on_floor=True),
    Mode("json", "udptrace trace -p PID --json FILE (plus records per packet)", JSON,
         on_floor=True),
    Mode("record", "udptrace record -p PID -o RUN.parquet (the same records, as Parquet parts, "
         "with each datagram's first 128 frame bytes)",
         Udptrace(command="record", output="-o", accounting=accounting.recording,
                  attached="recording UDP sends"), on_floor=True),
    # what the frame bytes pcapng needs cost a record: the ring carries 712 bytes, not 452
    Mode("record-snaplen0", "udptrace record -p PID -o RUN.parquet --snaplen 0 (no frame bytes)",
         Udptrace(("--snaplen", "0"), command="record", output="-o",
                  accounting=accounting.recording, attached="recording UDP sends"),
         on_floor=True),
    Mode("bpftrace", "bpftrace bench/seed.bt PID (the seed's logic, tracepoints)",
         Bpftrace(BENCH / "seed.bt"), on_floor=True),
    Mode("collateral", "udptrace trace -p IDLE: the flood is not the traced process",
         Udptrace(), on_floor=True, traces_idle=True),
    Mode("multi-untraced", "THREADS threads send COUNT datagrams together, on every CPU",
         sender=THREADS, reference="multi-untraced"),
    Mode("multi-json", "the same, traced with udptrace trace -p PID --json FILE", JSON,
         sender=THREADS, reference="multi-untraced"),
)
BY_NAME = {m.name: m for m in MODES}
