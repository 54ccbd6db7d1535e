"""The terminal report: per-stage histograms, the percentile table, drops, counters.

A live run and a recorded one build the same :class:`ReportData` (from the
kernel's aggregates, or from every record) and share the rendering below.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from udptrace.kernel.plan import StagePlan
from udptrace.report.distribution import PERCENTILES, Distribution
from udptrace.stages import SPANS
from udptrace.trace.layout import Layout
from udptrace.trace.session import Snapshot
from udptrace.trace.threads import StepThread

BAR_WIDTH = 40
REPORT_WIDTH = 132  # when not on a terminal: wide enough for the percentile table


def report_console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False,
                   width=None if stream.isatty() else REPORT_WIDTH)


def duration(ns: float) -> str:
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def _bound(ns: int) -> str:
    """bpftrace's spelling of a bucket edge: 512, 1K, 64M (powers of 1024)."""
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if ns >= size and ns % size == 0:
            return f"{ns // size}{unit}"
    return str(ns)


def linear_bound(step: int) -> Callable[[int], str]:
    """bpftrace's lhist spelling: K and M only when the step is a multiple of 1024, so that
    one histogram's edges read alike ([620000, 625000), never [620000, 625K))."""
    return _bound if step % 1024 == 0 else str


@dataclass(frozen=True)
class Row:
    """One line of the report: a stage (or the total) and its distribution."""

    name: str
    title: str
    meaning: str
    dist: Distribution


@dataclass(frozen=True)
class Drop:
    reason: str
    stage: str  # the last stage the packet reached
    packets: int


@dataclass(frozen=True)
class Contexts:
    """Sent packets by where their driver call and their TX completion ran (step 7 and 8),
    and how long the NET_TX softirq was pending for those it transmitted."""

    xmit: dict[str, int]  # enum ut_context name → packets
    completion: dict[str, int]
    net_tx_pending: Distribution
    threads: tuple[StepThread, ...] = ()  # PREEMPT_RT: per thread that ran them


@dataclass(frozen=True)
class ReportData:
    """Everything the terminal report shows, however it was obtained."""

    rows: list[Row]
    drops: list[Drop]
    counters: dict[str, int]
    unavailable: list[str]  # stages this kernel could not trace
    exact: bool = False  # distributions from every record, not the kernel's buckets
    unread: int | None = None  # receive records still queued at the end; None: no receive side
    left_out: tuple[str, ...] = ()  # optional stages --stages did not ask for
    contexts: Contexts | None = None  # where the driver and TX completions ran; None: not told


def stage_rows(snapshot: Snapshot, layout: Layout, plans: Iterable[StagePlan]) -> list[Row]:
    by_name = {p.stage.name: p.stage for p in plans}
    rows = []
    for index, name in enumerate(layout.stages):
        dist = Distribution.from_hist(snapshot.hists[index])
        if dist.count and name in by_name:
            rows.append(Row(name, by_name[name].title, by_name[name].meaning, dist))
    for span in SPANS:
        dist = Distribution.from_hist(snapshot.hists[layout.span_slot(span.name)])
        if dist.count:
            rows.append(Row(span.name, span.title, span.meaning, dist))
    return rows


def histogram_lines(rows: list[tuple[int, int, int]],
                    bound: Callable[[int], str] = _bound) -> list[str]:
    """bpftrace's picture of (low, high, count) rows."""
    peak = max((n for _, _, n in rows), default=0) or 1
    lines = []
    for low, high, n in rows:
        bar = "@" * round(n / peak * BAR_WIDTH)
        lines.append(f"[{bound(low)}, {bound(high)})".ljust(22) + f"{n:>9} |{bar:<{BAR_WIDTH}}|")
    return lines


# the percentile table's columns, the terminal's and the HTML page's
PERCENTILE_COLUMNS = ("stage", "time spent", "count", "min", *(f"p{q:g}" for q in PERCENTILES),
                      "max", "mean")
TEXT_COLUMNS = 2  # the first ones are text, the others numbers


def percentile_cells(row: Row) -> list[str]:
    """One row of the percentile table, a cell per PERCENTILE_COLUMNS."""
    d = row.dist
    return [row.name, row.title, str(d.count), duration(d.min),
            *(duration(d.percentile(q)) for q in PERCENTILES), duration(d.max), duration(d.mean)]


def percentile_table(rows: list[Row], title: str = "latency per stage") -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for i, column in enumerate(PERCENTILE_COLUMNS):
        table.add_column(column, no_wrap=True, justify="left" if i < TEXT_COLUMNS else "right")
    for row in rows:
        table.add_row(*percentile_cells(row), style="bold" if row.name == "total" else None)
    return table


def live_drops(snapshot: Snapshot, layout: Layout, names: dict[int, str]) -> list[Drop]:
    return [Drop(names.get(reason, f"reason {reason}"), layout.stages[stage], n)
            for (reason, stage), n in snapshot.drops.items()]


def drops_table(drops: list[Drop]) -> Table | None:
    if not drops:
        return None
    table = Table(title="drops", title_justify="left", header_style="bold")
    table.add_column("reason")
    table.add_column("after stage")
    table.add_column("packets", justify="right")
    for drop in sorted(drops, key=lambda d: -d.packets):
        table.add_row(drop.reason, drop.stage, str(drop.packets))
    return table


# enum ut_context, as the report names it
CONTEXT_TITLES = {
    "sender": "the sending thread (direct)",
    "task": "another thread (it ran the qdisc)",
    "net_tx": "NET_TX softirq",
    "net_rx": "NET_RX softirq (NAPI poll)",
    "timer": "timer softirq",
    "softirq": "another softirq",
}


def live_contexts(snapshot: Snapshot) -> Contexts | None:
    if not snapshot.xmit_contexts and not snapshot.completion_contexts:
        return None
    return Contexts(snapshot.xmit_contexts, snapshot.completion_contexts,
                    Distribution.from_hist(snapshot.net_tx_pending), snapshot.threads)


def contexts_table(contexts: Contexts | None) -> Table | None:
    """Sent packets per context: driver calls and TX completions there, and for NET_TX how
    long the softirq was pending before it transmitted them; on PREEMPT_RT, by thread."""
    if contexts is None:
        return None
    pending = contexts.net_tx_pending
    table = Table(title="where it ran", title_justify="left", header_style="bold")
    table.add_column("context", no_wrap=True)
    for column in ("driver calls", "TX completions", "softirq pending p50", "p99", "max"):
        table.add_column(column, justify="right", no_wrap=True)
    for name, title in CONTEXT_TITLES.items():
        calls, completions = contexts.xmit.get(name, 0), contexts.completion.get(name, 0)
        if not calls and not completions:
            continue
        waits = ([duration(pending.percentile(50)), duration(pending.percentile(99)),
                  duration(pending.max)] if name == "net_tx" and pending.count else ["", "", ""])
        table.add_row(title, str(calls) if calls else "", str(completions) if completions else "",
                      *waits)
        # PREEMPT_RT: the threads that did it, each step's packets on its own row
        for thread in (t for t in contexts.threads if t.context == name):
            n = str(thread.packets)
            cells = [n, ""] if thread.step == "xmit" else ["", n]
            table.add_row(f"  in {thread.title}", *cells, "", "", "", style="dim")
    return table


def status_line(counters: dict[str, int], elapsed: float, records: int | None) -> str:
    text = (f"{elapsed:6.1f}s  packets {counters['packets']}  sent {counters['sent']}  "
            f"dropped {counters['dropped']}  lost events {counters['lost']}")
    if counters["queued"]:
        text += f"  received {counters['received']}  rx dropped {counters['rx_dropped']}"
    if records is not None:
        text += f"  records {records}"
    return text


def ring_text(peak_bytes: int, ring_bytes: int) -> str:
    """The most the per-packet ring buffer held: the evidence for sizing --ringbuf-kb."""
    return f"ring buffer peak {peak_bytes / 1024:.0f} of {ring_bytes // 1024} KiB " \
           f"({peak_bytes / ring_bytes:.0%})"


def counters_line(counters: dict[str, int]) -> str:
    parts = [f"{name.replace('_', ' ')} {value}" for name, value in counters.items()]
    return "counters: " + ", ".join(parts)


def receive_line(counters: dict[str, int], unread: int) -> str:
    """Where every datagram that reached a receive path ended, one copy per socket."""
    return (f"receive side: {counters['queued']} queued on sockets, {counters['received']} "
            f"received, {counters['rx_dropped']} dropped, {unread} unread at the end")


def render(console: Console, snapshot: Snapshot, layout: Layout, plans: list[StagePlan],
           drop_names: dict[int, str], linear_step: int | None = None,
           histograms: bool = True, unread: int | None = None,
           left_out: tuple[str, ...] = ()) -> None:
    """The report of a live run, from the kernel's aggregates."""
    render_report(console, ReportData(
        stage_rows(snapshot, layout, plans), live_drops(snapshot, layout, drop_names),
        snapshot.counters, [p.stage.name for p in plans if not p.available], unread=unread,
        left_out=left_out, contexts=live_contexts(snapshot),
    ), linear_step, histograms)


def render_report(console: Console, report: ReportData, linear_step: int | None = None,
                  histograms: bool = True) -> None:
    rows = report.rows
    if histograms:
        for row in rows:
            console.print(f"[bold]@{row.name}_ns[/]: {row.meaning}", highlight=False)
            if linear_step:
                lines = histogram_lines(row.dist.linear_rows(linear_step),
                                        linear_bound(linear_step))
            else:
                lines = histogram_lines(row.dist.log2_rows())
            for line in lines:
                console.print(line, highlight=False, markup=False)
            console.print()
    if rows:
        error = max(row.dist.relative_error for row in rows)
        console.print(percentile_table(rows, "latency per stage" + (
            " (exact percentiles, from every record)" if report.exact
            else f" (percentiles within {error:.1%}, from in-kernel buckets)" if error else "")))
    else:
        console.print("no UDP packets were followed (check the filters and the traffic)")
    drops = drops_table(report.drops)
    console.print(drops if drops is not None else "drops: none")
    contexts = contexts_table(report.contexts)
    if contexts is not None:
        console.print(contexts)
    console.print(counters_line(report.counters), highlight=False)
    if report.unread is not None:
        console.print(receive_line(report.counters, report.unread), highlight=False)
    if report.counters.get("lost"):
        complete = ("counters are complete, the histograms lack them" if report.exact
                    else "histograms and counters are complete")
        console.print(f"[bold red]{report.counters['lost']} records were lost: the ring buffer "
                      f"was full (raise --ringbuf-kb); {complete}[/]")
    if report.left_out:
        console.print(f"stages left out (--stages): {', '.join(report.left_out)}",
                      highlight=False)
    unavailable = report.unavailable
    if unavailable:
        console.print(f"stages not traced on this kernel: {', '.join(unavailable)} "
                      "(see 'udptrace check')", highlight=False)
