"""`udptrace publish`: send OPC UA PubSub (UADP) messages like open62541's tutorial
publisher, on a fixed period kept against the monotonic clock."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading

from udptrace.cli import help_formatter
from udptrace.errors import UdptraceError, UsageError
from udptrace.pubsub.publisher import (
    DEFAULT_DATASET_WRITER_ID,
    DEFAULT_PUBLISHER_ID,
    DEFAULT_WRITER_GROUP_ID,
    Publisher,
    PublisherConfig,
    PublishSummary,
)
from udptrace.pubsub.uadp import BuiltinType, DateTime, PublisherId, PublisherIdType
from udptrace.pubsub.url import DEFAULT_URL
from udptrace.signals import stop_on_signals

EXAMPLES = f"""\
examples:
  udptrace publish                     the tutorial's traffic: {DEFAULT_URL}, every 100 ms
  udptrace publish -i veth0 --sequence-numbers --count 600
                                       on veth0, numbered so receivers can count gaps
  udptrace publish opc.udp://10.231.0.2:4840/ --interval-ms 5 -d 10 --json
                                       unicast every 5 ms for 10 s, JSON summary
  udptrace publish --fields DateTime,Int32,Int64,Boolean
                                       the four fields open62541's tutorial subscriber expects
  udptrace publish --payload-bytes 1200 --priority 6 --ttl 4
"""

_FIELD_TYPES = {t.name.lower(): t for t in BuiltinType if t is not BuiltinType.Null}


def parse_type_list(text: str) -> tuple[BuiltinType, ...]:
    """``DateTime,Int32`` → built-in types (case does not matter)."""
    types = []
    for name in filter(None, (part.strip() for part in text.split(","))):
        t = _FIELD_TYPES.get(name.lower())
        if t is None:
            known = ", ".join(t.name for t in _FIELD_TYPES.values())
            raise argparse.ArgumentTypeError(f"unknown type {name!r}; known: {known}")
        types.append(t)
    return tuple(types)


def parse_publisher_id(text: str) -> PublisherId:
    """``2234`` (UInt16) or ``TYPE:VALUE`` with TYPE one of Byte, UInt16, UInt32, UInt64,
    String."""
    kind, sep, value = text.partition(":")
    if not sep:
        kind, value = PublisherIdType.UInt16.name, text
    types = {t.name.lower(): t for t in PublisherIdType}
    t = types.get(kind.lower())
    if t is None:
        raise argparse.ArgumentTypeError(f"unknown PublisherId type {kind!r}")
    if t is PublisherIdType.String:
        return PublisherId(t, value)
    bits = {PublisherIdType.Byte: 8, PublisherIdType.UInt16: 16, PublisherIdType.UInt32: 32}
    try:
        number = int(value, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"PublisherId {value!r} is not a number") from None
    if not 0 <= number < 1 << bits.get(t, 64):
        raise argparse.ArgumentTypeError(f"PublisherId {number} does not fit a {t.name}")
    return PublisherId(t, number)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "publish",
        help="send OPC UA PubSub (UADP) messages like open62541's tutorial publisher",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=help_formatter,
    )
    p.add_argument("url", nargs="?", default=DEFAULT_URL, metavar="URL",
                   help=f"opc.udp://HOST:PORT/, multicast or unicast (default {DEFAULT_URL})")
    p.add_argument("-i", "--interface", metavar="IFACE",
                   help="send on this device (multicast: IP_MULTICAST_IF, else SO_BINDTODEVICE)")
    p.add_argument("--interval-ms", type=float, default=100.0, metavar="MS",
                   help="publishing interval (default 100)")
    p.add_argument("--count", type=int, default=0, metavar="N",
                   help="stop after N messages (default 0: until Ctrl-C)")
    p.add_argument("-d", "--duration", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--fields", type=parse_type_list, default=(BuiltinType.DateTime,),
                   metavar="TYPES",
                   help="comma-separated built-in types of the DataSet fields; values count "
                        "up per message, DateTime is the send time (default DateTime)")
    p.add_argument("--sequence-numbers", action="store_true",
                   help="add the GroupHeader and DataSetMessage sequence numbers")
    p.add_argument("--payload-bytes", type=int, default=0, metavar="N",
                   help="pad each UDP payload to at least N bytes with zeros after the fields "
                        "(Part 14 DataSetMessage padding; the field count stays)")
    p.add_argument("--priority", type=int, metavar="PRIO", help="SO_PRIORITY of the socket")
    p.add_argument("--ttl", type=int, metavar="HOPS",
                   help="IP TTL / hop limit (multicast default 1)")
    p.add_argument("--loop", action=argparse.BooleanOptionalAction, default=None,
                   help="deliver multicast to this host's own listeners too (kernel default: on)")
    ids = p.add_argument_group("identity (defaults: the tutorial's)")
    ids.add_argument("--publisher-id", type=parse_publisher_id, default=DEFAULT_PUBLISHER_ID,
                     metavar="ID", help="2234 (UInt16) or TYPE:VALUE, e.g. UInt64:7, String:plc")
    ids.add_argument("--writer-group-id", type=int, default=DEFAULT_WRITER_GROUP_ID, metavar="N")
    ids.add_argument("--dataset-writer-id", type=int, default=DEFAULT_DATASET_WRITER_ID,
                     metavar="N")
    p.add_argument("--native-cycle", action="store_true",
                   help="run each cycle through the native function udptrace_publish_cycle, "
                        "which 'trace --uprobe' can hook (the demo does)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        publisher = Publisher(
            PublisherConfig(
                url=args.url,
                publisher_id=args.publisher_id,
                writer_group_id=args.writer_group_id,
                dataset_writer_id=args.dataset_writer_id,
                fields=args.fields,
                interval_ns=round(args.interval_ms * 1e6),
                count=args.count,
                duration_s=args.duration,
                sequence_numbers=args.sequence_numbers,
                payload_bytes=args.payload_bytes,
                priority=args.priority,
                interface=args.interface,
                native_cycle=args.native_cycle,
                ttl=args.ttl,
                loop=args.loop,
            )
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # With --json, stdout carries only the JSON summary.
    print(start_line(publisher, args.interval_ms), file=sys.stderr if args.json else sys.stdout,
          flush=True)
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            summary = publisher.run(stop)
    except OSError as exc:
        raise UdptraceError(
            f"cannot publish to {publisher.endpoint.url}: {exc.strerror or exc}"
        ) from None
    if args.json:
        print(json.dumps(dataclasses.asdict(summary)))
    else:
        print(describe(summary))
    return 1 if summary.send_errors else 0


def start_line(publisher: Publisher, interval_ms: float) -> str:
    c = publisher.config
    if c.count and c.duration_s:
        limit = f"{c.count} messages or {c.duration_s:g} s"
    elif c.count:
        limit = f"{c.count} messages"
    elif c.duration_s:
        limit = f"{c.duration_s:g} s"
    else:
        limit = "until Ctrl-C"
    size = len(publisher.encode(0, DateTime.now()))
    where = publisher.endpoint.url + (f" via {c.interface}" if c.interface else "")
    fields = ",".join(t.name for t in c.fields) or "none"
    numbered = ", sequence numbers" if c.sequence_numbers else ""
    return (
        f"publishing UADP to {where} every {interval_ms:g} ms, {limit}: PublisherId "
        f"{c.publisher_id}, WriterGroup {c.writer_group_id}, DataSetWriter "
        f"{c.dataset_writer_id}, fields {fields}{numbered}; {size} bytes per datagram"
    )


def describe(s: PublishSummary) -> str:
    lines = [
        f"sent {s.messages_sent} messages ({s.bytes_sent} bytes) in {s.elapsed_s:.3f} s; "
        f"{s.missed_deadlines} missed deadlines, {s.send_errors} send errors"
    ]
    if s.last_error:
        lines.append(f"  last send error: {s.last_error}")
    if s.intervals:
        lines.append(f"  send interval: {s.intervals.describe()}")
    if s.messages_sent:
        lines.append(
            f"  sendto() after its deadline: mean {s.mean_lateness_us / 1e3:.3f} ms,"
            f" max {s.max_lateness_us / 1e3:.3f} ms"
        )
    return "\n".join(lines)
