"""`udptrace trace`: follow UDP packets from the send syscall to the wire."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from udptrace import extras
from udptrace.cli import help_formatter
from udptrace.errors import UsageError
from udptrace.trace.attach import Attachment
from udptrace.trace.options import (
    DEFAULT_RINGBUF_BYTES,
    DEFAULT_SNAPLEN,
    SNAPLEN_MAX,
    UADP_PORT,
    TraceOptions,
    comm_running,
    parse_stages,
)

if TYPE_CHECKING:
    from rich.console import Console

    from udptrace.report.after_run import AfterRun, Writer
    from udptrace.report.flight import FlightRecorder
    from udptrace.report.triggers import FlightOptions
    from udptrace.trace.run import StatusCallback
    from udptrace.trace.session import TraceSession

# what reading and reporting need, imported while the programs are verified (open_session)
READING_MODULES = ("numpy", "udptrace.trace.session", "udptrace.trace.run",
                   "udptrace.trace.timebase", "udptrace.report.fanout", "udptrace.report.cycle",
                   "udptrace.report.terminal", "udptrace.report.jsonl")

EXAMPLES = """\
examples:
  udptrace trace -p 4242 -d 10              per-stage histograms for one publisher
  udptrace trace -p 4242 --uprobe ./pub:publish_cb --interval --events
                                            callback → wire per datagram, the send period
                                            and its jitter, and a live line per datagram
  udptrace trace --port 4840 --json -       one JSON object per datagram on stdout
  udptrace trace -c tutorial_pubsub --pubsub   latency per PubSub writer group
  udptrace trace --dst 224.0.0.0/4 -i eth0 --linear 10   multicast on eth0, 10 µs bins
  udptrace trace -p 4242 -d 10 --html run.html   the same with plots, in one page
  udptrace trace --port 4840 -d 10 --pcapng run.pcapng
                                            each datagram's frame for Wireshark, its
                                            stage times and fate in the frame comment
  udptrace trace -p 4242 --wakeup           each cycle from its timer to the wire: how much
                                            of the jitter is scheduling, how much the stack
  udptrace trace -p 4242 --wakeup --trigger 'cycle>1.5ms' --snapshots late/
                                            a flight recorder: for each late cycle, its
                                            datagrams and what ran on its CPU around it
"""


def add_filter_arguments(p: argparse.ArgumentParser) -> None:
    f = p.add_argument_group("filters (applied in the kernel)")
    f.add_argument("-p", "--pid", type=int, action="append", default=[], metavar="PID",
                   help="only this process (repeatable)")
    f.add_argument("-c", "--comm", default="", help="only processes with this name (15 chars)")
    f.add_argument("--port", type=int, action="append", default=[],
                   help="only datagrams with this source or destination port (repeatable)")
    f.add_argument("--src", action="append", default=[], metavar="CIDR",
                   help="only these source addresses, IPv4 or IPv6 (repeatable)")
    f.add_argument("--dst", action="append", default=[], metavar="CIDR",
                   help="only these destination addresses (repeatable)")
    f.add_argument("-i", "--interface", default="", metavar="IFACE",
                   help="only datagrams sent on this device")
    f.add_argument("--netns", default="", help="only this network namespace (name, path, inode)")


def add_app_arguments(o: argparse._ArgumentGroup) -> None:
    """The app stage, send intervals and the receive side: trace, record and exporter offer
    them alike."""
    o.add_argument("--uprobe", metavar="BINARY:SYMBOL", default="",
                   help="a stage 'app' at this function's entry: every datagram a thread sends "
                        "inside it carries it (also BINARY:SYMBOL+OFFSET, BINARY:0xADDRESS; "
                        "BINARY may be a library, found in the -p process's mappings)")
    o.add_argument("--interval", action="store_true",
                   help="time between successive sends per flow (and per --uprobe callback): "
                        "period, jitter, missed periods")
    o.add_argument("--wakeup", action="store_true",
                   help="each send's cycle from its thread's wake-up: stages timer (the timer it "
                        "slept on), wakeup, on_cpu before it, and the cycle view (needs -p, -c "
                        "or --uprobe; hooks every context switch)")
    o.add_argument("--stages", type=parse_stages, default=(), metavar="LIST",
                   help="attach only what these optional stages need, e.g. "
                        "'qdisc_dequeue,neigh_queue', or 'core' (the fewest hooks: "
                        "syscall → wire, without the contexts); core stages are always traced")
    o.add_argument("--rx", action="store_true",
                   help="receive records only: every UDP datagram from the wire (or a veth/lo "
                        "peer) to the reader's receive syscall; -p/-c select the reader")
    o.add_argument("--e2e", action="store_true",
                   help="follow each traced send on into this host's receive path: one record "
                        "per receiving socket, from sendto() to the reader's recv return")
    o.add_argument("--no-contexts", action="store_true",
                   help="do not tell where the driver and TX completions ran (spares every "
                        "softirq of the machine three hooks; bench/README.md has the cost)")


def add_record_arguments(o: argparse._ArgumentGroup, pubsub_help: str) -> None:
    """What per-packet records carry and how they travel: trace, record and exporter."""
    o.add_argument("--pubsub", action="store_true", help=pubsub_help)
    o.add_argument("--uadp-port", type=int, default=UADP_PORT,
                   help=f"UDP port carrying UADP (default {UADP_PORT})")
    o.add_argument("--ringbuf-kb", type=int, default=DEFAULT_RINGBUF_BYTES // 1024,
                   help="per-packet ring buffer size (power of two)")
    o.add_argument("-v", "--verbose", action="store_true", help="show verifier logs on errors")


def add_snaplen_argument(o: argparse._ArgumentGroup, default: int | None) -> None:
    told = f"{default}" if default else f"{DEFAULT_SNAPLEN} with --pcapng, else 0"
    o.add_argument("--snaplen", type=int, default=default, metavar="N",
                   help=f"keep each datagram's first N frame bytes (at most {SNAPLEN_MAX}) as "
                        f"its device had them, for Wireshark (--pcapng); 0: none (default {told})")


def add_flight_arguments(p: argparse.ArgumentParser) -> None:
    f = p.add_argument_group("flight recorder (a snapshot around each datagram that triggers)")
    f.add_argument("--trigger", action="append", default=[], metavar="EXPR",
                   help="e.g. 'cycle>1.5ms', 'total>200us', 'qdisc_dequeue>100us' (a stage's "
                        "time), 'interval>12ms', missed, drop, drop:QDISC_DROP (repeatable)")
    f.add_argument("--snapshots", metavar="DIR",
                   help="where snapshots go (a new or empty directory)")
    f.add_argument("--before", default="100ms", metavar="TIME",
                   help="history kept before a trigger (default 100ms)")
    f.add_argument("--after", default="20ms", metavar="TIME",
                   help="and after it (default 20ms)")
    f.add_argument("--max-snapshots", type=int, default=10, metavar="N",
                   help="at most this many snapshots (default 10); later triggers are counted")
    f.add_argument("--holdoff", default="1s", metavar="TIME",
                   help="after a snapshot's trigger, triggers this soon are only counted "
                        "(default 1s)")


def flight_options(args: argparse.Namespace) -> FlightOptions | None:
    """The flight recorder's options, checked before anything is loaded."""
    if not args.trigger and not args.snapshots:
        return None
    from udptrace.report.triggers import FlightOptions, parse_duration, parse_trigger
    if not (args.trigger and args.snapshots):
        raise UsageError("--trigger and --snapshots go together: what fires a snapshot, "
                         "and where it goes")
    triggers = tuple(parse_trigger(t) for t in args.trigger)
    for t in triggers:
        given = {"--wakeup": args.wakeup, "--interval": args.interval}.get(t.needs, True)
        if not given:
            raise UsageError(f"--trigger '{t.text}' needs {t.needs}")
    if args.max_snapshots < 1:
        raise UsageError("--max-snapshots must be at least 1")
    return FlightOptions(triggers, Path(args.snapshots),
                         parse_duration(args.before, "--before"),
                         parse_duration(args.after, "--after"), args.max_snapshots,
                         parse_duration(args.holdoff, "--holdoff"))


def flight_recorder(flight: FlightOptions | None, session: TraceSession,
                    stack: contextlib.ExitStack) -> FlightRecorder | None:
    if flight is None:
        return None
    extras.require("record")
    from udptrace.report.flight import FlightRecorder
    from udptrace.trace.sched import SchedSession
    sched = stack.enter_context(SchedSession())
    return FlightRecorder(flight, session, sched, ["udptrace", *sys.argv[1:]])


def render_flight(console: Console, summary: dict[str, object]) -> None:
    snapshots = summary["snapshots"]
    assert isinstance(snapshots, list)
    console.print(f"flight recorder: {summary['fired']} triggers, {summary['written']} "
                  f"snapshots in {summary['directory']}, {summary['suppressed']} suppressed "
                  "(--max-snapshots, --holdoff)", highlight=False)
    for s in snapshots:
        console.print(f"  {s['path']}: {s['trigger']}: {s['verdict']}", highlight=False)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="follow UDP packets from sendto() to the wire",
                       description=__doc__, epilog=EXAMPLES, formatter_class=help_formatter)
    add_filter_arguments(p)
    o = p.add_argument_group("output")
    o.add_argument("-d", "--duration", type=float, default=None, metavar="SECONDS",
                   help="stop after this long (default: until Ctrl-C)")
    o.add_argument("--json", metavar="FILE", help="one JSON object per packet; '-' for stdout")
    o.add_argument("--linear", type=float, metavar="STEP_US",
                   help="linear histograms with this bin width in µs (default: log2)")
    o.add_argument("--no-hist", action="store_true", help="only the percentile table")
    o.add_argument("--html", metavar="FILE",
                   help="also write an HTML report with plots (needs udptrace[html])")
    o.add_argument("--pcapng", metavar="FILE",
                   help="also write every traced datagram's frame, with its stage times, fate "
                        "and process in the frame comment, for Wireshark (needs "
                        "udptrace[record])")
    add_snaplen_argument(o, None)
    add_app_arguments(o)
    o.add_argument("--events", action="store_true",
                   help="a live line per datagram on stdout as its record completes")
    add_record_arguments(o, "decode OPC UA PubSub (UADP) headers; latency per writer group")
    add_flight_arguments(p)
    p.set_defaults(func=main)


def options_from(args: argparse.Namespace, stream: bool, snaplen: int = 0) -> TraceOptions:
    return TraceOptions(
        pids=tuple(args.pid), comm=args.comm, ports=tuple(args.port), src=tuple(args.src),
        dst=tuple(args.dst), ifname=args.interface, netns=args.netns, stream=stream,
        payload_port=args.uadp_port if args.pubsub else 0,
        ringbuf_bytes=args.ringbuf_kb * 1024, uprobe=args.uprobe, intervals=args.interval,
        rx=args.rx, e2e=args.e2e, stages=args.stages, wakeup=args.wakeup,
        contexts=not args.no_contexts, snaplen=snaplen,
    )


def status_printer(out: IO[str], session: TraceSession | None = None) -> StatusCallback:
    from udptrace.report import terminal

    tty = out.isatty()
    reader = session.reader if session is not None else None

    def show(counters: dict[str, int], elapsed: float, records: int | None) -> None:
        line = terminal.status_line(counters, elapsed, records)
        if reader is not None:
            line += "  " + terminal.ring_text(reader.peak_fill, reader.size)
        out.write(f"\r{line}\x1b[K" if tty else line + "\n")
        out.flush()

    return show


def after_run(stack: contextlib.ExitStack, html: str | None = None,
              pcapng: str | None = None) -> AfterRun | None:
    """`--html`, `--pcapng`: written from the run's recording at its end; checked and
    opened before tracing starts (plotly and pyarrow are optional extras)."""
    if not html and not pcapng:
        return None
    extras.require("html" if html else "record")
    from udptrace.report.after_run import AfterRun
    outputs: list[tuple[str, str, Writer]] = []
    if html:
        from udptrace.report import html as page
        outputs.append(("HTML report", html, page.write))
    if pcapng:
        from udptrace.report import pcapng as capture
        outputs.append(("pcapng for Wireshark", pcapng, capture.write))
    return stack.enter_context(AfterRun(outputs))


def snaplen_of(args: argparse.Namespace) -> int:
    """--snaplen as given, else the default where --pcapng wants frames."""
    if args.snaplen is None:
        return DEFAULT_SNAPLEN if args.pcapng else 0
    if args.pcapng and not args.snaplen:
        raise UsageError("--pcapng writes the frames --snaplen keeps: --snaplen 0 keeps none")
    return args.snaplen


def _import_all(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # imported again where used, and reported there
            return


def open_session(stack: contextlib.ExitStack, options: TraceOptions,
                 modules: tuple[str, ...] = ()) -> TraceSession:
    """The session of `options`, attached, closed with `stack`. NumPy and the reporting
    modules (and `modules`) are imported in a thread while the verifier checks the
    programs, which leaves Python's lock free; attaching waits for none of it (before,
    they took 0.3 s first)."""
    importing = threading.Thread(target=_import_all, args=(READING_MODULES + modules,),
                                 name="import", daemon=True)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        attachment = Attachment(options, while_loading=importing.start)
    finally:
        sys.setswitchinterval(interval)
    try:
        if importing.ident is not None:
            importing.join()
        from udptrace.trace.session import TraceSession

        return stack.enter_context(TraceSession(options, attachment))
    except BaseException:
        attachment.close()
        raise


def main(args: argparse.Namespace) -> int:
    to_stdout = args.json == "-"
    if to_stdout and args.events:
        raise UsageError("--events and --json - both write to stdout: give --json a FILE")
    flight = flight_options(args)
    stream = bool(args.json or args.pubsub or args.events or args.html or args.pcapng
                  or args.wakeup or flight)
    options = options_from(args, stream, snaplen_of(args))
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        page = after_run(stack, args.html, args.pcapng)
        session = open_session(stack, options)
        from udptrace.report import cycle, intervals, terminal
        from udptrace.report.cycle import CycleView
        from udptrace.report.events import EventLog
        from udptrace.report.fanout import PacketOutputs
        from udptrace.report.jsonl import JsonLines, summary_object
        from udptrace.report.output import OutputError
        from udptrace.report.pubsub_groups import PubSubGroups
        from udptrace.report.terminal import report_console
        from udptrace.trace import run
        from udptrace.trace.timebase import Timebase

        console = report_console(stderr=to_stdout)
        flights = flight_recorder(flight, session, stack)
        out = sys.stdout.buffer if to_stdout else (
            stack.enter_context(open(args.json, "wb")) if args.json else None)
        # the summary states how this host's clocks stood through the run
        timebase = Timebase()
        stack.callback(timebase.close)
        recorder = page.start(session, ["udptrace", *sys.argv[1:]], timebase) if page else None
        if recorder is None and out is not None:
            timebase.sample()
        if args.comm and not comm_running(args.comm):
            print(f"udptrace: warning: no process named '{args.comm}' is running yet; "
                  "tracing it once it starts", file=sys.stderr)
        drop_names = session.drop_reason_names()
        writer = JsonLines(out, session.layout, drop_names, pubsub=args.pubsub) if out else None
        groups = PubSubGroups() if args.pubsub else None
        cycles = CycleView()
        outputs = PacketOutputs(
            session.layout, drop_names, stop, json=writer, groups=groups, cycles=cycles,
            wakeup=args.wakeup,
            recorder=recorder, flight=flights,
            events=EventLog(sys.stdout, session.layout, drop_names,
                            time.monotonic_ns()) if args.events else None)

        targets = ", ".join(filter(None, [
            f"pid {' '.join(map(str, args.pid))}" if args.pid else "",
            f"comm {args.comm}" if args.comm else "",
            f"port {' '.join(map(str, args.port))}" if args.port else ""])) or "all processes"
        what = "receives by" if args.rx else "sends of"
        if args.e2e:
            targets += " to their receivers"
        if session.uprobe is not None:
            targets += f", from {session.uprobe}"
        console.print(f"tracing UDP {what} {targets}"
                      + (f" for {args.duration:g}s" if args.duration else ", Ctrl-C to stop"))
        status = status_printer(sys.stderr, session)
        if recorder is None and out is not None:
            status = timebase.sampling(status)
        result = run.run(session, args.duration, stop, outputs, outputs.status(status))
        if recorder is None and out is not None:
            timebase.sample()
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        step = int(args.linear * 1000) if args.linear else None
        receiving = args.rx or args.e2e
        terminal.render(console, result.snapshot, session.layout, session.plans, drop_names,
                        step, histograms=not args.no_hist,
                        unread=result.unread if receiving else None,
                        left_out=tuple(session.left_out))
        if stream:
            console.print(terminal.ring_text(result.ring_peak_bytes, options.ringbuf_bytes)
                          + " (--ringbuf-kb)", highlight=False)
        flows = (intervals.kernel_flows(*session.intervals(), session.layout)
                 if args.interval else [])
        if args.interval:
            intervals.render(console, flows, step, histograms=not args.no_hist)
        if groups is not None:
            groups.render(console)
            if args.interval:
                intervals.render(console, groups.interval_flows(), step, histograms=False,
                                 title="send intervals per PubSub writer group")
        cycle_summaries = cycles.summaries() if args.wakeup or cycles.telling else []
        if cycle_summaries or args.wakeup:
            cycle.render(console, cycle_summaries)
        flown = flights.finish() if flights is not None and outputs.failure is None else None
        if flown is not None:
            render_flight(console, flown)
        if page is not None:
            for what, written in page.finish(result):
                console.print(f"{what}: {written}", highlight=False)
        summary = summary_object(result.snapshot, session.layout, drop_names, result.records,
                                 elapsed_s=result.elapsed_s, time=timebase.statement(),
                                 **({"ringbuf": {"bytes": options.ringbuf_bytes,
                                                 "peak_bytes": result.ring_peak_bytes}}
                                    if stream else {}),
                                 **({"unread": result.unread} if receiving else {}),
                                 **({"intervals": intervals.summaries(flows)} if flows else {}),
                                 **({"cycles": cycle.summaries_json(cycle_summaries)}
                                    if cycle_summaries else {}),
                                 **({"flight_recorder": flown} if flown else {}))
        if outputs.failure is not None:
            console.print(f"udptrace: {outputs.failure}", style="bold red")
            if to_stdout:  # nothing more can reach the closed pipe, not even at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        if writer is not None:
            try:
                writer.write_summary(summary)
            except OutputError as e:
                console.print(f"udptrace: {e}", style="bold red")
                return 1
    return 0
