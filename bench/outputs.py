"""How fast the per-packet outputs turn decoded records into JSON lines and Parquet rows.

    .venv/bin/python bench/outputs.py [--rows 16384] [--rounds 7]

Records are made through the real Layout of the compiled object (the BTF of
ut_record.h), as two kinds of batch:

  flood   one sender's veth flood: every datagram through the same stages, times
          jittered, its syscall's end carried in the record (bench/run.py's flood)
  mixed   --e2e traffic from two senders: receive fields and stages on most records,
          every 50th dropped in the qdisc, every 20th parked for ARP

Each round times every output on every batch kind once, so load on the machine
falls on all alike; the best round is printed (the least disturbed), with the
median beside it. One core: the formatting runs in this thread only.

  json          JsonLines.write_packets to /dev/null: lines/s
  columns       the Arrow columns of a batch (report/columns.py): rows/s
  parquet part  one part as record writes it (a second's batches, zstd): rows/s
  record        columns and part together: rows/s
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from udptrace import bpf
from udptrace.loader.bpf_object import BpfObject
from udptrace.report.columns import PacketColumns
from udptrace.report.fields import Batch, packet_table
from udptrace.report.jsonl import JsonLines
from udptrace.report.parquet import RecordingWriter
from udptrace.trace.decode import Packets
from udptrace.trace.layout import Layout

T0 = 40_000_000_000_000  # CLOCK_MONOTONIC about 11 hours after boot
PERIOD_NS = 9_000  # a flood's datagram every 9 µs
NETNS = 4026532901
DROP_REASONS = {6: "QDISC_DROP"}


def layout_of_object() -> Layout:
    obj = BpfObject(bpf.object_bytes("ut_trace"), "ut_trace")
    try:
        return Layout.from_object(obj)
    finally:
        obj.close()


def _address(r: np.ndarray, name: str, last: np.ndarray | int) -> None:
    r[name][:, 10:15] = [0xFF, 0xFF, 10, 213, 0]
    r[name][:, 15] = last


def _stages(r: np.ndarray, layout: Layout, start: np.ndarray, rng: np.random.Generator,
            stages: dict[str, int]) -> None:
    """Each stage this long after the one before, jittered by up to a third."""
    at = start.copy()
    for stage, mean in stages.items():
        at = at + (mean + rng.integers(-mean // 3, mean // 3 + 1, len(r))).astype(np.uint64)
        r["ts"][:, layout.stage_index(stage)] = at


def flood(layout: Layout, rows: int, seed: int = 1) -> Packets:
    rng = np.random.default_rng(seed)
    r = np.zeros(rows, layout.record)
    start = T0 + np.arange(rows, dtype=np.uint64) * PERIOD_NS
    r["ts"][:, layout.stage_index("syscall")] = start
    _stages(r, layout, start, rng, {"dev_queue": 1_500, "xmit_start": 400, "rx_handoff": 700,
                                    "xmit_done": 500})
    r["kind"], r["fate"] = layout.kind("packet"), layout.fates_by_name["sent"]
    r["syscall"] = next(k for k, v in layout.syscalls.items() if v == "sendto")
    r["syscall_id"] = (1 << 40) + np.arange(rows, dtype=np.uint64)
    r["syscall_exit"] = r["ts"][:, layout.stage_index("xmit_done")] + 300
    r["syscall_ret"] = 64
    r["pid"], r["tid"], r["cpu"], r["comm"] = 31_337, 31_337, 0, b"udp_flood"
    r["family"], r["sport"], r["dport"], r["len"], r["udp_len"] = 2, 40_000, 9, 106, 72
    _address(r, "saddr", 1)
    _address(r, "daddr", 2)
    r["ifname"], r["ifindex"], r["netns"] = b"ut0a", 5, NETNS
    r["flags"] = layout.flags["handed_off"]
    r["xmit_context"] = layout.contexts.index("sender")
    return Packets(r, np.zeros(rows, np.uint64), np.zeros(rows, np.int64))


def mixed(layout: Layout, rows: int, seed: int = 2) -> Packets:
    """--e2e: two senders to one reader, some drops and ARP waits."""
    packets = flood(layout, rows, seed)
    r = packets.records
    rng = np.random.default_rng(seed)
    second = np.arange(rows) % 3 == 0
    r["pid"][second], r["tid"][second], r["comm"][second] = 4_242, 4_243, b"publisher"
    r["sport"][second] = 4_840
    _address(r, "saddr", np.where(second, 3, 1))
    wire = r["ts"][:, layout.stage_index("xmit_done")]
    read = np.ones(rows, bool)
    parked = np.arange(rows) % 20 == 7
    r["ts"][parked, layout.stage_index("neigh_parked")] = (
        r["ts"][parked, layout.stage_index("syscall")] + 900)
    r["ts"][parked, layout.stage_index("neigh_queue")] = (
        r["ts"][parked, layout.stage_index("syscall")] + 40_000)
    r["flags"][parked] |= layout.flags["neigh_queued"]
    dropped = np.arange(rows) % 50 == 11
    for stage in ("xmit_start", "rx_handoff", "xmit_done"):
        r["ts"][dropped, layout.stage_index(stage)] = 0
    r["ts"][dropped, layout.stage_index("free")] = wire[dropped] - 300
    r["fate"][dropped] = layout.fates_by_name["dropped"]
    r["drop_reason"][dropped], r["drop_stage"][dropped] = 6, layout.stage_index("dev_queue")
    read &= ~dropped
    r["ts"][read, layout.stage_index("rx_stack")] = wire[read] + 2_000
    r["ts"][read, layout.stage_index("sock_queue")] = wire[read] + 6_000
    r["ts"][read, layout.stage_index("rx_read")] = wire[read] + 6_000 + rng.integers(
        1_000, 90_000, int(read.sum())).astype(np.uint64)
    read_at = r["ts"][read, layout.stage_index("rx_read")]
    r["ts"][read, layout.stage_index("rx_done")] = read_at + 900
    r["fate"][read] = layout.fates_by_name["received"]
    r["flags"][read] |= layout.flags["receive"]
    r["rx_pid"][read], r["rx_tid"][read], r["rx_cpu"][read] = 5_150, 5_150, 1
    r["rx_comm"][read], r["rx_ifname"][read] = b"subscriber", b"ut0b"
    r["rx_netns"][read] = NETNS + 1
    r["rx_syscall"][read] = next(k for k, v in layout.syscalls.items() if v == "recvfrom")
    r["rx_ret"][read] = 64
    return packets


def _rate(rows: int, run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return rows / (time.perf_counter() - start)


def alternatives(columns: pa.Table) -> dict[str, Callable[[], object]]:
    """Other encoders on the same batch's columns, flat: each does less than a JSON record
    (no nesting, no absent members), so its rate is a bound on what it could reach."""
    import pyarrow.compute as pc
    out: dict[str, Callable[[], object]] = {}

    def arrow_join() -> object:
        pieces = []
        for name in columns.column_names:
            column = columns[name]
            text = (pc.utf8_replace_slice(column, 0, 0, '"') if pa.types.is_string(column.type)
                    else pc.cast(column, pa.string()))
            pieces += [f',"{name}":', text]
        pieces[0] = pieces[0][1:]
        return pc.binary_join_element_wise("{", *pieces, "}\n", "",
                                           null_handling="replace", null_replacement="null")
    out["pyarrow compute join"] = arrow_join
    try:
        import orjson
        out["orjson, a dict per row"] = lambda: [orjson.dumps(row) for row in columns.to_pylist()]
    except ImportError:
        pass
    try:
        import polars as pl
        out["polars write_ndjson"] = lambda: pl.from_arrow(columns).write_ndjson(io.BytesIO())
    except ImportError:
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=16384,
                   help="rows per batch (default 16384: a 0.1 s batch at 160k datagrams/s)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batches", type=int, default=6, help="batches per Parquet part")
    p.add_argument("--compare", action="store_true",
                   help="also time other encoders on the flood's columns (pyarrow's compute "
                        "join; orjson and polars where installed)")
    args = p.parse_args(argv)
    layout = layout_of_object()
    kinds = {"flood": flood(layout, args.rows), "mixed": mixed(layout, args.rows)}
    empty = Batch(Packets.empty(layout), layout, DROP_REASONS)
    columns = PacketColumns(packet_table(layout), empty)
    others = alternatives(columns(Batch(kinds["flood"], layout, DROP_REASONS))) if args.compare \
        else {}
    rates: dict[str, list[float]] = {}
    with open(os.devnull, "wb") as null, \
            tempfile.TemporaryDirectory(prefix="udptrace-bench-") as scratch:
        json_out = JsonLines(null, layout, DROP_REASONS)
        for round_ in range(args.rounds):
            for kind, packets in kinds.items():
                rows = len(packets)
                rates.setdefault(f"{kind} json lines/s", []).append(_rate(
                    rows, lambda p=packets: json_out.write_packets(Batch(p, layout,
                                                                         DROP_REASONS))))
                tables: list[pa.Table] = []
                rates.setdefault(f"{kind} columns rows/s", []).append(_rate(
                    rows * args.batches, lambda p=packets, t=tables: t.extend(
                        columns(Batch(p, layout, DROP_REASONS)) for _ in range(args.batches))))
                writer = RecordingWriter(Path(scratch) / f"{round_}-{kind}.parquet")
                for table in tables:
                    writer.add("packets", table)
                rates.setdefault(f"{kind} parquet part rows/s", []).append(_rate(
                    rows * args.batches, lambda w=writer: w.flush({}, final=False)))
                writer.abort()
            for name, encode in others.items():
                rates.setdefault(f"flood {name} lines/s", []).append(_rate(args.rows, encode))
    for kind in kinds:
        built = rates[f"{kind} columns rows/s"]
        parts = rates[f"{kind} parquet part rows/s"]
        rates[f"{kind} record rows/s"] = [1 / (1 / c + 1 / w) for c, w in zip(built, parts,
                                                                             strict=True)]
    print(f"{args.rows} rows per batch, {args.rounds} rounds, one core; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, values in sorted(rates.items()):
        print(f"  {name:40} best {max(values):>12,.0f}   median "
              f"{statistics.median(values):>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
