"""A recorded run's columns: every field of the table (report/fields.py), one batch at a time.

Nested JSON objects become prefixed columns (``syscall.exit_ns`` →
``syscall_exit_ns``), each stage its own nullable column (``stage_<name>_ns``,
ns since time zero), and a column is null where the JSON member is null or
absent. Everything is NumPy over the whole batch, then one Arrow array per column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from udptrace.report.fields import ADDRESS_BYTES, Batch, Kind, Table, Values
from udptrace.trace.decode import char_strings, distinct_addresses, distinct_chars


def stage_column(stage: str) -> str:
    return f"stage_{stage}_ns"


def _strings(texts: list[str] | tuple[str, ...], inverse: np.ndarray,
             valid: np.ndarray | None = None) -> pa.Array:
    """Rows of a few distinct texts, expanded by Arrow in C, no str per row (a take: twice
    as fast as casting a dictionary array; a repeat where there is one text: four times)."""
    dictionary = pa.array(texts or [""], pa.string())
    if len(dictionary) == 1 and (valid is None or valid.all()):
        return pa.repeat(dictionary[0], len(inverse))
    return dictionary.take(pa.array(inverse.astype(np.int32),
                                    mask=None if valid is None else ~valid))


def _and(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return b if a is None else a if b is None else a & b


def arrow(kind: Kind, v: Values, present: np.ndarray | None) -> pa.Array:
    """One field's column, null where the value is or where the row has none (``present``);
    a list of numbers is empty where the value is null, null where the row has none."""
    if kind is Kind.IDS:
        has = np.ones(len(v.data), bool) if v.valid is None else v.valid
        offsets = np.concatenate([[0], np.cumsum(has)]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(v.data[has]),
                                        mask=None if present is None else pa.array(~present))
    valid = _and(v.valid, present)
    if kind is Kind.BYTES:
        return _binary(v.data, v.lengths, valid)
    if kind is Kind.TEXT:
        return _strings(v.texts, v.data, valid)
    return pa.array(v.data, mask=None if valid is None else ~valid)


def _binary(matrix: np.ndarray, lengths: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    """Each row's first ``lengths`` bytes of a byte matrix, one binary value per row: built
    from its buffers, no bytes object per row."""
    lengths = np.where(valid, lengths, 0) if valid is not None else lengths
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    keep = np.arange(matrix.shape[1]) < lengths[:, None]
    data = np.ascontiguousarray(matrix)[keep]
    bitmap = (None if valid is None or valid.all() else
              pa.py_buffer(np.packbits(valid, bitorder="little")))
    return pa.Array.from_buffers(pa.binary(), len(lengths),
                                 [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)])


def packet_columns(table: Table, batch: Batch) -> dict[str, pa.Array]:
    return {leaf.column: arrow(leaf.field.kind, batch.values(leaf.field), batch.presence(leaf))
            for leaf in table.columns}


class PacketColumns:
    """A table's columns batch by batch, with the types an empty batch gives them: a column
    no row of a batch has (no launch times, no receiver) is nulls of that type, its values
    never computed (half the time of a flood's batch went to such columns)."""

    def __init__(self, table: Table, empty: Batch) -> None:
        self.table = table
        self.types = {name: array.type for name, array in packet_columns(table, empty).items()}

    def __call__(self, batch: Batch) -> pa.Table:
        columns = {}
        for leaf in self.table.columns:
            present = batch.presence(leaf)
            columns[leaf.column] = (
                pa.nulls(len(batch), self.types[leaf.column])
                if present is not None and not present.any() else
                arrow(leaf.field.kind, batch.values(leaf.field), present))
        return pa.table(columns)


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


def _names(codes: np.ndarray, names: dict[int, str], valid: np.ndarray | None = None) -> pa.Array:
    """Enum values as their names, looking each distinct value up once."""
    distinct, inverse = np.unique(codes, return_inverse=True)
    texts = [names.get(int(c), str(int(c))) for c in distinct.tolist()]
    return _strings(texts, inverse.reshape(-1), valid)


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
