"""What tracing costs a sender at full rate: udptrace against no tracing and against the seed.

    sudo .venv/bin/python bench/run.py [--rounds 5] [--seconds 3] [--size 64] [--modes ...]

A C sender (udp_flood.c) sends datagrams with sendto() as fast as it can from
one network namespace to a draining receiver in another, over a veth pair.
Each round runs every flood mode once (modes.py), in an order rotated per round
so drift on the machine (other jobs, thermal, caches) does not favour one mode.

A mode's rate is divided by its reference's rate in the same round (untraced,
or multi-untraced for multi-json), and the traced single-sender modes also by
the empty-hooks rate of the round (the floor). Rates are measured with
kernel.bpf_stats_enabled off; BPF run time, per program the tracer holds,
comes from one more short trial per traced mode and round with it on (the
timing itself costs every hook run). Then the benchmarks that need no flood run
alone (the decoder: ring buffer view, syscall join and JSON formatting on
synthetic records). Results go to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import bpfstats
import cyclic
import decoder
import render
import summary
from modes import BENCH, BY_NAME, MODES, RECEIVER_CPU, SENDER_CPU
from processes import signals_raise
from trial import compile_tools, run_trial

from udptrace.netns import VethPair

RESULTS = BENCH / "results" / "latest.json"
# Benchmarks that need no flood, run once after the rounds. Each is a module with
# add_arguments(parser), run(args) -> figures (a dict, saved under its name),
# lines(figures) -> what it prints, targets(figures) -> [(target, met, figures)].
ALONE: dict[str, ModuleType] = {"decoder": decoder, "cyclic": cyclic}


def machine(load_at_start: float) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "kernel": platform.release(), "cpu": cpu, "nproc": os.cpu_count(),
            "loadavg_1min": {"start": load_at_start, "end": os.getloadavg()[0]}}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    listing = "\n".join(f"  {m.name:15} {m.what}" for m in MODES)
    alone = "\n".join(f"  {name:15} {module.__doc__.splitlines()[0]}"
                      for name, module in ALONE.items())
    p = argparse.ArgumentParser(description=__doc__,
                                epilog=f"flood modes:\n{listing}\nalone:\n{alone}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="rounds of every mode (default 5)")
    p.add_argument("--seconds", type=float, default=3.0,
                   help="sending time per trial (default 3)")
    p.add_argument("--size", type=int, default=64, help="UDP payload bytes (default 64)")
    p.add_argument("--multi-threads", type=int, default=4,
                   help="sender threads of the multi-* modes (default 4)")
    p.add_argument("--multi-count", type=int, default=20_000,
                   help="datagrams the multi-* modes' threads send together (default 20000)")
    names = [m.name for m in MODES] + list(ALONE)
    p.add_argument("--modes", default=",".join(names),
                   help=f"comma-separated subset of {','.join(names)}")
    p.add_argument("--stats-seconds", type=float, default=1.0,
                   help="sending time of the extra trial per traced mode and round that times "
                        "the BPF programs (default 1)")
    p.add_argument("--note", default="",
                   help="saved with the results: what else was loading the machine")
    p.add_argument("--no-bpf-stats", action="store_true",
                   help="no extra trials timing the BPF programs (no per-program figures)")
    for module in ALONE.values():
        module.add_arguments(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    chosen = [m for m in args.modes.split(",") if m]
    flood = [BY_NAME[m] for m in chosen if m in BY_NAME]
    alone = [m for m in chosen if m in ALONE]
    console = render.console
    if os.geteuid() != 0:
        console.print("run as root: sudo .venv/bin/python bench/run.py")
        return 2
    if len(flood) + len(alone) != len(chosen) or any(m.reference not in chosen for m in flood):
        console.print(f"--modes names only {', '.join(BY_NAME)}, each with its reference "
                      f"(untraced; multi-untraced for multi-json), and {', '.join(ALONE)}")
        return 2
    tools = ("gcc", "clang", "bpftool", "taskset", "ip") if flood else ()
    if "bpftrace" in chosen:
        tools += ("bpftrace",)
    for tool in tools:
        if shutil.which(tool) is None:
            console.print(f"{tool} is not installed")
            return 2

    load_at_start = os.getloadavg()[0]
    if load_at_start > 0.5:
        console.print(f"[yellow]load average {load_at_start:.1f}: other work is running, "
                      "rates will scatter (see the CPU ratio)[/]")
    trials: list[dict] = []
    figures: dict[str, dict] = {}
    work = Path(tempfile.mkdtemp(prefix="udptrace-bench-"))
    shm = Path("/dev/shm")
    # JSON output goes to memory: this measures udptrace, not the disk
    scratch = Path(tempfile.mkdtemp(prefix="udptrace-bench-", dir=shm if shm.is_dir() else None))
    try:
        with signals_raise():
            if flood:
                with bpfstats.enabled(False), VethPair() as net:
                    built = compile_tools(work)
                    for round_ in range(args.rounds):
                        at = round_ % len(flood)
                        for mode in flood[at:] + flood[:at]:
                            trial = run_trial(mode, round_, net, built, args, work, scratch)
                            if mode.tracer is not None and not args.no_bpf_stats:
                                trial["bpf"] = run_trial(mode, round_, net, built, args, work,
                                                         scratch, stats=True)
                            trials.append(trial)
                            console.print(f"round {round_ + 1}/{args.rounds} {mode.name:14} "
                                          f"{trial['pps']:>12,.0f} pps", highlight=False)
            for name in alone:
                console.print(f"{name} alone ...")
                figures[name] = ALONE[name].run(args)
    except KeyboardInterrupt:
        console.print("interrupted: everything started was stopped and removed")
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)

    modes = summary.summarize(trials)
    checks = summary.targets(modes)
    for name, result in figures.items():
        checks += ALONE[name].targets(result)
    if modes:
        render.flood(modes)
    for name, result in figures.items():
        render.lines(ALONE[name].lines(result))
    render.checks(checks)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": machine(load_at_start) | {"note": args.note},
        "settings": {"rounds": args.rounds, "seconds": args.seconds, "payload_bytes": args.size,
                     "sender": f"udp_flood on CPU {SENDER_CPU}, one sendto() per datagram, "
                               "over a veth pair",
                     "multi_sender": f"udp_flood -T {args.multi_threads} -n {args.multi_count}, "
                                     "threads placed by the scheduler on every CPU",
                     "receiver": f"udp_flood -l on CPU {RECEIVER_CPU}, draining with recvmmsg "
                                 "in the peer namespace",
                     "bpf_stats": "off while rates are measured; BPF time from extra trials "
                                  f"of {args.stats_seconds:g} s with it on"
                                  if not args.no_bpf_stats else "off"},
        "modes": modes, **figures,
        "targets": [{"target": n, "verdict": render.verdict(met), "value": d}
                    for n, met, d in checks],
        "trials": trials,
    }, indent=2) + "\n")
    console.print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
