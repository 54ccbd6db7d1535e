"""What the flight recorder costs a 1 kHz cyclic publisher, beside histogram mode.

    sudo .venv/bin/python bench/flight.py [--seconds 10] [--rounds 3]

In rounds, the test suite's cyclic publisher (tests/programs/cyclic_publisher.c, 1 ms
period, SCHED_FIFO 1, pinned to one CPU) sends from one namespace of a veth pair while
`udptrace trace -p PID --wakeup` follows it, alternately with histograms only and as a
flight recorder whose trigger is never crossed (`--trigger 'cycle>1s' --snapshots DIR`).
Per run it reads the tracer's CPU time (/proc/PID/stat) and the kernel's cycle
percentiles from the `--json` summary, and prints the medians and their ratios (each run
beside the other mode of its round). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from udptrace.netns import VethPair

ROOT = Path(__file__).resolve().parent.parent
PUBLISHER = ROOT / "tests" / "programs" / "cyclic_publisher.c"
MODES = {"histogram": (), "flight": ("--trigger", "cycle>1s", "--snapshots")}


def cpu_seconds(pid: int) -> float:
    """User and system time of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def trial(net: VethPair, binary: Path, mode: str, seconds: float, work: Path) -> dict:
    cycles = int(seconds * 1000)
    pub = net.popen(net.ns_a, [str(binary), net.addr_b, "4840", str(cycles), "1000"],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    os.sched_setaffinity(pub.pid, {1})
    os.sched_setscheduler(pub.pid, os.SCHED_FIFO, os.sched_param(1))
    summary = work / f"{mode}.jsonl"
    extra = [*MODES[mode], str(work / f"snapshots-{time.monotonic_ns()}")] if MODES[mode] else []
    tracer = subprocess.Popen([sys.executable, "-m", "udptrace", "trace", "-p", str(pub.pid),
                               "--wakeup", "-d", str(seconds + 30), "--no-hist", "--json",
                               str(summary), *extra], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert tracer.stdout is not None and tracer.stdout.readline().startswith("tracing")
        before = cpu_seconds(tracer.pid)
        pub.communicate(b"go\n", timeout=seconds + 30)
        used = cpu_seconds(tracer.pid) - before
        tracer.send_signal(2)
        tracer.communicate(timeout=60)
    finally:
        for p in (pub, tracer):
            if p.poll() is None:
                p.kill()
                p.wait()
    last = json.loads(summary.read_text().splitlines()[-1])
    cycle = last["cycles"][0]["parts"]["cycle"]
    return {"tracer_cpu_share": used / seconds, "cycle_p99_ns": cycle["p99_ns"],
            "cycle_max_ns": cycle["max_ns"], "cycles": cycle["count"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="udptrace-flight-"))
    try:
        binary = work / "cyclic_publisher"
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(PUBLISHER)], check=True)
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        with VethPair() as net:
            for r in range(args.rounds):
                order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
                for mode in order:
                    runs[mode].append(trial(net, binary, mode, args.seconds, work))
                    print(f"round {r + 1}/{args.rounds} {mode:10} {runs[mode][-1]}",
                          flush=True)
        medians = {m: {k: statistics.median(run[k] for run in rs) for k in rs[0]}
                   for m, rs in runs.items()}
        for mode, values in medians.items():
            print(f"{mode:10} tracer CPU {values['tracer_cpu_share']:.2%}, cycle p99 "
                  f"{values['cycle_p99_ns'] / 1000:.1f} µs, max "
                  f"{values['cycle_max_ns'] / 1000:.1f} µs")
        share = (medians["flight"]["tracer_cpu_share"]
                 / max(medians["histogram"]["tracer_cpu_share"], 1e-9))
        p99 = medians["flight"]["cycle_p99_ns"] / medians["histogram"]["cycle_p99_ns"]
        print(f"flight / histogram: tracer CPU {share:.2f}x, cycle p99 {p99:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
