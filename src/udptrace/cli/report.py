"""`udptrace report`: a recorded run as text, HTML, a Perfetto timeline, or pcapng."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from udptrace import extras
from udptrace.cli import help_formatter
from udptrace.errors import UsageError
from udptrace.report import cycle
from udptrace.report.terminal import render_report, report_console

EXAMPLES = """\
examples:
  udptrace report run.parquet                   the terminal report, exact percentiles
  udptrace report run.parquet --html run.html   plots in one self-contained page
  udptrace report run.parquet --perfetto run.json
                                   open in https://ui.perfetto.dev or chrome://tracing
  udptrace report run.parquet --pcapng run.pcapng
                                   the frames for Wireshark, udptrace's times in each
                                   frame's comment: tshark -r run.pcapng -Y
                                   'frame.comment contains "fate=dropped"'
  udptrace report late/            the snapshots of 'trace --snapshots late/', each with
                                   its verdict: which part of the cycle was late, and what
                                   held its CPU meanwhile

The terminal report is the one a live run prints, with every distribution
recomputed from the records, so its percentiles are exact; counters and
drops are the kernel's as of the recording's last part.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="report on a recorded run (text, HTML, Perfetto)",
                       description=__doc__, epilog=EXAMPLES, formatter_class=help_formatter)
    p.add_argument("recording", metavar="RUN.parquet", help="made by 'udptrace record'")
    p.add_argument("--html", metavar="OUT.html", help="write an HTML report with plots")
    p.add_argument("--perfetto", metavar="OUT.json",
                   help="write a timeline (Chrome trace-event JSON) for Perfetto")
    p.add_argument("--pcapng", metavar="OUT.pcapng",
                   help="write every recorded datagram's frame for Wireshark (record "
                        "--snaplen), its stage times, fate and process in the frame comment")
    p.add_argument("--linear", type=float, metavar="STEP_US",
                   help="linear histograms with this bin width in µs (default: log2)")
    p.add_argument("--no-hist", action="store_true", help="only the percentile table")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    extras.require("html" if args.html else "record")
    # imported only now: pyarrow and plotly are optional extras
    from udptrace.report.atomic import AtomicFile
    from udptrace.report.parquet import open_recording
    from udptrace.report.recorded import cycle_view, pubsub_groups, recorded_report

    console = report_console()
    from udptrace.report.flight import render_snapshots, snapshot_dirs, snapshot_recordings
    path = Path(args.recording)
    if not (path / "packets").is_dir() and snapshot_dirs(path):
        if args.perfetto:
            raise UsageError(f"{path} holds flight-recorder snapshots, each with its "
                             f"timeline: {path / 'snapshot-N' / 'timeline.json'}")
        with contextlib.ExitStack() as stack:
            page = stack.enter_context(AtomicFile(args.html)) if args.html else None
            render_snapshots(console, path)
            if page is not None:
                from udptrace.report import html
                page.file.write(html.snapshots_page(path, snapshot_recordings(path)).encode())
                page.commit()
                console.print(f"wrote {page.path}", highlight=False)
        return 0
    with contextlib.ExitStack() as stack:
        # opened first: a bad output path fails before any work, and leaves nothing
        outputs = []
        if args.html:
            from udptrace.report import html
            outputs.append((stack.enter_context(AtomicFile(args.html)), html.write))
        if args.perfetto:
            from udptrace.report import perfetto
            outputs.append((stack.enter_context(AtomicFile(args.perfetto)), perfetto.write))
        if args.pcapng:
            from udptrace.report import pcapng
            outputs.append((stack.enter_context(AtomicFile(args.pcapng)), pcapng.write))
        recording = open_recording(Path(args.recording))
        step = int(args.linear * 1000) if args.linear else None
        render_report(console, recorded_report(recording), step, histograms=not args.no_hist)
        groups = pubsub_groups(recording)
        if groups is not None:
            groups.render(console)
        cycles = cycle_view(recording)
        if cycles is not None:
            cycle.render(console, cycles.summaries())
        if not recording.finished:
            console.print("this recording has no final part (the run was killed): it ends "
                          "with the last complete second")
        for out, write in outputs:
            write(recording, out.file)
            out.commit()
            console.print(f"wrote {out.path}", highlight=False)
    return 0
