"""Run a publisher's cycle through the native function in ``cycle.c``.

A uprobe needs a native function whose entry and return bracket the work;
Python code has none of its own, so ``publish --native-cycle`` calls its
encode-and-send through ``udptrace_publish_cycle`` in a small library built
at install time, and ``trace --uprobe LIBRARY:udptrace_publish_cycle`` hooks it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

from udptrace.errors import UdptraceError

LIBRARY = Path(__file__).with_name("libudptrace_cycle.so")
SYMBOL = "udptrace_publish_cycle"
UPROBE = f"{LIBRARY}:{SYMBOL}"
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int)


class NativeCycle:
    def __init__(self) -> None:
        try:
            library = ctypes.CDLL(str(LIBRARY))
        except OSError:
            raise UdptraceError(f"{LIBRARY.name} is missing: reinstall udptrace "
                                "(pip install . builds it with cc)") from None
        self._run = getattr(library, SYMBOL)
        self._run.argtypes = [_CALLBACK]
        self._run.restype = ctypes.c_int
        self._body: Callable[[], None] = lambda: None
        self._error: BaseException | None = None
        self._callback = _CALLBACK(self._call)  # kept alive as long as the library may call it

    def _call(self) -> int:
        try:
            self._body()
        except BaseException as e:  # an exception cannot cross the C frame: carried over
            self._error = e
            return 1
        return 0

    def run(self, body: Callable[[], None]) -> None:
        self._body, self._error = body, None
        self._run(self._callback)
        if self._error is not None:
            raise self._error
