"""`udptrace demo`: a traced OPC UA PubSub publisher on a private veth network."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading

from rich.table import Table

from udptrace import extras
from udptrace.cli import help_formatter
from udptrace.cli.trace import after_run, status_printer
from udptrace.demo import DemoResult, DemoSettings, require_traceable, run_demo
from udptrace.report import intervals, terminal
from udptrace.report.terminal import duration, report_console

DEFAULT_HTML = "udptrace-demo.html"
EXAMPLES = """\
examples:
  udptrace demo                    10 s of the tutorial publisher every 10 ms, traced end to end
  udptrace demo -d 30 --interval-ms 1 --json demo.jsonl
                                   1 kHz for 30 s, every datagram also as JSON
  udptrace demo --html /tmp/demo.html     the HTML report elsewhere (default:
                                   ./udptrace-demo.html when udptrace[html] is installed)

What it does: two network namespaces joined by a veth pair (removed afterwards),
`udptrace subscribe` in one, `udptrace publish` (OPC UA PubSub, UADP multicast to
opc.udp://224.0.0.22:4840/) in the other, and every datagram of the publisher
followed from its publish cycle via sendto() and the wire to the subscriber's
recvfrom().
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="trace a built-in OPC UA PubSub publisher (needs root)",
                       description=__doc__, epilog=EXAMPLES, formatter_class=help_formatter)
    p.add_argument("-d", "--duration", type=float, default=10.0, metavar="SECONDS",
                   help="how long to publish (default 10)")
    p.add_argument("--interval-ms", type=float, default=10.0,
                   help="publishing interval (default 10)")
    p.add_argument("--json", metavar="FILE", help="also write one JSON object per datagram")
    p.add_argument("--html", metavar="FILE",
                   help=f"the HTML report with plots (default {DEFAULT_HTML}, when "
                        "udptrace[html] is installed)")
    p.add_argument("--no-html", action="store_true", help="no HTML report")
    p.set_defaults(func=main)


def _intervals(stats: object) -> str:
    if not isinstance(stats, dict):
        return "-"
    return (f"mean {duration(stats['mean_us'] * 1e3)}, stdev {duration(stats['stdev_us'] * 1e3)},"
            f" p99 jitter {duration(stats['p99_jitter_us'] * 1e3)},"
            f" min {duration(stats['min_us'] * 1e3)}, max {duration(stats['max_us'] * 1e3)}")


def _endpoints(result: DemoResult) -> Table:
    pub, sub = result.publisher, result.subscriber
    table = Table(title="publisher and subscriber (user space)", title_justify="left",
                  header_style="bold", show_header=False)
    table.add_column("")
    table.add_column("")
    table.add_row("published", f"{pub.get('messages_sent', '?')} datagrams, "
                  f"{pub.get('send_errors', '?')} send errors, "
                  f"{pub.get('missed_deadlines', '?')} missed deadlines")
    table.add_row("sendto() intervals", _intervals(pub.get("intervals")))
    table.add_row("sendto() lateness", f"mean {duration(pub.get('mean_lateness_us', 0) * 1e3)}, "
                  f"max {duration(pub.get('max_lateness_us', 0) * 1e3)} after the deadline")
    streams = sub.get("streams") or [{}]
    lost = sum(s.get("lost", 0) for s in streams)
    dup = sum(s.get("duplicates", 0) for s in streams)
    reordered = sum(s.get("reordered", 0) for s in streams)
    table.add_row("received", f"{sub.get('datagrams', '?')} datagrams, "
                  f"{sub.get('decode_errors', '?')} undecodable, sequence gaps {lost}, "
                  f"duplicates {dup}, reordered {reordered}")
    table.add_row("arrival intervals", _intervals(sub.get("intervals")))
    return table


def _html_path(args: argparse.Namespace) -> str | None:
    """An explicit --html needs the extra (after_run says so); the default only if present."""
    if args.no_html:
        return None
    return args.html or (DEFAULT_HTML if not extras.missing("html") else None)


def main(args: argparse.Namespace) -> int:
    require_traceable()
    console = report_console()
    settings = DemoSettings(duration_s=args.duration, interval_ms=args.interval_ms)
    console.print(
        f"udptrace demo: OPC UA PubSub publisher ({settings.url}, every "
        f"{settings.interval_ms:g} ms for {settings.duration_s:g} s) in a private network "
        "namespace, every datagram followed from its publish cycle's entry (a uprobe on "
        "udptrace_publish_cycle, the native function the publisher runs each cycle "
        "through) via sendto() and the wire to the subscriber's recvfrom()")
    with contextlib.ExitStack() as stack:
        page = after_run(stack, html=_html_path(args))
        out = stack.enter_context(open(args.json, "wb")) if args.json else None
        result = run_demo(settings, threading.Event(), status_printer(sys.stderr), out,
                          (lambda session: page.start(session, ["udptrace", *sys.argv[1:]]))
                          if page else None)
        html_done = page.publish()[0][1] if page else None
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    trace = result.trace
    terminal.render(console, trace.snapshot, result.layout, result.plans, result.drop_names,
                    unread=trace.unread)
    intervals.render(console, result.intervals, histograms=False,
                     title="send intervals of the publisher's socket and cycle function")
    result.groups.render(console)
    console.print(_endpoints(result))
    counters = trace.snapshot.counters
    sent = result.publisher.get("messages_sent")
    console.print(
        f"traced {counters['packets']} of {sent} published datagrams "
        f"({trace.records} records, {counters['lost']} lost): {counters['received']} reached "
        f"the subscriber's recvfrom(), {counters['rx_dropped'] + counters['dropped']} were "
        f"dropped, {trace.unread} unread at the end; the subscriber counted "
        f"{result.subscriber.get('datagrams', '?')}. How to read this: README.md, "
        "'Reading the report'.", highlight=False)
    if html_done is not None:
        console.print(f"HTML report with plots: {html_done} (open it in a browser)",
                      highlight=False)
    elif not args.no_html:
        console.print(f"no HTML report: {' '.join(extras.missing('html'))} missing, install "
                      "it with pip install 'udptrace[html]'", highlight=False)
    if trace.interrupted:
        console.print("interrupted: the report covers the datagrams sent so far")
        return 130
    return 0
