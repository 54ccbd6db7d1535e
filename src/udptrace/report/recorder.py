"""Recording a run while it goes: packets (and with --sched, CPU events) into Parquet parts.

Used by `record`, and by `trace --html` and `demo` for the HTML report, which
is built from the recording afterwards.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from udptrace.report.columns import PacketColumns, sched_columns
from udptrace.report.fields import Batch, packet_table
from udptrace.report.parquet import RecordingWriter, progress, run_info
from udptrace.trace.decode import Packets
from udptrace.trace.run import StatusCallback, TraceResult
from udptrace.trace.sched import SchedSession, softirq_names
from udptrace.trace.session import TraceSession
from udptrace.trace.timebase import Timebase


class Recorder:
    def __init__(self, writer: RecordingWriter, session: TraceSession, command: list[str],
                 sched: SchedSession | None = None, timebase: Timebase | None = None) -> None:
        self.writer = writer
        self.session = session
        self.sched = sched
        self.timebase = timebase or Timebase()
        self.timebase.sample()  # the programs are attached: the recording's time starts
        self.drop_names = session.drop_reason_names()
        self.softirqs = softirq_names() if sched else {}
        writer.info = run_info(session, command, sched is not None)
        empty = Batch(Packets.empty(session.layout), session.layout, self.drop_names)
        self.columns = PacketColumns(
            packet_table(session.layout, pubsub=bool(session.options.payload_port)), empty)
        self.packets(empty)  # the columns, before any packet came

    def packets(self, batch: Batch) -> None:
        self.writer.add("packets", self.columns(batch))
        if self.sched is not None and len(batch):
            self.sched.watch(np.unique(batch.records["cpu"]).tolist())

    def _read_sched(self) -> dict[str, object]:
        if self.sched is None:
            return {}
        events = self.sched.read()
        self.writer.add("sched", pa.table(sched_columns(events, self.sched.kinds,
                                                        self.softirqs)))
        return {"sched_counters": self.sched.counters()}

    def status(self, then: StatusCallback | None = None) -> StatusCallback:
        """A status callback that also writes the second's part, then calls ``then``."""
        def tick(counters: dict[str, int], elapsed: float, records: int | None) -> None:
            extra = self._read_sched()
            self.timebase.sample()
            self.writer.flush(progress(self.session.snapshot(), self.session.layout,
                                       self.drop_names, records or 0, elapsed,
                                       time=self.timebase.take(), **extra))
            if then is not None:
                then(counters, elapsed, records)
        return tick

    def finish(self, result: TraceResult) -> None:
        extra = self._read_sched()
        self.timebase.sample()
        self.writer.flush(progress(result.snapshot, self.session.layout, self.drop_names,
                                   result.records, result.elapsed_s,
                                   interrupted=result.interrupted, time=self.timebase.take(),
                                   **extra), final=True)
        self.timebase.close()
