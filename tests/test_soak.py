"""Opt-in soak: a long run at a bounded high rate keeps memory and map sizes flat.

    .venv/bin/python -m pytest -m soak tests/test_soak.py     (UDPTRACE_SOAK_S=600 by default)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import send_from

from udptrace.netns import VethPair
from udptrace.trace.decode import SyscallJoin
from udptrace.trace.options import TraceOptions
from udptrace.trace.session import TraceSession

RATE_PPS = 20_000
SAMPLE_S = 10.0


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.soak
def test_a_long_run_keeps_memory_and_maps_flat(net: VethPair) -> None:
    duration = float(os.environ.get("UDPTRACE_SOAK_S", "600"))
    session = TraceSession(TraceOptions(netns=net.ns_a, stream=True))
    join = SyscallJoin(session.layout)
    sender = send_from(net, int(duration * RATE_PPS), 1 / RATE_PPS)
    rss, states, packets = [], [], 0
    try:
        start = next_sample = time.monotonic()
        while time.monotonic() - start < duration and sender.poll() is None:
            time.sleep(0.1)
            packets += len(join.add(session.read()))
            if time.monotonic() >= next_sample:
                next_sample += SAMPLE_S
                rss.append(rss_kib())
                states.append(sum(1 for _ in session.obj.maps["packets"].iter_keys()))
        counters = session.counters()
    finally:
        sender.kill()
        sender.wait()
        session.close()
    assert packets > 0 and counters["lost"] == 0
    warm = rss[len(rss) // 4:]  # after the first quarter: buffers have found their size
    assert max(warm) - min(warm) < 16 * 1024, rss
    assert max(states) < 64, states  # followed packets end; nothing accumulates
