"""Which kernel functions BPF can hook: kallsyms and ftrace's list.

BTF lists a function when its prototype survived compilation, which says
little about inlining: a function inlined into every caller has no symbol, a
partly inlined one only a suffixed copy (``name.isra.0``) whose arguments may
differ. So a kprobe needs the exact name among the kernel's text symbols, and
fentry also needs the function among those ftrace can patch.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from udptrace.errors import UdptraceError
from udptrace.kernel.tracefs import tracefs

KALLSYMS = Path("/proc/kallsyms")
_TEXT_SYMBOL = re.compile(rb"^\S+ [tT] (\S+)", re.M)


@functools.cache
def _kallsyms() -> bytes:
    return KALLSYMS.read_bytes()


def address(name: str) -> int:
    """Where vmlinux's function `name` starts; 0 when unknown. Reads kallsyms only up to
    the symbol (sorted by address: hrtimer_wakeup is in its first sixth, 20 ms of 100)."""
    needles = [f" {kind} {name}\n".encode() for kind in "tT"]
    tail = b""
    with KALLSYMS.open("rb", buffering=0) as f:
        while chunk := f.read(1 << 18):
            text = tail + chunk
            for needle in needles:
                if (at := text.find(needle)) > 0:
                    return int(text[text.rfind(b"\n", 0, at) + 1:at], 16)
            tail = text[text.rfind(b"\n") + 1:]
    return 0


@functools.cache
def text_symbols() -> frozenset[str]:
    """Every function with code of its own, in vmlinux and loaded modules."""
    return frozenset(name.decode() for name in _TEXT_SYMBOL.findall(_kallsyms()))


@functools.cache
def ftrace_functions() -> frozenset[str] | None:
    """The functions ftrace (hence fentry) can attach to; None where the list is unreadable
    (lockdown hides it, and then refuses fentry anyway)."""
    try:
        text = (tracefs().root / "available_filter_functions").read_text()
    except (OSError, UdptraceError):
        return None
    return frozenset(line.split(maxsplit=1)[0] for line in text.splitlines() if line)


def why_not_function(name: str) -> str:
    """Empty when `name` runs out of line and can be hooked, else why it cannot."""
    if name not in text_symbols():
        return f"no function {name} (inlined or absent in this kernel)"
    return ""


def why_not_fentry(name: str) -> str:
    if reason := why_not_function(name):
        return reason
    traceable = ftrace_functions()
    if traceable is not None and name not in traceable:
        return f"{name} is not traceable by ftrace"
    return ""
