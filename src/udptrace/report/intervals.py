"""Send intervals (`--interval`): is a 10 ms cycle really 10 ms?

Per flow the kernel keeps every interval in a log-linear histogram, and each
interval's signed distance from a reference period fixed early (the median
of the first few). Those distances are fine where it matters, near the
period, so the intervals are rebuilt here from them: the period is their
median, the jitter is |interval - period|, and the linear histogram is drawn
around the period. With samples (per PubSub writer group) everything is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from udptrace.report.distribution import Distribution, bucket_bounds
from udptrace.report.terminal import duration, histogram_lines
from udptrace.trace.decode import address_strings
from udptrace.trace.layout import Layout

MISSED_FACTOR = 1.5  # an interval this many periods long lost at least one cycle
HALF_ROWS = 10  # linear rows on each side of the period
JITTER_QUANTILES = (50.0, 99.0)


@dataclass(frozen=True)
class IntervalSummary:
    intervals: Distribution  # the intervals themselves
    log_linear: Distribution  # the kernel's log-linear buckets (the samples, when exact)
    period_ns: float  # their median
    jitter: Distribution  # |interval - period|
    missed: int  # intervals longer than MISSED_FACTOR periods
    exact: bool

    @classmethod
    def from_samples(cls, intervals_ns: np.ndarray) -> IntervalSummary:
        values = Distribution.from_samples(intervals_ns)
        period = float(np.median(intervals_ns)) if len(intervals_ns) else 0.0
        missed = int((np.asarray(intervals_ns) > MISSED_FACTOR * period).sum())
        return cls(values, values, period, values.folded(period), missed, exact=True)

    @classmethod
    def from_kernel(cls, state: np.void) -> IntervalSummary:
        coarse = Distribution.from_hist(state["interval"])
        reference = int(state["reference"])
        if not reference:  # fewer intervals than the warm-up: the coarse buckets are all there is
            values = coarse
        else:
            early, late = state["early"], state["late"]
            low, width = bucket_bounds(*np.asarray(early["buckets"]).shape)
            counts = np.concatenate([np.asarray(early["buckets"]).reshape(-1),
                                     np.asarray(late["buckets"]).reshape(-1)])
            # early: reference - interval in [low, low + width); late: interval - reference
            lows = np.concatenate([reference - low - width + 1, reference + low])
            highs = np.minimum(lows + np.concatenate([width, width]), coarse.max + 1)
            lows = np.maximum(lows, coarse.min)
            used = (counts > 0) & (highs > lows)
            values = Distribution.from_bins(lows[used], (highs - lows)[used], counts[used],
                                            coarse.min, coarse.max, coarse.total)
        period = values.percentile(50)
        return cls(values, coarse, period, values.folded(period), int(state["missed"]),
                   exact=False)

    @property
    def count(self) -> int:
        return self.intervals.count


def nice_step(ns: float) -> int:
    """The 1-2-5 round number of ns at or above `ns` (at least 1 µs)."""
    ns = max(ns, 1000.0)
    power = 10 ** math.floor(math.log10(ns))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= ns))


def linear_lines(summary: IntervalSummary, step_ns: int | None = None) -> tuple[int, list[str]]:
    """The linear histogram around the period: its bin width and its lines."""
    # the typical jitter sets the bins; rarer outliers fall into the open rows at the ends
    step = step_ns or nice_step(summary.jitter.percentile(90) * 2 / HALF_ROWS)
    rows = summary.intervals.centered_rows(summary.period_ns - step / 2, step, HALF_ROWS)
    return step, histogram_lines(rows, bound=_bound)


def _bound(ns: int) -> str:
    return "∞" if ns < 0 else ("0" if ns == 0 else duration(ns))


@dataclass(frozen=True)
class Flow:
    label: str
    summary: IntervalSummary


def kernel_flows(keys: np.ndarray, states: np.ndarray, layout: Layout) -> list[Flow]:
    """One per socket (and per callback) that sent at least twice, sockets first."""
    if not len(keys):
        return []
    daddr = address_strings(states["daddr"])
    flows = []
    for i in np.lexsort((keys["tgid"], keys["kind"])):
        summary = IntervalSummary.from_kernel(states[i])
        if not summary.count:
            continue
        comm = states["comm"][i].decode(errors="replace")
        who = f"{comm}/{keys['tgid'][i]}"
        if layout.flow_kinds[int(keys["kind"][i])] == "app":
            label = f"{who} callback"
        else:
            label = f"{who} → {daddr[i]}:{states['dport'][i]}"
        flows.append(Flow(label, summary))
    return flows


def summaries(flows: list[Flow]) -> list[dict[str, object]]:
    """The flows for the JSON summary, times in ns."""
    return [{"flow": f.label, "intervals": f.summary.count,
             "period_ns": round(f.summary.period_ns), "min_ns": f.summary.intervals.min,
             "max_ns": f.summary.intervals.max,
             **{f"jitter_p{q:g}_ns": round(f.summary.jitter.percentile(q))
                for q in JITTER_QUANTILES},
             "jitter_max_ns": f.summary.jitter.max, "missed": f.summary.missed,
             "exact": f.summary.exact} for f in flows]


def interval_table(flows: list[Flow], title: str) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("flow", overflow="fold", min_width=20)
    for column in ("n", "period", "min", "max",
                   *(f"jitter p{q:g}" for q in JITTER_QUANTILES), "jitter max", "missed"):
        table.add_column(column, justify="right", no_wrap=True)
    for flow in flows:
        s = flow.summary
        table.add_row(flow.label, str(s.count), duration(s.period_ns), duration(s.intervals.min),
                      duration(s.intervals.max),
                      *(duration(s.jitter.percentile(q)) for q in JITTER_QUANTILES),
                      duration(s.jitter.max), str(s.missed))
    return table


def render(console: Console, flows: list[Flow], step_ns: int | None = None,
           histograms: bool = True, title: str = "send intervals") -> None:
    if not flows:
        console.print(f"{title}: no flow sent twice")
        return
    if histograms:
        for flow in flows:
            step, lines = linear_lines(flow.summary, step_ns)
            console.print(f"[bold]@interval_ns[/]: {flow.label}, bins of {duration(step)} "
                          "around the period", highlight=False)
            for line in lines:
                console.print(line, highlight=False, markup=False)
            console.print(f"[bold]@interval_loglinear_ns[/]: {flow.label}", highlight=False)
            for line in histogram_lines(flow.summary.log_linear.bucket_rows(), bound=_bound):
                console.print(line, highlight=False, markup=False)
            console.print()
    console.print(interval_table(
        flows, f"{title}: period = median interval, jitter = |interval - period|, "
               f"missed = longer than {MISSED_FACTOR:g} periods"))
    if not all(f.summary.exact for f in flows):
        console.print("(from in-kernel histograms: each interval's distance from the flow's "
                      "early reference period is kept within 3.125 %; counts, min and max are "
                      "exact)", highlight=False)
