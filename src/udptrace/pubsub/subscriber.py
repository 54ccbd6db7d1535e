"""A UADP subscriber that decodes every datagram and accounts for each stream's sequence.

A stream is one (PublisherId, WriterGroupId, DataSetWriterId). Its sequence numbers are
the DataSetMessage's, or the GroupHeader's when the DataSetMessage has none. Arrival
times are taken on CLOCK_MONOTONIC right after recvfrom() returns, so the interval
statistics are what an application sees, scheduling delay included.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from udptrace.pubsub.stats import IntervalStats
from udptrace.pubsub.uadp import (
    BuiltinType,
    NetworkMessage,
    PublisherId,
    UadpDecodeError,
    decode_network_message,
)
from udptrace.pubsub.url import DEFAULT_URL, UdpEndpoint, interface_index, parse_url

__all__ = [
    "Received",
    "SequenceTracker",
    "StreamKey",
    "StreamSummary",
    "SubscribeSummary",
    "Subscriber",
    "SubscriberConfig",
    "Tally",
    "stream_entries",
]

StreamKey = tuple[PublisherId | None, int | None, int | None]

# recvfrom() wakes up this often to notice a stop request or the end of the duration.
_POLL_S = 0.1
_MAX_DATAGRAM = 65536
_HALF_RANGE = 0x8000


class SequenceTracker:
    """Lost, duplicated and reordered UInt16 sequence numbers of one stream.

    A number less than half the range ahead of the newest one is new, and the numbers it
    skips are missing; a number behind is late: reordered if it was missing, a duplicate
    otherwise. Missing numbers that never arrive are lost.
    """

    def __init__(self) -> None:
        self.newest: int | None = None
        self.skipped = 0
        self.reordered = 0
        self.duplicates = 0
        self._missing: set[int] = set()

    @property
    def lost(self) -> int:
        return self.skipped - self.reordered

    def add(self, sequence: int) -> None:
        if self.newest is None:
            self.newest = sequence
            return
        ahead = (sequence - self.newest) & 0xFFFF
        if ahead == 0:
            self.duplicates += 1
        elif ahead < _HALF_RANGE:
            for k in range(1, ahead + 1):
                number = (self.newest + k) & 0xFFFF
                # Still missing from a lap ago: that one is lost for good, already counted.
                self._missing.discard(number)
                if k < ahead:
                    self._missing.add(number)
            self.skipped += ahead - 1
            self.newest = sequence
        elif sequence in self._missing:
            self._missing.remove(sequence)
            self.reordered += 1
        else:
            self.duplicates += 1


@dataclass
class _Stream:
    tracker: SequenceTracker = field(default_factory=SequenceTracker)
    messages: int = 0
    sequenced: int = 0
    arrivals: array[int] = field(default_factory=lambda: array("q"))


@dataclass(frozen=True)
class SubscriberConfig:
    """Where to listen, and for how long (count and duration: 0/None is no limit)."""

    url: str = DEFAULT_URL
    interface: str | None = None
    count: int = 0
    duration_s: float | None = None
    # Written once the socket is bound (and the group joined): a script can start the
    # publisher when it appears instead of guessing with a sleep.
    ready_file: Path | None = None
    # Field types of RawData DataSetMessages (the DataSetMetaData UADP leaves out).
    raw_field_types: tuple[BuiltinType, ...] | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must be 0 (no limit) or more")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("duration must be positive")


@dataclass(frozen=True)
class Received:
    """One datagram: its bytes and either the decoded message or why it did not decode."""

    arrival_ns: int  # CLOCK_MONOTONIC
    source: tuple[str, int]
    data: bytes
    message: NetworkMessage | None
    error: UadpDecodeError | None


@dataclass(frozen=True)
class StreamSummary:
    publisher_id: PublisherId | None
    writer_group_id: int | None
    dataset_writer_id: int | None
    messages: int
    # Counts below cover the messages that carried a sequence number: all, some or none.
    sequenced: int
    lost: int
    duplicates: int
    reordered: int
    intervals: IntervalStats | None


@dataclass(frozen=True)
class SubscribeSummary:
    url: str
    datagrams: int
    decode_errors: int
    elapsed_s: float
    streams: tuple[StreamSummary, ...]
    intervals: IntervalStats | None  # between all datagrams


def stream_entries(msg: NetworkMessage) -> list[tuple[StreamKey, int | None]]:
    """The streams one NetworkMessage belongs to, each with its sequence number if any."""
    group = msg.group_header
    writer_group = group.writer_group_id if group else None
    group_sequence = group.sequence_number if group else None
    if msg.payload_is_opaque or not msg.dataset_messages:
        writer = msg.dataset_writer_ids[0] if msg.dataset_writer_ids else None
        return [((msg.publisher_id, writer_group, writer), group_sequence)]
    entries: list[tuple[StreamKey, int | None]] = []
    for writer, dataset in msg.writer_messages():
        sequence = dataset.sequence_number
        entries.append(
            (
                (msg.publisher_id, writer_group, writer),
                group_sequence if sequence is None else sequence,
            )
        )
    return entries


class Tally:
    """Accounts for received datagrams per stream; a Subscriber run keeps one."""

    def __init__(self, raw_field_types: tuple[BuiltinType, ...] | None = None) -> None:
        self.raw_field_types = raw_field_types
        self.datagrams = 0
        self.decode_errors = 0
        self._arrivals = array("q")
        self._streams: dict[StreamKey, _Stream] = {}

    def receive(self, arrival_ns: int, source: tuple[str, int], data: bytes) -> Received:
        self.datagrams += 1
        self._arrivals.append(arrival_ns)
        try:
            msg = decode_network_message(data, raw_field_types=self.raw_field_types)
        except UadpDecodeError as exc:
            self.decode_errors += 1
            return Received(arrival_ns, source, data, None, exc)
        for key, sequence in stream_entries(msg):
            stream = self._streams.setdefault(key, _Stream())
            stream.messages += 1
            stream.arrivals.append(arrival_ns)
            if sequence is not None:
                stream.sequenced += 1
                stream.tracker.add(sequence)
        return Received(arrival_ns, source, data, msg, None)

    def summary(self, url: str, elapsed_s: float) -> SubscribeSummary:
        streams = tuple(
            StreamSummary(
                publisher_id=key[0],
                writer_group_id=key[1],
                dataset_writer_id=key[2],
                messages=s.messages,
                sequenced=s.sequenced,
                lost=s.tracker.lost,
                duplicates=s.tracker.duplicates,
                reordered=s.tracker.reordered,
                intervals=IntervalStats.from_timestamps(s.arrivals),
            )
            for key, s in self._streams.items()
        )
        return SubscribeSummary(
            url=url,
            datagrams=self.datagrams,
            decode_errors=self.decode_errors,
            elapsed_s=elapsed_s,
            streams=streams,
            intervals=IntervalStats.from_timestamps(self._arrivals),
        )


class Subscriber:
    def __init__(self, config: SubscriberConfig) -> None:
        self.config = config
        self.endpoint: UdpEndpoint = parse_url(config.url)
        self.ifindex = interface_index(config.interface) if config.interface else 0

    def open_socket(self) -> socket.socket:
        ep = self.endpoint
        sock = socket.socket(ep.family, socket.SOCK_DGRAM)
        try:
            # Lets several subscribers, or open62541's own receive socket, share the port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if ep.is_multicast:
                # Bound to the group address, the socket gets only that group's datagrams.
                sock.bind(ep.sockaddr(self.ifindex))
                if ep.family == socket.AF_INET6:
                    join = (socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP)
                else:
                    join = (socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP)
                sock.setsockopt(*join, ep.multicast_request(self.ifindex))
            else:
                if self.config.interface:
                    device = self.config.interface.encode()
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device)
                sock.bind(ep.sockaddr(self.ifindex))
        except BaseException:
            sock.close()
            raise
        return sock

    def run(
        self,
        stop: threading.Event | None = None,
        on_message: Callable[[Received], None] | None = None,
    ) -> SubscribeSummary:
        """Receive until the count or duration is reached or stop is set."""
        c = self.config
        stop = stop or threading.Event()
        tally = Tally(c.raw_field_types)
        buffer = bytearray(_MAX_DATAGRAM)
        with self.open_socket() as sock:
            if c.ready_file is not None:
                _write_atomically(c.ready_file, f"{os.getpid()}\n")
            start = time.monotonic_ns()
            end = start + int(c.duration_s * 1e9) if c.duration_s is not None else None
            while not stop.is_set() and (c.count == 0 or tally.datagrams < c.count):
                timeout = _POLL_S
                if end is not None:
                    timeout = min(timeout, (end - time.monotonic_ns()) / 1e9)
                    if timeout <= 0:
                        break
                sock.settimeout(timeout)
                try:
                    size, source = sock.recvfrom_into(buffer)
                except TimeoutError:
                    continue
                arrival = time.monotonic_ns()
                received = tally.receive(arrival, source[:2], bytes(buffer[:size]))
                if on_message is not None:
                    on_message(received)
            elapsed = (time.monotonic_ns() - start) / 1e9
        return tally.summary(self.endpoint.url, elapsed)


def _write_atomically(path: Path, text: str) -> None:
    # Whoever polls for the file must never see it empty.
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    partial.replace(path)
