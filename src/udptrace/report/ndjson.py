"""JSON lines for a whole batch at once, from the field table, with NumPy.

Building one Python object (or f-string) per record cost more than the kernel's
path at a flood: the tracer fell behind and the ring overflowed. Here each field
is rendered once for the batch as a byte matrix (numbers from a table of
4-digit groups, text from its few distinct values escaped once), the rows that
share a shape (the same members present) are laid side by side into one
matrix, and the padding (NUL bytes, which JSON text never holds raw: json.dumps
escapes them) is deleted in one pass over the text. bench/outputs.py measures
it against orjson, pyarrow and polars.
"""

from __future__ import annotations

import json
from operator import itemgetter

import numpy as np

from udptrace.report.fields import Batch, Field, Group, Kind, Member, Table, Values

GROUP = 10_000  # numbers are written 4 digits at a time
CHUNK_ROWS = 2048  # rows laid out at once (1,024 to 8,192 measured within 10 %; 2,048 best)


def _groups(leading: bool, zero: bytes) -> np.ndarray:
    """Per value below GROUP its 4 digits, leading zeros as NUL if ``leading``, as one
    uint32 each: gathering those is ten times faster than rows of 4 bytes."""
    texts = [str(i).encode().rjust(4, b"\0") if leading else f"{i:04d}".encode()
             for i in range(GROUP)]
    if leading:
        texts[0] = zero.rjust(4, b"\0")
    return np.frombuffer(b"".join(texts), np.uint32)


_FULL = _groups(False, b"")
# indexed by value + GROUP * (higher digits follow): the lowest group writes 0 as "0",
# the others write nothing where no digit is left
_LOWEST = np.concatenate([_groups(True, b"0"), _FULL])
_HIGHER = np.concatenate([_groups(True, b""), _FULL])
_NULL = np.frombuffer(b"null", np.uint8)

Piece = bytes | np.ndarray  # a literal, or one row of bytes per record


def _fixed(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers below 10**width as exactly ``width`` digits, leading zeros kept."""
    groups = (width + 3) // 4
    out = np.empty((len(values), groups), np.uint32)
    rest = values
    for g in range(groups):
        rest, low = np.divmod(rest, np.uint64(GROUP))
        out[:, groups - 1 - g] = np.take(_FULL, low.astype(np.intp))
    return out.view(np.uint8)[:, 4 * groups - width:]


def digits(values: np.ndarray) -> np.ndarray:
    """Integers as decimal text, one row each, NUL-padded to the widest."""
    if values.dtype.kind == "u":
        magnitude, negative = values.astype(np.uint64), None
    else:
        signed = values.astype(np.int64)
        negative = signed < 0
        # abs() of the smallest int64 is itself, and as uint64 still its magnitude
        magnitude = np.abs(signed).astype(np.uint64)
    width = len(str(int(magnitude.max()))) if len(magnitude) else 1
    groups = (width + 3) // 4
    out = np.empty((len(values), groups), np.uint32)
    rest = magnitude
    for g in range(groups):
        rest, low = np.divmod(rest, np.uint64(GROUP))
        index = low.astype(np.intp)
        index[rest > 0] += GROUP
        out[:, groups - 1 - g] = np.take(_LOWEST if g == 0 else _HIGHER, index)
    out = out.view(np.uint8)[:, 4 * groups - width:]
    if negative is not None and negative.any():
        sign = np.where(negative, np.uint8(ord("-")), np.uint8(0))
        out = np.concatenate([sign[:, None], out], axis=1)
    return out


def numbers(values: np.ndarray) -> list[Piece]:
    """Integers as decimal text. Times and ids in a batch mostly share their leading digits
    (a 0.1 s batch of CLOCK_MONOTONIC times differs in its last 9 of 14): those are written
    once, the rest at a fixed width."""
    low, high = int(values.min()), int(values.max())
    if low > 0:
        varying = len(str(high - low))
        while varying < len(str(high)) and low // 10**varying != high // 10**varying:
            varying += 1
        prefix = low // 10**varying
        if prefix:
            rest = values.astype(np.uint64) - np.uint64(prefix * 10**varying)
            return [str(prefix).encode(), _fixed(rest, varying)]
    return [digits(values)]


def _texts(texts: list[bytes], index: np.ndarray) -> np.ndarray:
    width = max(map(len, texts))
    table = np.frombuffer(b"".join(t.ljust(width, b"\0") for t in texts), np.uint8)
    return np.take(table.reshape(len(texts), width), index, axis=0)  # faster than table[index]


def _constant(data: np.ndarray) -> bool:
    return bool((data == data[0]).all())


def _number(v: Values) -> list[Piece]:
    data, valid = v.data, v.valid
    if valid is not None and valid.all():
        valid = None
    if valid is not None and not valid.any():
        return [b"null"]
    if valid is None and _constant(data):
        return [str(data[0]).encode()]
    if valid is None:
        return numbers(data)
    block = digits(np.where(valid, data, 0))
    if block.shape[1] < len(_NULL):
        block = np.concatenate([np.zeros((len(block), len(_NULL) - block.shape[1]), np.uint8),
                                block], axis=1)
    block[~valid] = 0
    block[~valid, :len(_NULL)] = _NULL
    return [block]


def _text(v: Values) -> list[Piece]:
    quoted = [json.dumps(t).encode() for t in v.texts] + [b"null"]
    index = v.data if v.valid is None else np.where(v.valid, v.data, len(v.texts))
    if _constant(index):
        return [quoted[index[0]]]
    return [_texts(quoted, index)]


def _bool(v: Values) -> list[Piece]:
    if _constant(v.data):
        return [b"true" if v.data[0] else b"false"]
    return [_texts([b"false", b"true"], v.data.astype(np.intp))]


def _ids(v: Values) -> list[Piece]:
    """A list of at most one number: empty where not valid."""
    valid = v.valid if v.valid is not None else np.ones(len(v.data), bool)
    if not valid.any():
        return [b"[]"]
    if valid.all() and _constant(v.data):
        return [b"[" + str(v.data[0]).encode() + b"]"]
    block = digits(np.where(valid, v.data, 0))
    block[~valid] = 0
    return [b"[", block, b"]"]


RENDER = {Kind.NUMBER: _number, Kind.TEXT: _text, Kind.BOOL: _bool, Kind.IDS: _ids}


class _Shapes:
    """Which members each row has: members present in every row or in none are fixed,
    the others are one bit each of the row's shape."""

    def __init__(self, members: tuple[Member, ...], batch: Batch) -> None:
        self.fixed: dict[Member, bool] = {}
        self.bits: dict[Member, int] = {}
        masks: list[np.ndarray] = []
        self._visit(members, batch, masks)
        if masks:
            packed = np.packbits(np.stack(masks, axis=1), axis=1)
            keys = np.ascontiguousarray(packed).view(f"V{packed.shape[1]}").reshape(-1)
            unique, inverse = np.unique(keys, return_inverse=True)
            self.shapes = np.unpackbits(unique.view(np.uint8).reshape(len(unique), -1),
                                        axis=1, count=len(masks)).astype(bool)
            self.inverse = inverse.reshape(-1)
        else:
            self.shapes = np.ones((1, 0), bool)
            self.inverse = np.zeros(len(batch), np.intp)

    def _visit(self, members: tuple[Member, ...], batch: Batch, masks: list[np.ndarray]) -> None:
        for m in members:
            if isinstance(m, Field) and not m.json:
                continue
            if m.present is None:
                self.fixed[m] = True
            else:
                mask = batch.present(m.present)
                if mask.all() or not mask.any():
                    self.fixed[m] = bool(mask.all())
                else:
                    self.bits[m] = len(masks)
                    masks.append(mask)
            if isinstance(m, Group) and self.fixed.get(m, True):
                self._visit(m.members, batch, masks)

    def has(self, member: Member, shape: int) -> bool:
        if member in self.fixed:
            return self.fixed[member]
        return bool(self.shapes[shape, self.bits[member]])


class _Encoder:
    def __init__(self, table: Table, batch: Batch) -> None:
        self.table = table
        self.batch = batch
        self.shapes = _Shapes(table.members, batch)

    def pieces(self, shape: int, rows: np.ndarray | None) -> list[Piece]:
        """A shape's line, its values rendered for its ``rows`` (None: the whole batch), so
        a text or a null only other shapes have pads none of them."""
        out: list[Piece] = []
        self._object(self.table.members, shape, rows, out)
        out.append(b"\n")
        merged: list[Piece] = []
        for p in out:  # neighbouring literals as one
            if isinstance(p, bytes) and merged and isinstance(merged[-1], bytes):
                merged[-1] += p
            else:
                merged.append(p)
        return merged

    def _object(self, members: tuple[Member, ...], shape: int, rows: np.ndarray | None,
                out: list[Piece]) -> None:
        out.append(b"{")
        first = True
        for m in members:
            if (isinstance(m, Field) and not m.json) or not self.shapes.has(m, shape):
                continue
            out.append((b"" if first else b",") + json.dumps(m.name).encode() + b":")
            first = False
            if isinstance(m, Group):
                self._object(m.members, shape, rows, out)
            else:
                v = self.batch.values(m)
                if rows is not None:
                    v = Values(np.take(v.data, rows),
                               None if v.valid is None else np.take(v.valid, rows), v.texts)
                out.extend(RENDER[m.kind](v))
        out.append(b"}")

    def text(self) -> list[bytes]:
        if len(self.shapes.shapes) == 1:
            return _lay_out(self.pieces(0, None), len(self.batch))
        # each shape's lines, then all of them back in the batch's order
        order = np.argsort(self.shapes.inverse, kind="stable")
        lines: list[bytes] = []
        start = 0
        for shape, count in enumerate(np.bincount(self.shapes.inverse).tolist()):
            rows = order[start:start + count]
            start += count
            lines += b"".join(_lay_out(self.pieces(shape, rows), count)).split(b"\n")[:-1]
        rank = np.empty(len(order), np.intp)
        rank[order] = np.arange(len(order))
        return [b"\n".join(itemgetter(*rank.tolist())(lines) if len(lines) > 1 else lines)
                + b"\n"]


def _lay_out(pieces: list[Piece], count: int) -> list[bytes]:
    """``count`` lines: pieces side by side, then the padding deleted."""
    width = sum(len(p) if isinstance(p, bytes) else p.shape[1] for p in pieces)
    # every literal at its place in one row, copied to each row at once: a literal at a
    # time took longer than the values
    template = np.zeros(width, np.uint8)
    blocks = []
    column = 0
    for p in pieces:
        if isinstance(p, bytes):
            template[column:column + len(p)] = np.frombuffer(p, np.uint8)
            column += len(p)
        else:
            blocks.append((column, p))
            column += p.shape[1]
    parts = []
    for start in range(0, count, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, count)
        matrix = np.empty((stop - start, width), np.uint8)
        matrix[:] = template
        for column, p in blocks:
            matrix[:, column:column + p.shape[1]] = p[start:stop]
        parts.append(matrix.tobytes().replace(b"\0", b""))
    return parts


def encode(table: Table, batch: Batch) -> list[bytes]:
    """One JSON object per row of ``batch``, each on its own line, in a few pieces."""
    if not len(batch):
        return []
    return _Encoder(table, batch).text()
