"""The decoder alone, on one core: ring buffer read, syscall join, JSON formatting.

Synthetic records go through the real ring buffer reader and the syscall join, and the
joined packets through JSON formatting. The records are laid out in a memfd as the kernel
lays out a BPF ring buffer map, by the names loader/ringbuf.py defines, so the real
RingBufferReader views and copies them.
"""

from __future__ import annotations

import argparse
import mmap
import os
import time

import numpy as np
from modes import PORT
from processes import BenchError

from udptrace import bpf
from udptrace.loader import ringbuf
from udptrace.loader.bpf_object import BpfObject
from udptrace.loader.ringbuf import RingBufferReader
from udptrace.report.fields import Batch
from udptrace.report.jsonl import JsonLines
from udptrace.trace.decode import SyscallJoin
from udptrace.trace.layout import Layout

JSON_BATCHES = 8  # ~30 times slower than decoding: fewer batches do
TARGET_RECORDS_PER_S = 1e6


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decoder-batch", type=int, default=16384,
                   help="packets (one record each) per decoder batch (default 16384: what "
                        "one 0.1 s poll of the ring holds at 160k packets/s)")
    p.add_argument("--decoder-batches", type=int, default=40)


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
        os.ftruncate(self.fd, ringbuf.DATA_OFFSET + 2 * size)  # what the reader maps
        self.map = mmap.mmap(self.fd, ringbuf.DATA_OFFSET + size)
        self.reader = RingBufferReader(self.fd, size, record, record_bytes)
        self.consumer = np.ndarray(1, np.uint64, self.map, ringbuf.CONSUMER_OFFSET)
        self.producer = np.ndarray(1, np.uint64, self.map, ringbuf.PRODUCER_OFFSET)

    def fill(self, records: np.ndarray) -> None:
        """Committed records from position 0 on (a batch never wraps: size is ample)."""
        stride = self.reader.stride
        if len(records) * stride > self.size:
            raise ValueError("batch larger than the fake ring")
        slots = np.ndarray((len(records), stride), np.uint8, self.map, ringbuf.DATA_OFFSET)
        size = self.reader.record_bytes
        slots[:, :4] = np.frombuffer(np.uint32(size).tobytes(), np.uint8)  # length: committed
        slots[:, ringbuf.HEADER:ringbuf.HEADER + size] = (
            records.view(np.uint8).reshape(len(records), -1)[:, :size])
        self.consumer[0] = 0
        self.producer[0] = len(records) * stride

    def close(self) -> None:
        self.reader.close()
        self.consumer = self.producer = np.zeros(1, np.uint64)  # an mmap a view holds stays open
        self.map.close()
        os.close(self.fd)


def run(args: argparse.Namespace) -> dict:
    """Records/s through read + join (one core), and packets/s through JSON formatting."""
    batch, batches = args.decoder_batch, args.decoder_batches
    with BpfObject(bpf.object_bytes("ut_trace"), "ut_trace") as obj:
        layout = Layout.from_object(obj)
    records = synthetic_records(layout, batch * batches)
    # as much of each record as a send trace without --pubsub carries
    record_bytes = layout.record_bytes(payload=False, receive=False)
    ring = FakeRing(layout.record, 1 << (batch * ringbuf.stride(record_bytes) - 1).bit_length(),
                    record_bytes)
    join = SyscallJoin(layout)
    read_s = join_s = 0.0
    joined = []
    try:
        for b in range(batches):
            ring.fill(records[b * batch:(b + 1) * batch])
            t0 = time.perf_counter()
            raw = ring.reader.read()
            t1 = time.perf_counter()
            out = join.add(raw, now_ns=0)
            read_s += t1 - t0
            join_s += time.perf_counter() - t1
            if len(out) != batch:
                raise BenchError(f"decoder returned {len(out)} of {batch} packets")
            if len(joined) < JSON_BATCHES:  # the rest are freed, as a tracer frees them
                joined.append(out)
    finally:
        ring.close()
    with open(os.devnull, "wb") as null:
        writer = JsonLines(null, layout, {})
        t0 = time.perf_counter()
        for out in joined:
            writer.write_packets(Batch(out, layout, {}))
        json_s = time.perf_counter() - t0
    total = batch * batches
    return {
        "batch_records": batch, "batches": batches,
        "decode_records_per_s": total / (read_s + join_s),
        "ring_read_records_per_s": total / read_s,
        "join_records_per_s": total / join_s,
        "json_packets_per_s": batch * len(joined) / json_s,
    }


def lines(figures: dict) -> list[str]:
    return [f"decoder alone, one core, batches of {figures['batch_records']:,} records: "
            f"read + join {figures['decode_records_per_s']:,.0f} records/s (ring read alone "
            f"{figures['ring_read_records_per_s']:,.0f}/s, join alone "
            f"{figures['join_records_per_s']:,.0f}/s)",
            f"JSON formatting alone (JsonLines.write_packets to /dev/null): "
            f"{figures['json_packets_per_s']:,.0f} packets/s"]


def targets(figures: dict) -> list[tuple[str, bool, str]]:
    rate = figures["decode_records_per_s"]
    return [("decoder ≥ 1 M records/s", rate >= TARGET_RECORDS_PER_S, f"{rate / 1e6:.2f} M/s")]
