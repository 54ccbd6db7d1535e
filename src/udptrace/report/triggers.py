"""Flight-recorder triggers (`--trigger`): when a datagram is worth keeping everything around.

An expression names what to look at and, for times, a threshold:

  SPAN>TIME     a span of stages.SPANS (cycle, total, ...) or `interval` (--interval)
  STAGE>TIME    a stage's own time: since the stage the datagram reached before it
  missed        a missed period: an interval over 1.5 times its flow's reference period
  drop          any drop;  drop:REASON  a drop for this kernel drop reason

TIME is a number with ns, us, µs, ms or s. Each batch of records is evaluated at once
(NumPy, one comparison per trigger): steady state costs a few array operations per
100 ms batch, not a Python step per datagram.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from udptrace.errors import UsageError
from udptrace.report.stage_latency import per_stage
from udptrace.stages import SPAN_NAMES, STAGE_NAMES
from udptrace.trace.decode import Packets, span_ns
from udptrace.trace.layout import Layout

MS = 1_000_000
INTERVAL = "interval"
MISSED_FACTOR = 1.5  # as the kernel counts missed periods (ut_record.h, struct ut_interval)
WARMUP = 5  # intervals whose median becomes a flow's reference period, as in the kernel
_EXPRESSION = re.compile(r"^\s*([a-z_]+)\s*>\s*([0-9.]+)\s*([a-zµ]*)\s*$")


@dataclass(frozen=True)
class Trigger:
    text: str
    kind: str  # "span", "stage", "missed", "drop"
    name: str = ""  # the span or stage
    threshold_ns: int = 0
    reason: str = ""  # drop:REASON; "" = any drop

    @property
    def needs(self) -> str:
        """The option a trigger's values come with ("" if none)."""
        if self.kind == "missed" or self.name == INTERVAL:
            return "--interval"
        return "--wakeup" if self.name in ("cycle", "timer", "wakeup", "on_cpu") else ""


def _valid() -> str:
    return (f"spans {', '.join((*SPAN_NAMES, INTERVAL))}; stages {', '.join(STAGE_NAMES)}; "
            "or missed, drop, drop:REASON")


def parse_trigger(text: str) -> Trigger:
    """One `--trigger` expression; a one-line UsageError naming what is valid otherwise."""
    word = text.strip()
    if word in ("missed", "drop"):
        return Trigger(text, word)
    if word.startswith("drop:"):
        reason = word.removeprefix("drop:").upper().removeprefix("SKB_DROP_REASON_")
        if not re.fullmatch(r"[A-Z0-9_]+", reason):
            raise UsageError(f"--trigger '{text}': drop:REASON needs a drop reason such as "
                             "drop:QDISC_DROP")
        return Trigger(text, "drop", reason=reason)
    m = _EXPRESSION.match(word)
    if m is None:
        raise UsageError(f"--trigger '{text}': write NAME>TIME (e.g. cycle>1.5ms), missed, "
                         f"drop or drop:REASON; valid names: {_valid()}")
    name, number, unit = m.groups()
    if name in (*SPAN_NAMES, INTERVAL):
        kind = "span"
    elif name in STAGE_NAMES:
        kind = "stage"
    else:
        raise UsageError(f"--trigger '{text}': no span or stage '{name}'; valid: {_valid()}")
    return Trigger(text, kind, name, duration_ns(number, unit, f"--trigger '{text}'"))


UNITS_NS = {"": 1, "ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


def duration_ns(number: str, unit: str, what: str) -> int:
    """`1.5` and `ms` as ns; a one-line UsageError for what is not a duration."""
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in UNITS_NS or value < 0:
        raise UsageError(f"{what}: '{number}{unit}' is not a time: write e.g. 1.5ms, 200us, "
                         "800ns or 1s")
    return round(value * UNITS_NS[unit])


def parse_duration(text: str, what: str) -> int:
    """`--before 100ms`-style options, as ns."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zµ]*)\s*", text)
    return duration_ns(*(m.groups() if m else (text, "")), what)


@dataclass(frozen=True)
class FlightOptions:
    """The flight recorder's choices (cli/trace.py): what fires, where snapshots go."""

    triggers: tuple[Trigger, ...]
    directory: Path
    before_ns: int = 100 * MS
    after_ns: int = 20 * MS
    max_snapshots: int = 10
    holdoff_ns: int = 1000 * MS  # after a snapshot's trigger, later triggers are counted only


@dataclass
class Triggers:
    """The triggers of a run, evaluated batch by batch; keeps the flows' reference periods
    for `missed`."""

    triggers: tuple[Trigger, ...]
    layout: Layout
    drop_names: dict[int, str]
    _references: dict[tuple[int, int], int] = field(default_factory=dict)
    _warmup: dict[tuple[int, int], list[int]] = field(default_factory=dict)

    def evaluate(self, packets: Packets) -> np.ndarray:
        """Per record, the index of the first trigger it fires, or -1."""
        out = np.full(len(packets), -1, np.int64)
        for i, trigger in reversed(list(enumerate(self.triggers))):
            out[self._fires(trigger, packets.records)] = i
        return out

    def value_ns(self, trigger: Trigger, records: np.ndarray) -> np.ndarray:
        """The time a trigger compares, per record; -1 where the record has none."""
        if trigger.name == INTERVAL:
            values = records["interval_ns"].astype(np.int64)
            return np.where(values > 0, values, -1)
        if trigger.kind == "span":
            return span_ns(records, self.layout, trigger.name)
        return stage_time_ns(records, self.layout, trigger.name)

    def _fires(self, trigger: Trigger, records: np.ndarray) -> np.ndarray:
        if trigger.kind == "drop":
            dropped = records["fate"] == self.layout.fates_by_name["dropped"]
            if not trigger.reason:
                return dropped
            codes = [c for c, n in self.drop_names.items() if n == trigger.reason]
            return dropped & np.isin(records["drop_reason"], codes)
        if trigger.kind == "missed":
            return self._missed(records)
        return self.value_ns(trigger, records) > trigger.threshold_ns

    def _missed(self, records: np.ndarray) -> np.ndarray:
        intervals = records["interval_ns"].astype(np.int64)
        flows = records["pid"].astype(np.int64) << 16 | records["sport"].astype(np.int64)
        reference = np.zeros(len(records), np.int64)
        for flow in np.unique(flows[intervals > 0]).tolist():
            key = (flow >> 16, flow & 0xFFFF)
            rows = np.flatnonzero((flows == flow) & (intervals > 0))
            if key not in self._references:
                seen = self._warmup.setdefault(key, [])
                seen.extend(intervals[rows[:WARMUP - len(seen)]].tolist())
                if len(seen) < WARMUP:
                    continue
                self._references[key] = int(np.median(seen))
                rows = rows[WARMUP:]  # the warm-up's own intervals set the reference
            reference[rows] = self._references[key]
        return (reference > 0) & (intervals > MISSED_FACTOR * reference)


def stage_time_ns(records: np.ndarray, layout: Layout, stage: str) -> np.ndarray:
    """A stage's time per record (since the stage reached before it, as the histograms
    count it); -1 where it has none."""
    ts = records["ts"].astype(np.int64)
    return per_stage(ts, ts > 0)[:, layout.stage_index(stage)]
