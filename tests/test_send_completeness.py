"""Every way user space sends a UDP datagram is followed, or counted when it cannot be tied."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import records, tracing

from udptrace.errors import UsageError
from udptrace.netns import VethPair, inside
from udptrace.report.fields import Batch
from udptrace.report.jsonl import JsonLines
from udptrace.trace.options import TraceOptions
from udptrace.trace.session import TraceSession

PORT = 4840
SOL_UDP, UDP_SEGMENT = 17, 103
SO_ZEROCOPY, MSG_ZEROCOPY = 60, 0x4000000
URING_SOURCE = Path(__file__).parent / "programs" / "uring_sender.c"


@pytest.fixture(autouse=True)
def sink(net: VethPair) -> socket.socket:
    """A bound socket at the destination: without one, ICMP port unreachable makes a
    connected sender's next send fail with ECONNREFUSED."""
    with inside(net.ns_b):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((net.addr_b, PORT))
    return s


def connected(net: VethPair) -> socket.socket:
    with inside(net.ns_a):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((net.addr_b, PORT))
    return s


def syscall_names(session, recs: np.ndarray) -> set[str]:
    return {session.layout.syscalls[int(v)] for v in recs["syscall"]}


def test_udp_gso_is_one_record_per_send_counting_its_segments(net: VethPair) -> None:
    s = connected(net)
    s.setsockopt(SOL_UDP, UDP_SEGMENT, 100)
    with tracing(pids=(os.getpid(),)) as (session, batches):
        for _ in range(10):
            assert s.send(b"g" * 1000) == 1000
        snap = session.snapshot()
    recs = records(batches)
    assert len(recs) == 10
    assert (recs["gso_segs"] == 10).all() and (recs["gso_size"] == 100).all()
    assert snap.counters["datagrams"] == 100 and snap.counters["sent"] == 10
    batch = next(b for b in batches if len(b.records))
    text = JsonLines(io.BytesIO(), session.layout, {}).packet_text(
        Batch(batch, session.layout, {}))
    first = json.loads(text.splitlines()[0])
    assert (first["udp_len"], first["gso_segs"], first["gso_size"]) == (1008, 10, 100)


def test_msg_zerocopy_sends_are_followed(net: VethPair) -> None:
    s = connected(net)
    s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
    with tracing(pids=(os.getpid(),)) as (session, batches):
        for _ in range(20):
            assert s.sendmsg([b"z" * 2000], [], MSG_ZEROCOPY) == 2000
    recs = records(batches)
    # 2000 bytes over a 1500-byte MTU: two fragments per datagram
    assert len(set(recs["syscall_id"])) == 20 and len(recs) == 40
    assert syscall_names(session, recs) == {"sendmsg"}


def test_sendfile_and_splice_to_a_udp_socket_are_followed(net: VethPair,
                                                         tmp_path: Path) -> None:
    s = connected(net)
    data = tmp_path / "data"
    data.write_bytes(b"f" * 300)
    source = os.open(data, os.O_RDONLY)
    pipe_out, pipe_in = os.pipe()
    try:
        with tracing(pids=(os.getpid(),)) as (session, batches):
            for _ in range(10):
                assert os.sendfile(s.fileno(), source, 0, 300) == 300
                os.write(pipe_in, b"p" * 200)
                assert os.splice(pipe_out, s.fileno(), 200) == 200
    finally:
        for fd in (source, pipe_out, pipe_in):
            os.close(fd)
    recs = records(batches)
    names = [session.layout.syscalls[int(v)] for v in recs["syscall"]]
    assert names.count("sendfile") == 10 and names.count("splice") == 10
    assert sorted(set(recs["udp_len"] - 8)) == [200, 300]


@pytest.fixture(scope="module")
def uring_sender(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uring") / "uring_sender"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(URING_SOURCE), "-luring"], check=True)
    return out


def run_uring(net: VethPair, binary: Path, count: int, *mode: str) -> tuple[object, int]:
    process = net.popen(net.ns_a, [str(binary), net.addr_b, str(PORT), str(count), *mode],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return process, process.pid


def test_io_uring_sends_are_one_record_per_request(net: VethPair, uring_sender: Path) -> None:
    process, pid = run_uring(net, uring_sender, 50)
    with tracing(pids=(pid,)) as (session, batches):
        out, _ = process.communicate("go\n", timeout=30)
        snap = session.snapshot()
    recs = records(batches)
    assert int(out) == 50
    assert len(recs) == 50 and syscall_names(session, recs) == {"io_uring"}
    assert len(set(recs["syscall_id"])) == 50 and snap.counters["unattributed"] == 0


def test_io_uring_sends_on_a_worker_thread_are_counted_as_unattributed(
        net: VethPair, uring_sender: Path) -> None:
    process, pid = run_uring(net, uring_sender, 30, "async")
    with tracing(pids=(pid,)) as (session, batches):
        out, _ = process.communicate("go\n", timeout=30)
        snap = session.snapshot()
    followed = len(records(batches))
    assert int(out) == 30
    assert snap.counters["unattributed"] > 0  # io-wq sent them, on another thread
    assert followed + snap.counters["unattributed"] == 30


def test_many_threads_at_once_account_records_and_lost_exactly(net: VethPair) -> None:
    sockets = [connected(net) for _ in range(4)]

    def flood(s: socket.socket) -> None:
        for _ in range(3000):
            s.send(b"m" * 32)

    with tracing(pids=(os.getpid(),), ringbuf_bytes=64 * 1024) as (session, batches):
        threads = [threading.Thread(target=flood, args=(s,)) for s in sockets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        counters = session.counters()
    recs = records(batches)
    assert counters["packets"] == 12_000 and counters["syscalls"] == 12_000
    assert len(recs) + counters["lost"] == 12_000


def test_stages_core_attaches_fewer_hooks_and_follows_every_datagram(net: VethPair) -> None:
    s = connected(net)
    with tracing(pids=(os.getpid(),)) as (full, _):
        all_hooks = {h.program for p in full.plans for h in p.hooks}
    with tracing(pids=(os.getpid(),), stages=("core",)) as (session, batches):
        for _ in range(100):
            s.send(b"c")
    core_hooks = {h.program for p in session.plans for h in p.hooks}
    recs = records(batches)
    assert len(recs) == 100 and (recs["fate"] == session.layout.fates_by_name["sent"]).all()
    assert core_hooks < all_hooks
    assert {"neigh_parked", "qdisc_enqueue", "qdisc_dequeue"} <= set(session.left_out)
    assert "dev_queue" not in session.left_out
    # the softirq hooks only refine xmit_start: the fewest hooks leave them out too
    assert not {n for n in core_hooks if "softirq" in n} and not session.contexts_told


def test_an_unknown_stage_is_refused_before_loading() -> None:
    with pytest.raises(UsageError, match="no stage nosuch"):
        TraceSession(TraceOptions(stages=("nosuch",)))
