"""udptrace: follow every UDP packet through the Linux kernel with eBPF.

Public API for scripts and tests; the command line is :mod:`udptrace.cli`.
"""

from udptrace.errors import UdptraceError
from udptrace.trace.options import TraceOptions
from udptrace.trace.session import Snapshot, TraceSession

__all__ = ["Snapshot", "TraceOptions", "TraceSession", "UdptraceError"]
__version__ = "0.1.0"
