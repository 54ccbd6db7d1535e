"""`udptrace subscribe`: receive OPC UA PubSub (UADP) messages, print each one, and sum
up every stream's sequence gaps, duplicates, reordering and arrival jitter."""

from __future__ import annotations

import argparse
import json
import math
import threading
import uuid
from pathlib import Path
from typing import Any

from udptrace.cli import help_formatter
from udptrace.cli.publish import parse_type_list
from udptrace.errors import UdptraceError, UsageError
from udptrace.pubsub.stats import IntervalStats
from udptrace.pubsub.subscriber import (
    Received,
    StreamSummary,
    Subscriber,
    SubscriberConfig,
    SubscribeSummary,
)
from udptrace.pubsub.uadp import DataValue, DateTime, FieldValue, NetworkMessage, Variant
from udptrace.pubsub.url import DEFAULT_URL
from udptrace.signals import stop_on_signals

EXAMPLES = f"""\
examples:
  udptrace subscribe                   join {DEFAULT_URL} and print each message
  udptrace subscribe -i veth1 --count 600 --quiet
                                       600 messages on veth1, then only the summary
  udptrace subscribe opc.udp://10.231.0.2:4840/ --json --ready-file /tmp/sub.ready
                                       unicast, one JSON object per message; the file
                                       appears once the socket is bound
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "subscribe",
        help="receive and check OPC UA PubSub (UADP) messages",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=help_formatter,
    )
    p.add_argument("url", nargs="?", default=DEFAULT_URL, metavar="URL",
                   help=f"opc.udp://HOST:PORT/: a group to join or a local address to bind "
                        f"(default {DEFAULT_URL})")
    p.add_argument("-i", "--interface", metavar="IFACE",
                   help="join the group on this device (unicast: SO_BINDTODEVICE)")
    p.add_argument("--count", type=int, default=0, metavar="N",
                   help="stop after N datagrams (default 0: until Ctrl-C)")
    p.add_argument("-d", "--duration", type=float, metavar="SECONDS", help="stop after this long")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help="one JSON object per message, and the summary as the last one")
    out.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    p.add_argument("--ready-file", type=Path, metavar="PATH",
                   help="write this file (our pid) once the socket is bound and joined")
    p.add_argument("--raw-fields", type=parse_type_list, metavar="TYPES",
                   help="field types of RawData DataSetMessages, e.g. UInt32,Double")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        subscriber = Subscriber(
            SubscriberConfig(
                url=args.url,
                interface=args.interface,
                count=args.count,
                duration_s=args.duration,
                ready_file=args.ready_file,
                raw_field_types=args.raw_fields,
            )
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    start_ns: list[int] = []

    def show(received: Received) -> None:
        if not start_ns:
            start_ns.append(received.arrival_ns)
        t = (received.arrival_ns - start_ns[0]) / 1e9
        if args.json:
            print(json.dumps(message_json(received, t)), flush=True)
        elif not args.quiet:
            print(message_line(received, t), flush=True)

    if not args.json:
        where = subscriber.endpoint.url + (f" via {args.interface}" if args.interface else "")
        print(f"listening for UADP on {where}", flush=True)
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            summary = subscriber.run(stop, show)
    except OSError as exc:
        raise UdptraceError(
            f"cannot listen on {subscriber.endpoint.url}: {exc.strerror or exc}"
        ) from None
    if args.json:
        print(json.dumps({"summary": summary_json(summary)}))
    else:
        print(describe(summary))
    return 0


# --- one message -------------------------------------------------------------------------


def _plain(value: object) -> Any:
    """A JSON-representable form of a field value."""
    if isinstance(value, DateTime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _field_json(value: FieldValue) -> dict[str, Any]:
    if isinstance(value, Variant):
        return {"type": value.type.name, "value": _plain(value.value)}
    inner = _field_json(value.value) if value.value is not None else {"type": "Null"}
    parts = {
        "status": value.status,
        "source_timestamp": _plain(value.source_timestamp),
        "server_timestamp": _plain(value.server_timestamp),
    }
    return inner | {k: v for k, v in parts.items() if v is not None}


def message_json(received: Received, t: float) -> dict[str, Any]:
    host, port = received.source[:2]
    out: dict[str, Any] = {"t": round(t, 9), "source": f"{host}:{port}",
                           "size": len(received.data), "hex": received.data.hex()}
    msg = received.message
    if msg is None:
        assert received.error is not None
        return out | {"error": received.error.reason, "offset": received.error.offset}
    group = msg.group_header
    out |= {
        "publisher_id": str(msg.publisher_id) if msg.publisher_id else None,
        "writer_group_id": group.writer_group_id if group else None,
        "network_sequence": group.sequence_number if group else None,
        "timestamp": _plain(msg.timestamp),
    }
    if msg.security is not None:
        out["security"] = {"signed": msg.security.signed, "encrypted": msg.security.encrypted,
                           "token_id": msg.security.token_id}
    out["dataset_messages"] = [
        {
            "writer_id": writer,
            "type": m.message_type.name,
            "valid": m.valid,
            "sequence": m.sequence_number,
            "timestamp": _plain(m.timestamp),
            "fields": [_field_json(f) for f in m.fields],
            "delta_fields": [{"index": d.index} | _field_json(d.value) for d in m.delta_fields],
        }
        for writer, m in msg.writer_messages()
    ]
    return out


def _field_text(value: FieldValue) -> str:
    if isinstance(value, DataValue):
        text = _field_text(value.value) if value.value is not None else "Null"
        return text if value.status is None else f"{text} [status 0x{value.status:08x}]"
    return f"{value.type.name}={json.dumps(_plain(value.value))}"


def _header_text(msg: NetworkMessage) -> str:
    group = msg.group_header
    parts = [f"pub={msg.publisher_id}" if msg.publisher_id else "pub=-"]
    if group and group.writer_group_id is not None:
        parts.append(f"group={group.writer_group_id}")
    if group and group.sequence_number is not None:
        parts.append(f"seq={group.sequence_number}")
    if msg.security is not None:
        parts.append("secured")
    return " ".join(parts)


def message_line(received: Received, t: float) -> str:
    host, port = received.source[:2]
    head = f"{t:11.6f} {host}:{port} {len(received.data)}B"
    msg = received.message
    if msg is None:
        return f"{head} decode error: {received.error}"
    datasets = []
    for writer, m in msg.writer_messages():
        seq = f" seq={m.sequence_number}" if m.sequence_number is not None else ""
        stamp = f" {m.timestamp.isoformat()}" if m.timestamp is not None else ""
        values = [_field_text(f) for f in m.fields]
        values += [f"[{d.index}] {_field_text(d.value)}" for d in m.delta_fields]
        fields = f": {', '.join(values)}" if values else ""
        datasets.append(f"writer={writer}{seq} {m.message_type.name}{stamp}{fields}")
    body = " | ".join(datasets) if datasets else "(payload not decoded)"
    return f"{head} {_header_text(msg)} | {body}"


# --- summary -----------------------------------------------------------------------------


def _stream_name(s: StreamSummary) -> str:
    pub = str(s.publisher_id) if s.publisher_id else "-"
    group = "-" if s.writer_group_id is None else s.writer_group_id
    writer = "-" if s.dataset_writer_id is None else s.dataset_writer_id
    return f"pub={pub} group={group} writer={writer}"


def _interval_json(stats: IntervalStats | None) -> dict[str, Any] | None:
    return None if stats is None else vars(stats).copy()


def summary_json(s: SubscribeSummary) -> dict[str, Any]:
    return {
        "url": s.url,
        "datagrams": s.datagrams,
        "decode_errors": s.decode_errors,
        "elapsed_s": s.elapsed_s,
        "intervals": _interval_json(s.intervals),
        "streams": [
            {
                "publisher_id": str(st.publisher_id) if st.publisher_id else None,
                "writer_group_id": st.writer_group_id,
                "dataset_writer_id": st.dataset_writer_id,
                "messages": st.messages,
                "sequenced": st.sequenced,
                "lost": st.lost,
                "duplicates": st.duplicates,
                "reordered": st.reordered,
                "intervals": _interval_json(st.intervals),
            }
            for st in s.streams
        ],
    }


def describe(s: SubscribeSummary) -> str:
    lines = [
        f"received {s.datagrams} datagrams in {s.elapsed_s:.3f} s, "
        f"{s.decode_errors} decode errors, {len(s.streams)} streams"
    ]
    for st in s.streams:
        if st.sequenced == 0:
            sequence = "no sequence numbers, so no gap count (publish with --sequence-numbers)"
        else:
            partial = "" if st.sequenced == st.messages else f" (of {st.sequenced} numbered)"
            sequence = (f"{st.lost} lost, {st.duplicates} duplicates, "
                        f"{st.reordered} reordered{partial}")
        lines.append(f"  {_stream_name(st)}: {st.messages} messages; {sequence}")
        if st.intervals:
            lines.append(f"    arrival interval: {st.intervals.describe()}")
    if not s.streams and s.intervals:
        lines.append(f"  arrival interval: {s.intervals.describe()}")
    return "\n".join(lines)
