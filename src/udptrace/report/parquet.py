"""A recorded run on disk: a directory of Parquet parts, each a complete file.

Why parts and not one file: a Parquet file's index (its footer) is written
when the file is closed, so a run killed with one file open leaves nothing
any reader can open, and pyarrow cannot add row groups to a closed file.
Instead every second that brought records becomes one part, written under a
hidden temporary name and renamed once complete: a run killed at any moment
(even ``kill -9``) leaves every earlier part readable, and pandas, polars,
DuckDB and Spark read the directory as one table::

    RUN.parquet/packets/part-000000.parquet   a row per packet (report/columns.py)
    RUN.parquet/sched/part-000001.parquet     with --sched: CPU scheduling and interrupts

Each part's key-value metadata holds the run so far under ``udptrace`` (JSON):
version, kernel, host and boot id, command, filters, every stage with its meaning
and hook, counters, lost records, drops, and ``time``: the clock samples taken
while the part's second went by and the host's sync state (trace/timebase.py);
the last part of a finished run says ``"final": true``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from udptrace import __version__
from udptrace.errors import UdptraceError, UsageError
from udptrace.report.jsonl import drops_summary
from udptrace.stages import SPANS, STAGES
from udptrace.trace.layout import Layout
from udptrace.trace.options import TraceOptions
from udptrace.trace.session import Snapshot, TraceSession
from udptrace.trace.timebase import host_identity

FORMAT = 1
METADATA_KEY = b"udptrace"
TABLES = ("packets", "sched")


class RecordingError(UdptraceError):
    """A recording that cannot be written or read."""


def run_info(session: TraceSession, command: list[str], sched: bool) -> dict[str, object]:
    """What stays the same for the whole run: written into every part."""
    plans = {p.stage.name: p for p in session.plans}
    catalogue = {s.name: s for s in STAGES}
    stages = []
    for name in session.layout.stages:
        stage, plan = catalogue.get(name), plans.get(name)
        if plan is not None:
            hooks = plan.describe()
        elif stage is not None and stage.needs:
            hooks = f"not asked for ({stage.needs})"
        else:
            hooks = "not in this version's catalogue"
        stages.append({
            "name": name, "title": stage.title if stage else name,
            "meaning": stage.meaning if stage else "",
            "available": plan.available if plan else None,  # None: not traced in this run
            "hooks": hooks,
        })
    options = session.options
    return {
        "format": FORMAT, "version": __version__, "kernel": os.uname().release,
        "host": host_identity(), "command": command, "stages": stages,
        "spans": [{"name": s.name, "title": s.title, "meaning": s.meaning}
                  for s in SPANS if s.name in session.layout.spans],
        "filters": _filters(options), "pubsub_port": options.payload_port or None,
        "uprobe": options.uprobe or None, "intervals": options.intervals,
        "receive_only": options.rx, "e2e": options.e2e, "sched": sched,
        "snaplen": options.snaplen if options.stream else 0,
    }


def _filters(options: TraceOptions) -> dict[str, object]:
    return {"pids": list(options.pids), "comm": options.comm, "ports": list(options.ports),
            "src": list(options.src), "dst": list(options.dst), "interface": options.ifname,
            "netns": options.netns}


def progress(snapshot: Snapshot, layout: Layout, drop_names: dict[int, str], records: int,
             elapsed_s: float, **extra: object) -> dict[str, object]:
    """What grows while the run goes on: counters, lost records, drops so far."""
    return {"counters": snapshot.counters, "records": records,
            "lost": snapshot.counters.get("lost", 0), "elapsed_s": round(elapsed_s, 3),
            "drops": drops_summary(snapshot, layout, drop_names), **extra}


@dataclass
class RecordingWriter:
    """Parts written as the run goes; :meth:`abort` removes a run that never started."""

    path: Path
    info: dict[str, object] = field(default_factory=dict)
    _pending: dict[str, list[pa.Table]] = field(default_factory=dict)
    _schemas: dict[str, pa.Schema] = field(default_factory=dict)
    _parts: int = 0
    rows: int = 0

    def __post_init__(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            raise UsageError(f"{self.path} already exists: remove it or choose another path")
        try:
            self.path.mkdir()
            for name in TABLES:
                (self.path / name).mkdir()
        except OSError as e:
            self.abort()
            raise UsageError(f"cannot write {self.path}: {e.strerror}") from None

    def add(self, table: str, rows: pa.Table) -> None:
        """Rows for the next part; an empty batch only tells the table's columns."""
        self._schemas.setdefault(table, rows.schema)
        if rows.num_rows:
            self._pending.setdefault(table, []).append(rows)

    def flush(self, progress: dict[str, object], final: bool = False) -> None:
        """Everything added since the last flush as one part per table; the final flush
        always writes a packets part, so the finished run's metadata is in the file."""
        metadata = {METADATA_KEY: json.dumps({**self.info, **progress, "final": final})}
        if final:
            self._pending.setdefault("packets", [])
        for name, tables in sorted(self._pending.items()):
            if not tables and not final:
                continue
            self._write(name, tables, metadata)
        self._pending.clear()

    def _write(self, name: str, tables: list[pa.Table], metadata: dict[bytes, str]) -> None:
        rows = pa.concat_tables(tables) if tables else self._schemas.get(
            name, pa.schema([])).empty_table()
        rows = rows.replace_schema_metadata(metadata)
        final = self.path / name / f"part-{self._parts:06d}.parquet"
        temporary = final.with_name(f".{final.name}.tmp")  # readers skip hidden files
        try:
            # min/max statistics for the time only: for every column they cost a third of
            # the writing (bench/outputs.py), and a time range is what queries filter on
            pq.write_table(rows, temporary, compression="zstd", write_statistics=["ts_ns"])
            os.replace(temporary, final)
        except OSError as e:
            temporary.unlink(missing_ok=True)
            raise RecordingError(f"writing {final}: {e.strerror or e}: recording stopped; "
                                 "the parts before it are complete") from None
        self._parts += 1
        self.rows += rows.num_rows if name == "packets" else 0

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@dataclass(frozen=True)
class Recording:
    path: Path
    info: dict
    packets: pa.Table
    sched: pa.Table | None

    @property
    def finished(self) -> bool:
        return bool(self.info.get("final"))


def _parts(path: Path) -> tuple[list[Path], list[Path]]:
    if path.is_file():
        return [path], []
    if not (path / "packets").is_dir():
        raise UsageError(f"{path} is not a udptrace recording (no packets/ inside): "
                         "make one with 'udptrace record -o PATH'")
    return (sorted((path / "packets").glob("part-*.parquet")),
            sorted((path / "sched").glob("part-*.parquet")))


def _metadata(part: Path, metadata: dict[bytes, bytes] | None) -> dict:
    raw = (metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise UsageError(f"{part} is not a udptrace recording (no udptrace metadata): "
                         "make one with 'udptrace record -o PATH'")
    try:
        return json.loads(raw)
    except ValueError:
        raise UsageError(f"{part}: its udptrace metadata is damaged") from None


def _read(part: Path) -> tuple[pa.Table, dict]:
    try:
        table = pq.read_table(part)
    except (pa.ArrowException, OSError):
        raise UsageError(f"{part} is truncated or not a Parquet file") from None
    return table.replace_schema_metadata(None), _metadata(part, table.schema.metadata)


def _footer(part: Path) -> tuple[dict, pa.Schema]:
    try:
        schema = pq.read_schema(part)
    except (pa.ArrowException, OSError):
        raise UsageError(f"{part} is truncated or not a Parquet file") from None
    return _metadata(part, schema.metadata), schema.remove_metadata()


@dataclass(frozen=True)
class RecordingParts:
    """A recording as its footers tell it: the parts, the run's metadata (the last part's,
    with the time blocks of them all) and the packet columns."""

    packets: list[Path]
    sched: list[Path]
    info: dict
    columns: frozenset[str]
    uniform: bool  # every packet part has the same columns and types


def recording_parts(path: Path) -> RecordingParts:
    """A recording from its parts' footers alone: no rows are read."""
    if not path.exists():
        raise UsageError(f"no recording at {path}")
    packet_parts, sched_parts = _parts(path)
    if not packet_parts:
        raise UsageError(f"{path} holds no packet parts: the recording was stopped before "
                         "its first second")
    footers = [_footer(part) for part in packet_parts]
    info = footers[-1][0]
    if info.get("format") != FORMAT:
        raise UsageError(f"{path} is recording format {info.get('format')}, this udptrace "
                         f"{__version__} reads format {FORMAT}")
    schemas = {schema for _, schema in footers}
    return RecordingParts(packet_parts, sched_parts,
                          {**info, "time": _whole_run([i.get("time") for i, _ in footers])},
                          frozenset(n for schema in schemas for n in schema.names),
                          len(schemas) == 1)


def open_recording(path: Path) -> Recording:
    parts = recording_parts(path)
    packets = pa.concat_tables([_read(p)[0] for p in parts.packets], promote_options="default")
    sched = (pa.concat_tables([_read(p)[0] for p in parts.sched], promote_options="default")
             if parts.sched else None)
    return Recording(path, parts.info, packets, sched)


def _whole_run(parts: list[dict | None]) -> dict[str, object]:
    """The parts' time blocks as one: every clock sample in order, and the sync state each
    part ended with (``syncs``; ``sync`` and ``ptp`` as the last part said)."""
    known = [p for p in parts if p]
    return {"samples": [s for p in known for s in p.get("samples", [])],
            "syncs": [p.get("sync") for p in known],
            "sync": known[-1].get("sync") if known else None,
            "ptp": known[-1].get("ptp") if known else None}


def column(table: pa.Table, name: str, missing: int = -1) -> object:
    """A column as NumPy, nulls replaced by ``missing``."""
    values = table[name]
    return (pc.fill_null(values, missing) if values.null_count else values).to_numpy()
