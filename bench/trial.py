"""One trial of a flood mode: a receiver, the mode's sender and tracer, the sender's rate and
what it cost, and every process stopped at the end."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import bpfstats
import numpy as np
from modes import BENCH, EMPTY_HOOKS, PORT, RECEIVER_CPU, Mode, Setting
from processes import (
    STOP_TIMEOUT_S,
    BenchError,
    Processes,
    fields,
    process_cpu_s,
    read_line,
    wait_for_text,
)

from udptrace.loader.bpf_object import BpfObject
from udptrace.netns import VethPair
from udptrace.trace.options import TraceOptions
from udptrace.trace.session import TraceSession


@dataclass(frozen=True)
class Tools:
    flood: Path  # the udp_flood binary
    empty_hooks: bytes  # the compiled empty_hooks.bpf.c


def compile_tools(work: Path) -> Tools:
    flood = work / "udp_flood"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(flood),
                    str(BENCH / "udp_flood.c")], check=True)
    hooks = work / "empty_hooks.bpf.o"
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-Wall", "-Werror", "-c",
                    str(BENCH / "empty_hooks.bpf.c"), "-o", str(hooks)], check=True)
    tools = Tools(flood, hooks.read_bytes())
    check_floor_in_step(tools.empty_hooks)
    return tools


def check_floor_in_step(empty_hooks: bytes) -> None:
    """The floor means something only with the hooks udptrace really attaches by default:
    the programs a session chooses here, against empty_hooks.bpf.c's (`ut_e_` for `ut_`)."""
    with TraceSession(TraceOptions(pids=(os.getpid(),))) as session:
        chosen = {h.program.removeprefix("ut_") for p in session.plans for h in p.hooks}
    with BpfObject(empty_hooks, "empty_hooks") as obj:
        empty = {name.removeprefix("ut_e_") for name in obj.programs}
    if chosen != empty:
        raise BenchError("empty_hooks.bpf.c is out of step with udptrace's default hooks: "
                         f"missing {sorted(chosen - empty)}, extra {sorted(empty - chosen)}")


def attach_empty_hooks(elf: bytes) -> BpfObject:
    obj = BpfObject(elf, "empty_hooks")
    try:
        obj.load()
        for prog in obj.programs.values():
            prog.attach()
    except BaseException:
        obj.close()
        raise
    return obj


def system_cpu() -> np.ndarray:
    """Aggregate /proc/stat jiffies: user nice system idle iowait irq softirq steal."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    return np.array([int(x) for x in first[1:9]], dtype=np.int64)


def run_trial(mode: Mode, round_: int, net: VethPair, tools: Tools, args: argparse.Namespace,
              work: Path, scratch: Path, stats: bool = False) -> dict:
    """One mode once. `stats`: time the BPF programs (kernel.bpf_stats_enabled), which
    slows every hook run by the timing itself, so rates come from trials without it."""
    seconds = args.stats_seconds if stats else args.seconds
    tag = f"{round_}-{mode.name}{'-stats' if stats else ''}"
    setting = Setting(tools.flood, net.addr_b, args.size, seconds,
                      bound_s=seconds + 2 * STOP_TIMEOUT_S, threads=args.multi_threads,
                      count=args.multi_count, output=scratch / tag)
    procs = Processes()
    hooks: BpfObject | None = None  # the floor: held by this process
    out, err = work / f"{tag}.out", work / f"{tag}.err"
    result: dict = {"mode": mode.name, "round": round_}
    try:
        # the receiver on the other CPU from the sender: it polls, so it never sleeps
        receiver = procs.start(
            net.command(net.ns_b, ["taskset", "-c", RECEIVER_CPU, str(tools.flood), "-l",
                                   str(PORT), "-t", str(setting.bound_s)]),
            stdout=subprocess.PIPE, text=True)
        read_line(receiver, "listening")
        sender = procs.start(net.command(net.ns_a, mode.sender.argv(setting)),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        pid = fields(read_line(sender, "ready"))["pid"]
        if mode.traces_idle:  # the tracer follows an idle process; the flood is unrelated
            pid = procs.start(["sleep", str(setting.bound_s)]).pid

        tracer = None
        if mode.tracer is EMPTY_HOOKS:
            hooks = attach_empty_hooks(tools.empty_hooks)
        elif mode.tracer is not None:
            # one sender: its CPU is its own, the tracer shares the receiver's (its CPU is
            # shown apart); several senders: placed by the scheduler like them
            pin = ["taskset", "-c", RECEIVER_CPU] if mode.sender.pinned else []
            with out.open("w") as o, err.open("w") as e:
                tracer = procs.start([*pin, *mode.tracer.argv(pid, setting)], stdout=o, stderr=e,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
            wait_for_text(tracer, out, err, mode.tracer.attached)

        holder = tracer.pid if tracer else os.getpid() if hooks else None
        with bpfstats.enabled(stats):
            stats_before = bpfstats.held(holder) if stats and holder is not None else {}
            cpu_before = system_cpu()
            tracer_cpu_before = process_cpu_s(tracer.pid) if tracer else 0.0
            sender.stdin.write("go\n")
            sender.stdin.flush()
            sent_line = read_line(sender, "sent=")
            cpu_after = system_cpu()
            if stats and holder is not None:
                result["programs"] = bpfstats.since(holder, stats_before)
        result.update(fields(sent_line))
        result["pps"] = result["sent"] / (result["elapsed_ns"] / 1e9)
        result["sender_cpu_ns_per_packet"] = (
            (result["utime_ns"] + result["stime_ns"]) / max(result["sent"], 1))
        jiffies = cpu_after - cpu_before
        total = max(int(jiffies.sum()), 1)
        result["system_busy_pct"] = 100.0 * (total - jiffies[3] - jiffies[4]) / total
        result["system_softirq_pct"] = 100.0 * jiffies[6] / total
        procs.stop(sender)

        if "programs" in result:
            result.update(bpfstats.cost(result["programs"], result["sent"]))
        if tracer is not None:
            result["tracer_cpu_pct"] = 100.0 * (
                process_cpu_s(tracer.pid) - tracer_cpu_before) / (result["elapsed_ns"] / 1e9)
            rc = procs.stop(tracer, signal.SIGINT)
            if rc != 0:
                raise BenchError(f"{mode.name} tracer exited with {rc}: "
                                 f"{err.read_text(errors='replace').strip()[-800:]}")
            if mode.tracer.accounting is not None:
                result.update(mode.tracer.accounting(setting.output, result["sent"]))
        procs.stop(receiver)
        result["received"] = fields(receiver.stdout.read().strip() or "received=0")["received"]
    finally:
        procs.stop_all()
        if hooks is not None:
            hooks.close()
        # hundreds of MB per trial
        if setting.output.is_dir():  # record's parts
            shutil.rmtree(setting.output)
        setting.output.unlink(missing_ok=True)
    return result
