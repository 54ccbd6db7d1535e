"""The recordings to join, as two tables the engine matches: departures and arrivals.

A departure is a send record (it has the send syscall), an arrival a receive record
that came from elsewhere (`record --rx`). Their times stay in their host's
CLOCK_MONOTONIC (``t_*``); the engine also sets them on the hosts' shared timescale
(``c_*``, TAI or UTC ns) through the host's clock samples, interpolated between them
(:func:`segments`): clocks are slewed, so the offset between two samples is not the
offset at either. Everything here is SQL over the Parquet parts, read by DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from udptrace.errors import UsageError
from udptrace.report.parquet import recording_parts
from udptrace.trace.timebase import to_timescale

# what both kernels see of a datagram alike, where the recording has it
IDENTITY = ("fingerprint", "pubsub_publisher_id", "pubsub_writer_group_id",
            "pubsub_sequence_number", "pubsub_dataset_sequence_number")
# what tells two datagrams of one flow apart: without one of these, they cannot be
TELLING = ("fingerprint", "pubsub_sequence_number", "pubsub_dataset_sequence_number")


@dataclass
class Host:
    """One boot of one machine: the recordings made there share CLOCK_MONOTONIC."""

    index: int
    boot_id: str
    hostname: str
    recordings: list[int] = field(default_factory=list)
    mono: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    # per timescale (tai, realtime): its time minus CLOCK_MONOTONIC at each sample
    offsets: dict[str, np.ndarray] = field(default_factory=dict)
    timescale: str = "realtime"
    bracket_ns: int = 0  # the widest sample bracket: the mapping is known to half of it
    syncs: list[dict] = field(default_factory=list)
    ptp: dict | None = None
    tai: bool = True  # every sample was in a synchronised state that set a TAI offset

    @property
    def name(self) -> str:
        return self.hostname or self.boot_id[:8]

    def to_scale(self, mono: np.ndarray) -> np.ndarray:
        """CLOCK_MONOTONIC ns → the timescale's ns."""
        if not len(self.mono):
            return mono
        return to_timescale(mono, self.mono, self.offsets[self.timescale])


@dataclass
class Recording:
    index: int
    path: Path
    parts: list[Path]
    info: dict
    columns: frozenset[str]
    uniform: bool  # one schema in every part: DuckDB need not unify them by name
    host: Host | None = None

    @property
    def sends(self) -> bool:
        """Sends, or receives (`record --rx`); a recording older than that flag may hold
        either, and both are looked for."""
        return not self.info.get("receive_only", False)

    @property
    def receives(self) -> bool:
        return self.info.get("receive_only", True)

    @property
    def label(self) -> str:
        return f"{self.path.name} ({self.host.name if self.host else '?'})"

    @property
    def span_mono(self) -> tuple[int, int]:
        """From the first clock sample (the programs attached) to the last (the end)."""
        samples = self.info["time"]["samples"]
        return samples[0]["mono_ns"], samples[-1]["mono_ns"]

    @property
    def span_scale(self) -> tuple[int, int]:
        start, end = self.span_mono
        if self.host is None:
            return start, end
        scaled = self.host.to_scale(np.array([start, end], np.int64))
        return int(scaled[0]), int(scaled[1])

    @property
    def lost(self) -> int:
        return int(self.info.get("lost") or 0)


def open_recordings(paths: list[Path]) -> tuple[list[Recording], list[Host], str]:
    """The recordings, their hosts, and the timescale they are set on: TAI where every host
    keeps it (synchronised, with the TAI offset set), else UTC (CLOCK_REALTIME)."""
    recordings = []
    for index, path in enumerate(paths):
        parts = recording_parts(path)
        if not parts.info["time"]["samples"]:
            raise UsageError(f"{path} states no time (made by a udptrace before clock "
                             "samples): record it again to join it")
        recordings.append(Recording(index, path, parts.packets, parts.info, parts.columns,
                                    parts.uniform))
    hosts: dict[str, Host] = {}
    for rec in recordings:
        ident = rec.info.get("host", {})
        boot = ident.get("boot_id") or f"unknown-{rec.index}"
        host = hosts.setdefault(boot, Host(len(hosts), boot, ident.get("hostname", "")))
        host.recordings.append(rec.index)
        rec.host = host
        time = rec.info["time"]
        host.syncs += [s for s in time["syncs"] if s]
        host.ptp = time.get("ptp") or host.ptp
        samples = time["samples"]
        host.mono = np.concatenate([host.mono, [s["mono_ns"] for s in samples]])
        for scale in ("tai", "realtime"):
            host.offsets[scale] = np.concatenate([host.offsets.get(scale, []),
                                                  [s[f"{scale}_ns"] for s in samples]])
        host.bracket_ns = max(host.bracket_ns, *(s["bracket_ns"] for s in samples))
    for host in hosts.values():
        order = np.argsort(host.mono, kind="stable")
        host.mono = host.mono[order].astype(np.int64)
        host.offsets = {k: v[order].astype(np.int64) for k, v in host.offsets.items()}
        host.tai = all(s.get("synchronised") and s.get("tai_offset_s") for s in host.syncs)
    timescale = "tai" if all(h.tai for h in hosts.values()) else "realtime"
    for host in hosts.values():
        host.timescale = timescale
    return recordings, list(hosts.values()), timescale


def _parts_sql(rec: Recording) -> str:
    files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in rec.parts)
    # unifying the parts by name reads every footer again: only where they differ
    return f"read_parquet([{files}], union_by_name = {'false' if rec.uniform else 'true'})"


def _optional(rec: Recording, name: str, kind: str = "BIGINT") -> str:
    return f"CAST({name} AS {kind})" if name in rec.columns else f"CAST(NULL AS {kind})"


def _identity(rec: Recording) -> str:
    # the fingerprint is a u64 hash (half of them do not fit a BIGINT); 0 says the kernel
    # could not read the bytes (in page fragments, or a GSO send): unknown
    fingerprint = ("nullif(CAST(fingerprint AS UBIGINT), 0) AS fingerprint"
                   if "fingerprint" in rec.columns else "CAST(NULL AS UBIGINT) AS fingerprint")
    return ", ".join([fingerprint, *(f"{_optional(rec, c)} AS {c}" for c in IDENTITY[1:])])


def _departures_sql(rec: Recording) -> str:
    # when it left, as the earliest moment it could have: a veth/lo peer took it (during
    # the driver's call), else the driver was called. Not the driver's return: a NIC (or
    # a VM's virtio-net, through its doorbell) can put it on the wire before that, and in
    # the test VM the return came milliseconds after the frame reached the other host
    return f"""
    SELECT {rec.index} AS rec, CAST(pid AS BIGINT) AS pid, comm, saddr, daddr,
           CAST(sport AS INTEGER) AS sport, CAST(dport AS INTEGER) AS dport,
           CAST(udp_len AS INTEGER) AS udp_len, fate, drop_reason, drop_stage, {_identity(rec)},
           ts_ns + stage_app_ns AS t_app, ts_ns AS t_syscall,
           CASE WHEN fate IN ('sent', 'received') THEN ts_ns + coalesce(
               stage_rx_handoff_ns, stage_xmit_start_ns, stage_xmit_done_ns,
               stage_free_ns) END AS t_left
    FROM {_parts_sql(rec)}
    WHERE stage_syscall_ns IS NOT NULL AND fate <> 'looped'"""


def _arrivals_sql(rec: Recording) -> str:
    return f"""
    SELECT {rec.index} AS rec, CAST(rx_pid AS BIGINT) AS pid, rx_comm AS comm, saddr, daddr,
           CAST(sport AS INTEGER) AS sport, CAST(dport AS INTEGER) AS dport,
           CAST(udp_len AS INTEGER) AS udp_len, fate, drop_reason, drop_stage, {_identity(rec)},
           ifname, ts_ns + coalesce(stage_rx_driver_ns, stage_rx_stack_ns, 0) AS t_driver,
           ts_ns + stage_sock_queue_ns AS t_queued,
           ts_ns + coalesce(stage_rx_done_ns, stage_rx_read_ns) AS t_done
    FROM {_parts_sql(rec)}
    WHERE receive AND stage_syscall_ns IS NULL"""


def departures_sql(recordings: list[Recording]) -> str:
    return " UNION ALL ".join([_departures_sql(r) for r in recordings if r.sends]
                              or [f"{_departures_sql(recordings[0])} LIMIT 0"])


def arrivals_sql(recordings: list[Recording]) -> str:
    return " UNION ALL ".join([_arrivals_sql(r) for r in recordings if r.receives]
                              or [f"{_arrivals_sql(recordings[0])} LIMIT 0"])


def segments(hosts: list[Host]) -> pa.Table:
    """Each host's mapping onto the timescale as linear pieces from one sample to the next
    (constant before the first and after the last, like np.interp), for an ASOF join."""
    columns: dict[str, list] = {"host": [], "mono_from": [], "offset": [], "slope": []}
    for host in hosts:
        mono, offset = host.mono, host.offsets[host.timescale]
        if not len(mono):
            continue
        rise = np.diff(offset).astype(np.float64)
        run = np.maximum(np.diff(mono), 1).astype(np.float64)
        columns["host"] += [host.index] * (len(mono) + 1)
        columns["mono_from"] += [-(2**62), *mono.tolist()]
        columns["offset"] += [int(offset[0]), *offset.tolist()]
        columns["slope"] += [0.0, *(rise / run).tolist(), 0.0]
    return pa.table({"host": pa.array(columns["host"], pa.int32()),
                     "mono_from": pa.array(columns["mono_from"], pa.int64()),
                     "offset": pa.array(columns["offset"], pa.int64()),
                     "slope": pa.array(columns["slope"], pa.float64())})


def telling(recordings: list[Recording]) -> bool:
    """Whether every recording carries something that tells datagrams of one flow apart."""
    return all(any(c in r.columns for c in TELLING) for r in recordings)
