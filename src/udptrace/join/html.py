"""`join --html`: the join's summary and plots in one self-contained page.

The page's frame and figures are report/html.py's; here are the tables of the clocks,
flows, hops and losses, the wire and one-way times over the run with the clocks'
uncertainty as a band, and the p50, p99 and slowest datagrams split into their hops.
"""

from __future__ import annotations

import html

import plotly.graph_objects as go

from udptrace.join.engine import JoinEngine
from udptrace.join.summary import CLOCKED, HOPS
from udptrace.join.terminal import flow_label, wall
from udptrace.report.atomic import AtomicFile
from udptrace.report.html import MAX_POINTS, figure_div, page
from udptrace.report.terminal import duration


def _table(heads: list[str], rows: list[list[object]]) -> str:
    lines = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr>"]
    for row in rows:
        lines.append("<tr>" + "".join(
            f'<td class="{"text" if isinstance(c, str) else ""}">{html.escape(str(c))}</td>'
            for c in row) + "</tr>")
    return "\n".join(lines) + "</table>"


def _ns(value: object) -> str:
    return "" if value is None else duration(float(value))  # type: ignore[arg-type]


def clocks_table(summary: dict) -> str:
    rows = []
    for c in summary["clocks"]:
        rows.append([f"{c['sender_host']} → {c['receiver_host']}",
                     "-" if c["same_host"] else ("none" if c["claimed_error_ns"] is None
                                                 else _ns(c["claimed_error_ns"])),
                     "" if c["measured_offset_ns"] is None else
                     f"{c['measured_offset_ns']} ns ± {_ns(c['measured_error_ns'])}",
                     f"{c['offset_ns']} ns", "unknown" if c["uncertainty_ns"] is None
                     else f"± {_ns(c['uncertainty_ns'])}", c["how"], "; ".join(c["remarks"])])
    return _table(["sender host → receiver host", "claimed error", "measured both ways",
                   "offset used", "uncertainty", "how", "remarks"], rows)


def flows_table(summary: dict) -> str:
    return _table(["flow", "to recording", "sent", "arrived", "lost between the hosts",
                   "dropped by sender", "dropped by receiver", "ambiguous", "not covered"],
                  [[flow_label(f), f["receiver_rec"], f["sent"], f["arrived"], f["lost"],
                    f["dropped_sender"], f["dropped_receiver"], f["ambiguous"],
                    f["not_covered"]] for f in summary["flows"]])


def hops_tables(summary: dict) -> str:
    out = []
    for f in summary["flows"]:
        band = f["uncertainty_ns"]
        rows = [[name, span, f[f"{c}_n"], *(_ns(f[f"{c}_{q}"]) for q in ("min", "p50", "p99",
                                                                          "max")),
                 ("unknown" if band is None else _ns(band)) if c in CLOCKED else ""]
                for c, name, span in HOPS if f[f"{c}_n"]]
        out.append(f'<p class="note">{html.escape(flow_label(f))} → recording '
                   f"{f['receiver_rec']}</p>")
        out.append(_table(["hop", "from → to", "n", "min", "p50", "p99", "max", "± clocks"],
                          rows))
    return "\n".join(out)


def losses_table(summary: dict) -> str:
    if not summary["lost_between_hosts"]:
        return '<p class="note">none</p>'
    return _table(["flow", "to recording", "datagrams", "sequence numbers", "sent from", "to"],
                  [[r["flow"], r["receiver_rec"], r["datagrams"],
                    "" if r["first_sequence"] is None else
                    f"{r['first_sequence']} to {r['last_sequence']}",
                    wall(r["first_sent_at_ns"], summary["timescale"]),
                    wall(r["last_sent_at_ns"], summary["timescale"])]
                   for r in summary["lost_between_hosts"]])


def drops_table(summary: dict) -> str:
    if not summary["drops"]:
        return '<p class="note">none</p>'
    return _table(["flow", "to recording", "kernel", "reason", "after stage", "datagrams"],
                  [[d["flow"], d["receiver_rec"], d["kernel"], d["drop_reason"] or "",
                    d["drop_stage"] or "", d["datagrams"]] for d in summary["drops"]])


def over_time(engine: JoinEngine, summary: dict) -> go.Figure | None:
    """Wire and one-way times of every flow over the run, the clocks' band around them."""
    fig = go.Figure()
    start = None
    for f in summary["flows"]:
        rows = engine.rows(f"""
            SELECT sent_at_ns, wire_ns, one_way_ns FROM datagrams
            WHERE flow = ? AND receiver_rec = ? AND wire_ns IS NOT NULL
            USING SAMPLE reservoir({MAX_POINTS} ROWS) REPEATABLE (1)""",
                           f["flow"], f["receiver_rec"])
        if not rows:
            continue
        rows.sort()
        start = rows[0][0] if start is None else min(start, rows[0][0])
        when = [(r[0] - start) / 1e9 for r in rows]
        label = f"{flow_label(f)} → #{f['receiver_rec']}"
        band = f["uncertainty_ns"] or 0
        for index, name in ((1, "wire"), (2, "one way")):
            points = [(t, r[index] / 1e3) for t, r in zip(when, rows, strict=True)
                      if r[index] is not None]  # one way: only those a reader took
            if not points:
                continue
            x, y = [p[0] for p in points], [p[1] for p in points]
            if band:
                fig.add_trace(go.Scatter(
                    x=x + x[::-1], y=[v + band / 1e3 for v in y]
                    + [max(v - band / 1e3, 0) for v in y[::-1]], fill="toself",
                    line={"width": 0}, opacity=0.2, showlegend=False, hoverinfo="skip"))
            fig.add_trace(go.Scatter(x=x, y=y, mode="markers", marker={"size": 3},
                                     name=f"{name}: {label}"))
    if start is None:
        return None
    fig.update_layout(title="wire and one-way times (shaded: the clocks' uncertainty)",
                      xaxis_title="seconds since the first datagram", yaxis_title="µs")
    return fig


def breakdown(engine: JoinEngine) -> go.Figure | None:
    """The p50, p99 and slowest one-way datagrams, split into their hops."""
    hops = [c for c, _, _ in HOPS if c != "one_way_ns"]
    rows = engine.rows(f"""
        WITH ranked AS (SELECT *, percent_rank() OVER (ORDER BY one_way_ns) AS r
                        FROM datagrams WHERE one_way_ns IS NOT NULL)
        SELECT label, {", ".join(hops)}, one_way_ns FROM (
            SELECT 'p50' AS label, * FROM ranked WHERE r >= 0.5 ORDER BY r LIMIT 1)
        UNION ALL SELECT label, {", ".join(hops)}, one_way_ns FROM (
            SELECT 'p99' AS label, * FROM ranked WHERE r >= 0.99 ORDER BY r LIMIT 1)
        UNION ALL SELECT label, {", ".join(hops)}, one_way_ns FROM (
            SELECT 'slowest' AS label, * FROM ranked ORDER BY r DESC LIMIT 1)""")
    if not rows:
        return None
    fig = go.Figure()
    labels = [f"{r[0]} ({duration(r[-1])})" for r in rows]
    names = {c: n for c, n, _ in HOPS}
    for i, column in enumerate(hops, start=1):
        values = [(r[i] or 0) / 1e3 for r in rows]
        if any(values):
            fig.add_trace(go.Bar(y=labels, x=values, name=names[column], orientation="h"))
    fig.update_layout(barmode="stack", title="where the time went: the p50, p99 and slowest "
                      "datagrams, hop by hop", xaxis_title="µs")
    return fig


def render(engine: JoinEngine, summary: dict) -> str:
    sections = [("clocks", clocks_table(summary)), ("flows", flows_table(summary)),
                ("hops", hops_tables(summary))]
    for div_id, title, fig in (("over-time", "over the run", over_time(engine, summary)),
                               ("breakdown", "hop by hop", breakdown(engine))):
        sections.append((title, figure_div(fig, div_id) if fig is not None else
                         f'<p class="note" id="{div_id}">nothing joined</p>'))
    sections += [("lost between the hosts", losses_table(summary)),
                 ("dropped in a kernel", drops_table(summary))]
    if summary["remarks"]:
        sections.append(("notes", "".join(f"<p>{html.escape(r)}</p>"
                                          for r in summary["remarks"])))
    recordings = ", ".join(r["path"] for r in summary["recordings"])
    return page("udptrace join", recordings, f"{recordings} on {summary['timescale'].upper()}",
                sections)


def write(engine: JoinEngine, summary: dict, out: AtomicFile) -> None:
    out.file.write(render(engine, summary).encode())
    out.commit()
