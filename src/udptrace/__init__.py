"""udptrace: follow every UDP packet through the Linux kernel with eBPF.

Public API for scripts and tests; the command line is :mod:`udptrace.cli`. Imported on
first use: the command line needs the package and would otherwise wait for NumPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from udptrace.errors import UdptraceError
    from udptrace.trace.options import TraceOptions
    from udptrace.trace.session import Snapshot, TraceSession

__all__ = ["Snapshot", "TraceOptions", "TraceSession", "UdptraceError"]
__version__ = "0.1.0"

_HOMES = {"Snapshot": "udptrace.trace.session", "TraceOptions": "udptrace.trace.options",
          "TraceSession": "udptrace.trace.session", "UdptraceError": "udptrace.errors"}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'udptrace' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
