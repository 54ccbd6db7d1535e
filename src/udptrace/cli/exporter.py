"""`udptrace exporter`: per-stage latency, datagrams and drops as Prometheus metrics."""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import threading

from udptrace import extras
from udptrace.cli import help_formatter
from udptrace.cli.trace import (
    add_app_arguments,
    add_filter_arguments,
    add_record_arguments,
    open_session,
    options_from,
)
from udptrace.errors import UsageError
from udptrace.report.pubsub_groups import headers_of
from udptrace.report.terminal import report_console
from udptrace.trace import run
from udptrace.trace.decode import Packets

DEFAULT_LISTEN = "127.0.0.1:9435"
EXAMPLES = f"""\
examples:
  udptrace exporter                            every UDP send, on http://{DEFAULT_LISTEN}/metrics
  udptrace exporter --port 4840 --pubsub --interval
                                   PubSub writer groups as a label, send intervals and jitter
  udptrace exporter --listen 0.0.0.0:9435      reachable from other hosts (default: loopback)

Metrics: udptrace_stage_latency_seconds (a histogram per stage and per span: send_syscall,
total, app_to_wire),
udptrace_datagrams_total (by fate), udptrace_drops_total (by kernel reason and
stage), udptrace_lost_records_total, udptrace_kernel_events_total, and with
--interval udptrace_send_interval_seconds and ..._jitter_seconds. Labels comm,
port (destination), interface and group (PubSub PublisherId/WriterGroupId)
keep at most --max-label-values values each; later ones count as "other".
A sample Grafana dashboard: grafana/udptrace-dashboard.json.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("exporter", help="serve Prometheus metrics (needs udptrace[exporter])",
                       description=__doc__, epilog=EXAMPLES, formatter_class=help_formatter)
    add_filter_arguments(p)
    o = p.add_argument_group("exporter")
    o.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"where to serve /metrics (default {DEFAULT_LISTEN}; port 0: any free)")
    o.add_argument("-d", "--duration", type=float, default=None, metavar="SECONDS",
                   help="stop after this long (default: until Ctrl-C)")
    o.add_argument("--max-label-values", type=int, default=20, metavar="N",
                   help="values kept per label before the rest count as 'other' (default 20)")
    add_app_arguments(o)
    add_record_arguments(o, "label datagrams with their OPC UA PubSub writer group")
    p.set_defaults(func=main)


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise UsageError(f"--listen {text}: give an address and a port, like "
                         f"{DEFAULT_LISTEN} or [::1]:9435") from None
    if not 0 <= number < 65536:
        raise UsageError(f"--listen {text}: port {number} is out of range")
    return host, number


def main(args: argparse.Namespace) -> int:
    extras.require("exporter")
    # only now: prometheus_client is an optional extra
    from prometheus_client import CollectorRegistry, start_http_server

    from udptrace.report.prometheus import Metrics

    if args.max_label_values < 1:
        raise UsageError("--max-label-values must be at least 1")
    host, port = parse_listen(args.listen)
    console = report_console()
    options = options_from(args, stream=True)
    stop = threading.Event()
    registry = CollectorRegistry(auto_describe=False)
    with contextlib.ExitStack() as stack:
        # bound first: a port in use fails before anything is loaded into the kernel
        try:
            server, _thread = start_http_server(port, host, registry)
        except OSError as e:
            why = ("is in use (another exporter?)" if e.errno == errno.EADDRINUSE
                   else f"cannot be bound ({e.strerror})")
            raise UsageError(f"{host}:{port} {why}: choose another with --listen") from None
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        session = open_session(stack, options)
        metrics = Metrics(session.layout, session.drop_reason_names(), args.max_label_values,
                          args.interval)
        registry.register(metrics)
        pubsub = bool(options.payload_port)

        def on_packets(packets: Packets) -> None:
            metrics.add(packets, headers_of(packets, session.layout) if pubsub else None)

        def on_status(counters: dict[str, int], elapsed: float, records: int | None) -> None:
            metrics.kernel(session.snapshot())

        shown = f"[{host}]" if ":" in host else host
        console.print(f"serving Prometheus metrics on http://{shown}:{server.server_port}"
                      "/metrics" + (f" for {args.duration:g}s" if args.duration else
                                    ", Ctrl-C to stop"), highlight=False)
        run.run(session, args.duration, stop, on_packets, on_status)
    return 0
