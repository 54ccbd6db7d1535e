"""The records' times in other clocks, turned into the trace's CLOCK_MONOTONIC as they are read.

The kernel keeps a datagram's SO_TXTIME launch time in its socket's clock (usually
CLOCK_TAI) and a software TX timestamp in CLOCK_REALTIME. Their offsets from
CLOCK_MONOTONIC are sampled here for each batch, so a clock that is slewed
(NTP, PTP) carries the conversion with it; a batch spans a fraction of a second.
"""

from __future__ import annotations

import time

import numpy as np

SAMPLES = 5  # readings per offset; the tightest bracket wins

# a launch time's clock by its clockid, as JSON and the report name it
CLOCK_NAMES = {getattr(time, f"CLOCK_{n.upper()}"): n for n in (
    "realtime", "monotonic", "boottime", "tai") if hasattr(time, f"CLOCK_{n.upper()}")}


def clock_name(clock: int) -> str:
    return CLOCK_NAMES.get(clock, f"clock {clock}")


def bracketed(clock: int) -> tuple[int, int, int]:
    """`clock` read between two CLOCK_MONOTONIC readings, the tightest pair of SAMPLES:
    (their distance, their middle, the reading)."""
    best = None
    for _ in range(SAMPLES):
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        value = time.clock_gettime_ns(clock)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if best is None or after - before < best[0]:
            best = (after - before, before + (after - before) // 2, value)
    assert best is not None
    return best


def offset_ns(clock: int) -> int:
    """`clock` minus CLOCK_MONOTONIC now."""
    _, middle, value = bracketed(clock)
    return value - middle


def _shift(clock: int) -> np.uint64:
    """What to subtract from a uint64 time in `clock` (modulo 2**64, as the arrays wrap)."""
    return np.uint64(offset_ns(clock) % 2**64)


def to_monotonic(records: np.ndarray) -> np.ndarray:
    """Rewrite the batch's launch times and software TX timestamps into CLOCK_MONOTONIC
    (in place; returns the batch). A launch time in a clock this host cannot read is
    cleared, never shown on the wrong time base."""
    stamped = records["tstamp_sw"] > 0
    if stamped.any():
        records["tstamp_sw"][stamped] -= _shift(time.CLOCK_REALTIME)
    launched = records["txtime"] > 0
    for clock in np.unique(records["txtime_clock"][launched]).tolist():
        if clock == time.CLOCK_MONOTONIC:
            continue
        which = launched & (records["txtime_clock"] == clock)
        try:
            records["txtime"][which] -= _shift(clock)
        except OSError:
            records["txtime"][which] = 0
    return records
