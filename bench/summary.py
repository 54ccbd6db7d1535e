"""The flood trials summed up per mode: medians and spreads over rounds, each mode's rate over
its reference's and the floor's in the same round, and the targets (issue 18)."""

from __future__ import annotations

import statistics

from modes import FLOOR, MODES

TARGETS = {"collateral": 0.95, "histogram": 0.95, "json": 0.85, "bpf_ns_per_run": 100.0,
           "multi_lost": 0.001}

Check = tuple[str, bool, str]  # target, met, the figures


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def ratios(by_round: dict[int, dict[str, dict]], mode: str, reference: str,
           key: str = "pps") -> list[float]:
    """Per round: the mode's rate over the reference's (the reference's CPU per packet over
    the mode's for the CPU ratio: time other jobs take is not in the sender's rusage)."""
    pairs = [(r[mode][key], r[reference][key]) for r in by_round.values()
             if mode in r and reference in r]
    if key == "pps":
        return [m / ref for m, ref in pairs]
    return [ref / m for m, ref in pairs]


def summarize(trials: list[dict]) -> dict:
    by_round: dict[int, dict[str, dict]] = {}
    for t in trials:
        by_round.setdefault(t["round"], {})[t["mode"]] = t
    modes = {}
    for mode in MODES:
        runs = [r[mode.name] for r in by_round.values() if mode.name in r]
        if not runs:
            continue
        entry: dict = {
            "reference": mode.reference,
            "sent": spread([t["sent"] for t in runs]),
            "pps": spread([t["pps"] for t in runs]),
            "ratio": spread(ratios(by_round, mode.name, mode.reference) or [float("nan")]),
            "cpu_ratio": spread(ratios(by_round, mode.name, mode.reference,
                                       "sender_cpu_ns_per_packet") or [float("nan")]),
            "sender_cpu_ns_per_packet": spread([t["sender_cpu_ns_per_packet"] for t in runs]),
            "system_softirq_pct": spread([t["system_softirq_pct"] for t in runs]),
            "system_busy_pct": spread([t["system_busy_pct"] for t in runs]),
        }
        on_floor = ratios(by_round, mode.name, FLOOR) if mode.on_floor else []
        if on_floor:
            entry["floor_ratio"] = spread(on_floor)
        if "tracer_cpu_pct" in runs[0]:
            entry["tracer_cpu_pct"] = spread([t["tracer_cpu_pct"] for t in runs])
        timed = [t["bpf"] for t in runs if "bpf" in t]
        if timed:
            for key in ("bpf_ns_per_packet", "hook_runs_per_packet", "bpf_ns_per_run"):
                entry[key] = spread([t[key] for t in timed])
            entry["programs"] = per_program(timed)
        if mode.tracer is not None and mode.tracer.accounting is not None:
            entry["unaccounted"] = [t["unaccounted"] for t in runs]
            entry["counted_exactly"] = [t["counted_exactly"] for t in runs]
            entry["lost"] = [t["summary"]["lost"] for t in runs]
            entry["lost_share"] = spread([t["lost_share"] for t in runs])
            entry["lost_syscalls"] = [t["summary"]["counters"]["lost_syscalls"] for t in runs]
        modes[mode.name] = entry
    return modes


def per_program(runs: list[dict]) -> list[dict]:
    """Per program name: ns per invocation and per packet, medians over the runs."""
    names: dict[str, list[tuple[float, float, float]]] = {}
    for t in runs:
        for p in t["programs"]:
            if p["run_cnt"]:
                names.setdefault(p["name"], []).append((
                    p["run_time_ns"] / p["run_cnt"],
                    p["run_cnt"] / max(t["sent"], 1),
                    p["run_time_ns"] / max(t["sent"], 1)))
    rows = [{"name": name,
             "ns_per_run": statistics.median(v[0] for v in values),
             "runs_per_packet": statistics.median(v[1] for v in values),
             "ns_per_packet": statistics.median(v[2] for v in values)}
            for name, values in names.items()]
    return sorted(rows, key=lambda r: -r["ns_per_packet"])


def targets(modes: dict) -> list[Check]:
    """Every target whose modes ran."""
    def span(value: dict) -> str:
        return f"{value['median']:.3f} ({value['min']:.3f}-{value['max']:.3f})"

    checks = []
    for mode in ("collateral", "histogram", "json"):
        if "floor_ratio" in modes.get(mode, {}):
            floor = modes[mode]["floor_ratio"]
            checks.append((f"{mode} ≥ {TARGETS[mode]} of the empty-hook floor",
                           floor["median"] >= TARGETS[mode], span(floor)))
    if {"histogram", "bpftrace"} <= modes.keys():
        hist, bt = (modes[m]["ratio"]["median"] for m in ("histogram", "bpftrace"))
        checks.append(("histogram ≥ bpftrace", hist >= bt, f"{hist:.3f} vs {bt:.3f}"))
    if "bpf_ns_per_run" in modes.get("histogram", {}):
        per_run = modes["histogram"]["bpf_ns_per_run"]["median"]
        empty = modes.get(FLOOR, {}).get("bpf_ns_per_run", {}).get("median")
        detail = f"{per_run:.0f} ns"
        if empty is not None:
            detail += f" (an empty program: {empty:.0f} ns, so {per_run - empty:.0f} ns of work)"
        checks.append((f"histogram: mean BPF time ≤ {TARGETS['bpf_ns_per_run']:.0f} ns per "
                       "hook run", per_run <= TARGETS["bpf_ns_per_run"], detail))
    for name, m in modes.items():
        if "unaccounted" in m:
            checks.append((f"{name}: records + lost = datagrams, counts exact",
                           all(u == 0 for u in m["unaccounted"]) and all(m["counted_exactly"]),
                           f"sent - records - lost per run {m['unaccounted']}; lost packet "
                           f"records {m['lost']}"))
    if "multi-json" in modes:
        lost = modes["multi-json"]["lost_share"]
        checks.append((f"multi-json loses ≤ {TARGETS['multi_lost']:.1%} of records",
                       lost["median"] <= TARGETS["multi_lost"],
                       f"{lost['median']:.2%} ({lost['min']:.2%}-{lost['max']:.2%})"))
    return checks
