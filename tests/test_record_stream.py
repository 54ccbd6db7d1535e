"""What the ring buffer carries: one record per datagram where the syscall's end is known,
no more of each record than the mode needs, and a reader woken by the data."""

from __future__ import annotations

import os
import select
import socket
import threading
import time

import numpy as np
import pytest

from udptrace.netns import VethPair, inside
from udptrace.trace.options import TraceOptions
from udptrace.trace.session import TraceSession

PORT = 4840


@pytest.fixture(autouse=True)
def sink(net: VethPair) -> socket.socket:
    with inside(net.ns_b):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((net.addr_b, PORT))
    return s


def sender(net: VethPair) -> socket.socket:
    """A socket in a, to b, whose neighbour is already resolved: the first datagram to a
    new neighbour waits for ARP and leaves from the shared state, with its own syscall
    record."""
    with inside(net.ns_a):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"arp", (net.addr_b, PORT))
    return s


def read_all(session: TraceSession) -> np.ndarray:
    """Raw records as the ring buffer carried them (no join)."""
    time.sleep(0.2)
    return np.concatenate([session.read(), session.unfinished()])


def test_a_datagram_sent_inside_its_syscall_is_one_record_with_the_syscalls_end(
        net: VethPair) -> None:
    s = sender(net)
    with TraceSession(TraceOptions(pids=(os.getpid(),), stream=True)) as session:
        for i in range(200):
            s.sendto(b"x" * (i % 50 + 1), (net.addr_b, PORT))
        raw = read_all(session)
        counters = session.counters()
    layout = session.layout
    assert len(raw) == 200 and (raw["kind"] == layout.kind("packet")).all()
    assert (raw["syscall_exit"] >= raw["ts"].max(axis=1)).all()
    assert sorted(raw["syscall_ret"].tolist()) == sorted(i % 50 + 1 for i in range(200))
    assert counters["syscalls"] == 200 and counters["lost_syscalls"] == 0


def test_a_syscall_with_several_datagrams_still_has_its_own_record(net: VethPair) -> None:
    s = sender(net)
    with TraceSession(TraceOptions(pids=(os.getpid(),), stream=True)) as session:
        for _ in range(5):
            s.sendto(b"f" * 3000, (net.addr_b, PORT))  # three IP fragments each
        raw = read_all(session)
    layout = session.layout
    packets = raw[raw["kind"] == layout.kind("packet")]
    calls = raw[raw["kind"] == layout.kind("syscall")]
    assert len(packets) == 15 and len(calls) == 5
    assert (packets["syscall_exit"] == 0).all()
    assert (calls["syscall_ret"] == 3000).all()
    assert set(packets["syscall_id"]) == set(calls["syscall_id"])


def test_records_carry_only_the_fields_their_mode_fills(net: VethPair) -> None:
    s = sender(net)
    sizes, frames = {}, {}
    for name, options in (("send", TraceOptions(pids=(os.getpid(),), stream=True)),
                          ("pubsub", TraceOptions(pids=(os.getpid(),), stream=True,
                                                  payload_port=PORT)),
                          ("e2e", TraceOptions(pids=(os.getpid(),), stream=True, e2e=True)),
                          ("snaplen", TraceOptions(pids=(os.getpid(),), stream=True,
                                                   snaplen=48))):
        with TraceSession(options) as session:
            s.sendto(b"p" * 20, (net.addr_b, PORT))
            raw = read_all(session)
            sizes[name] = session.reader.record_bytes
        packets = raw[raw["kind"] == session.layout.kind("packet")]
        assert len(packets) == 1 and packets[0]["pid"] == os.getpid()
        assert packets[0]["len"] > 20 and packets[0]["dport"] == PORT
        frames[name] = bytes(packets[0]["frame"][:packets[0]["frame_caplen"]])
    record = session.layout.record
    tail = [n for n in record.names if record.fields[n][1] >= record.fields["payload"][1]]
    # payload, the receive side's fields and then the frame end the record; nothing else
    # may, or a send-only trace would cut it off
    assert tail[0] == "payload" and all(n.startswith("rx_") for n in tail[1:-1])
    assert tail[-1] == "frame"
    assert sizes == {"send": record.fields["payload"][1], "pubsub": record.fields["rx_ret"][1],
                     "e2e": record.fields["frame"][1],
                     "snaplen": record.fields["frame"][1] + 48}
    # 48 bytes: Ethernet, IPv4 and UDP headers, then the payload's first 6
    assert frames["snaplen"][12:14] == b"\x08\x00" and frames["snaplen"][42:] == b"p" * 6
    assert {name: f for name, f in frames.items() if f} == {"snaplen": frames["snaplen"]}


def test_a_reader_waiting_on_the_ring_is_woken_by_its_data(net: VethPair) -> None:
    s = sender(net)
    ring = 64 * 1024
    with TraceSession(TraceOptions(pids=(os.getpid(),), stream=True,
                                   ringbuf_bytes=ring)) as session:
        poller = select.epoll()
        poller.register(session.obj.maps["events"].fd, select.EPOLLIN)
        woken: list[float] = []

        def wait() -> None:
            start = time.monotonic()
            if poller.poll(10.0):
                woken.append(time.monotonic() - start)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.2)  # blocked in epoll before the first record
        for _ in range(2 * ring // session.reader.stride):
            s.sendto(b"w", (net.addr_b, PORT))
        waiter.join(timeout=15)
        poller.close()
    assert woken and woken[0] < 10.0  # before epoll's own timeout: the data woke it


def test_syscall_ids_are_unique_across_cpus(net: VethPair) -> None:
    if os.cpu_count() < 2:
        pytest.skip("needs two CPUs")
    sockets = [sender(net) for _ in range(2)]

    def send_on(cpu: int, s: socket.socket) -> None:
        os.sched_setaffinity(0, {cpu})
        for _ in range(50):
            s.sendto(b"c", (net.addr_b, PORT))

    with TraceSession(TraceOptions(pids=(os.getpid(),), stream=True)) as session:
        threads = [threading.Thread(target=send_on, args=(cpu, s))
                   for cpu, s in enumerate(sockets)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        raw = read_all(session)
    ids = raw["syscall_id"]
    assert len(raw) == 100 and len(set(ids.tolist())) == 100
    assert set((ids >> np.uint64(48)).tolist()) == {0, 1}  # the CPU of each syscall
