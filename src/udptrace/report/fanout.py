"""Where a run's packets go: each batch handed once to every output the command asked for.

`trace`, `record` and `demo` build one :class:`PacketOutputs` with the outputs they
want; each batch becomes one :class:`~udptrace.report.fields.Batch`, so the
fields the JSON lines and the Parquet columns share are computed once. An
output that fails (a closed pipe, a full disk) stops the run instead of
crashing it; what it wrote so far stays.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from udptrace.errors import UdptraceError
from udptrace.report.cycle import CycleView
from udptrace.report.events import EventLog
from udptrace.report.fields import Batch, launch_time
from udptrace.report.jsonl import JsonLines
from udptrace.report.pubsub_groups import PubSubGroups
from udptrace.trace.decode import Packets
from udptrace.trace.layout import Layout
from udptrace.trace.run import StatusCallback

if TYPE_CHECKING:  # pyarrow, under them, is an optional extra
    from udptrace.report.flight import FlightRecorder
    from udptrace.report.recorder import Recorder


@dataclass
class PacketOutputs:
    layout: Layout
    drop_names: dict[int, str]
    stop: threading.Event  # set when an output fails
    json: JsonLines | None = None
    events: EventLog | None = None
    groups: PubSubGroups | None = None
    cycles: CycleView | None = None
    wakeup: bool = False  # --wakeup: every datagram is a cycle's; else those with a launch time
    recorder: Recorder | None = None
    flight: FlightRecorder | None = None
    failure: UdptraceError | None = field(default=None, init=False)

    def __call__(self, packets: Packets) -> None:
        if self.failure is not None:
            return
        batch = Batch(packets, self.layout, self.drop_names)
        if self.groups is not None:
            self.groups.add(packets, self.layout, batch.headers)
        if self.cycles is not None:
            self._cycles(batch)
        self._guard(self._write, batch)

    def _cycles(self, batch: Batch) -> None:
        """The cycle view tells more than the stage table only with wake-ups (--wakeup) or
        launch times: without --wakeup it gets the datagrams that carry one. Handing it every
        datagram of a flood cost the tracer more than the JSON lines did."""
        assert self.cycles is not None
        packets = batch.packets
        if not self.wakeup:
            launched = launch_time(batch)
            if not launched.any():
                return
            packets = Packets(packets.records[launched], packets.syscall_exit[launched],
                              packets.syscall_ret[launched])
        self.cycles.add_packets(packets, self.layout)

    def _write(self, batch: Batch) -> None:
        if self.recorder is not None:
            self.recorder.packets(batch)
        if self.flight is not None:
            self.flight.packets(batch)
        if self.events is not None:
            self.events.write(batch.packets)
        if self.json is not None:
            self.json.write_packets(batch)

    def status(self, then: StatusCallback | None = None) -> StatusCallback:
        """The run's status callback: the recording's part of each second written first, and
        the flight recorder's due snapshots."""
        if self.recorder is None and self.flight is None:
            return then or (lambda *_: None)
        tick = then
        if self.flight is not None:  # snapshots are written even when no batch comes
            tick = self.flight.status(tick)
        if self.recorder is not None:
            tick = self.recorder.status(tick)

        def guarded(counters: dict[str, int], elapsed: float, records: int | None) -> None:
            if self.failure is None:
                self._guard(tick, counters, elapsed, records)
        return guarded

    def _guard(self, write: Callable[..., None], *args: object) -> None:
        try:
            write(*args)
        except UdptraceError as e:  # OutputError, RecordingError: what to tell, not a bug
            self.failure = e
            self.stop.set()
