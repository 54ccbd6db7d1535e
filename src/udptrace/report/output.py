"""Writing reports to a destination that can fail under us: a full disk, a closed pipe."""

from __future__ import annotations

import errno
from typing import IO, AnyStr

from udptrace.errors import UdptraceError


class OutputError(UdptraceError):
    """The destination stopped accepting output (full disk, closed pipe)."""


def write_or_fail(out: IO[AnyStr], text: AnyStr, what: str) -> None:
    """Write and flush, or stop with an OutputError that says why (full disk, closed pipe)."""
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        raise OutputError(f"{what} output closed (the reader went away): tracing stopped") \
            from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise OutputError(f"{what} output: no space left on device: tracing stopped") \
                from None
        raise OutputError(f"{what} output: {e.strerror}: tracing stopped") from None
