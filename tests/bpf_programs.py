"""The BPF programs loaded on this machine, as bpftool shows them, and which a process holds.

Shared by the tests (nothing left loaded) and bench/ (the run time of a tracer's programs).
A program lives while some process holds it; other udptrace runs on the machine are not
ours to judge, so callers always name the process.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Program:
    id: int
    name: str
    # both 0 unless kernel.bpf_stats_enabled was on while it ran (bpftool then omits them)
    run_time_ns: int
    run_cnt: int


def loaded() -> dict[int, Program]:
    """Every loaded BPF program by id."""
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True,
                         check=True).stdout
    return {p["id"]: Program(p["id"], p.get("name", ""), p.get("run_time_ns", 0),
                             p.get("run_cnt", 0)) for p in json.loads(out)}


def held_by(pid: int) -> set[int]:
    """Ids of the programs a process holds (program and link fds name them in fdinfo; this
    bpftool is built without the pid iterator that would show it)."""
    ids = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


def of_process(pid: int) -> list[Program]:
    """The programs a process holds, by id."""
    programs = loaded()
    return [programs[i] for i in sorted(held_by(pid)) if i in programs]
