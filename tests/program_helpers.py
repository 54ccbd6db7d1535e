"""The C programs in tests/programs: built by the tests, run in namespace a of a veth pair.

Each waits for a line on stdin before it sends, so a tracer attaches first, and prints its
own account of what it did at the end: the ground truth a test compares the tracer with.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from udptrace.netns import VethPair

PROGRAMS = Path(__file__).parent / "programs"
BUILT = Path(__file__).resolve().parent.parent / "build" / "test-programs"
GCC_FLAGS = ("-O2", "-Wall")


def build(name: str, directory: Path) -> Path:
    """tests/programs/NAME.c compiled: the copy in build/test-programs made from this very
    source, or else compiled into `directory` and kept there. The host's run makes the copy
    before the test VM boots, and the guest, which sees this tree read-only, runs it: gcc
    took 35 s a guest in the emulated CPU."""
    source = PROGRAMS / f"{name}.c"
    digest = hashlib.sha256(source.read_bytes() + " ".join(GCC_FLAGS).encode()).hexdigest()
    kept = BUILT / f"{name}-{digest[:16]}"
    if kept.exists():
        return kept
    out = directory / name
    subprocess.run(["gcc", *GCC_FLAGS, "-o", str(out), str(source)], check=True)
    try:
        BUILT.mkdir(parents=True, exist_ok=True)
        partial = kept.with_suffix(f".{os.getpid()}")
        shutil.copy2(out, partial)
        partial.replace(kept)  # whole or absent: another run never starts half a binary
    except OSError:
        pass  # read-only (the guest): the one in `directory` serves
    return out


class Program:
    """One run of a test program in namespace a; it starts on `go()`."""

    def __init__(self, net: VethPair, argv: Sequence[str], seconds: float) -> None:
        self.process = net.popen(net.ns_a, [str(a) for a in argv], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)
        self.pid = self.process.pid
        self.seconds = seconds  # how long its run should take

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.close()
        self.process.stdin = None  # communicate() must not flush it again

    def finish(self) -> np.ndarray:
        """Wait for the end; what it printed, one row of numbers per line (a column alone
        when the lines hold one number)."""
        out, _ = self.process.communicate(timeout=self.seconds + 10)
        rows = np.array([line.split() for line in out.decode().splitlines()], dtype=np.int64)
        return rows[:, 0] if rows.ndim == 2 and rows.shape[1] == 1 else rows

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
