"""`udptrace syscalls`: every syscall of one process, from entry to exit, like `perf trace -p`.

The kernel keeps, per syscall number, the exact count, the errors and a duration
histogram; when streaming, each syscall also arrives as a record through the ring
buffer, read in NumPy batches. Construction checks the pid, loads and attaches, and
closes what it opened if any step fails. :func:`follow` runs until a duration, a
signal or the end of the process.
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from udptrace import bpf
from udptrace.errors import KernelFeatureError, UsageError, require_root
from udptrace.kernel.features import detect
from udptrace.kernel.plan import StagePlan, syscall_view_plan
from udptrace.kernel.syscall_table import Signature, SyscallTable
from udptrace.kernel.tracefs import tracefs
from udptrace.loader.bpf_object import BpfObject
from udptrace.loader.ringbuf import RingBufferReader
from udptrace.signals import stop_on_signals
from udptrace.trace.options import DEFAULT_RINGBUF_BYTES, check_pid, check_ringbuf_bytes
from udptrace.trace.session import counter_totals, merge_hists, percpu_values

POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class SyscallOptions:
    pid: int
    stream: bool = True  # a record per syscall; without it only the in-kernel counts
    ringbuf_bytes: int = DEFAULT_RINGBUF_BYTES


@dataclass(frozen=True)
class SyscallLayout:
    """The structs of ``bpf/ut_syscalls.h``, read from the compiled object's BTF."""

    record: np.dtype
    stats: np.dtype
    counters: np.dtype
    config: np.dtype
    roles: np.dtype
    inflight: np.dtype

    @classmethod
    def from_object(cls, obj: BpfObject) -> SyscallLayout:
        btf = obj.btf()
        return cls(*(btf.struct_dtype(name) for name in (
            "ut_sc_record", "ut_sc_stats", "ut_sc_counters", "ut_sc_config", "ut_sc_roles",
            "ut_sc_inflight")))


@dataclass(frozen=True)
class SyscallCount:
    errors: int
    hist: np.void  # struct ut_hist of the durations, summed over CPUs


@dataclass(frozen=True)
class InFlight:
    """A syscall entered and not returned when tracing ended (exit_group never returns)."""

    tid: int
    nr: int
    start: int  # CLOCK_MONOTONIC ns


def open_process(pid: int) -> tuple[int, str]:
    """A pidfd for the process (it also tells when the process ends) and its name; a bad
    pid is a one-line error."""
    check_pid(pid)
    try:
        status = {key: value.strip() for key, _, value in (
            line.partition(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines())}
        tgid = int(status["Tgid"])
        if tgid != pid:
            raise UsageError(f"{pid} is a thread of process {tgid}: trace the process, -p {tgid}")
        return os.pidfd_open(pid), status["Name"]
    except (FileNotFoundError, ProcessLookupError):
        check_pid(pid)  # it ended since the first check: the same one-line error
        raise


def _roles_value(sig: Signature, dtype: np.dtype) -> bytes | None:
    """The kernel's ``struct ut_sc_roles`` for a syscall (1 + argument index; 0 = none)."""
    if sig.fd < 0 and sig.sockaddr < 0 and sig.msghdr < 0:
        return None
    value = np.zeros(1, dtype)
    for role in ("fd", "sockaddr", "msghdr"):
        value[role] = getattr(sig, role) + 1
    value["output"] = sig.output
    return value.tobytes()


class SyscallSession:
    def __init__(self, options: SyscallOptions) -> None:
        require_root()
        if options.stream:
            check_ringbuf_bytes(options.ringbuf_bytes)
        self.options = options
        self.reader: RingBufferReader | None = None
        self.pidfd = -1
        self.obj = BpfObject(bpf.object_bytes("ut_syscalls"), "ut_syscalls")
        try:
            self.pidfd, self.comm = open_process(options.pid)
            features = detect()
            self.table = SyscallTable.load(
                tracefs() if options.stream and features.tracefs.ok else None)
            self.layout = SyscallLayout.from_object(self.obj)
            self.plan: StagePlan = syscall_view_plan(features, self.obj.programs)
            unserved = [p for p in self.plan.points if not p.hook]
            if unserved:
                raise KernelFeatureError(
                    f"this kernel cannot trace syscalls ({unserved[0].point.name}: "
                    f"{unserved[0].why_not}): see 'udptrace check'")
            self._load()
            self.start_ns = time.monotonic_ns()
            # exit first: a syscall must not be seen entering and then never leaving
            for hook in reversed(self.plan.hooks):
                self.obj.programs[hook.program].attach()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        chosen = {h.program for h in self.plan.hooks}
        for name, prog in self.obj.programs.items():
            prog.autoload = name in chosen
        config = np.zeros(1, self.layout.config)
        config["tgid"] = self.options.pid
        config["stream"] = self.options.stream
        self.obj.write_global(".rodata", "cfg", config.tobytes())
        ring_bytes = self.options.ringbuf_bytes if self.options.stream else mmap.PAGESIZE
        self.obj.maps["events"].max_entries = ring_bytes
        self.obj.load()
        if not self.options.stream:
            return
        roles = self.obj.maps["roles"]
        for nr, sig in self.table.signatures.items():
            value = _roles_value(sig, self.layout.roles)
            if value is not None and nr < roles.max_entries:
                roles.update(struct.pack("<I", nr), value)
        self.reader = RingBufferReader(self.obj.maps["events"].fd, ring_bytes,
                                       self.layout.record)

    def read(self) -> np.ndarray:
        """The syscall records since the last read (empty unless streaming)."""
        if self.reader is None:
            return np.empty(0, self.layout.record)
        return self.reader.read()

    def counters(self) -> dict[str, int]:
        return counter_totals(self.obj.maps["counters"], self.layout.counters)

    def counts(self) -> dict[int, SyscallCount]:
        """Per syscall number: errors and the duration histogram, exact whatever was lost."""
        stats = self.obj.maps["stats"]
        out = {}
        for key in stats.iter_keys():
            per_cpu = percpu_values(stats, key, self.layout.stats)
            out[struct.unpack("<I", key)[0]] = SyscallCount(int(per_cpu["errors"].sum()),
                                                            merge_hists(per_cpu["hist"]))
        return out

    def in_flight(self) -> list[InFlight]:
        threads = self.obj.maps["inflight"]
        out = []
        for key in threads.iter_keys():
            raw = threads.lookup(key)
            if raw is None:
                continue
            state = np.frombuffer(raw, self.layout.inflight, count=1)[0]
            if state["entry"] >= self.start_ns:
                out.append(InFlight(struct.unpack("<I", key)[0], int(state["nr"]),
                                    int(state["entry"])))
        return sorted(out, key=lambda f: f.start)

    def process_ended(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the traced process to end."""
        return bool(select.select([self.pidfd], [], [], timeout_s)[0])

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.obj.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def __enter__(self) -> SyscallSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class FollowResult:
    counts: dict[int, SyscallCount]
    counters: dict[str, int]
    in_flight: list[InFlight]
    records: int  # read from the ring buffer
    elapsed_s: float
    process_ended: bool


def follow(session: SyscallSession, duration_s: float | None, stop: threading.Event,
           on_records: Callable[[np.ndarray], None]) -> FollowResult:
    """Hand on records as they come until the duration, a signal, `stop`, or the process ends."""
    start = time.monotonic()
    records = 0
    ended = False

    def drain() -> None:
        nonlocal records
        batch = session.read()
        records += len(batch)
        if len(batch):
            on_records(batch)

    with stop_on_signals(stop):
        while not stop.is_set() and not ended:
            wait = POLL_INTERVAL_S
            if duration_s is not None:
                left = start + duration_s - time.monotonic()
                if left <= 0:
                    break
                wait = min(wait, left)
            ended = session.process_ended(wait)
            drain()
    drain()
    return FollowResult(session.counts(), session.counters(), session.in_flight(), records,
                        time.monotonic() - start, ended)
