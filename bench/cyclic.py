"""A 1 kHz cyclic C publisher (cyclic.c), untraced and traced: wake-up lateness and CPU/cycle.

The cost a user of udptrace pays: not a flood's rate but what tracing adds to each cycle
of a real-time publisher. The modes run in interleaved rounds (each round in a rotated
order), so a shared machine's load falls on all of them alike; the untraced rounds' own
spread is the yardstick for the traced ones' lateness.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from processes import BenchError, Processes, fields, read_line, wait_for_text

from udptrace.netns import VethPair

BENCH = Path(__file__).resolve().parent
PORT = 9
PERIOD_US = 1000
# tracer arguments after `udptrace`; None: untraced. OUT is replaced by a file in /dev/shm.
MODES: dict[str, tuple[str, ...] | None] = {
    "untraced": None,
    "default": ("trace",),
    "wakeup": ("trace", "--wakeup"),
    "json": ("trace", "--json", "OUT"),
    "record": ("record", "-o", "OUT"),
}
SETTLE_S = 1.0  # after the tracer says it attached: its start-up's own work is not a cycle's
TARGET_CPU_NS = 2000  # added CPU per cycle


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cyclic-rounds", type=int, default=3,
                   help="cyclic: rounds of each of its modes (default 3)")
    p.add_argument("--cyclic-cycles", type=int, default=3000,
                   help="cyclic: cycles of 1 ms per trial (default 3000)")


def trial(binary: Path, net: VethPair, tracer: tuple[str, ...] | None, cycles: int,
          scratch: Path) -> dict:
    procs = Processes()
    try:
        pub = procs.start(net.command(net.ns_a, [str(binary), net.addr_b, str(PORT), str(cycles),
                                                 str(PERIOD_US)]), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
        pid = fields(read_line(pub, "ready"))["pid"]
        if tracer is not None:
            output = Path(tempfile.mkdtemp(dir=scratch)) / "out"  # a fresh path per trial
            argv = [str(output) if a == "OUT" else a for a in tracer]
            out, err = scratch / "tracer.out", scratch / "tracer.err"
            with out.open("w") as o, err.open("w") as e:
                traced = procs.start([sys.executable, "-m", "udptrace", argv[0], "-p", str(pid),
                                      *argv[1:]], stdout=o, stderr=e)
            wait_for_text(traced, out, err, "UDP sends")
            time.sleep(SETTLE_S)
        pub.stdin.write("go\n")
        pub.stdin.flush()
        summary = fields(read_line(pub, "cycles="))
        late = np.array(pub.stdout.readline().split(), np.int64)
        pub.wait(10)
        if tracer is not None:
            procs.stop(traced, signal.SIGINT)
        if len(late) != cycles:
            raise BenchError(f"cyclic printed {len(late)} lateness values of {cycles}")
        return {"cpu_ns_per_cycle": summary["cpu_ns"] / cycles,
                "late_p50_ns": float(np.percentile(late, 50)),
                "late_p99_ns": float(np.percentile(late, 99)), "late_max_ns": int(late.max())}
    finally:
        procs.stop_all()


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="udptrace-cyclic-", dir="/dev/shm"))
    binary = work / "cyclic"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(BENCH / "cyclic.c")],
                   check=True)
    names = list(MODES)
    trials: dict[str, list[dict]] = {n: [] for n in names}
    with VethPair() as net:
        for round_ in range(args.cyclic_rounds):
            at = round_ % len(names)
            for name in names[at:] + names[:at]:
                trials[name].append(trial(binary, net, MODES[name], args.cyclic_cycles, work))
                t = trials[name][-1]
                print(f"cyclic round {round_ + 1}/{args.cyclic_rounds} {name:9} "
                      f"{t['cpu_ns_per_cycle']:8.0f} ns CPU/cycle, lateness p99 "
                      f"{t['late_p99_ns'] / 1e3:6.1f} µs", flush=True)
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return {"period_us": PERIOD_US, "cycles": args.cyclic_cycles, "rounds": args.cyclic_rounds,
            "publisher": "bench/cyclic.c: SCHED_FIFO 1, mlockall, clock_nanosleep "
                         "TIMER_ABSTIME, one 64-byte sendto per cycle over a veth pair",
            "modes": {n: {"tracer": " ".join(MODES[n] or ()) or None, "trials": trials[n],
                          **medians(trials[n])} for n in names}}


def medians(trials: list[dict]) -> dict:
    return {f"median_{k}": float(np.median([t[k] for t in trials])) for k in trials[0]} | {
        "spread_late_p99_ns": [min(t["late_p99_ns"] for t in trials),
                               max(t["late_p99_ns"] for t in trials)]}


def lines(figures: dict) -> list[str]:
    base = figures["modes"]["untraced"]
    out = [f"cyclic publisher, {figures['period_us']} µs period, {figures['cycles']} cycles x "
           f"{figures['rounds']} rounds (medians; lateness = woken - asked for):"]
    for name, m in figures["modes"].items():
        added = m["median_cpu_ns_per_cycle"] - base["median_cpu_ns_per_cycle"]
        out.append(f"  {name:9} CPU/cycle {m['median_cpu_ns_per_cycle'] / 1e3:6.2f} µs "
                   f"({added / 1e3:+6.2f})  lateness p50 {m['median_late_p50_ns'] / 1e3:6.1f} "
                   f"p99 {m['median_late_p99_ns'] / 1e3:6.1f} max "
                   f"{m['median_late_max_ns'] / 1e3:7.1f} µs")
    return out


def targets(figures: dict) -> list[tuple[str, bool, str]]:
    base = figures["modes"]["untraced"]
    low, high = base["spread_late_p99_ns"]
    checks = []
    for name, m in figures["modes"].items():
        if name == "untraced":
            continue
        added = m["median_cpu_ns_per_cycle"] - base["median_cpu_ns_per_cycle"]
        checks.append((f"cyclic {name}: ≤ 2 µs CPU/cycle added", added <= TARGET_CPU_NS,
                       f"{added / 1e3:+.2f} µs"))
        p99 = m["median_late_p99_ns"]
        checks.append((f"cyclic {name}: p99 lateness within untraced's spread",
                       p99 <= high, f"{p99 / 1e3:.1f} µs vs {low / 1e3:.1f} to {high / 1e3:.1f}"))
    return checks
