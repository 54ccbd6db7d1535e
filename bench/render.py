"""The bench's tables and verdict lines on the terminal."""

from __future__ import annotations

import shutil

from rich.console import Console
from rich.table import Table
from summary import Check

console = Console(width=max(150, shutil.get_terminal_size().columns))


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


def flood(modes: dict) -> None:
    """Rate and cost per mode; the record accounting; each traced mode's programs."""
    def ratio(value: dict | None) -> str:
        return "-" if value is None else (
            f"{value['median']:.3f} ({value['min']:.3f}-{value['max']:.3f})")

    def figure(m: dict, key: str, fmt: str, scale: float = 1.0) -> str:
        return format(m[key]["median"] / scale, fmt) if key in m else "-"

    table = _table("sender rate and cost per mode: medians over rounds, (min-max)",
                   ("mode", "pps", "vs reference", "vs floor", "sender µs/pkt", "CPU ratio",
                    "softirq %", "tracer CPU %", "BPF ns/pkt", "hook runs/pkt", "BPF ns/run"))
    for mode, m in modes.items():
        table.add_row(mode, f"{m['pps']['median']:,.0f}", ratio(m["ratio"]),
                      ratio(m.get("floor_ratio")),
                      figure(m, "sender_cpu_ns_per_packet", ".2f", 1000),
                      f"{m['cpu_ratio']['median']:.3f}",
                      figure(m, "system_softirq_pct", ".1f"),
                      figure(m, "tracer_cpu_pct", ".1f"), figure(m, "bpf_ns_per_packet", ",.0f"),
                      figure(m, "hook_runs_per_packet", ".2f"), figure(m, "bpf_ns_per_run", ".0f"))
    console.print(table)
    console.print("reference: untraced (multi-json: multi-untraced); floor: empty-hooks; "
                  "BPF ns/run: per run of the per-datagram hooks")
    streamed = [name for name, m in modes.items() if "unaccounted" in m]
    if streamed:
        acc = _table("records per mode (every run)", ("mode", "datagrams", "counts exact",
                                                      "records lost", "lost share",
                                                      "unaccounted"))
        for mode in streamed:
            m = modes[mode]
            acc.add_row(mode, f"{m['sent']['median']:,.0f}", str(all(m["counted_exactly"])),
                        " ".join(f"{n:,}" for n in m["lost"]),
                        f"{m['lost_share']['median']:.2%}", str(m["unaccounted"]))
        console.print(acc)
    for mode in (m for m in modes if "programs" in modes[m]):
        progs = _table(f"{mode}: BPF programs (medians)", ("program", "ns/run", "runs/pkt",
                                                           "ns/pkt"))
        for p in modes[mode]["programs"]:
            progs.add_row(p["name"], f"{p['ns_per_run']:.0f}", f"{p['runs_per_packet']:.2f}",
                          f"{p['ns_per_packet']:.0f}")
        console.print(progs)


def lines(text: list[str]) -> None:
    for line in text:
        console.print(line)


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def checks(results: list[Check]) -> None:
    for name, met, detail in results:
        console.print(f"[{'green' if met else 'red'}]{verdict(met)}[/]  {name}: {detail}")
