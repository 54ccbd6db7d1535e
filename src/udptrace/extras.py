"""Optional extras: outputs whose libraries the core install (numpy, rich) leaves out."""

from __future__ import annotations

import importlib.util

from udptrace.errors import UdptraceError

MODULES = {"record": ("pyarrow",), "html": ("pyarrow", "plotly"), "join": ("pyarrow", "duckdb"),
           "exporter": ("prometheus_client",)}


class MissingExtra(UdptraceError):
    """An output needs a library that is not installed."""


def missing(extra: str) -> list[str]:
    return [m for m in MODULES[extra] if importlib.util.find_spec(m) is None]


def require(extra: str) -> None:
    absent = missing(extra)
    if absent:
        raise MissingExtra(f"this needs {', '.join(absent)}: install it with "
                           f"pip install 'udptrace[{extra}]' (or ./setup.sh demo)")
