"""`udptrace join`: recordings of one traffic made on several hosts (or namespaces), each
sent datagram matched to its arrivals, its path split into hops on clocks set beside
each other with a stated uncertainty, and what was lost between the hosts."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from udptrace import extras
from udptrace.cli import help_formatter
from udptrace.errors import UsageError
from udptrace.report.terminal import report_console

EXAMPLES = """\
examples:
  host A:  udptrace record -o pub.parquet -c publisher --pubsub
  host B:  udptrace record -o sub.parquet --rx --port 4840 --pubsub
  udptrace join pub.parquet sub.parquet            per flow: arrived, lost, dropped; hops
  udptrace join pub.parquet sub.parquet --json joined.json -o joined.parquet
  udptrace join a-tx.parquet a-rx.parquet b-tx.parquet b-rx.parquet --html joined.html
                        traffic both ways: the clocks' offset measured from it too

A send record is matched to the receive records of the other recordings with the same
identity (ports, UDP length, the fingerprint and PubSub ids and sequence numbers where
every recording has them) within --window; one sender to several receivers for
multicast. Two candidates for one datagram make it ambiguous: counted, never joined.
Times on two hosts are compared on TAI (or UTC) through each recording's clock samples,
within the error the hosts' clocks claim (adjtimex) or, where traffic goes both ways,
the offset measured from it; on one host (the same boot) on its CLOCK_MONOTONIC.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("join", help="match the datagrams of recordings from several hosts",
                       description=__doc__, epilog=EXAMPLES, formatter_class=help_formatter)
    p.add_argument("recordings", nargs="+", metavar="RUN.parquet",
                   help="made by 'udptrace record' (sends) and 'udptrace record --rx'")
    p.add_argument("--json", metavar="FILE",
                   help="one JSON object per datagram and receiver, then the summary")
    p.add_argument("--html", metavar="FILE", help="the summary and plots in one page")
    p.add_argument("--perfetto", metavar="FILE",
                   help="a timeline of the joined datagrams, hop by hop (Perfetto)")
    p.add_argument("-o", "--output", metavar="JOINED.parquet",
                   help="one row per datagram and receiver (the summary in its metadata)")
    p.add_argument("--window", type=float, default=1000.0, metavar="MS",
                   help="the longest one-way time to look for (default 1000 ms)")
    p.add_argument("--max-offset", type=float, default=10.0, metavar="SECONDS",
                   help="how far apart clocks that claim nothing may be, to find the "
                        "datagrams that measure them (default 10 s)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    extras.require("join")
    # imported only now: duckdb and pyarrow are an optional extra
    from udptrace.join import files, terminal
    from udptrace.join.engine import JoinEngine, Window
    from udptrace.join.recordings import open_recordings
    from udptrace.join.summary import summarise
    from udptrace.report.atomic import AtomicFile

    if len(args.recordings) < 2:
        raise UsageError("join needs two recordings or more: the senders' and the receivers'")
    if args.window <= 0 or args.max_offset < 0:
        raise UsageError("--window must be above 0 ms and --max-offset at least 0 s")
    console = report_console()
    with contextlib.ExitStack() as stack:
        # opened first: a bad output path fails before any work, and leaves nothing
        outputs = {name: stack.enter_context(AtomicFile(path)) for name, path in (
            ("parquet", args.output), ("json", args.json), ("html", args.html),
            ("perfetto", args.perfetto)) if path}
        recordings, hosts, timescale = open_recordings([Path(p) for p in args.recordings])
        engine = JoinEngine(recordings, hosts, Window(int(args.window * 1e6),
                                                      int(args.max_offset * 1e9)))
        engine.run()
        summary = summarise(engine, timescale)
        terminal.render(console, summary)
        if "parquet" in outputs:
            files.write_parquet(engine, outputs["parquet"], summary)
        if "json" in outputs:
            files.write_json(engine, outputs["json"], summary)
        if "html" in outputs:
            from udptrace.join import html
            html.write(engine, summary, outputs["html"])
        if "perfetto" in outputs:
            from udptrace.join import perfetto
            perfetto.write(engine, summary, outputs["perfetto"])
        for out in outputs.values():
            console.print(f"wrote {out.path}", highlight=False)
    return 0
