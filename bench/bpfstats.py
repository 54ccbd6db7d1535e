"""What a process's BPF programs cost: kernel.bpf_stats_enabled, and bpftool's run time and
run count of each program the process holds (tests/bpf_programs.py, shared with the tests)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

# the helper lives with the tests, which use it too
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import bpf_programs

BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
PER_DATAGRAM = 0.5  # programs running at least this often per datagram are the per-datagram hooks

Program = bpf_programs.Program


@contextlib.contextmanager
def enabled(on: bool) -> Iterator[None]:
    """kernel.bpf_stats_enabled on or off, put back as it was. The timing itself costs every
    program run (two clock reads), so rates are measured with it off."""
    before = BPF_STATS.read_text().strip()
    BPF_STATS.write_text("1\n" if on else "0\n")
    try:
        yield
    finally:
        BPF_STATS.write_text(before + "\n")


def held(pid: int) -> dict[int, Program]:
    """The programs `pid` holds, by id, with their run time so far."""
    return {p.id: p for p in bpf_programs.of_process(pid)}


def since(pid: int, before: dict[int, Program]) -> list[dict]:
    """Each program `pid` holds, with its run time and run count since `before`."""
    stats = []
    for p in held(pid).values():
        start = before.get(p.id)
        stats.append({"id": p.id, "name": p.name,
                      "run_time_ns": p.run_time_ns - (start.run_time_ns if start else 0),
                      "run_cnt": p.run_cnt - (start.run_cnt if start else 0)})
    return stats


def cost(programs: list[dict], sent: int) -> dict[str, float]:
    """BPF ns per datagram (every program), and per run of the per-datagram hooks (those
    running about once per datagram or more; a write() elsewhere on the machine is not one)."""
    hooks = [p for p in programs if p["run_cnt"] >= PER_DATAGRAM * sent]
    runs = sum(p["run_cnt"] for p in hooks)
    return {"bpf_ns_per_packet": sum(p["run_time_ns"] for p in programs) / max(sent, 1),
            "hook_runs_per_packet": runs / max(sent, 1),
            "bpf_ns_per_run": sum(p["run_time_ns"] for p in hooks) / max(runs, 1)}
