"""A recorded run's columns: every field of a ``--json`` record, flat, one batch at a time.

Nested JSON objects become prefixed columns (``syscall.exit_ns`` →
``syscall_exit_ns``) and each stage its own nullable column
(``stage_<name>_ns``, ns since time zero). Stages come from the object's BTF
(:class:`~udptrace.trace.layout.Layout`); record fields without a JSON
spelling of their own pass through under their C name (text and addresses
as strings), so a field added to ``ut_record.h`` reaches the file unasked.
Everything is NumPy over the whole batch, then one Arrow array per column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from udptrace.pubsub.headers import UadpHeaders
from udptrace.report.jsonl import FAMILIES
from udptrace.trace.clocks import CLOCK_NAMES
from udptrace.trace.decode import (
    Packets,
    char_strings,
    distinct_addresses,
    distinct_chars,
    e2e_ns,
    extra_offsets,
    launch_errors,
    origin_ns,
    rx_ns,
    stage_offsets,
    total_ns,
)
from udptrace.trace.layout import Layout

ADDRESS_BYTES = 16
# record fields that reach the file under their JSON spelling (below), or not at all:
# kind (always "packet"), the payload (its PubSub fields instead), the syscall record's
# own exit and return (joined from the syscall record instead)
SPELLED = frozenset({"ts", "kind", "fate", "drop_reason", "drop_stage", "syscall",
                     "packet_index", "syscall_exit", "syscall_ret", "family", "flags",
                     "payload", "interval_ns", "rx_syscall", "timer_expires", "txtime",
                     "txtime_clock", "tstamp_sw", "tstamp_hw", "xmit_context",
                     "completion_context", "softirq_pending_ns"})


def stage_column(stage: str) -> str:
    return f"stage_{stage}_ns"


def _nullable(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    return pa.array(values, mask=~valid)


def _strings(texts: list[str], inverse: np.ndarray,
             valid: np.ndarray | None = None) -> pa.Array:
    """Rows of a few distinct texts: Arrow expands the dictionary in C, no str per row."""
    indices = pa.array(inverse.astype(np.int32), mask=None if valid is None else ~valid)
    return pa.DictionaryArray.from_arrays(indices, pa.array(texts or [""], pa.string())).cast(
        pa.string())


def _names(codes: np.ndarray, names: dict[int, str], valid: np.ndarray | None = None) -> pa.Array:
    """Enum values as their names, looking each distinct value up once."""
    distinct, inverse = np.unique(codes, return_inverse=True)
    texts = [names.get(int(c), str(int(c))) for c in distinct.tolist()]
    return _strings(texts, inverse.reshape(-1), valid)


def passthrough(records: np.ndarray, skip: frozenset[str] = frozenset()) -> dict[str, pa.Array]:
    """Every field not in ``skip``: numbers as they are, char[] as text, 16-byte arrays as
    addresses; other arrays have no flat form and stay out."""
    out: dict[str, pa.Array] = {}
    for name in records.dtype.names:
        if name in skip:
            continue
        column = records[name]
        kind = records.dtype[name]
        if kind.kind == "S":
            out[name] = _strings(*distinct_chars(column))
        elif kind.subdtype is not None:
            if kind.shape == (ADDRESS_BYTES,) and kind.subdtype[0] == np.uint8:
                out[name] = _strings(*distinct_addresses(column))
        else:
            out[name] = pa.array(column)
    return out


def packet_columns(packets: Packets, layout: Layout, drop_names: dict[int, str],
                   headers: UadpHeaders | None = None) -> dict[str, pa.Array]:
    r = packets.records
    offsets = stage_offsets(r, layout)
    reached = r["ts"] > 0
    fate = r["fate"]
    dropped = fate == layout.fates_by_name["dropped"]
    totals = total_ns(r, layout)
    entry = origin_ns(r, layout)
    seen = packets.syscall_exit > 0
    cols: dict[str, pa.Array] = {"ts_ns": pa.array(entry)}
    cols.update(passthrough(r, SPELLED))
    cols["family"] = _names(r["family"], FAMILIES)
    for index, stage in enumerate(layout.stages):
        cols[stage_column(stage)] = _nullable(offsets[:, index], reached[:, index])
    cols["total_ns"] = _nullable(totals, (totals >= 0) & ~dropped)
    cols["fate"] = _names(fate, layout.fates)
    cols["drop_reason"] = _names(r["drop_reason"], drop_names, dropped)
    cols["drop_stage"] = _names(r["drop_stage"], dict(enumerate(layout.stages)), dropped)
    cols["syscall_id"] = pa.array(r["syscall_id"])
    cols["syscall_name"] = _names(r["syscall"], layout.syscalls)
    cols["syscall_packet_index"] = pa.array(r["packet_index"])
    cols["syscall_exit_ns"] = _nullable(packets.syscall_exit.astype(np.int64) - entry, seen)
    cols["syscall_ret"] = _nullable(packets.syscall_ret, seen)
    cols["interval_ns"] = _nullable(r["interval_ns"].astype(np.int64), r["interval_ns"] > 0)
    for name, values in (("e2e_ns", e2e_ns(r, layout)), ("rx_ns", rx_ns(r, layout))):
        cols[name] = _nullable(values, values >= 0)
    cols["rx_syscall"] = _names(r["rx_syscall"], layout.syscalls, r["rx_syscall"] > 0)
    contexts = dict(enumerate(layout.contexts))
    for name in ("xmit_context", "completion_context"):
        cols[name] = _names(r[name], contexts, r[name] > 0)  # 0: not told
    pending = r["softirq_pending_ns"]
    cols["softirq_pending_ns"] = _nullable(pending.astype(np.int64), pending > 0)
    cols.update(timing_columns(r, layout))
    for flag, bit in layout.flags.items():
        cols[flag] = pa.array((r["flags"] & bit) != 0)
    if headers is not None:
        cols.update(pubsub_columns(headers))
    return cols


def timing_columns(r: np.ndarray, layout: Layout) -> dict[str, pa.Array]:
    """The times the kernel keeps beside our stages (jsonl.timing_fields), null where none."""
    extra = extra_offsets(r, layout)
    launched = extra["txtime"][1]
    cols = {"timer_expires_ns": _nullable(*extra["timer_expires"]),
            "txtime_clock": _names(r["txtime_clock"], CLOCK_NAMES, launched),
            "txtime_launch_ns": _nullable(*extra["txtime"])}
    for stage, (values, known) in launch_errors(r, layout).items():
        cols[f"txtime_{stage}_ns"] = _nullable(values, known)
    cols["tx_timestamp_software_ns"] = _nullable(*extra["tstamp_sw"])
    cols["tx_timestamp_hardware_ns"] = _nullable(r["tstamp_hw"].astype(np.int64),
                                                 r["tstamp_hw"] > 0)
    return cols


def pubsub_columns(h: UadpHeaders) -> dict[str, pa.Array]:
    """The ``pubsub`` object of a JSON record; null where the datagram was not UADP."""
    valid = h.valid
    has_writer = valid & (h.dataset_writer_id >= 0)
    writer_offsets = np.concatenate([[0], np.cumsum(has_writer)]).astype(np.int32)
    return {
        "pubsub_publisher_id": _nullable(h.publisher_id.astype(np.int64), valid),
        # not in --json; tells a String id's hash from a number
        "pubsub_publisher_id_type": _nullable(h.publisher_id_type.astype(np.int64), valid),
        "pubsub_writer_group_id": _nullable(h.writer_group_id.astype(np.int64),
                                            valid & (h.writer_group_id >= 0)),
        "pubsub_dataset_writer_ids": pa.ListArray.from_arrays(
            pa.array(writer_offsets), pa.array(h.dataset_writer_id[has_writer].astype(np.int64)),
            mask=pa.array(~valid)),
        "pubsub_sequence_number": _nullable(h.network_sequence.astype(np.int64),
                                            valid & (h.network_sequence >= 0)),
        "pubsub_dataset_sequence_number": _nullable(h.dataset_sequence.astype(np.int64),
                                                    valid & (h.dataset_sequence >= 0)),
    }


def sched_columns(events: np.ndarray, kinds: dict[int, str],
                  softirqs: dict[int, str]) -> dict[str, pa.Array]:
    """CPU scheduling and interrupt events (trace/sched.py); ``comm`` names what ran: the task
    switched in, the irq handler, or the softirq vector."""
    kind = events["kind"]
    names = char_strings(events["comm"])
    softirq = np.isin(kind, [k for k, v in kinds.items() if v.startswith("softirq")])
    names[softirq] = _names(events["number"][softirq], softirqs).to_numpy(zero_copy_only=False)
    cols: dict[str, pa.Array] = {"ts_ns": pa.array(events["ts"].astype(np.int64)),
                                 "kind": _names(kind, kinds)}
    cols.update(passthrough(events, frozenset({"ts", "kind", "pad", "comm"})))
    cols["comm"] = pa.array(names, pa.string())
    return cols
