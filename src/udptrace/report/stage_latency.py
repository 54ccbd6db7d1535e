"""Each packet's time per stage, counted the way the kernel's histograms count it.

A stage's time is the time since the stage the packet reached before it, so
the stages of one packet add up to its total. Recorded runs and the exporter
compute it here from per-packet offsets; live histograms get it from the BPF
side, which does the same walk in ``finish()``.
"""

from __future__ import annotations

import numpy as np


def per_stage(offsets: np.ndarray) -> np.ndarray:
    """(packets, stages) ns since the stage reached before; -1 where not reached.

    ``offsets`` holds ns since time zero (the first stage) per stage, -1 where
    not reached. The first stage is time zero itself, so its column is -1.
    """
    offsets = np.asarray(offsets, np.int64)
    out = np.full(offsets.shape, -1, np.int64)
    if not offsets.size:
        return out
    prev = np.zeros(len(offsets), np.int64)
    for i in range(1, offsets.shape[1]):
        t = offsets[:, i]
        # a stage stamped before the one before it (a clock race across CPUs) is skipped
        reached = (t >= 0) & (t >= prev)
        out[:, i] = np.where(reached, t - prev, -1)
        prev = np.where(reached, t, prev)
    return out
