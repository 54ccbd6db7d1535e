"""How fast `udptrace join` matches recordings, and why DuckDB does it rather than pyarrow.

    .venv/bin/python bench/join.py [--datagrams 1000000] [--rounds 3]

Makes two recordings as `udptrace record` writes them (one Parquet part per second, the
metadata with its clock samples), a sender on one host and a receiver on another whose
clocks differ: a UADP publisher at 1 kHz with sequence numbers (so they wrap every 65,536
datagrams and keys repeat over the run), 0.1 % of the datagrams lost between the hosts.
Then, in rounds:

  join      the whole `udptrace join SENDER RECEIVER -o JOINED.parquet` as a user runs it
            (a process: reading the parts, both passes, every figure, the Parquet output)
  duckdb    the engine's core step alone, in-process: candidates on (key, time bucket)
  pyarrow   the same step with pyarrow's hash join (Table.join) and a filter

and prints the medians. It checks what the join found (every datagram but the lost ones
joined, the lost counted exactly). The recordings are made once into --work (default a
directory under /tmp, removed at the end unless --keep).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PERIOD_NS = 1_000_000
LOSS_EVERY = 1000  # every 1000th datagram is lost between the hosts
WIRE_NS = 60_000
RECEIVER_MONO_AHEAD_NS = 1_234_000_000_000  # the receiver booted 1234 s earlier
RECEIVER_CLOCK_ERROR_NS = 400_000  # its UTC is 400 µs ahead: what the join must absorb
SENDER_MONO_START_NS = 50_000_000_000
REALTIME_AT_BOOT_NS = 1_796_000_000_000_000_000


def _info(boot: str, role: str, samples: list[dict], final: bool) -> bytes:
    sync = {"synchronised": False, "status": 64, "maxerror_ns": 16_000_000_000,
            "esterror_ns": 16_000_000_000, "tai_offset_s": 0}
    return json.dumps({"format": 1, "version": "bench", "kernel": "synthetic",
                       "host": {"hostname": role, "boot_id": boot}, "command": ["bench", role],
                       "receive_only": role == "receiver",
                       "stages": [], "spans": [], "records": 0, "lost": 0, "final": final,
                       "time": {"samples": samples, "sync": sync, "ptp": None}}).encode()


def _write(path: Path, table: pa.Table, boot: str, role: str, mono: np.ndarray,
           realtime_offset: int) -> None:
    """One part per second of `mono`, each with that second's clock sample (the last part
    also with the end's, as the recorder takes one when it stops)."""
    (path / "packets").mkdir(parents=True)
    (path / "sched").mkdir()
    second = mono // 1_000_000_000
    edges = np.flatnonzero(np.diff(second)) + 1
    bounds = [0, *edges.tolist(), len(mono)]
    for part, (a, b) in enumerate(itertools.pairwise(bounds)):
        last = part == len(bounds) - 2
        samples = [{"mono_ns": int(at) - 1, "tai_ns": realtime_offset,
                    "realtime_ns": realtime_offset, "bracket_ns": 300}
                   for at in (mono[a], mono[-1] + 1_000_000)[:2 if last else 1]]
        rows = table.slice(a, b - a).replace_schema_metadata(
            {b"udptrace": _info(boot, role, samples, last)})
        pq.write_table(rows, path / "packets" / f"part-{part:06d}.parquet", compression="zstd")


def make(work: Path, n: int) -> tuple[Path, Path, int]:
    rng = np.random.default_rng(7)
    i = np.arange(n, dtype=np.int64)
    t_syscall = SENDER_MONO_START_NS + i * PERIOD_NS + rng.integers(0, 50_000, n)
    stack = 15_000 + rng.integers(0, 20_000, n)
    seq = i % 65536
    common = {"pid": pa.array(np.full(n, 4242, np.uint32)), "comm": pa.array(["pub"] * n),
              "saddr": pa.array(["10.0.0.1"] * n), "daddr": pa.array(["10.0.0.2"] * n),
              "sport": pa.array(np.full(n, 40000, np.uint16)),
              "dport": pa.array(np.full(n, 4840, np.uint16)),
              "udp_len": pa.array(np.full(n, 51, np.uint16)),
              "pubsub_publisher_id": pa.array(np.full(n, 2234)),
              "pubsub_writer_group_id": pa.array(np.full(n, 100)),
              "pubsub_sequence_number": pa.array(seq),
              "pubsub_dataset_sequence_number": pa.array(seq)}
    none = pa.nulls(n, pa.int64())
    sender = pa.table({
        "ts_ns": t_syscall, **common, "fate": pa.array(["sent"] * n),
        "drop_reason": pa.nulls(n, pa.string()), "drop_stage": pa.nulls(n, pa.string()),
        "receive": pa.array(np.zeros(n, bool)), "rx_pid": pa.array(np.zeros(n, np.uint32)),
        "rx_comm": pa.array([""] * n), "ifname": pa.array(["eth0"] * n),
        "stage_syscall_ns": pa.array(np.zeros(n, np.int64)), "stage_app_ns": none,
        "stage_rx_handoff_ns": none, "stage_xmit_done_ns": pa.array(stack),
        "stage_free_ns": pa.array(stack + 30_000), "stage_rx_driver_ns": none,
        "stage_rx_stack_ns": none, "stage_sock_queue_ns": none, "stage_rx_done_ns": none,
        "stage_rx_read_ns": none})
    kept = i % LOSS_EVERY != LOSS_EVERY // 2
    m = int(kept.sum())
    arrive = (t_syscall + stack + WIRE_NS + rng.integers(0, 10_000, n))[kept]
    arrive = arrive + RECEIVER_MONO_AHEAD_NS
    rnone = pa.nulls(m, pa.int64())
    receiver = pa.table({
        "ts_ns": arrive, **{k: v.filter(pa.array(kept)) for k, v in common.items()},
        "fate": pa.array(["received"] * m), "drop_reason": pa.nulls(m, pa.string()),
        "drop_stage": pa.nulls(m, pa.string()), "receive": pa.array(np.ones(m, bool)),
        "rx_pid": pa.array(np.full(m, 777, np.uint32)), "rx_comm": pa.array(["sub"] * m),
        "ifname": pa.array(["eth0"] * m), "stage_syscall_ns": rnone, "stage_app_ns": rnone,
        "stage_rx_handoff_ns": rnone, "stage_xmit_done_ns": rnone, "stage_free_ns": rnone,
        "stage_rx_driver_ns": pa.array(np.zeros(m, np.int64)),
        "stage_rx_stack_ns": pa.array(np.full(m, 3_000)),
        "stage_sock_queue_ns": pa.array(np.full(m, 12_000)),
        "stage_rx_done_ns": pa.array(np.full(m, 40_000)), "stage_rx_read_ns": rnone})
    a, b = work / "sender.parquet", work / "receiver.parquet"
    _write(a, sender, "sender-boot", "sender", t_syscall, REALTIME_AT_BOOT_NS)
    _write(b, receiver, "receiver-boot", "receiver", arrive,
           REALTIME_AT_BOOT_NS - RECEIVER_MONO_AHEAD_NS + RECEIVER_CLOCK_ERROR_NS)
    return a, b, n - m


def run_join(a: Path, b: Path, out: Path) -> tuple[float, dict]:
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "udptrace", "join", str(a), str(b), "-o",
                           str(out)], capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"udptrace join failed:\n{done.stderr}")
    return took, json.loads(pq.read_schema(out).metadata[b"udptrace"])


def core_inputs(n: int) -> tuple[pa.Table, pa.Table]:
    """Keys and times like the engine's: departures and arrivals on one timescale."""
    rng = np.random.default_rng(3)
    i = np.arange(n, dtype=np.int64)
    key = pa.array((i % 65536).astype(np.uint64))
    left = i * PERIOD_NS + 10**12
    dep = pa.table({"dep_id": i, "key": key, "y": left})
    arr = pa.table({"arr_id": i, "key": key, "x": left + WIRE_NS + rng.integers(0, 10_000, n)})
    return dep, arr


LOW, HIGH = -11_000_000_000, 11_000_000_000  # the engine's first, widest window
BUCKET = HIGH - LOW


def core_duckdb(dep: pa.Table, arr: pa.Table) -> int:
    con = duckdb.connect()
    con.register("dep", dep)
    con.register("arr", arr)
    return con.execute(f"""
        SELECT count(*) FROM
          (SELECT *, unnest(list_distinct([(x - {HIGH}) // {BUCKET}, (x - {LOW}) // {BUCKET}]))
                  AS b FROM arr) a
        JOIN (SELECT *, y // {BUCKET} AS b FROM dep) d ON a.key = d.key AND a.b = d.b
        WHERE a.x - d.y BETWEEN {LOW} AND {HIGH}""").fetchone()[0]


def core_pyarrow(dep: pa.Table, arr: pa.Table) -> int:
    x = arr["x"].to_numpy()
    low, high = (x - HIGH) // BUCKET, (x - LOW) // BUCKET
    both = low != high
    arr_b = pa.concat_tables([arr.append_column("b", pa.array(low)),
                              arr.filter(pa.array(both)).append_column("b", pa.array(high[both]))])
    dep_b = dep.append_column("b", pa.array(dep["y"].to_numpy() // BUCKET))
    joined = arr_b.join(dep_b, keys=["key", "b"], join_type="inner")
    wire = pc.subtract(joined["x"], joined["y"])
    return int(pc.sum(pc.and_(pc.greater_equal(wire, LOW), pc.less_equal(wire, HIGH))).as_py())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datagrams", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="udptrace-bench-join-"))
    try:
        made = time.perf_counter()
        a, b, lost = make(work, args.datagrams)
        print(f"{args.datagrams} datagrams per side, {lost} lost between the hosts: made in "
              f"{time.perf_counter() - made:.1f} s ({len(list((a / 'packets').iterdir()))} "
              "parts each)")
        dep, arr = core_inputs(args.datagrams)
        times: dict[str, list[float]] = {"join": [], "duckdb": [], "pyarrow": []}
        for round_ in range(args.rounds):
            took, summary = run_join(a, b, work / "joined.parquet")
            times["join"].append(took)
            (flow,) = summary["flows"]
            assert flow["arrived"] == args.datagrams - lost and flow["lost"] == lost, flow
            for name, core in (("duckdb", core_duckdb), ("pyarrow", core_pyarrow))[
                    :: 1 if round_ % 2 == 0 else -1]:  # alternate which goes first
                start = time.perf_counter()
                found = core(dep, arr)
                times[name].append(time.perf_counter() - start)
                assert found == args.datagrams, (name, found)
        print(f"joined {flow['arrived']}, lost between the hosts {flow['lost']} (exact), clocks: "
              f"{summary['clocks'][0]['how']}")
        for name, values in times.items():
            print(f"{name:8s} median {statistics.median(values):6.2f} s  "
                  f"(rounds: {', '.join(f'{v:.2f}' for v in values)})")
        print(f"pyarrow / duckdb (core step): "
              f"{statistics.median(times['pyarrow']) / statistics.median(times['duckdb']):.2f}")
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
