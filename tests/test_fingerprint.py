"""A datagram's fingerprint: the same from its own bytes on the send path and the receive path.

Three sessions watch the same datagrams at once: one follows the sends, one the receive
path (--rx), one both (--e2e). Each datagram's fingerprint must be equal in all three and
equal to the definition computed here from the bytes the test sent.
"""

from __future__ import annotations

import os
import socket
from contextlib import ExitStack

import numpy as np
import pytest
from conftest import records, tracing

from udptrace.netns import VethPair, inside
from udptrace.trace.layout import Layout
from udptrace.trace.session import TraceSession

PORT = 4840
K = 0x9E3779B97F4A7C15
WORD = (1 << 64) - 1
SOL_UDP, UDP_SEGMENT = 17, 103


def mix(h: int) -> int:
    h ^= h >> 32
    h = h * K & WORD
    return h ^ (h >> 29)


def fingerprint(sport: int, dport: int, payload: bytes, window: int) -> int:
    """The definition (README, 'How it works'): ports and UDP length, then the first
    `window` payload bytes as big-endian words, zeros past the datagram in the last."""
    length = 8 + len(payload)
    data = payload[:window]
    h = mix(K ^ (sport << 48 | dport << 32 | length))
    for i in range(0, len(data), 8):
        h = (h ^ int.from_bytes(data[i:i + 8].ljust(8, b"\0"), "big")) * K & WORD
        h = (h << 31 | h >> 33) & WORD
    return mix(mix(h)) or 1


def window(session: TraceSession) -> int:
    """The payload bytes covered: ut_record.h's UT_FINGERPRINT_BYTES."""
    return session.obj.btf().enum_values("ut_limits")["UT_FINGERPRINT_BYTES"]


BASE = bytes(range(100))


def payloads(window: int) -> list[bytes]:
    """Shorter than the window, exactly it, longer; pairs that differ in one byte inside it
    (the first, the last) and one that differs only past it; one IP fragments."""
    last = window - 1
    return [b"", b"a", b"b" * 7, b"c" * 8, b"d" * 9, BASE[:10], BASE[:9] + b"\xff",
            BASE[:window - 1], BASE[:window], BASE[:window + 1], BASE,
            b"\xff" + BASE[1:], BASE[:last] + b"\xff" + BASE[last + 1:],
            BASE[:window] + b"\xff" + BASE[window + 1:], bytes(3000)]


def by_stage(recs: np.ndarray, layout: Layout, stage: str) -> np.ndarray:
    """Records in the order they reached `stage`: the order the test sent them in."""
    return recs[np.argsort(recs["ts"][:, layout.stage_index(stage)], kind="stable")]


def pair(net: VethPair, family: int) -> tuple[socket.socket, socket.socket]:
    """A sender in namespace a connected to a listener in b."""
    address = net.addr_b if family == socket.AF_INET else net.addr6_b
    with inside(net.ns_b):
        rx = socket.socket(family, socket.SOCK_DGRAM)
        rx.bind((address, PORT))
    rx.settimeout(2)
    with inside(net.ns_a):
        tx = socket.socket(family, socket.SOCK_DGRAM)
    tx.connect((address, PORT))
    return tx, rx


@pytest.mark.vm
def test_send_and_receive_paths_fingerprint_a_datagram_alike(net: VethPair) -> None:
    pairs = [pair(net, family) for family in (socket.AF_INET, socket.AF_INET6)]
    me = (os.getpid(),)
    with ExitStack() as stack:
        send, send_batches = stack.enter_context(tracing(pids=me))
        _, receive_batches = stack.enter_context(tracing(pids=me, rx=True, netns=net.ns_b))
        _, both_batches = stack.enter_context(tracing(pids=me, e2e=True))
        covered = window(send)
        sent = payloads(covered)
        for tx, rx in pairs:
            for payload in sent:
                tx.send(payload)
                assert rx.recv(4000) == payload
    layout = send.layout
    expected = [fingerprint(tx.getsockname()[1], PORT, p, covered) for tx, _ in pairs
                for p in sent]
    sends = by_stage(records(send_batches), layout, "syscall")
    fragment = (sends["flags"] & layout.flags["fragment"]) != 0
    # the 3000-byte datagrams are fragments (three over IPv4, three over IPv6): the first
    # fragment carries the datagram's fingerprint, the others none
    assert sends["fingerprint"][fragment].tolist() == [expected[len(sent) - 1], 0, 0,
                                                        expected[-1], 0, 0]
    first = ~fragment | (sends["fingerprint"] != 0)
    assert sends["fingerprint"][first].tolist() == expected
    # the receive path's own (--rx), and a send followed into its receiver (--e2e)
    assert by_stage(records(receive_batches), layout, "rx_done")["fingerprint"].tolist() == expected
    assert by_stage(records(both_batches), layout, "syscall")["fingerprint"].tolist() == expected
    # a byte inside the window tells two datagrams apart (the first, the last); one past it
    # does not: of all these, only BASE and its copy changed at byte `covered` are alike
    ipv4 = expected[:len(sent)]
    past = sent.index(BASE[:covered] + b"\xff" + BASE[covered + 1:])
    assert ipv4[past] == ipv4[sent.index(BASE)]
    assert len(set(ipv4)) == len(sent) - 1 and len(set(expected)) == 2 * (len(sent) - 1)


def test_a_udp_gso_send_has_no_fingerprint_its_datagrams_have_theirs(net: VethPair) -> None:
    tx, rx = pair(net, socket.AF_INET)
    tx.setsockopt(SOL_UDP, UDP_SEGMENT, 100)
    me = (os.getpid(),)
    with ExitStack() as stack:
        send, send_batches = stack.enter_context(tracing(pids=me))
        tx.send(BASE * 3)
        assert [rx.recv(200) for _ in range(3)] == [BASE] * 3
        tx.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
        tx.send(BASE)
        assert rx.recv(200) == BASE
        covered = window(send)
    gso, plain = by_stage(records(send_batches), send.layout, "syscall")
    assert (gso["gso_segs"], gso["fingerprint"]) == (3, 0)
    assert plain["fingerprint"] == fingerprint(tx.getsockname()[1], PORT, BASE, covered)
