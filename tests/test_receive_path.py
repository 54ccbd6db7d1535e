"""The receive side and end to end, against the real kernel, between namespaces."""

from __future__ import annotations

import os
import socket
import time

import numpy as np
from conftest import records, send_from, span_sums, tracing

from udptrace.netns import VethPair, inside

PORT = 4840
RX_ORDER = ("syscall", "dev_queue", "xmit_start", "rx_handoff", "rx_stack", "sock_queue",
            "rx_read", "rx_done")


def listener(net: VethPair, family: int = socket.AF_INET, address: str | None = None,
             rcvbuf: int = 0) -> socket.socket:
    with inside(net.ns_b):
        s = socket.socket(family, socket.SOCK_DGRAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((address or net.addr_b, PORT))
    s.settimeout(2)
    return s


def sender(net: VethPair, family: int = socket.AF_INET) -> socket.socket:
    with inside(net.ns_a):
        return socket.socket(family, socket.SOCK_DGRAM)


def fates(session, recs: np.ndarray) -> dict[str, int]:
    names = session.layout.fates
    kinds, counts = np.unique(recs["fate"], return_counts=True)
    return {names[int(k)]: int(n) for k, n in zip(kinds, counts, strict=True)}


def stage(recs: np.ndarray, session, name: str) -> np.ndarray:
    return recs["ts"][:, session.layout.stage_index(name)].astype(np.int64)


def test_e2e_follows_every_datagram_to_the_readers_recv_return(net: VethPair) -> None:
    rx, tx = listener(net), sender(net)
    with tracing(pids=(os.getpid(),), e2e=True) as (session, batches):
        for i in range(200):
            tx.sendto(b"e2e %d" % i, (net.addr_b, PORT))
            assert rx.recvfrom(100)[0] == b"e2e %d" % i
        snapshot = session.snapshot()
    recs = records(batches)
    assert len(recs) == 200 and fates(session, recs) == {"received": 200}
    for span in ("rx", "e2e", "total", "send_syscall"):  # the kernel's and the records' alike
        kernel, ours = span_sums(session, snapshot, batches, span)
        assert kernel == ours and kernel[0] == 200, span
    ts = np.stack([stage(recs, session, n) for n in RX_ORDER], axis=1)
    assert (ts > 0).all() and (np.diff(ts, axis=1) >= 0).all()
    assert (recs["rx_pid"] == os.getpid()).all()
    order = np.argsort(stage(recs, session, "syscall"))  # ids count per CPU: not in order
    assert recs["rx_ret"][order].tolist() == [len(b"e2e %d" % i) for i in range(200)]
    assert {session.layout.syscalls[int(v)] for v in recs["rx_syscall"]} == {"recvfrom"}
    assert {n.decode() for n in recs["rx_ifname"]} == {net.if_b}
    assert len(set(recs["syscall_id"])) == 200


def test_a_small_receive_buffer_drops_with_its_reason_and_accounts_exactly(net: VethPair) -> None:
    rx, tx = listener(net, rcvbuf=4096), sender(net)
    with tracing(pids=(os.getpid(),), e2e=True) as (session, batches):
        for _ in range(300):
            tx.sendto(b"x" * 1000, (net.addr_b, PORT))
        read = 0
        for _ in range(1):
            rx.recvfrom(2000)
            read += 1
        time.sleep(0.05)
        snap = session.snapshot()
    recs = records(batches)
    count = fates(session, recs)
    names = session.drop_reason_names()
    dropped = recs[recs["fate"] == session.layout.fates_by_name["dropped"]]
    assert count["received"] == read and count["dropped"] > 200 and count.get("unread", 0) > 0
    assert 300 - count["received"] - count["dropped"] - count["unread"] == 0
    assert {names[int(r)] for r in dropped["drop_reason"]} == {"SOCKET_RCVBUFF"}
    assert {session.layout.stages[int(s)] for s in dropped["drop_stage"]} <= {
        "rx_stack", "rx_handoff", "xmit_done", "udp_queue"}  # udp_queue: where fentry works
    assert snap.counters["rx_dropped"] == count["dropped"]


def test_no_listener_is_a_no_socket_drop_on_the_receive_side(net: VethPair) -> None:
    tx = sender(net)
    with tracing(pids=(os.getpid(),), e2e=True) as (session, batches):
        for _ in range(50):
            tx.sendto(b"nobody", (net.addr_b, PORT))
    recs = records(batches)
    names = session.drop_reason_names()
    assert fates(session, recs) == {"dropped": 50}
    assert {names[int(r)] for r in recs["drop_reason"]} == {"NO_SOCKET"}
    assert (stage(recs, session, "rx_stack") > 0).all()


def test_two_multicast_members_give_two_records_per_datagram(net: VethPair) -> None:
    group = "239.7.7.7"
    members = []
    for _ in range(2):
        with inside(net.ns_b):
            m = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            m.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            m.bind(("", PORT))
            m.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                         socket.inet_aton(group) + socket.inet_aton(net.addr_b))
        m.settimeout(2)
        members.append(m)
    tx = sender(net)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(net.addr_a))
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    with tracing(pids=(os.getpid(),), e2e=True) as (session, batches):
        for i in range(20):
            tx.sendto(b"mc%d" % i, (group, PORT))
            for m in members:
                m.recvfrom(100)
    recs = records(batches)
    assert fates(session, recs) == {"received": 40}
    _ids, per_datagram = np.unique(recs["syscall_id"], return_counts=True)
    assert len(per_datagram) == 20 and (per_datagram == 2).all()
    # each member's copy ended at its own socket: two distinct reads per datagram
    assert len(set(zip(recs["syscall_id"].tolist(), stage(recs, session, "rx_done").tolist(),
                       strict=True))) == 40


def test_rx_alone_sees_datagrams_from_an_untraced_sender(net: VethPair) -> None:
    rx = listener(net)
    with tracing(rx=True, netns=net.ns_b, ports=(PORT,)) as (session, batches):
        sent = send_from(net, 30, 0.002)
        for _ in range(30):
            rx.recvfrom(100)
        sent.wait(timeout=10)
    recs = records(batches)
    assert len(recs) == 30 and fates(session, recs) == {"received": 30}
    assert (recs["syscall_id"] == 0).all() and (stage(recs, session, "syscall") == 0).all()
    order = ("rx_driver", "rx_stack", "sock_queue", "rx_read", "rx_done")
    ts = np.stack([stage(recs, session, n) for n in order], axis=1)
    assert (ts > 0).all() and (np.diff(ts, axis=1) >= 0).all()
    assert (recs["rx_pid"] == os.getpid()).all() and (recs["dport"] == PORT).all()


def test_ipv6_end_to_end(net: VethPair) -> None:
    rx, tx = listener(net, socket.AF_INET6, net.addr6_b), sender(net, socket.AF_INET6)
    with tracing(pids=(os.getpid(),), e2e=True) as (session, batches):
        for _ in range(20):
            tx.sendto(b"six", (net.addr6_b, PORT))
            rx.recvfrom(10)
    recs = records(batches)
    assert fates(session, recs) == {"received": 20}
    assert (recs["family"] == socket.AF_INET6).all()
    assert (stage(recs, session, "rx_done") > stage(recs, session, "syscall")).all()


def test_the_socket_queue_wait_grows_when_the_reader_is_late(net: VethPair) -> None:
    rx, tx = listener(net), sender(net)
    waits = {}
    for late_s in (0.0, 0.02):
        with tracing(pids=(os.getpid(),), e2e=True) as (session, batches):
            for _ in range(10):
                tx.sendto(b"late", (net.addr_b, PORT))
                time.sleep(late_s)
                rx.recvfrom(10)
        recs = records(batches)
        waits[late_s] = np.median(stage(recs, session, "rx_read")
                                  - stage(recs, session, "sock_queue"))
    assert waits[0.02] > 15_000_000 > 1_000_000 > waits[0.0]
