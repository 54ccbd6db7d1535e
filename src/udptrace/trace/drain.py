"""Emptying the ring buffer on a thread of its own.

Whatever the run loop does with a batch (formatting JSON, a write to a slow
pipe or disk, a Parquet part, a garbage collection) then never holds up
reading: the ring buffer only has to cover the time this thread waits to be
scheduled, not the time the output takes. Measured with the soak (about 5,000
datagrams/s on 2 busy CPUs), handling one batch took up to 1.4 s, close to
the 1.6 s the default ring holds at that rate.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading

import numpy as np

from udptrace.trace.session import TraceSession

POLL_INTERVAL_S = 0.1
BUSY_POLL_INTERVAL_S = 0.01  # once a read finds the ring BUSY_FILL full: a small ring, a flood
BUSY_FILL = 1 / 8
QUEUED_RINGS = 4  # when the run loop lags this many ring sizes behind, stop draining: the
                  # ring then fills and the kernel counts what is lost, and memory stays bounded
# The thread only copies records out of the ring, but records are lost if it waits for the
# CPU longer than the ring lasts (0.2 s at a veth flood): at nice -10 it runs before the
# formatting thread and the CPU's other tasks. Measured with two busy loops and a polling
# receiver on the tracer's CPU, a 2 MiB ring, 4 trials each: 1,279-78,589 records lost in
# every trial at nice 0, none in two of four at -10 (12,715 and 1,079 in the others).
READER_NICE = -10


class RingDrain:
    """Reads ``session`` into memory until closed; :meth:`take` hands the records over."""

    def __init__(self, session: TraceSession) -> None:
        if session.reader is None:
            raise ValueError("RingDrain needs a streaming session")
        self.session = session
        self._reader = session.reader
        self._ring_bytes = session.reader.size
        self._batches: list[np.ndarray] = []
        self._queued = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="udptrace-ring", daemon=True)

    def __enter__(self) -> RingDrain:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._thread.join()
        if self._error is None:
            self._read()  # what arrived after the thread's last read

    def _run(self) -> None:
        # The kernel wakes this epoll once the ring fills past a quarter (cfg.wakeup_bytes),
        # so a burst is read at once instead of at the next poll; the timeout reads what a
        # quiet ring holds, and notices close(). Edge-triggered: a ring buffer is readable
        # whenever it holds a record, so at a flood a level-triggered wait returned at once
        # and the thread read every millisecond or so (2,250 reads in 3 s), taking the GIL
        # from the formatting thread each time; now about 25 a second.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), READER_NICE)
        poller = select.epoll()
        poller.register(self.session.obj.maps["events"].fd, select.EPOLLIN | select.EPOLLET)
        wait = POLL_INTERVAL_S
        try:
            while True:
                poller.poll(wait)
                if self._closed.is_set():
                    break
                if self._queued < QUEUED_RINGS * self._ring_bytes:
                    busy = self._read() >= BUSY_FILL * self._ring_bytes
                    wait = BUSY_POLL_INTERVAL_S if busy else POLL_INTERVAL_S
                else:  # the run loop lags: the ring may stay full, epoll would not wait
                    self._closed.wait(POLL_INTERVAL_S)
        except BaseException as e:  # raised again by take(), in the run loop's thread
            self._error = e
        finally:
            poller.close()

    def _read(self) -> int:
        """Reads the ring; returns how many bytes it held."""
        records = self.session.read()
        if len(records):
            with self._lock:
                self._batches.append(records)
                self._queued += records.nbytes
        return self._reader.fill

    def take(self) -> np.ndarray:
        """Every record read since the last call, in ring order."""
        if self._error is not None:
            raise self._error
        with self._lock:
            batches, self._batches, self._queued = self._batches, [], 0
        record = self.session.layout.record
        if len(batches) == 1:
            return batches[0]
        if not batches:
            return np.empty(0, record)
        # as opaque bytes: one memory copy instead of NumPy's field-by-field one
        opaque = f"V{record.itemsize}"
        return np.concatenate([b.view(opaque) for b in batches]).view(record)
