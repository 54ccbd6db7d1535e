"""The processes of a bench trial: each child in its own process group, read line by line,
and always stopped, whichever way the bench ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ATTACH_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


class BenchError(Exception):
    pass


class Processes:
    """Every child in its own process group, so one kill takes its children too."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen:
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)  # type: ignore[call-overload]
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM,
             timeout: float = STOP_TIMEOUT_S) -> int:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind in its group
        if proc in self.running:
            self.running.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in list(self.running):
            self.stop(proc, signal.SIGKILL, timeout=5)


def read_line(proc: subprocess.Popen, prefix: str) -> str:
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        raise BenchError(f"expected '{prefix}...' from {proc.args}, got {line!r}")
    return line.strip()


def fields(line: str) -> dict[str, int]:
    """`sent=5 errors=0 ...` as a dict."""
    return {k: int(v) for k, _, v in (part.partition("=") for part in line.split()) if v}


def wait_for_text(proc: subprocess.Popen, out: Path, err: Path, text: str) -> None:
    """Until `text` is in the process's output file (the tracer says it attached)."""
    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    while time.monotonic() < deadline:
        if text in out.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise BenchError(f"{proc.args[0]} exited ({proc.returncode}) before attaching: "
                             f"{err.read_text(errors='replace').strip()[-800:]}")
        time.sleep(0.02)
    raise BenchError(f"{proc.args[0]} did not print {text!r} within {ATTACH_TIMEOUT_S:g}s")


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process and its reaped children (none here), in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    after_comm = stat.rsplit(")", 1)[1].split()
    return (int(after_comm[11]) + int(after_comm[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every finally still cleans up."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
