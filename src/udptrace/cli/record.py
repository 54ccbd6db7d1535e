"""`udptrace record`: every traced packet into Parquet, to report on or analyse later."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from pathlib import Path

from udptrace import extras
from udptrace.cli import help_formatter
from udptrace.cli.trace import (
    add_app_arguments,
    add_filter_arguments,
    add_flight_arguments,
    add_record_arguments,
    add_snaplen_argument,
    flight_options,
    flight_recorder,
    open_session,
    options_from,
    render_flight,
    status_printer,
)
from udptrace.errors import UsageError
from udptrace.trace.options import DEFAULT_SNAPLEN

EXAMPLES = """\
examples:
  udptrace record -o run.parquet -p 4242 -d 60        one publisher for a minute
  udptrace record -o run.parquet --port 4840 --pubsub --sched
                                   PubSub labels, and what the CPUs did meanwhile
  udptrace report run.parquet --html run.html --perfetto run.json
  udptrace report run.parquet --pcapng run.pcapng     the frames, for Wireshark

RUN.parquet is a directory of Parquet parts, one per second that brought
records, each a complete file: a run killed at any moment keeps every part
it wrote. One row per packet (every field of --json, a column per stage) in
RUN.parquet/packets, e.g. pandas.read_parquet('run.parquet/packets') or
DuckDB: SELECT * FROM 'run.parquet/packets/*.parquet'. The run's metadata
(version, kernel, hooks, filters, counters, drops) is in every part's
key-value metadata under "udptrace".
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="record every traced packet to Parquet",
                       description=__doc__, epilog=EXAMPLES, formatter_class=help_formatter)
    add_filter_arguments(p)
    o = p.add_argument_group("recording")
    o.add_argument("-o", "--output", required=True, metavar="RUN.parquet",
                   help="the recording to create (a new directory)")
    o.add_argument("-d", "--duration", type=float, default=None, metavar="SECONDS",
                   help="stop after this long (default: until Ctrl-C)")
    o.add_argument("--sched", action="store_true",
                   help="also record scheduler switches, softirqs and hardirqs on the CPUs "
                        "that sent traced packets")
    add_snaplen_argument(o, DEFAULT_SNAPLEN)
    add_app_arguments(o)
    add_record_arguments(o, "decode OPC UA PubSub (UADP) headers into pubsub_* columns")
    o.add_argument("--no-hist", action="store_true", help="only the percentile table")
    add_flight_arguments(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    extras.require("record")
    flight = flight_options(args)
    if flight is not None and args.sched:
        # one reader per scheduler ring buffer: the snapshots would take the recording's
        raise UsageError("--sched and --trigger do not combine yet: each snapshot holds the "
                         "CPU events of its window")
    options = options_from(args, stream=True, snaplen=args.snaplen)
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        session = open_session(stack, options, ("udptrace.report.parquet",
                                                "udptrace.report.recorder"))
        # imported during the load: NumPy, the report modules, pyarrow (an optional
        # extra, 0.8 s)
        from udptrace.report import terminal
        from udptrace.report.fanout import PacketOutputs
        from udptrace.report.parquet import RecordingError, RecordingWriter
        from udptrace.report.recorder import Recorder
        from udptrace.report.terminal import report_console
        from udptrace.trace import run
        from udptrace.trace.sched import SchedSession

        console = report_console()
        sched = stack.enter_context(SchedSession()) if args.sched else None

        writer = RecordingWriter(Path(args.output))
        started = False
        stack.callback(lambda: started or writer.abort())  # nothing half-made on a bad start
        recorder = Recorder(writer, session, ["udptrace", *sys.argv[1:]], sched)
        flights = flight_recorder(flight, session, stack)
        started = True
        # a full disk stops the run, not crashes it: the parts written so far stay
        outputs = PacketOutputs(session.layout, recorder.drop_names, stop, recorder=recorder,
                                flight=flights)
        console.print(f"recording UDP sends to {args.output}"
                      + (f" for {args.duration:g}s" if args.duration else ", Ctrl-C to stop"))
        result = run.run(session, args.duration, stop, outputs,
                         outputs.status(status_printer(sys.stderr, session)))
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        failure = outputs.failure
        if failure is None:
            try:
                recorder.finish(result)
                if flights is not None:
                    render_flight(console, flights.finish())
            except RecordingError as e:
                failure = e
        terminal.render(console, result.snapshot, session.layout, session.plans,
                        recorder.drop_names, histograms=not args.no_hist)
        if failure is not None:
            console.print(f"udptrace: {failure}", style="bold red")
            return 1
        console.print(f"recorded {writer.rows} packets to {args.output}: "
                      f"'udptrace report {args.output}' shows them again", highlight=False)
    return 0
