"""`--html`: a recorded run as one self-contained page of interactive plots (plotly).

plotly.js is inlined, so the page opens offline. It shows the percentile
table, a latency histogram per stage, latency over time with drops marked,
the p50, p99 and slowest packets broken down by stage, drops by reason, the
sendto() intervals per socket, and the run's metadata.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import numpy as np
import plotly.graph_objects as go
import plotly.offline
from plotly.subplots import make_subplots

from udptrace.report import cycle
from udptrace.report.cycle import CycleSummary
from udptrace.report.parquet import Recording, column
from udptrace.report.recorded import cycle_view, packet_times, recorded_report, sent
from udptrace.report.terminal import (
    PERCENTILE_COLUMNS,
    TEXT_COLUMNS,
    ReportData,
    duration,
    percentile_cells,
)

MAX_POINTS = 10_000  # per scatter (SVG: works without WebGL); more shows nothing more
HEIGHT = "460px"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1300px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: right; }
td:first-child, th:first-child, td.text { text-align: left; }
.plot { height: 460px; } .note { color: #666; font-size: 0.9em; }
"""
# Errors in the page land in the DOM, where a headless browser's --dump-dom sees them.
ERROR_HOOK = """window.addEventListener("error", function (e) {
  document.documentElement.setAttribute("data-errors",
    (document.documentElement.getAttribute("data-errors") || "") + e.message + ";");
});"""


def _us(ns: np.ndarray | float) -> np.ndarray | float:
    return np.asarray(ns, np.float64) / 1e3 if isinstance(ns, np.ndarray) else ns / 1e3


def figure_div(fig: go.Figure, div_id: str) -> str:
    fig.update_layout(margin={"l": 60, "r": 20, "t": 50, "b": 50}, template="plotly_white")
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       default_height=HEIGHT, config={"displaylogo": False})


def _sample(n: int, keep: np.ndarray) -> np.ndarray:
    """Indices to plot: every k-th point, plus those in ``keep`` (the slowest, the drops)."""
    if n <= MAX_POINTS:
        return np.arange(n)
    step = int(np.ceil(n / MAX_POINTS))
    return np.union1d(np.arange(0, n, step), np.flatnonzero(keep))


def percentile_table(report: ReportData) -> str:
    lines = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in PERCENTILE_COLUMNS) + "</tr>"]
    for row in report.rows:
        cells = percentile_cells(row)
        lines.append("<tr>" + "".join(
            f'<td class="text">{html.escape(c)}</td>' if i < TEXT_COLUMNS else f"<td>{c}</td>"
            for i, c in enumerate(cells)) + "</tr>")
    return "\n".join(lines) + "</table>"


def _log_bars(values: np.ndarray, counts: np.ndarray) -> go.Bar:
    """A histogram with bins of equal width on a log axis: latencies span decades."""
    low, high = max(float(values.min()), 1.0), max(float(values.max()), 2.0)
    edges = np.unique(np.geomspace(low, high * 1.0001, 60))
    binned, _ = np.histogram(np.maximum(values, low), bins=edges, weights=counts)
    return go.Bar(x=_us(np.sqrt(edges[:-1] * edges[1:])), y=binned, width=_us(np.diff(edges)),
                  showlegend=False, hovertemplate="%{x:.1f} µs: %{y} packets<extra></extra>")


def stage_histograms(report: ReportData) -> go.Figure:
    rows = report.rows
    fig = make_subplots(rows=len(rows), cols=1, subplot_titles=[
        f"{r.name}: {r.title}" for r in rows], vertical_spacing=0.25 / max(len(rows), 1))
    for i, row in enumerate(rows, start=1):
        fig.add_trace(_log_bars(row.dist.low, row.dist.counts), row=i, col=1)
        fig.update_xaxes(type="log", row=i, col=1)
    fig.update_xaxes(title_text="µs", row=len(rows), col=1)
    fig.update_layout(height=max(260 * len(rows), 300),
                      title="latency per stage (time since the stage before)")
    return fig


def latency_over_time(recording: Recording) -> go.Figure:
    table = recording.packets
    t0 = column(table, "ts_ns")
    start = int(t0.min()) if len(t0) else 0
    seconds = (t0 - start) / 1e9
    totals = column(table, "total_ns")
    is_sent = sent(recording) & (totals >= 0)
    fig = go.Figure()
    s_seconds, s_totals = seconds[is_sent], totals[is_sent]
    slow = s_totals >= np.percentile(s_totals, 99) if len(s_totals) else np.zeros(0, bool)
    shown = _sample(len(s_totals), slow)
    fig.add_trace(go.Scatter(x=s_seconds[shown], y=_us(s_totals[shown]), mode="markers",
                               marker={"size": 4}, name="sent (total)",
                               hovertemplate="%{x:.3f} s: %{y:.1f} µs<extra></extra>"))
    dropped = column(table, "fate", "").astype(str) == "dropped"
    if dropped.any():
        times = packet_times(recording)
        reached = np.where(times.reached, times.offsets, 0)[dropped].max(axis=1)
        reasons = column(table, "drop_reason", "").astype(str)[dropped]
        fig.add_trace(go.Scatter(x=seconds[dropped], y=_us(reached), mode="markers",
                                   marker={"symbol": "x", "size": 9, "color": "crimson"},
                                   name="dropped (time to the drop)", text=reasons,
                                   hovertemplate="%{x:.3f} s: dropped (%{text}) after "
                                                 "%{y:.1f} µs<extra></extra>"))
    note = f" (every {len(s_totals) // len(shown)}th shown, and the slowest 1 %)" if len(
        shown) < len(s_totals) else ""
    fig.update_layout(title="latency over time" + note, xaxis_title="seconds since the first "
                      "packet", yaxis_title="µs")
    return fig


def breakdown(recording: Recording) -> go.Figure | None:
    """The p50, p99 and slowest packets, stacked by the time each stage took."""
    times = packet_times(recording)
    per = times.per_stage()
    totals = times.wire[times.sent]
    keep = totals >= 0
    if not keep.any():
        return None
    per, totals = per[keep], totals[keep]
    order = np.argsort(totals, kind="stable")
    picks = {"p50": order[int(0.5 * (len(order) - 1))], "p99": order[int(0.99 * (len(order) - 1))],
             "slowest": order[-1]}
    fig = go.Figure()
    labels = [f"{k} ({duration(totals[i])})" for k, i in picks.items()]
    for index, stage in enumerate(times.stages):
        values = np.array([per[i, index] for i in picks.values()], np.float64)
        if (values > 0).any():
            fig.add_trace(go.Bar(y=labels, x=_us(np.maximum(values, 0)), name=stage,
                                 orientation="h",
                                 hovertemplate=stage + ": %{x:.1f} µs<extra></extra>"))
    fig.update_layout(barmode="stack", title="where the time went: the p50, p99 and slowest "
                      "packets (sendto→wire) by stage", xaxis_title="µs since the first stage")
    return fig


def drops(recording: Recording) -> go.Figure | None:
    entries = recording.info.get("drops") or []
    if not entries:
        return None
    fig = go.Figure(go.Bar(x=[f"{d['reason']} after {d['after_stage']}" for d in entries],
                           y=[d["packets"] for d in entries], marker_color="crimson"))
    fig.update_layout(title="drops by kernel reason and the stage they followed",
                      yaxis_title="packets")
    return fig


def intervals(recording: Recording) -> tuple[np.ndarray, np.ndarray]:
    """(seconds since start, ns since the same socket's previous datagram)."""
    table = recording.packets
    ts = column(table, "ts_ns")
    if table["interval_ns"].null_count < table.num_rows:  # measured in the kernel (--interval)
        gaps = column(table, "interval_ns")
        keep = gaps > 0
        return (ts[keep] - ts.min()) / 1e9, gaps[keep]
    # a socket is its process and source port; packets of one syscall share its entry time
    first = column(table, "syscall_packet_index") == 0
    keys = np.stack([column(table, "pid"), column(table, "sport")], axis=1)[first]
    ts_first = ts[first]
    order = np.lexsort((ts_first, keys[:, 1], keys[:, 0]))
    same = (np.diff(keys[order], axis=0) == 0).all(axis=1)
    gaps = np.diff(ts_first[order])[same]
    when = ts_first[order][1:][same]
    return (when - (ts.min() if len(ts) else 0)) / 1e9, gaps


def interval_figure(recording: Recording) -> go.Figure | None:
    when, gaps = intervals(recording)
    if len(gaps) < 2:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=[
        "distribution", "over time"], column_widths=[0.4, 0.6])
    fig.add_trace(_log_bars(gaps, np.ones(len(gaps))), row=1, col=1)
    fig.update_xaxes(type="log", row=1, col=1)
    shown = _sample(len(gaps), np.zeros(len(gaps), bool))
    fig.add_trace(go.Scatter(x=when[shown], y=_us(gaps[shown]), mode="markers",
                               marker={"size": 3}, showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="µs", row=1, col=1)
    fig.update_xaxes(title_text="seconds", row=1, col=2)
    fig.update_yaxes(title_text="µs", row=1, col=2)
    fig.update_layout(title=f"sendto() intervals per socket: mean {duration(gaps.mean())}, "
                            f"jitter (stdev) {duration(gaps.std())}, "
                            f"min {duration(gaps.min())}, max {duration(gaps.max())}")
    return fig


def cycle_tables(summaries: list[CycleSummary]) -> str:
    """The cycle view (report/cycle.py), a table per flow."""
    heads = ["part", "from → to", "n", *(f"p{q:g}" for q in cycle.QUANTILES), "max",
             "share of jitter"]
    out = []
    for s in summaries:
        out.append(f'<p class="note">{html.escape(cycle.cycle_title(s))}</p>')
        lines = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>"]
        for row in s.rows:
            cells = [str(row.count), *(cycle.signed(v) for v in row.quantiles),
                     cycle.signed(row.max), cycle.share_text(row.share)]
            lines.append(f'<tr><td class="text">{html.escape(row.part.title)}</td>'
                         f'<td class="text">{html.escape(row.part.span)}</td>'
                         + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("\n".join(lines) + "</table>")
    return "\n".join(out)


def metadata_table(recording: Recording) -> str:
    info = recording.info
    rows = [("udptrace", info.get("version")), ("kernel", info.get("kernel")),
            ("command", " ".join(info.get("command", []))),
            ("filters", json.dumps({k: v for k, v in info.get("filters", {}).items() if v})),
            ("duration", f"{info.get('elapsed_s', 0):.1f} s"),
            ("finished", "yes" if recording.finished else "no: killed, ends at its last part"),
            ("records", info.get("records")), ("lost records", info.get("lost")),
            ("counters", ", ".join(f"{k} {v}" for k, v in info.get("counters", {}).items()))]
    rows += [(f"stage {s['name']}", f"{s['meaning']} [{s['hooks']}]") for s in info["stages"]]
    return "<table>" + "".join(
        f'<tr><th>{html.escape(str(k))}</th><td class="text">{html.escape(str(v))}</td></tr>'
        for k, v in rows) + "</table>"


def render(recording: Recording) -> str:
    report = recorded_report(recording)
    sections = [("percentiles (exact, from every record)", percentile_table(report))]
    figures = [("histograms", "latency per stage",
                stage_histograms(report) if report.rows else None),
               ("over-time", "latency over time", latency_over_time(recording)),
               ("breakdown", "per-stage breakdown", breakdown(recording)),
               ("drops", "drops", drops(recording)),
               ("intervals", "intervals and jitter", interval_figure(recording))]
    for div_id, title, fig in figures:
        sections.append((title, figure_div(fig, div_id) if fig is not None else
                         f'<p class="note" id="{div_id}">none in this run</p>'))
    cycles = cycle_view(recording)
    if cycles is not None:
        sections.append(("cycles: where their time and jitter went",
                         cycle_tables(cycles.summaries())))
    sections.append(("the run", metadata_table(recording)))
    run = " ".join(recording.info.get("command", []))
    return page("udptrace report", run, f"{run}: {report.counters.get('packets', 0)} packets "
                "followed", sections)


def snapshots_page(directory: Path, snapshots: list[tuple[str, dict, Recording]]) -> str:
    """`report DIR --html` for a flight recorder's DIR: the snapshots with their verdicts,
    then each one's percentiles and its datagrams' latency over the window."""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(about.get('trigger')))}</td>"
        f"<td>{_ns_text(about.get('value_ns'))}</td>"
        f"<td class=\"text\">{html.escape(str(about.get('verdict')))}</td>"
        f"<td class=\"text\">{html.escape(name)}/timeline.json</td></tr>"
        for name, about, _ in snapshots)
    sections = [("snapshots", "<table><tr><th>snapshot</th><th>trigger</th><th>value</th>"
                              f"<th>verdict</th><th>Perfetto timeline</th></tr>{rows}</table>")]
    for name, about, recording in snapshots:
        report = recorded_report(recording)
        fig = latency_over_time(recording)
        sections.append((f"{name}: {about.get('trigger')}: {about.get('verdict')}",
                         percentile_table(report) + (figure_div(fig, f"{name}-over-time")
                                                     if fig is not None else "")))
    return page("udptrace snapshots", str(directory),
                f"{directory}: {len(snapshots)} flight-recorder snapshots", sections)


def _ns_text(ns: object) -> str:
    return f"{ns / 1e6:.2f} ms" if isinstance(ns, int) else "-"


def page(title: str, subject: str, note: str, sections: list[tuple[str, str]]) -> str:
    """One self-contained page (plotly inlined): a heading, a note and titled sections of
    HTML; `subject` goes into the window title."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(f"<h2>{html.escape(t)}</h2>\n{content}" for t, content in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}: {html.escape(subject)}</title>"
            f"<style>{STYLE}</style><script>{ERROR_HOOK}</script>"
            f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>'
            f"</head><body><h1>{html.escape(title)}</h1>"
            f'<p class="note">{html.escape(note)}; made {when}</p>\n'
            f"{body}\n</body></html>\n")


def write(recording: Recording, out: IO[bytes]) -> None:
    out.write(render(recording).encode())
