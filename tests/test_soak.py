"""Long runs at the rate a sender reaches lose no record and keep memory and maps flat.

The half-minute run is part of the default suite; the long one is opt-in:

    .venv/bin/python -m pytest -m soak tests/test_soak.py     (UDPTRACE_SOAK_S=600 by default)

Both run the tracer's own loop with `--json` output (to /dev/null) and print what they
measured: the sender's rate, the longest gap between two reads of the ring buffer and how
full it was.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import send_from

from udptrace.netns import VethPair
from udptrace.report.fanout import PacketOutputs
from udptrace.report.jsonl import JsonLines
from udptrace.trace import run
from udptrace.trace.options import TraceOptions
from udptrace.trace.session import TraceSession

RATE_PPS = 20_000  # the sender's target; a Python sender reaches 4-7 k/s on this machine kind
MIN_RATE_PPS = 1_000  # below this the run proves little
SAMPLE_S = 10.0
SHORT_S = 30.0  # three RSS samples: enough to see growth; the suite keeps to 20 minutes
SOAK_S = float(os.environ.get("UDPTRACE_SOAK_S", "600"))


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def entries(session: TraceSession, name: str) -> int:
    return sum(1 for _ in session.obj.maps[name].iter_keys())


@dataclass
class Soak:
    """What one run measured."""

    duration_s: float
    result: run.TraceResult | None = None
    read_at: list[float] = field(default_factory=list)  # when the ring buffer was read
    fill: list[int] = field(default_factory=list)  # and the bytes it held then
    rss_kib: list[int] = field(default_factory=list)  # every SAMPLE_S
    states: list[int] = field(default_factory=list)  # packets being followed
    threads: list[int] = field(default_factory=list)  # threads with syscall state (an LRU map:
                                                      # every thread on the host that sends)

    def report(self, ring_bytes: int) -> str:
        assert self.result is not None
        counters = self.result.snapshot.counters
        gaps = np.diff(self.read_at) * 1e3
        fill = np.array(self.fill) / ring_bytes * 100
        return (f"soak {self.result.elapsed_s:.0f} s: {counters['packets']} datagrams "
                f"({counters['packets'] / self.result.elapsed_s:.0f}/s), "
                f"{self.result.records} records, {counters['lost']} lost, "
                f"{counters['lost_syscalls']} syscall records lost; ring reads "
                f"{len(self.read_at)}, gap p99 {np.percentile(gaps, 99):.0f} ms, "
                f"longest {gaps.max():.0f} ms; ring fill p50 {np.percentile(fill, 50):.1f} %, "
                f"p99 {np.percentile(fill, 99):.1f} %, peak {fill.max():.1f} % of "
                f"{ring_bytes >> 20} MiB; RSS {min(self.rss_kib)}-{max(self.rss_kib)} KiB, "
                f"packet states at most {max(self.states)}, thread states "
                f"{min(self.threads)}-{max(self.threads)}; load {os.getloadavg()[0]:.1f}")


def soak(net: VethPair, duration_s: float, capsys: pytest.CaptureFixture[str]) -> Soak:
    measured = Soak(duration_s)
    session = TraceSession(TraceOptions(netns=net.ns_a, stream=True))
    read = session.read

    def timed_read() -> np.ndarray:
        records = read()
        measured.read_at.append(time.monotonic())
        measured.fill.append(session.reader.fill if session.reader else 0)
        return records

    session.read = timed_read  # type: ignore[method-assign]
    sender = send_from(net, int(duration_s * RATE_PPS), 1 / RATE_PPS)
    next_sample = SAMPLE_S

    def on_status(counters: dict[str, int], elapsed: float, records: int | None) -> None:
        nonlocal next_sample
        if elapsed >= next_sample:
            next_sample += SAMPLE_S
            measured.rss_kib.append(rss_kib())
            measured.states.append(entries(session, "packets"))
            measured.threads.append(entries(session, "calls"))
        if elapsed >= duration_s - 2 and sender.poll() is None:
            sender.kill()  # the last datagrams' records reach the ring before the end

    try:
        with open(os.devnull, "wb") as devnull:
            stop = threading.Event()
            names = session.drop_reason_names()
            outputs = PacketOutputs(session.layout, names, stop,
                                    json=JsonLines(devnull, session.layout, names))
            measured.result = run.run(session, duration_s, stop, outputs, on_status)
    finally:
        sender.kill()
        sender.wait()
        session.close()
    with capsys.disabled():
        print("\n" + measured.report(session.options.ringbuf_bytes))
    return measured


def check(measured: Soak) -> None:
    assert measured.result is not None
    counters = measured.result.snapshot.counters
    assert counters["packets"] >= MIN_RATE_PPS * measured.duration_s, counters
    assert counters["lost"] == 0 and counters["lost_syscalls"] == 0, counters
    assert measured.result.records == counters["packets"], counters  # every record arrived
    warm = measured.rss_kib[len(measured.rss_kib) // 4:]  # buffers have found their size
    assert max(warm) - min(warm) < 16 * 1024, measured.rss_kib
    assert max(measured.states) < 64, measured.states  # followed packets end


def test_half_a_minute_at_the_senders_rate_loses_no_record(
        net: VethPair, capsys: pytest.CaptureFixture[str]) -> None:
    check(soak(net, SHORT_S, capsys))


@pytest.mark.soak
@pytest.mark.timeout(SOAK_S + 180)
def test_a_long_run_loses_no_record_and_keeps_memory_and_maps_flat(
        net: VethPair, capsys: pytest.CaptureFixture[str]) -> None:
    check(soak(net, SOAK_S, capsys))
