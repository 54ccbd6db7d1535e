"""Shared fixtures: private networks, tracing helpers, and the no-leftovers check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from udptrace.netns import VethPair
from udptrace.trace.decode import Packets, SyscallJoin
from udptrace.trace.options import TraceOptions
from udptrace.trace.session import TraceSession

if os.geteuid() != 0:
    pytest.exit("udptrace's tests attach BPF programs to the kernel: run them as root", 2)


def udptrace(*args: str) -> list[str]:
    return [sys.executable, "-m", "udptrace", *args]


def ut_programs(held_by: int | None = None) -> list[str]:
    """Loaded BPF programs that look like ours; only those `held_by` a pid when given.

    A program lives while some process holds it; bpftool lists the holders. Other
    udptrace runs on the machine are not ours to judge, so checks name the pid.
    """
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True,
                         check=True).stdout
    return [p["name"] for p in json.loads(out) if p.get("name", "").startswith("ut_") and (
        held_by is None or held_by in {h["pid"] for h in p.get("pids", [])})]


@pytest.fixture(scope="session", autouse=True)
def nothing_left_attached() -> Iterator[None]:
    yield
    assert not ut_programs(held_by=os.getpid()), "a test left ut_* BPF programs loaded"


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
        batches.append(join.flush())
    finally:
        session.close()


def records(batches: list[Packets]) -> np.ndarray:
    return np.concatenate([b.records for b in batches]) if batches else np.empty(0)
