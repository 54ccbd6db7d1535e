"""The tracing loop shared by `trace`, `record` and `demo`: read, join, hand on, report status."""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from udptrace.signals import stop_on_signals
from udptrace.trace.decode import Packets, SyscallJoin
from udptrace.trace.drain import RingDrain
from udptrace.trace.session import Snapshot, TraceSession

StatusCallback = Callable[[dict[str, int], float, int | None], None]

BATCH_INTERVAL_S = 0.1  # how often batches are handed on; reading has its own thread
STATUS_INTERVAL_S = 1.0


@dataclass(frozen=True)
class TraceResult:
    snapshot: Snapshot
    records: int  # packet records read from the ring buffer
    elapsed_s: float
    interrupted: bool
    unread: int = 0  # receive records still queued on a socket at the end
    ring_peak_bytes: int = 0  # the most the ring buffer held at a read (0 unless streaming)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Everything made before tracing lives for the run: a full collection rescanning it
    (33,000 objects) held the loop, and the reading thread with it, for about 40 ms."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run(session: TraceSession, duration_s: float | None, stop: threading.Event,
        on_packets: Callable[[Packets], None] | None = None,
        on_status: StatusCallback | None = None) -> TraceResult:
    join = SyscallJoin(session.layout)
    records = 0
    start = time.monotonic()
    next_status = start + STATUS_INTERVAL_S
    streaming = session.options.stream

    def drain(packets: Packets) -> None:
        nonlocal records
        records += len(packets)
        if on_packets is not None and len(packets):
            on_packets(packets)

    ring = RingDrain(session) if streaming else None
    with stop_on_signals(stop), frozen_heap(), ring or contextlib.nullcontext():
        while not stop.is_set():
            now = time.monotonic()
            if duration_s is not None and now - start >= duration_s:
                break
            wait = BATCH_INTERVAL_S
            if duration_s is not None:
                wait = min(wait, max(start + duration_s - now, 0.0))
            stop.wait(wait)
            if ring is not None:
                drain(join.add(ring.take()))
            if on_status is not None and time.monotonic() >= next_status:
                next_status += STATUS_INTERVAL_S
                on_status(session.counters(), time.monotonic() - start,
                          records if streaming else None)
    interrupted = stop.is_set()
    session.detach()
    if ring is not None:
        drain(join.add(ring.take()))  # closed: what it read last, and the ring's remains
    leftover = session.unfinished()
    unread = int((leftover["fate"] == session.layout.fates_by_name["unread"]).sum())
    if streaming:
        drain(join.add(leftover))
        drain(join.flush())
    return TraceResult(session.snapshot(), records, time.monotonic() - start, interrupted,
                       unread, session.reader.peak_fill if session.reader else 0)
