"""A UADP publisher shaped like open62541's tutorial publisher, paced against the clock.

With default settings every datagram has the layout of the tutorial's 39-byte message
(PublisherId UInt16 2234, WriterGroupId 100, DataSetWriterId 62541, one DateTime field),
so the tracer and the tutorial subscriber see the same traffic from either publisher.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from udptrace.pubsub.cycle import NativeCycle
from udptrace.pubsub.stats import IntervalStats
from udptrace.pubsub.uadp import (
    BuiltinType,
    DataSetMessage,
    DateTime,
    GroupHeader,
    NetworkMessage,
    PublisherId,
    PublisherIdType,
    Variant,
    encode_network_message,
)
from udptrace.pubsub.url import DEFAULT_URL, UdpEndpoint, interface_index, parse_url

__all__ = [
    "DEFAULT_DATASET_WRITER_ID",
    "DEFAULT_PUBLISHER_ID",
    "DEFAULT_WRITER_GROUP_ID",
    "PublishSummary",
    "Publisher",
    "PublisherConfig",
    "field_value",
    "version_time",
]

DEFAULT_PUBLISHER_ID = PublisherId(PublisherIdType.UInt16, 2234)
DEFAULT_WRITER_GROUP_ID = 100
DEFAULT_DATASET_WRITER_ID = 62541
MAX_UDP_PAYLOAD = 65507  # IPv4: 65535 less the IP and UDP headers

_VERSION_TIME_EPOCH_S = 946_684_800  # 2000-01-01T00:00:00Z, Part 14's VersionTime origin
# A stop request (signal, other thread) is noticed within this long even in a long period.
_STOP_POLL_NS = 50_000_000


def version_time(unix_ns: int) -> int:
    """Part 14 VersionTime: seconds since 2000-01-01 UTC, as UInt32."""
    return (unix_ns // 1_000_000_000 - _VERSION_TIME_EPOCH_S) & 0xFFFFFFFF


_INTEGER_BITS = {
    BuiltinType.SByte: (8, True),
    BuiltinType.Byte: (8, False),
    BuiltinType.Int16: (16, True),
    BuiltinType.UInt16: (16, False),
    BuiltinType.Int32: (32, True),
    BuiltinType.UInt32: (32, False),
    BuiltinType.Int64: (64, True),
    BuiltinType.UInt64: (64, False),
}


def field_value(t: BuiltinType, index: int, now: DateTime) -> Variant:
    """The value of a field of type t in message number index, sent at now.

    Values change with every message (a counter, wrapped into the type's range) so that a
    subscriber sees fresh data, and depend on nothing else, so a test can rebuild any
    message from its index and timestamp.
    """
    bits = _INTEGER_BITS.get(t)
    if bits is not None:
        width, signed = bits
        value = index % (1 << width)
        if signed and value >= 1 << (width - 1):
            value -= 1 << width
        return Variant(t, value)
    values: dict[BuiltinType, Callable[[], object]] = {
        BuiltinType.Boolean: lambda: index % 2 == 1,
        BuiltinType.Float: lambda: float(index % (1 << 24)),  # exact in a float32
        BuiltinType.Double: lambda: float(index),
        BuiltinType.String: lambda: f"message {index}",
        BuiltinType.DateTime: lambda: now,
        BuiltinType.Guid: lambda: uuid.UUID(int=index % (1 << 128)),
        BuiltinType.ByteString: lambda: (index % (1 << 64)).to_bytes(8, "little"),
        BuiltinType.StatusCode: lambda: 0,  # Good
    }
    if t not in values:
        raise ValueError(f"a publisher field cannot be of type {t.name}")
    return Variant(t, values[t]())


@dataclass(frozen=True)
class PublisherConfig:
    """What to publish where, and for how long (count and duration: 0/None is no limit)."""

    url: str = DEFAULT_URL
    publisher_id: PublisherId = DEFAULT_PUBLISHER_ID
    writer_group_id: int = DEFAULT_WRITER_GROUP_ID
    dataset_writer_id: int = DEFAULT_DATASET_WRITER_ID
    fields: tuple[BuiltinType, ...] = (BuiltinType.DateTime,)
    interval_ns: int = 100_000_000
    count: int = 0
    duration_s: float | None = None
    # GroupHeader SequenceNumber and DataSetMessage sequence number, both the message
    # index modulo 2^16: what a receiver or the tracer needs to count gaps.
    sequence_numbers: bool = False
    # Pad each datagram to at least this many bytes with zeros after the fields: Part 14's
    # DataSetMessage padding, which keeps the field count, so decoders accept it.
    payload_bytes: int = 0
    priority: int | None = None  # SO_PRIORITY
    interface: str | None = None  # IP(V6)_MULTICAST_IF for groups, SO_BINDTODEVICE else
    ttl: int | None = None  # None: the kernel's default (1 for multicast)
    loop: bool | None = None  # IP(V6)_MULTICAST_LOOP; None: the kernel's default (on)
    # ConfigurationVersion major and minor; None: the VersionTime at start, as open62541.
    config_version: tuple[int, int] | None = None
    # each cycle's encode-and-send runs inside the native udptrace_publish_cycle (cycle.c),
    # a function `trace --uprobe` can hook
    native_cycle: bool = False

    def __post_init__(self) -> None:
        if self.interval_ns <= 0:
            raise ValueError("the interval must be positive")
        if self.count < 0:
            raise ValueError("count must be 0 (no limit) or more")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("duration must be positive")
        if not 0 <= self.payload_bytes <= MAX_UDP_PAYLOAD:
            raise ValueError(f"payload bytes must be between 0 and {MAX_UDP_PAYLOAD}")
        for t in self.fields:
            field_value(t, 0, DateTime(0))


@dataclass(frozen=True)
class PublishSummary:
    url: str
    messages_sent: int
    bytes_sent: int
    send_errors: int
    last_error: str | None
    # Deadlines skipped because the previous send ended after them (only those due before
    # the run ended: the count was not yet reached, the duration not yet over).
    missed_deadlines: int
    elapsed_s: float
    intervals: IntervalStats | None  # between consecutive sendto() calls
    mean_lateness_us: float  # sendto() after its deadline
    max_lateness_us: float


class Publisher:
    def __init__(self, config: PublisherConfig) -> None:
        self.config = config
        self.endpoint: UdpEndpoint = parse_url(config.url)
        self.ifindex = interface_index(config.interface) if config.interface else 0
        version = config.config_version
        if version is None:
            now = version_time(time.time_ns())
            version = (now, now)
        self.config_version = version

    def message(self, index: int, now: DateTime) -> NetworkMessage:
        """Message number index (from 0), stamped now."""
        c = self.config
        sequence = index & 0xFFFF if c.sequence_numbers else None
        dataset = DataSetMessage(
            sequence_number=sequence,
            timestamp=now,
            config_version_major=self.config_version[0],
            config_version_minor=self.config_version[1],
            fields=[field_value(t, index, now) for t in c.fields],
        )
        return NetworkMessage(
            publisher_id=c.publisher_id,
            group_header=GroupHeader(writer_group_id=c.writer_group_id, sequence_number=sequence),
            dataset_writer_ids=(c.dataset_writer_id,),
            dataset_messages=[dataset],
        )

    def encode(self, index: int, now: DateTime) -> bytes:
        msg = self.message(index, now)
        data = encode_network_message(msg)
        if len(data) < self.config.payload_bytes:
            msg.dataset_messages[0].padding = self.config.payload_bytes - len(data)
            data = encode_network_message(msg)
        return data

    def open_socket(self) -> socket.socket:
        c, ep = self.config, self.endpoint
        sock = socket.socket(ep.family, socket.SOCK_DGRAM)
        try:
            v6 = ep.family == socket.AF_INET6
            level = socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP
            if c.priority is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, c.priority)
            if ep.is_multicast:
                if self.ifindex:
                    # Linux reads a struct ip_mreqn here too and uses only its ifindex.
                    choice = self.ifindex if v6 else ep.multicast_request(self.ifindex)
                    sock.setsockopt(
                        level, socket.IPV6_MULTICAST_IF if v6 else socket.IP_MULTICAST_IF, choice
                    )
                if c.ttl is not None:
                    hops = socket.IPV6_MULTICAST_HOPS if v6 else socket.IP_MULTICAST_TTL
                    sock.setsockopt(level, hops, c.ttl)
                if c.loop is not None:
                    loop = socket.IPV6_MULTICAST_LOOP if v6 else socket.IP_MULTICAST_LOOP
                    sock.setsockopt(level, loop, int(c.loop))
            else:
                if c.interface:
                    device = c.interface.encode()
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device)
                if c.ttl is not None:
                    hops = socket.IPV6_UNICAST_HOPS if v6 else socket.IP_TTL
                    sock.setsockopt(level, hops, c.ttl)
        except BaseException:
            sock.close()
            raise
        return sock

    def _publish_one(self, sock: socket.socket, address: tuple, index: int,
                     on_sent: Callable[[int, bytes], None] | None) -> tuple[int, int]:
        """Encode and send message `index`: when sendto() began, and the bytes sent."""
        data = self.encode(index, DateTime.now())
        began = time.monotonic_ns()
        sock.sendto(data, address)
        if on_sent is not None:
            on_sent(index, data)
        return began, len(data)

    def run(
        self,
        stop: threading.Event | None = None,
        on_sent: Callable[[int, bytes], None] | None = None,
    ) -> PublishSummary:
        """Publish until the count or duration is reached or stop is set.

        Deadlines are absolute on CLOCK_MONOTONIC (start + k * interval), so time spent
        encoding and sending does not accumulate as drift. When a send ends after the next
        deadline has passed, the deadlines already missed are counted and skipped: the
        publisher never sends a burst to catch up.
        """
        c = self.config
        stop = stop or threading.Event()
        address = self.endpoint.sockaddr(self.ifindex)
        interval = c.interval_ns
        sent = sent_bytes = errors = missed = 0
        last_error: str | None = None
        send_times = array("q")
        lateness = array("q")
        native = NativeCycle() if c.native_cycle else None
        with self.open_socket() as sock:
            start = time.monotonic_ns()
            end = start + int(c.duration_s * 1e9) if c.duration_s is not None else None
            deadline = start
            while not stop.is_set() and (c.count == 0 or sent < c.count):
                behind = time.monotonic_ns() - deadline
                if sent and behind > 0:
                    # The previous send ended after this deadline: skip to the next one
                    # ahead, counting those that fell due before the end of the run.
                    passed = behind // interval + 1
                    due = passed if end is None else max(0, -(-(end - deadline) // interval))
                    missed += min(passed, due)
                    deadline += passed * interval
                if end is not None and deadline >= end:
                    break
                _sleep_until(deadline, stop)
                if stop.is_set():
                    break
                done: list[tuple[int, int]] = []

                def cycle(index: int = sent, done: list[tuple[int, int]] = done) -> None:
                    done.append(self._publish_one(sock, address, index, on_sent))

                try:
                    native.run(cycle) if native is not None else cycle()
                except OSError as exc:
                    errors += 1
                    last_error = exc.strerror or str(exc)
                else:
                    began, size = done[0]
                    sent_bytes += size
                    send_times.append(began)
                    lateness.append(began - deadline)
                sent += 1
                deadline += interval
            elapsed = (time.monotonic_ns() - start) / 1e9
        return PublishSummary(
            url=self.endpoint.url,
            messages_sent=sent - errors,
            bytes_sent=sent_bytes,
            send_errors=errors,
            last_error=last_error,
            missed_deadlines=missed,
            elapsed_s=elapsed,
            intervals=IntervalStats.from_timestamps(send_times),
            mean_lateness_us=float(np.mean(lateness)) / 1e3 if lateness else 0.0,
            max_lateness_us=float(np.max(lateness)) / 1e3 if lateness else 0.0,
        )


def _sleep_until(deadline_ns: int, stop: threading.Event) -> None:
    # Python has no absolute clock_nanosleep; since 3.11 time.sleep() sleeps with
    # clock_nanosleep(CLOCK_MONOTONIC) itself, and recomputing the rest from the deadline
    # each round keeps wake-ups anchored to it.
    while not stop.is_set():
        remaining = deadline_ns - time.monotonic_ns()
        if remaining <= 0:
            return
        time.sleep(min(remaining, _STOP_POLL_NS) / 1e9)
