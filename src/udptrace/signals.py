"""Ending long runs cleanly: SIGINT and SIGTERM set an event instead of raising.

Tracer, publisher and subscriber all stop this way, so each still prints its
summary and closes what it opened (BPF links, sockets) on Ctrl-C or kill.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers; its owner stops it
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
