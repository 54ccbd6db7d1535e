"""The terminal report: per-stage histograms, the percentile table, drops, counters."""

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

BAR_WIDTH = 40
REPORT_WIDTH = 120  # when not on a terminal: wide enough for the percentile table


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


@dataclass(frozen=True)
class Row:
    """One line of the report: a stage (or the total) and its distribution."""

    name: str
    title: str
    meaning: str
    dist: Distribution


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


def percentile_table(rows: list[Row], title: str = "latency per stage") -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("stage", no_wrap=True)
    table.add_column("time spent", no_wrap=True)
    for column in ("count", "min", *(f"p{q:g}" for q in PERCENTILES), "max", "mean"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        d = row.dist
        table.add_row(
            row.name, row.title, str(d.count), duration(d.min),
            *(duration(d.percentile(q)) for q in PERCENTILES), duration(d.max),
            duration(d.mean), style="bold" if row.name == "total" else None,
        )
    return table


def drops_table(snapshot: Snapshot, layout: Layout, names: dict[int, str]) -> Table | None:
    if not snapshot.drops:
        return None
    table = Table(title="drops", title_justify="left", header_style="bold")
    table.add_column("reason")
    table.add_column("after stage")
    table.add_column("packets", justify="right")
    for (reason, stage), n in sorted(snapshot.drops.items(), key=lambda kv: -kv[1]):
        table.add_row(names.get(reason, f"reason {reason}"), layout.stages[stage], str(n))
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


def contexts_table(snapshot: Snapshot) -> Table | None:
    """Where the driver was called and where TX completions ran, with NET_TX's wait."""
    if not snapshot.xmit_contexts and not snapshot.completion_contexts:
        return None
    pending = Distribution.from_hist(snapshot.net_tx_pending)
    table = Table(title="where it ran", title_justify="left", header_style="bold")
    for column in ("step", "context"):
        table.add_column(column, no_wrap=True)
    for column in ("packets", "softirq pending p50", "p99", "max"):
        table.add_column(column, justify="right", no_wrap=True)
    for step, counts in (("driver call", snapshot.xmit_contexts),
                         ("TX completion", snapshot.completion_contexts)):
        for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            waits = ([duration(pending.percentile(50)), duration(pending.percentile(99)),
                      duration(pending.max)]
                     if step == "driver call" and name == "net_tx" and pending.count
                     else ["", "", ""])
            table.add_row(step, CONTEXT_TITLES.get(name, name), str(n), *waits)
    return table


def status_line(counters: dict[str, int], elapsed: float, records: int | None) -> str:
    text = (f"{elapsed:6.1f}s  packets {counters['packets']}  sent {counters['sent']}  "
            f"dropped {counters['dropped']}  lost events {counters['lost']}")
    if records is not None:
        text += f"  records {records}"
    return text


def counters_line(counters: dict[str, int]) -> str:
    parts = [f"{name.replace('_', ' ')} {value}" for name, value in counters.items()]
    return "counters: " + ", ".join(parts)


def render(console: Console, snapshot: Snapshot, layout: Layout, plans: list[StagePlan],
           drop_names: dict[int, str], linear_step: int | None = None,
           histograms: bool = True) -> None:
    rows = stage_rows(snapshot, layout, plans)
    if histograms:
        for row in rows:
            console.print(f"[bold]@{row.name}_ns[/]: {row.meaning}", highlight=False)
            bins = row.dist.linear_rows(linear_step) if linear_step else row.dist.log2_rows()
            for line in histogram_lines(bins):
                console.print(line, highlight=False, markup=False)
            console.print()
    if rows:
        console.print(percentile_table(rows))
    else:
        console.print("no UDP packets were followed (check the filters and the traffic)")
    drops = drops_table(snapshot, layout, drop_names)
    console.print(drops if drops is not None else "drops: none")
    contexts = contexts_table(snapshot)
    if contexts is not None:
        console.print(contexts)
    console.print(counters_line(snapshot.counters), highlight=False)
    if snapshot.counters["lost"]:
        console.print(f"[bold red]{snapshot.counters['lost']} records were lost: the ring buffer "
                      "was full (raise --ringbuf-kb); histograms and counters are complete[/]")
    unavailable = [p.stage.name for p in plans if not p.available]
    if unavailable:
        console.print(f"stages not traced on this kernel: {', '.join(unavailable)} "
                      "(see 'udptrace check')", highlight=False)
