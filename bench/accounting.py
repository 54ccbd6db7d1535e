"""What a streaming tracer wrote, accounted: every datagram sent must be a packet record or
counted in the summary's ``lost`` (packet records only; syscall records lost are counted
apart, ``lost_syscalls``), and counted once as a packet and once as a syscall (one sendto()
per datagram)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def _accounted(summary: dict, sent: int) -> dict:
    counters = summary["counters"]
    return {"summary": summary, "unaccounted": sent - summary["records"] - summary["lost"],
            "counted_exactly": counters["packets"] == sent and counters["syscalls"] == sent,
            "lost_share": summary["lost"] / max(sent, 1)}


def _tail_line(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 65536))
        lines = f.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def json_lines(path: Path, sent: int) -> dict:
    """`--json FILE`: its last line is the summary."""
    return _accounted(json.loads(_tail_line(path)), sent)


def recording(path: Path, sent: int) -> dict:
    """`record -o RUN.parquet`: its last part's metadata holds the summary."""
    import pyarrow.parquet as pq  # an optional extra, as for `udptrace record`
    last = sorted((path / "packets").glob("part-*.parquet"))[-1]
    return _accounted(json.loads(pq.read_schema(last).metadata[b"udptrace"]), sent)
