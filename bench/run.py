"""What tracing costs a sender at full rate: udptrace against no tracing and against the seed.

    sudo .venv/bin/python bench/run.py [--rounds 5] [--seconds 3] [--size 64]

A C sender (udp_flood.c) sends datagrams with sendto() as fast as it can from
one network namespace to a draining receiver in another, over a veth pair.
Each round runs every mode once, in an order rotated per round so drift on
the machine (other jobs, thermal, caches) does not favour one mode:

  untraced        nothing attached: the reference rate
  empty-hooks     every hook udptrace attaches by default, with empty programs
                  (empty_hooks.bpf.c): the floor under the traced modes
  histogram       udptrace trace -p PID (in-kernel aggregation only)
  core            udptrace trace -p PID --stages core (the fewest hooks)
  wakeup          udptrace trace -p PID --wakeup (the cycle view's scheduler hooks)
  json            udptrace trace -p PID --json FILE (plus records per packet)
  record          udptrace record -p PID -o RUN.parquet (the same records, as Parquet parts)
  bpftrace        bpftrace bench/seed.bt PID (the seed's logic, tracepoints)
  collateral      udptrace trace -p IDLE: the flood is not the traced process
  multi-untraced  THREADS threads send COUNT datagrams together, on every CPU
  multi-json      the same, traced with udptrace trace -p PID --json FILE

A mode's rate is divided by its reference's rate in the same round (untraced,
or multi-untraced for multi-json), and the traced single-sender modes also by
the empty-hooks rate of the round (the floor). Rates are measured with
kernel.bpf_stats_enabled off; BPF run time, per program the tracer holds,
comes from one more short trial per traced mode and round with it on (the
timing itself costs every hook run). The decoder (ring buffer view, syscall
join) and the JSON formatting are timed alone on synthetic records. Results
go to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import mmap
import os
import platform
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from udptrace import bpf
from udptrace.loader.bpf_object import BpfObject
from udptrace.loader.ringbuf import RingBufferReader
from udptrace.netns import VethPair
from udptrace.report.fields import Batch
from udptrace.report.jsonl import JsonLines
from udptrace.trace.decode import SyscallJoin
from udptrace.trace.layout import Layout
from udptrace.trace.options import TraceOptions
from udptrace.trace.session import TraceSession

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "latest.json"
MODES = ("untraced", "empty-hooks", "histogram", "core", "wakeup", "json", "record", "bpftrace",
         "collateral", "multi-untraced", "multi-json")
MULTI = ("multi-untraced", "multi-json")
FLOOR = "empty-hooks"
# each mode's rate over its reference's in the same round; these also over the floor's
REFERENCE = {mode: "multi-untraced" if mode in MULTI else "untraced" for mode in MODES}
ON_FLOOR = ("histogram", "core", "wakeup", "json", "record", "bpftrace", "collateral")
STREAMING = ("json", "record", "multi-json")
PORT = 9
SENDER_CPU, RECEIVER_CPU = "0", "1"
MAX_DATAGRAMS = 100_000_000  # a bound besides --seconds; never reached on this hardware
ATTACH_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
JSON_BATCHES = 8
TARGETS = {"collateral": 0.95, "histogram": 0.95, "json": 0.85, "bpf_ns_per_run": 100.0,
           "multi_lost": 0.001, "decoder_records_per_s": 1e6}
PER_DATAGRAM = 0.5  # programs running at least this often per datagram are the per-datagram hooks

console = Console(width=max(150, shutil.get_terminal_size().columns))


class BenchError(Exception):
    pass


# ---- processes -----------------------------------------------------------------------

class Processes:
    """Every child in its own process group, so one kill takes its children too."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen:
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)  # type: ignore[call-overload]
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM,
             timeout: float = STOP_TIMEOUT_S) -> int:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind in its group
        if proc in self.running:
            self.running.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in list(self.running):
            self.stop(proc, signal.SIGKILL, timeout=5)


def read_line(proc: subprocess.Popen, prefix: str) -> str:
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        raise BenchError(f"expected '{prefix}...' from {proc.args}, got {line!r}")
    return line.strip()


def fields(line: str) -> dict[str, int]:
    return {k: int(v) for k, _, v in (part.partition("=") for part in line.split()) if v}


def wait_for_text(proc: subprocess.Popen, out: Path, err: Path, text: str) -> None:
    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    while time.monotonic() < deadline:
        if text in out.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise BenchError(f"{proc.args[0]} exited ({proc.returncode}) before attaching: "
                             f"{err.read_text(errors='replace').strip()[-800:]}")
        time.sleep(0.02)
    raise BenchError(f"{proc.args[0]} did not print {text!r} within {ATTACH_TIMEOUT_S:g}s")


@dataclass(frozen=True)
class Tools:
    flood: Path  # the udp_flood binary
    empty_hooks: bytes  # the compiled empty_hooks.bpf.c


def compile_flood(work: Path) -> Path:
    binary = work / "udp_flood"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(binary),
                    str(BENCH / "udp_flood.c")], check=True)
    return binary


def compile_tools(work: Path) -> Tools:
    hooks = work / "empty_hooks.bpf.o"
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-Wall", "-Werror", "-c",
                    str(BENCH / "empty_hooks.bpf.c"), "-o", str(hooks)], check=True)
    tools = Tools(compile_flood(work), hooks.read_bytes())
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


@contextlib.contextmanager
def bpf_stats(enabled: bool) -> Iterator[None]:
    before = BPF_STATS.read_text().strip()
    BPF_STATS.write_text("1\n" if enabled else "0\n")
    try:
        yield
    finally:
        BPF_STATS.write_text(before + "\n")


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every finally below still cleans up."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# ---- measurements --------------------------------------------------------------------

def system_cpu() -> np.ndarray:
    """Aggregate /proc/stat jiffies: user nice system idle iowait irq softirq steal."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    return np.array([int(x) for x in first[1:9]], dtype=np.int64)


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process and its reaped children (none here), in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    after_comm = stat.rsplit(")", 1)[1].split()
    return (int(after_comm[11]) + int(after_comm[12])) / os.sysconf("SC_CLK_TCK")


def held_programs(pid: int) -> dict[int, tuple[int, int]]:
    """prog id → (run_time_ns, run_cnt) for every BPF program fd the process holds."""
    progs = {}
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        with contextlib.suppress(OSError):
            values = dict(line.split(":\t", 1) for line in info.read_text().splitlines()
                          if ":\t" in line)
            if "prog_id" in values and "run_cnt" in values:
                progs[int(values["prog_id"])] = (int(values["run_time_ns"]),
                                                 int(values["run_cnt"]))
    return progs


def program_stats(pid: int, before: dict[int, tuple[int, int]]) -> list[dict]:
    """The tracer's programs with names from bpftool and their run time since `before`."""
    held = held_programs(pid)
    shown = json.loads(subprocess.run(["bpftool", "prog", "show", "--json"], check=True,
                                      capture_output=True, text=True).stdout)
    names = {p["id"]: p.get("name", "?") for p in shown}
    stats = []
    for prog_id, (run_ns, runs) in sorted(held.items()):
        ns0, runs0 = before.get(prog_id, (0, 0))
        stats.append({"id": prog_id, "name": names.get(prog_id, "?"),
                      "run_time_ns": run_ns - ns0, "run_cnt": runs - runs0})
    return stats


def bpf_cost(programs: list[dict], sent: int) -> dict[str, float]:
    """BPF ns per datagram (every program), and per run of the per-datagram hooks (those
    running about once per datagram or more; a write() elsewhere on the machine is not one)."""
    hooks = [p for p in programs if p["run_cnt"] >= PER_DATAGRAM * sent]
    runs = sum(p["run_cnt"] for p in hooks)
    return {"bpf_ns_per_packet": sum(p["run_time_ns"] for p in programs) / max(sent, 1),
            "hook_runs_per_packet": runs / max(sent, 1),
            "bpf_ns_per_run": sum(p["run_time_ns"] for p in hooks) / max(runs, 1)}


def tail_line(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 65536))
        lines = f.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def json_accounting(path: Path, sent: int) -> dict:
    """Every datagram sent must be a packet record or counted in the summary's ``lost``
    (packet records only; syscall records lost are counted apart, ``lost_syscalls``), and
    counted once as a packet and once as a syscall (one sendto() per datagram)."""
    summary = json.loads(tail_line(path))
    counters = summary["counters"]
    return {"summary": summary, "unaccounted": sent - summary["records"] - summary["lost"],
            "counted_exactly": counters["packets"] == sent and counters["syscalls"] == sent,
            "lost_share": summary["lost"] / max(sent, 1)}


def record_accounting(path: Path, sent: int) -> dict:
    """json_accounting for a recording: its last part's metadata holds the summary."""
    import pyarrow.parquet as pq  # an optional extra, as for `udptrace record`
    last = sorted((path / "packets").glob("part-*.parquet"))[-1]
    info = json.loads(pq.read_schema(last).metadata[b"udptrace"])
    counters = info["counters"]
    return {"summary": info, "unaccounted": sent - info["records"] - info["lost"],
            "counted_exactly": counters["packets"] == sent and counters["syscalls"] == sent,
            "lost_share": info["lost"] / max(sent, 1)}


# ---- one trial -----------------------------------------------------------------------

def tracer_command(mode: str, pid: int, seconds: float, json_path: Path) -> list[str]:
    # one sender: its CPU is its own, the tracer shares the receiver's (its CPU is shown
    # apart); several senders: placed by the scheduler like them
    pin = [] if mode in MULTI else ["taskset", "-c", RECEIVER_CPU]
    udptrace = [*pin, sys.executable, "-m", "udptrace", "trace", "-p", str(pid),
                "-d", str(seconds + STOP_TIMEOUT_S)]  # a bound; stopped by SIGINT
    if mode in ("histogram", "collateral"):
        return udptrace
    if mode == "core":
        return [*udptrace, "--stages", "core"]
    if mode == "wakeup":  # the scheduler hooks run at every context switch of the machine
        return [*udptrace, "--wakeup"]
    if mode == "record":
        return [*pin, sys.executable, "-m", "udptrace", "record", "-o", str(json_path),
                "-p", str(pid), "-d", str(seconds + STOP_TIMEOUT_S)]
    if mode in STREAMING:
        return [*udptrace, "--json", str(json_path)]
    if mode == "bpftrace":
        return [*pin, "bpftrace", str(BENCH / "seed.bt"), str(pid)]
    raise ValueError(mode)


def attached_text(mode: str) -> str:
    """What the tracer prints once its programs are attached: the sender may start."""
    return {"bpftrace": "attached", "record": "recording UDP sends"}.get(mode, "tracing UDP sends")


def sender_command(mode: str, tools: Tools, net: VethPair, args: argparse.Namespace,
                   seconds: float) -> list[str]:
    flood = [str(tools.flood), "-d", net.addr_b, "-p", str(PORT), "-s", str(args.size), "-w"]
    if mode in MULTI:  # placed by the scheduler on every CPU; ends after its count
        return [*flood, "-T", str(args.multi_threads), "-n", str(args.multi_count),
                "-t", str(STOP_TIMEOUT_S)]
    return ["taskset", "-c", SENDER_CPU, *flood, "-n", str(MAX_DATAGRAMS), "-t", str(seconds)]


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


def run_trial(mode: str, round_: int, net: VethPair, tools: Tools, args: argparse.Namespace,
              work: Path, scratch: Path, stats: bool = False) -> dict:
    """One mode once. `stats`: time the BPF programs (kernel.bpf_stats_enabled), which
    slows every hook run by the timing itself, so rates come from trials without it."""
    flood = tools.flood
    seconds = args.stats_seconds if stats else args.seconds
    bound = seconds + 2 * STOP_TIMEOUT_S
    procs = Processes()
    hooks: BpfObject | None = None  # empty-hooks mode: held by this process
    tag = f"{round_}-{mode}{'-stats' if stats else ''}"
    json_path = scratch / f"{tag}.jsonl"
    out, err = work / f"{tag}.out", work / f"{tag}.err"
    result: dict = {"mode": mode, "round": round_}
    try:
        # the receiver on the other CPU from the sender: it polls, so it never sleeps
        receiver = procs.start(
            net.command(net.ns_b, ["taskset", "-c", RECEIVER_CPU, str(flood), "-l", str(PORT),
                                   "-t", str(bound)]),
            stdout=subprocess.PIPE, text=True)
        read_line(receiver, "listening")
        sender = procs.start(
            net.command(net.ns_a, sender_command(mode, tools, net, args, seconds)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        pid = fields(read_line(sender, "ready"))["pid"]
        if mode == "collateral":  # udptrace follows an idle process; the flood is unrelated
            pid = procs.start(["sleep", str(bound)]).pid

        tracer = None
        if mode == FLOOR:
            hooks = attach_empty_hooks(tools.empty_hooks)
        elif mode not in ("untraced", "multi-untraced"):
            with out.open("w") as o, err.open("w") as e:
                tracer = procs.start(tracer_command(mode, pid, seconds, json_path),
                                     stdout=o, stderr=e,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
            wait_for_text(tracer, out, err, attached_text(mode))

        holder = tracer.pid if tracer else os.getpid() if hooks else None
        with bpf_stats(stats):
            stats_before = held_programs(holder) if stats and holder is not None else {}
            cpu_before = system_cpu()
            tracer_cpu_before = process_cpu_s(tracer.pid) if tracer else 0.0
            sender.stdin.write("go\n")
            sender.stdin.flush()
            sent_line = read_line(sender, "sent=")
            cpu_after = system_cpu()
            if stats and holder is not None:
                result["programs"] = program_stats(holder, stats_before)
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
            result.update(bpf_cost(result["programs"], result["sent"]))
        if tracer is not None:
            result["tracer_cpu_pct"] = 100.0 * (
                process_cpu_s(tracer.pid) - tracer_cpu_before) / (result["elapsed_ns"] / 1e9)
            rc = procs.stop(tracer, signal.SIGINT)
            if rc != 0:
                raise BenchError(f"{mode} tracer exited with {rc}: "
                                 f"{err.read_text(errors='replace').strip()[-800:]}")
            if mode in STREAMING:
                result.update((record_accounting if mode == "record" else json_accounting)(
                    json_path, result["sent"]))
        procs.stop(receiver)
        result["received"] = fields(receiver.stdout.read().strip() or "received=0")["received"]
    finally:
        procs.stop_all()
        if hooks is not None:
            hooks.close()
        if json_path.is_dir():  # record's parts
            shutil.rmtree(json_path)
        json_path.unlink(missing_ok=True)  # hundreds of MB per trial
    return result


# ---- decoder alone -------------------------------------------------------------------

def synthetic_records(layout: Layout, packets: int) -> np.ndarray:
    """What a veth sender streams: one record per datagram, carrying its syscall's end."""
    r = np.zeros(packets, layout.record)
    start = 1_000_000_000 + np.arange(packets, dtype=np.uint64) * 7_000
    for name, value in (("pid", 4242), ("tid", 4242), ("cpu", 0), ("syscall", 1)):
        r[name] = value
    r["comm"] = b"udp_flood"
    r["kind"] = layout.kind("packet")
    r["syscall_id"] = np.arange(1, packets + 1, dtype=np.uint64)
    for stage, offset in (("syscall", 0), ("dev_queue", 1500), ("xmit_start", 1900),
                          ("rx_handoff", 2600), ("xmit_done", 3100)):
        r["ts"][:, layout.stage_index(stage)] = start + offset
    r["syscall_exit"] = start + 3400
    r["syscall_ret"] = 64
    r["fate"] = layout.fates_by_name["sent"]
    r["flags"] = layout.flags["handed_off"]
    r["family"], r["sport"], r["dport"], r["len"] = 2, 40000, PORT, 92
    r["saddr"][:, 10:] = [0xFF, 0xFF, 10, 213, 0, 1]
    r["daddr"][:, 10:] = [0xFF, 0xFF, 10, 213, 0, 2]
    r["ifname"] = b"ut0a"
    return r


class FakeRing:
    """A memfd laid out like a BPF ring buffer map, so the real RingBufferReader reads it."""

    def __init__(self, record: np.dtype, size: int, record_bytes: int) -> None:
        self.fd = os.memfd_create("udptrace-bench-ring")
        self.size = size
        os.ftruncate(self.fd, 2 * mmap.PAGESIZE + 2 * size)  # what the reader maps
        self.map = mmap.mmap(self.fd, 2 * mmap.PAGESIZE + size)
        self.reader = RingBufferReader(self.fd, size, record, record_bytes)

    def fill(self, records: np.ndarray) -> None:
        """Committed records from position 0 on (a batch never wraps: size is ample)."""
        stride = self.reader.stride
        if len(records) * stride > self.size:
            raise ValueError("batch larger than the fake ring")
        # the kernel's layout: an 8-byte header (length, page offset), the record, padding
        slots = np.ndarray((len(records), stride), np.uint8, buffer=self.map,
                           offset=2 * mmap.PAGESIZE)
        size = self.reader.record_bytes
        slots[:, :4] = np.frombuffer(struct.pack("<I", size), np.uint8)
        slots[:, 8:8 + size] = records.view(np.uint8).reshape(len(records), -1)[:, :size]
        struct.pack_into("<Q", self.map, 0, 0)  # consumer position
        struct.pack_into("<Q", self.map, mmap.PAGESIZE, len(records) * stride)  # producer

    def close(self) -> None:
        self.reader.close()
        self.map.close()
        os.close(self.fd)


def decoder_bench(batch_packets: int, batches: int) -> dict:
    """Records/s through read + join (one core), and packets/s through JSON formatting."""
    obj = BpfObject(bpf.object_bytes("ut_trace"), "ut_trace")
    try:
        layout = Layout.from_object(obj)
    finally:
        obj.close()
    records = synthetic_records(layout, batch_packets * batches)
    per_batch = batch_packets
    ring_size = 1 << (per_batch * (layout.record.itemsize + 16) - 1).bit_length()
    # as much of each record as a send trace without --pubsub carries
    ring = FakeRing(layout.record, ring_size, layout.record_bytes(payload=False, receive=False))
    join = SyscallJoin(layout)
    read_s = join_s = 0.0
    packets_out = []
    try:
        for b in range(batches):
            ring.fill(records[b * per_batch:(b + 1) * per_batch])
            t0 = time.perf_counter()
            raw = ring.reader.read()
            t1 = time.perf_counter()
            out = join.add(raw, now_ns=0)
            read_s += t1 - t0
            join_s += time.perf_counter() - t1
            if len(out) != batch_packets:
                raise BenchError(f"decoder returned {len(out)} of {batch_packets} packets")
            if len(packets_out) < JSON_BATCHES:  # the rest are freed, as a tracer frees them
                packets_out.append(out)
    finally:
        ring.close()
    json_batches = packets_out  # ~30 times slower than decoding: fewer do
    with open(os.devnull, "wb") as null:
        writer = JsonLines(null, layout, {})
        t0 = time.perf_counter()
        for out in json_batches:
            writer.write_packets(Batch(out, layout, {}))
        json_s = time.perf_counter() - t0
    total_records = per_batch * batches
    return {
        "batch_records": per_batch, "batches": batches,
        "decode_records_per_s": total_records / (read_s + join_s),
        "decode_packets_per_s": total_records / (read_s + join_s),
        "ring_read_records_per_s": total_records / read_s,
        "join_records_per_s": total_records / join_s,
        "json_packets_per_s": batch_packets * len(json_batches) / json_s,
    }


# ---- summary -------------------------------------------------------------------------

def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def ratios(by_round: dict[int, dict[str, dict]], mode: str, reference: str,
           key: str = "pps") -> list[float]:
    """Per round: the mode's rate over the reference's (the reference's CPU per packet over
    the mode's for the CPU ratio: time other jobs take is not in the sender's rusage)."""
    pairs = [(r[mode][key], r[reference][key]) for r in by_round.values()
             if mode in r and reference in r]
    if key == "pps":
        return [m / ref for m, ref in pairs]
    return [ref / m for m, ref in pairs]


def summarize(trials: list[dict]) -> dict:
    by_round: dict[int, dict[str, dict]] = {}
    for t in trials:
        by_round.setdefault(t["round"], {})[t["mode"]] = t
    modes = {}
    for mode in MODES:
        runs = [r[mode] for r in by_round.values() if mode in r]
        if not runs:
            continue
        reference = REFERENCE[mode]
        entry: dict = {
            "reference": reference,
            "sent": spread([t["sent"] for t in runs]),
            "pps": spread([t["pps"] for t in runs]),
            "ratio": spread(ratios(by_round, mode, reference) or [float("nan")]),
            "cpu_ratio": spread(ratios(by_round, mode, reference, "sender_cpu_ns_per_packet")
                                or [float("nan")]),
            "sender_cpu_ns_per_packet": spread([t["sender_cpu_ns_per_packet"] for t in runs]),
            "system_softirq_pct": spread([t["system_softirq_pct"] for t in runs]),
            "system_busy_pct": spread([t["system_busy_pct"] for t in runs]),
        }
        on_floor = ratios(by_round, mode, FLOOR) if mode in ON_FLOOR else []
        if on_floor:
            entry["floor_ratio"] = spread(on_floor)
        if "tracer_cpu_pct" in runs[0]:
            entry["tracer_cpu_pct"] = spread([t["tracer_cpu_pct"] for t in runs])
        timed = [t["bpf"] for t in runs if "bpf" in t]
        if timed:
            for key in ("bpf_ns_per_packet", "hook_runs_per_packet", "bpf_ns_per_run"):
                entry[key] = spread([t[key] for t in timed])
            entry["programs"] = per_program(timed)
        if mode in STREAMING:
            entry["unaccounted"] = [t["unaccounted"] for t in runs]
            entry["counted_exactly"] = [t["counted_exactly"] for t in runs]
            entry["lost"] = [t["summary"]["lost"] for t in runs]
            entry["lost_share"] = spread([t["lost_share"] for t in runs])
            entry["lost_syscalls"] = [t["summary"]["counters"]["lost_syscalls"] for t in runs]
        modes[mode] = entry
    return modes


def per_program(runs: list[dict]) -> list[dict]:
    """Per program name: ns per invocation and per packet, medians over the runs."""
    names: dict[str, list[tuple[float, float, float]]] = {}
    for t in runs:
        for p in t["programs"]:
            if p["run_cnt"]:
                names.setdefault(p["name"], []).append((
                    p["run_time_ns"] / p["run_cnt"],
                    p["run_cnt"] / max(t["sent"], 1),
                    p["run_time_ns"] / max(t["sent"], 1)))
    rows = [{"name": name,
             "ns_per_run": statistics.median(v[0] for v in values),
             "runs_per_packet": statistics.median(v[1] for v in values),
             "ns_per_packet": statistics.median(v[2] for v in values)}
            for name, values in names.items()]
    return sorted(rows, key=lambda r: -r["ns_per_packet"])


def verdicts(modes: dict, decoder: dict) -> list[tuple[str, str, str]]:
    """(target, "met" or "MISSED", figures) for every target whose modes ran."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    def span(value: dict) -> str:
        return f"{value['median']:.3f} ({value['min']:.3f}-{value['max']:.3f})"

    checks = []
    for mode, name in (("collateral", "collateral"), ("histogram", "histogram"),
                       ("json", "json")):
        if "floor_ratio" in modes.get(mode, {}):
            floor = modes[mode]["floor_ratio"]
            checks.append((f"{name} ≥ {TARGETS[mode]} of the empty-hook floor",
                           verdict(floor["median"] >= TARGETS[mode]), span(floor)))
    if {"histogram", "bpftrace"} <= modes.keys():
        hist, bt = (modes[m]["ratio"]["median"] for m in ("histogram", "bpftrace"))
        checks.append(("histogram ≥ bpftrace", verdict(hist >= bt), f"{hist:.3f} vs {bt:.3f}"))
    if "bpf_ns_per_run" in modes.get("histogram", {}):
        per_run = modes["histogram"]["bpf_ns_per_run"]["median"]
        empty = modes.get(FLOOR, {}).get("bpf_ns_per_run", {}).get("median")
        detail = f"{per_run:.0f} ns"
        if empty is not None:
            detail += f" (an empty program: {empty:.0f} ns, so {per_run - empty:.0f} ns of work)"
        checks.append((f"histogram: mean BPF time ≤ {TARGETS['bpf_ns_per_run']:.0f} ns per "
                       "hook run", verdict(per_run <= TARGETS["bpf_ns_per_run"]), detail))
    for mode in STREAMING:
        if mode not in modes:
            continue
        m = modes[mode]
        checks.append((f"{mode}: records + lost = datagrams, counts exact",
                       verdict(all(u == 0 for u in m["unaccounted"])
                               and all(m["counted_exactly"])),
                       f"sent - records - lost per run {m['unaccounted']}; lost packet "
                       f"records {m['lost']}"))
    if "multi-json" in modes:
        lost = modes["multi-json"]["lost_share"]
        checks.append((f"multi-json loses ≤ {TARGETS['multi_lost']:.1%} of records",
                       verdict(lost["median"] <= TARGETS["multi_lost"]),
                       f"{lost['median']:.2%} ({lost['min']:.2%}-{lost['max']:.2%})"))
    rate = decoder["decode_records_per_s"]
    checks.append(("decoder ≥ 1 M records/s", verdict(rate >= TARGETS["decoder_records_per_s"]),
                   f"{rate / 1e6:.2f} M/s"))
    return checks


def render(modes: dict, decoder: dict, checks: list) -> None:
    def ratio(value: dict | None) -> str:
        return "-" if value is None else (
            f"{value['median']:.3f} ({value['min']:.3f}-{value['max']:.3f})")

    def figure(m: dict, key: str, fmt: str, scale: float = 1.0) -> str:
        return format(m[key]["median"] / scale, fmt) if key in m else "-"

    table = Table(title="sender rate and cost per mode: medians over rounds, (min-max)")
    for column in ("mode", "pps", "vs reference", "vs floor", "sender µs/pkt", "CPU ratio",
                   "softirq %", "tracer CPU %", "BPF ns/pkt", "hook runs/pkt", "BPF ns/run"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for mode, m in modes.items():
        table.add_row(mode, f"{m['pps']['median']:,.0f}", ratio(m["ratio"]),
                      ratio(m.get("floor_ratio")),
                      figure(m, "sender_cpu_ns_per_packet", ".2f", 1000),
                      f"{m['cpu_ratio']['median']:.3f}",
                      figure(m, "system_softirq_pct", ".1f"),
                      figure(m, "tracer_cpu_pct", ".1f"), figure(m, "bpf_ns_per_packet", ",.0f"),
                      figure(m, "hook_runs_per_packet", ".2f"), figure(m, "bpf_ns_per_run", ".0f"))
    console.print(table)
    console.print("reference: untraced (multi-json: multi-untraced); floor: empty-hooks; "
                  "BPF ns/run: per run of the per-datagram hooks")
    streamed = [m for m in STREAMING if m in modes]
    if streamed:
        acc = Table(title="records per mode (every run)")
        for column in ("mode", "datagrams", "counts exact", "records lost", "lost share",
                       "unaccounted"):
            acc.add_column(column, justify="left" if column == "mode" else "right")
        for mode in streamed:
            m = modes[mode]
            acc.add_row(mode, f"{m['sent']['median']:,.0f}", str(all(m["counted_exactly"])),
                        " ".join(f"{n:,}" for n in m["lost"]),
                        f"{m['lost_share']['median']:.2%}", str(m["unaccounted"]))
        console.print(acc)
    for mode in (m for m in modes if "programs" in modes[m]):
        progs = Table(title=f"{mode}: BPF programs (medians)")
        for column in ("program", "ns/run", "runs/pkt", "ns/pkt"):
            progs.add_column(column, justify="left" if column == "program" else "right")
        for p in modes[mode]["programs"]:
            progs.add_row(p["name"], f"{p['ns_per_run']:.0f}", f"{p['runs_per_packet']:.2f}",
                          f"{p['ns_per_packet']:.0f}")
        console.print(progs)
    console.print(f"decoder alone, one core, batches of {decoder['batch_records']:,} records: "
                  f"read + join {decoder['decode_records_per_s']:,.0f} records/s "
                  f"({decoder['decode_packets_per_s']:,.0f} packets/s; ring read alone "
                  f"{decoder['ring_read_records_per_s']:,.0f}/s, join alone "
                  f"{decoder['join_records_per_s']:,.0f}/s)")
    console.print(f"JSON formatting alone (JsonLines.write_packets to /dev/null): "
                  f"{decoder['json_packets_per_s']:,.0f} packets/s")
    colour = {"met": "green", "MISSED": "red"}
    for name, verdict, detail in checks:
        console.print(f"[{colour[verdict]}]{verdict}[/]  {name}: {detail}")


def machine(load_at_start: float) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "kernel": platform.release(), "cpu": cpu, "nproc": os.cpu_count(),
            "loadavg_1min": {"start": load_at_start, "end": os.getloadavg()[0]}}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="rounds of every mode (default 5)")
    p.add_argument("--seconds", type=float, default=3.0,
                   help="sending time per trial (default 3)")
    p.add_argument("--size", type=int, default=64, help="UDP payload bytes (default 64)")
    p.add_argument("--multi-threads", type=int, default=4,
                   help="sender threads of the multi-* modes (default 4)")
    p.add_argument("--multi-count", type=int, default=20_000,
                   help="datagrams the multi-* modes' threads send together (default 20000)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--stats-seconds", type=float, default=1.0,
                   help="sending time of the extra trial per traced mode and round that times "
                        "the BPF programs (default 1)")
    p.add_argument("--no-bpf-stats", action="store_true",
                   help="no extra trials timing the BPF programs (no per-program figures)")
    p.add_argument("--decoder-batch", type=int, default=16384,
                   help="packets (one record each) per decoder batch (default 16384, 4.9 MB: "
                        "what one 0.1 s poll of the ring holds at 160k packets/s)")
    p.add_argument("--decoder-batches", type=int, default=40)
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if os.geteuid() != 0:
        console.print("run as root: sudo .venv/bin/python bench/run.py")
        return 2
    if not set(modes) <= set(MODES) or any(REFERENCE[m] not in modes for m in modes):
        console.print(f"--modes names only {', '.join(MODES)}, each with its reference "
                      "(untraced; multi-untraced for multi-json)")
        return 2
    for tool in ("gcc", "clang", "bpftool", "taskset", "ip") + (("bpftrace",) if "bpftrace" in modes
                                                       else ()):
        if shutil.which(tool) is None:
            console.print(f"{tool} is not installed")
            return 2

    load_at_start = os.getloadavg()[0]
    if load_at_start > 0.5:
        console.print(f"[yellow]load average {load_at_start:.1f}: other work is running, "
                      "rates will scatter (see the CPU ratio)[/]")
    trials: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="udptrace-bench-"))
    shm = Path("/dev/shm")
    # JSON output goes to memory: this measures udptrace, not the disk
    scratch = Path(tempfile.mkdtemp(prefix="udptrace-bench-", dir=shm if shm.is_dir() else None))
    try:
        with signals_raise(), bpf_stats(False), VethPair() as net:
            tools = compile_tools(work)
            for round_ in range(args.rounds):
                order = modes[round_ % len(modes):] + modes[:round_ % len(modes)]
                for mode in order:
                    trial = run_trial(mode, round_, net, tools, args, work, scratch)
                    if mode not in ("untraced", "multi-untraced") and not args.no_bpf_stats:
                        trial["bpf"] = run_trial(mode, round_, net, tools, args, work, scratch,
                                                 stats=True)
                    trials.append(trial)
                    console.print(f"round {round_ + 1}/{args.rounds} {mode:14} "
                                  f"{trial['pps']:>12,.0f} pps", highlight=False)
        console.print("decoder alone ...")
        decoder = decoder_bench(args.decoder_batch, args.decoder_batches)
    except KeyboardInterrupt:
        console.print("interrupted: everything started was stopped and removed")
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)

    summary = summarize(trials)
    checks = verdicts(summary, decoder)
    render(summary, decoder, checks)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": machine(load_at_start),
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
        "modes": summary, "decoder": decoder,
        "targets": [{"target": n, "verdict": v, "value": d} for n, v, d in checks],
        "trials": trials,
    }, indent=2) + "\n")
    console.print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
