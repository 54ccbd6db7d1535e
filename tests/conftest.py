"""Shared fixtures: private networks, tracing helpers, and the no-leftovers check."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import bpf_programs
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from udptrace import bpf
from udptrace.loader.bpf_object import BpfObject
from udptrace.netns import VethPair, inside
from udptrace.report.stage_latency import PacketTimes
from udptrace.trace.decode import Packets, SyscallJoin
from udptrace.trace.layout import Layout
from udptrace.trace.options import TraceOptions
from udptrace.trace.session import Snapshot, TraceSession

if os.geteuid() != 0:
    pytest.exit("udptrace's tests attach BPF programs to the kernel: run them as root", 2)

# Hypothesis' per-example deadline is a timed assert: under load (a busy CI machine, the
# emulated CPU) it failed examples that were merely slow. What they check is not speed.
settings.register_profile("udptrace", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("udptrace")

# test_vm.py's line about each kernel it booted, shown at the end of every run (even -q)
VM_SUMMARY = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    for line in config.stash.get(VM_SUMMARY, []):
        terminalreporter.write_line(line)


def connected_to_listener(net: VethPair, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP socket in namespace a connected to one bound in b (keep both): without the
    listener the peer's ICMP refusal fails the sender's next send, ending a batch early."""
    with inside(net.ns_b):
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind((net.addr_b, port))
    with inside(net.ns_a):
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect((net.addr_b, port))
    return sender, listener


def receive(listener: socket.socket, count: int, timeout_s: float = 5.0) -> int:
    """Read until `count` datagrams arrived or `timeout_s` passed; how many arrived."""
    deadline = time.monotonic() + timeout_s
    got = 0
    while got < count and (left := deadline - time.monotonic()) > 0:
        listener.settimeout(left)
        try:
            listener.recv(65536)
        except TimeoutError:
            break
        got += 1
    return got


def udptrace(*args: str) -> list[str]:
    return [sys.executable, "-m", "udptrace", *args]


@pytest.fixture(scope="session", autouse=True)
def nothing_left_attached() -> Iterator[None]:
    yield
    left = [p.name for p in bpf_programs.of_process(os.getpid())]
    assert not [n for n in left if n.startswith("ut_")], f"a test left {left} loaded"


@pytest.fixture
def net() -> Iterator[VethPair]:
    with VethPair() as pair:
        yield pair


@contextmanager
def tracing(**options: object) -> Iterator[tuple[TraceSession, list[Packets]]]:
    """A streaming session; on exit the list holds every packet it saw, joined to its syscall."""
    batches: list[Packets] = []
    session = TraceSession(TraceOptions(stream=True, **options))  # type: ignore[arg-type]
    join = SyscallJoin(session.layout)
    try:
        yield session, batches
        time.sleep(0.2)
        batches.append(join.add(session.read()))
        batches.append(join.add(session.unfinished()))
        batches.append(join.flush())
    finally:
        session.close()


def records(batches: list[Packets]) -> np.ndarray:
    return np.concatenate([b.records for b in batches]) if batches else np.empty(0)


def span_sums(session: TraceSession, snapshot: Snapshot, batches: list[Packets],
              span: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A span's exact count, sum, min and max as the kernel's histogram has them, and as
    recomputed from the records: the catalogue's roles in C and in Python, side by side."""
    hist = snapshot.hists[session.layout.span_slot(span)]
    values = np.concatenate([PacketTimes.of(b, session.layout).span(span)[1] for b in batches])
    ours = (len(values), int(values.sum()), int(values.min()), int(values.max())) if len(
        values) else (0, 0, 0, 0)
    return tuple(int(hist[f]) for f in ("count", "sum", "min", "max")), ours


SENDER = """
import socket, sys, time
count, interval, size, address, port = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), \\
    sys.argv[4], int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(count):
    s.sendto(b"u" * size, (address, port))
    if interval:
        time.sleep(interval)
"""


def send_from(net: VethPair, count: int, interval_s: float = 0.0, size: int = 64,
              port: int = 4840) -> subprocess.Popen:
    """A separate process in namespace a sending `count` datagrams to b (bounded)."""
    return net.popen(net.ns_a, [sys.executable, "-c", SENDER, str(count), str(interval_s),
                                str(size), net.addr_b, str(port)])


def start_run(*args: str) -> subprocess.Popen:
    """`udptrace record|trace ...`; returns once it says its programs are attached."""
    process = subprocess.Popen(udptrace(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith(("recording", "tracing")), line + process.stderr.read()
    return process


@pytest.fixture(scope="module")
def layout() -> Layout:
    """The record layout of the built ut_trace object, for tests that make records."""
    obj = BpfObject(bpf.object_bytes("ut_trace"), "ut_trace")
    try:
        return Layout.from_object(obj)
    finally:
        obj.close()


def start_tracer(*args: str) -> subprocess.Popen:
    """`udptrace trace ...` in its own session; returns once its programs are attached."""
    process = subprocess.Popen(udptrace("trace", *args), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("tracing UDP sends"), line + process.stderr.read()
    return process


