"""What a recording's times mean outside this host: CLOCK_MONOTONIC against CLOCK_TAI and
CLOCK_REALTIME, sampled through the run, and how well this host says its clock is kept.

The records carry CLOCK_MONOTONIC (bpf_ktime_get_ns), which starts at this host's boot;
another host's recording can only be set beside it through a clock both try to keep
(TAI or UTC). NTP and PTP slew those against the monotonic clock as they go, so one
reading at the start would not do: a :class:`Timebase` takes a sample at every status
tick, each between two monotonic readings whose distance is its own uncertainty. The
host's claim about its clock comes from ``adjtimex(2)`` read-only (modes 0), as chrony,
ntpd and phc2sys maintain it, and, where ptp4l runs, from ``pmc``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from udptrace.trace.clocks import bracketed

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
PTP4L_SOCKET = Path("/var/run/ptp4l")  # ptp4l's management socket, pmc -u's default
PMC_QUERY = ("pmc", "-u", "-b", "0", "GET PORT_DATA_SET", "GET TIME_STATUS_NP")
PMC_SECONDS = 2

# adjtimex(2) status bits and return values (linux/timex.h)
STATUS_FLAGS = {0x0001: "PLL", 0x0002: "PPSFREQ", 0x0004: "PPSTIME", 0x0008: "FLL",
                0x0010: "INS", 0x0020: "DEL", 0x0040: "UNSYNC", 0x0080: "FREQHOLD",
                0x0100: "PPSSIGNAL", 0x0200: "PPSJITTER", 0x0400: "PPSWANDER",
                0x0800: "PPSERROR", 0x1000: "CLOCKERR", 0x2000: "NANO", 0x4000: "MODE",
                0x8000: "CLK"}
STA_UNSYNC, STA_NANO = 0x0040, 0x2000
CLOCK_STATES = {0: "TIME_OK", 1: "TIME_INS", 2: "TIME_DEL", 3: "TIME_OOP", 4: "TIME_WAIT",
                5: "TIME_ERROR"}
FREQ_SCALE = 65536  # timex.freq: ppm with a 16-bit fraction


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    _fields_ = (("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("constant", ctypes.c_long),
                ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
                ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
                ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
                ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_reserved", ctypes.c_int * 11))


_libc = ctypes.CDLL(None, use_errno=True)


def clock_sample() -> dict[str, int]:
    """CLOCK_TAI and CLOCK_REALTIME minus CLOCK_MONOTONIC, each read between two monotonic
    readings. ``mono_ns`` is the middle of TAI's pair, ``bracket_ns`` the wider of the two
    clocks' pairs: neither offset is known better than half of it."""
    tai_width, middle, tai = bracketed(time.CLOCK_TAI)
    real_width, real_middle, realtime = bracketed(time.CLOCK_REALTIME)
    return {"mono_ns": middle, "tai_ns": tai - middle, "realtime_ns": realtime - real_middle,
            "bracket_ns": max(tai_width, real_width)}


def to_timescale(mono: np.ndarray, sampled: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """CLOCK_MONOTONIC ns → a timescale's ns, through its offsets at the monotonic times
    ``sampled``, interpolated between them (clocks are slewed) and held past the ends.
    Relative to the first offset, so float64 interpolation keeps ns (the offsets themselves
    are ~2**60)."""
    if not len(sampled):
        return mono
    base = int(offsets[0])
    delta = np.interp(mono.astype(np.float64), sampled.astype(np.float64),
                      (offsets - base).astype(np.float64))
    return mono + base + np.round(delta).astype(np.int64)


def realtime_ns(mono: np.ndarray, samples: list[dict[str, int]]) -> np.ndarray:
    """CLOCK_MONOTONIC ns → CLOCK_REALTIME ns through a recording's clock samples."""
    return to_timescale(mono, np.array([s["mono_ns"] for s in samples], np.int64),
                        np.array([s["realtime_ns"] for s in samples], np.int64))


def sync_state() -> dict[str, object]:
    """The kernel's view of its clock discipline (adjtimex with modes 0 changes nothing).
    ``synchronised`` is False while STA_UNSYNC is set: then maxerror and esterror say
    nothing (the kernel's default is 16 s)."""
    tx = _Timex()
    state = _libc.adjtimex(ctypes.byref(tx))
    if state < 0:
        return {"error": os.strerror(ctypes.get_errno())}
    nano = bool(tx.status & STA_NANO)
    return {
        "synchronised": not tx.status & STA_UNSYNC,
        "clock_state": CLOCK_STATES.get(state, str(state)),
        "status": tx.status,
        "status_flags": [n for bit, n in STATUS_FLAGS.items() if tx.status & bit],
        "maxerror_ns": tx.maxerror * 1000, "esterror_ns": tx.esterror * 1000,
        "offset_ns": tx.offset if nano else tx.offset * 1000,
        "freq_ppm": tx.freq / FREQ_SCALE,
        "tai_offset_s": tx.tai,
    }


def parse_pmc(text: str) -> dict[str, object] | None:
    """ptp4l's answers to PMC_QUERY: port state and identity, the offset from its master,
    the grandmaster. None when nothing answered (pmc prints only what it sent)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("\t\t"):
            continue
        name, _, value = line.strip().partition(" ")
        fields.setdefault(name, value.strip())
    if not fields:
        return None
    out: dict[str, object] = {"port_state": fields.get("portState"),
                              "port_identity": fields.get("portIdentity")}
    if "master_offset" in fields:
        out["master_offset_ns"] = int(fields["master_offset"])
        out["gm_present"] = fields.get("gmPresent") == "true"
        out["gm_identity"] = fields.get("gmIdentity")
    return out


@dataclass
class PtpWatch:
    """ptp4l's state through pmc, without holding up the caller: each poll collects the
    query started by the previous one and starts the next."""

    socket_path: Path = PTP4L_SOCKET
    _running: subprocess.Popen | None = None
    last: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.last = self._absent() or {}

    def _absent(self) -> dict[str, object] | None:
        if shutil.which(PMC_QUERY[0]) is None:
            return {"available": False, "why": "pmc is not installed (Debian: linuxptp)"}
        if not self.socket_path.exists():
            return {"available": False, "why": f"ptp4l is not running (no {self.socket_path})"}
        return None

    def poll(self) -> dict[str, object]:
        if self._running is not None and self._running.poll() is not None:
            out = self._running.stdout.read() if self._running.stdout else ""
            self._running = None
            parsed = parse_pmc(out)
            self.last = ({"available": True, **parsed} if parsed else
                         {"available": False, "why": "ptp4l did not answer pmc"})
        if self._running is None:
            if absent := self._absent():
                self.last = absent
            else:
                self._running = subprocess.Popen(
                    (*PMC_QUERY[:3], "-s", str(self.socket_path), *PMC_QUERY[3:]),
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, text=True)
        return self.last

    def close(self) -> None:
        if self._running is not None:
            self._running.kill()
            self._running.wait(PMC_SECONDS)
            self._running = None


def host_identity() -> dict[str, str]:
    """Which host and which boot: two recordings with one boot id share CLOCK_MONOTONIC."""
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        boot = ""
    return {"hostname": socket.gethostname(), "boot_id": boot}


@dataclass
class Timebase:
    """Samples through a run. :meth:`take` hands over those since the last take (a recorded
    part's), :meth:`statement` all of them (a JSON summary's)."""

    ptp: PtpWatch = field(default_factory=PtpWatch)
    samples: list[dict[str, int]] = field(default_factory=list)
    taken: int = 0
    sync: dict[str, object] = field(default_factory=dict)

    def sample(self) -> None:
        self.samples.append(clock_sample())
        self.sync = sync_state()
        self.ptp.poll()

    def _block(self, samples: list[dict[str, int]]) -> dict[str, object]:
        return {"samples": samples, "sync": self.sync, "ptp": self.ptp.last}

    def take(self) -> dict[str, object]:
        fresh = self.samples[self.taken:]
        self.taken = len(self.samples)
        return self._block(fresh)

    def statement(self) -> dict[str, object]:
        return {**host_identity(), **self._block(self.samples)}

    def sampling(self, then: Callable[[dict[str, int], float, int | None], None]
                 ) -> Callable[[dict[str, int], float, int | None], None]:
        """A run loop's status callback that samples first (trace.run.StatusCallback)."""
        def tick(counters: dict[str, int], elapsed: float, records: int | None) -> None:
            self.sample()
            then(counters, elapsed, records)
        return tick

    def close(self) -> None:
        self.ptp.close()
