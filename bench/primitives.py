"""What each step of a udptrace hook costs on this machine: the parts of the floor.

    sudo .venv/bin/python bench/primitives.py [--calls 200000]

Each program of primitives.bpf.c does one step (read the clock, a probe read, a
map lookup, ...) REPEAT times on the getppid tracepoint; this process calls
getppid and reads each program's run time (kernel.bpf_stats_enabled, through
bpftool: bpfstats.py), one program attached at a time. A step costs its
program's time per run less the empty program's, over REPEAT. The empty
program's own time is mostly the timing's (two clock reads around every run).
Best of five batches per step. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import bpfstats
from rich.console import Console
from rich.table import Table

from udptrace.loader.bpf_object import BpfObject

BENCH = Path(__file__).resolve().parent
REPEAT = 8  # as in primitives.bpf.c
BATCHES = 5
STEPS = {
    "ut_p_empty": "an empty program (the timing's own cost)",
    "ut_p_clock": "bpf_ktime_get_ns(): the time of a stage",
    "ut_p_pid_tgid": "bpf_get_current_pid_tgid()",
    "ut_p_probe_read": "bpf_probe_read_kernel() of one 8-byte field (raw_tp reads so)",
    "ut_p_typed_load": "the same field by a plain load (tp_btf), with the task helper",
    "ut_p_hash_lookup": "hash map lookup (the pid filter of several -p)",
    "ut_p_lru_lookup": "LRU hash lookup (a thread's state, a followed packet)",
    "ut_p_task_storage": "task-local storage lookup, with the task helper",
    "ut_p_percpu_lookup": "per-CPU array lookup (this CPU's packet slot, histograms)",
    "ut_p_comm": "bpf_get_current_comm() (records only)",
}


def run_stats(name: str) -> tuple[int, int]:
    """The run time and count so far of this process's program `name`."""
    (program,) = (p for p in bpfstats.held(os.getpid()).values() if p.name == name)
    return program.run_time_ns, program.run_cnt


def measure(obj: BpfObject, calls: int) -> dict[str, float]:
    getppid = ctypes.CDLL(None).getppid
    per_run = {}
    for name, prog in obj.programs.items():
        link = prog.attach()
        best = float("inf")
        for _ in range(BATCHES):
            ns0, runs0 = run_stats(name)
            for _ in range(calls // BATCHES):
                getppid()
            ns1, runs1 = run_stats(name)
            best = min(best, (ns1 - ns0) / max(runs1 - runs0, 1))
        link.destroy()
        per_run[name] = best
    return per_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=200_000, help="getppid calls per step")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: sudo .venv/bin/python bench/primitives.py", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="udptrace-bench-") as work:
        elf = Path(work) / "primitives.bpf.o"
        subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-Wall", "-Werror", "-c",
                        str(BENCH / "primitives.bpf.c"), "-o", str(elf)], check=True)
        with bpfstats.enabled(True), BpfObject(elf.read_bytes(), "primitives") as obj:
            obj.load()
            for key in (0, 1):
                obj.maps["hash"].update(key.to_bytes(4, "little"), bytes(8))
                obj.maps["lru"].update(key.to_bytes(4, "little"),
                                       bytes(obj.maps["lru"].value_size))
            per_run = measure(obj, args.calls)
    table = Table(title=f"a step of a hook, on {os.uname().release} (best of {BATCHES} batches)")
    for column in ("step", "ns"):
        table.add_column(column, justify="left" if column == "step" else "right")
    empty = per_run["ut_p_empty"]
    for name, what in STEPS.items():
        cost = empty if name == "ut_p_empty" else (per_run[name] - empty) / REPEAT
        table.add_row(what, f"{cost:.1f}")
    Console(width=100).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
