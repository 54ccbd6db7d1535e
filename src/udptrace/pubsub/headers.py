"""Vectorized UADP header decoding for captured datagram prefixes.

The tracer captures the first bytes of every UDP payload; this module reads the fields that
identify a PubSub stream and its sequence numbers out of millions of such prefixes at once.
Every step works on whole columns: per-row offsets are arrays, each field is read with one
fancy-indexing gather, and a row whose field lies outside its captured bytes is marked
invalid instead of raising. It follows the same layout as ``uadp.decode_network_message``
(and a test holds the two to agreement); it reads only what it reports, so a row can be
``valid`` here and still fail the full decode further on (bad UTF-8, a bad field).

A row is valid when it is UADP version 1 and every header field up to the first
DataSetMessage's sequence number lies within its captured bytes and its real length.
String PublisherIds are reported as the 64-bit FNV-1a hash of their UTF-8 bytes
(``publisher_key`` gives the same number for a decoded PublisherId), so that the
publisher_id column stays a plain uint64 that groups and joins cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from udptrace.pubsub.uadp import PublisherId, PublisherIdType

__all__ = ["CAPTURE_BYTES", "UadpHeaders", "decode_headers", "publisher_key"]

CAPTURE_BYTES = 64

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_U64_MASK = (1 << 64) - 1

# Reads past a row's captured width land in this zero margin instead of out of bounds;
# the row is invalid anyway. The widest single read is 8 bytes.
_MARGIN = 8

# Indexed by PublisherIdType; a String id's size here is its Int32 length prefix.
_PUBLISHER_ID_SIZES = np.array([1, 2, 4, 8, 4], dtype=np.int64)
_PUBLISHER_ID_MASKS = np.array([0xFF, 0xFFFF, 0xFFFFFFFF, _U64_MASK, 0], dtype=np.uint64)


@dataclass(frozen=True)
class UadpHeaders:
    """Per-datagram header fields, each an array of length N.

    Absent fields are -1; the int32 columns are wide enough to hold every UInt16 value
    and -1. Values are only meaningful where ``valid`` is true.
    """

    valid: npt.NDArray[np.bool_]
    publisher_id_type: npt.NDArray[np.int8]  # PublisherIdType value, -1 if absent
    publisher_id: npt.NDArray[np.uint64]  # String ids: publisher_key() hash
    writer_group_id: npt.NDArray[np.int32]
    network_sequence: npt.NDArray[np.int32]  # GroupHeader SequenceNumber
    dataset_writer_id: npt.NDArray[np.int32]  # first DataSetWriterId of the PayloadHeader
    dataset_sequence: npt.NDArray[np.int32]  # first DataSetMessage's sequence number


def publisher_key(publisher_id: PublisherId) -> int:
    """The number ``decode_headers`` reports for this PublisherId."""
    if publisher_id.type is not PublisherIdType.String:
        return int(publisher_id.value)
    digest = _FNV_OFFSET
    for byte in str(publisher_id.value).encode("utf-8"):
        digest = ((digest ^ byte) * _FNV_PRIME) & _U64_MASK
    return digest


class _Columns:
    """Little-endian reads at per-row offsets, with the bounds check folded into ``ok``."""

    def __init__(self, payload: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int64]) -> None:
        n, width = payload.shape
        self.width = width
        self.padded = np.zeros((n, width + _MARGIN), dtype=np.uint8)
        self.padded[:, :width] = payload
        self.rows = np.arange(n)
        self.available = np.clip(lengths, 0, width)
        self.ok = np.ones(n, dtype=bool)

    def require(self, present: npt.NDArray[np.bool_], end: npt.NDArray[np.int64]) -> None:
        """Rows where a present field ends beyond the captured bytes become invalid."""
        self.ok &= ~present | (end <= self.available)

    def gather(self, pos: npt.NDArray[np.int64], size: int) -> npt.NDArray[np.uint64]:
        """size bytes at pos as a little-endian number, without a bounds check."""
        at = np.clip(pos, 0, self.width)
        value = np.zeros(len(pos), dtype=np.uint64)
        for k in range(size):
            byte = self.padded[self.rows, at + k].astype(np.uint64)
            value |= byte << np.uint64(8 * k)
        return value

    def read(
        self, present: npt.NDArray[np.bool_], pos: npt.NDArray[np.int64], size: int
    ) -> npt.NDArray[np.uint64]:
        self.require(present, pos + size)
        return np.where(present, self.gather(pos, size), np.uint64(0))

    def fnv1a(
        self, present: npt.NDArray[np.bool_], start: npt.NDArray[np.int64], length: npt.NDArray
    ) -> npt.NDArray[np.uint64]:
        """FNV-1a 64 over row[start : start + length], for the rows where present."""
        digest = np.full(len(start), _FNV_OFFSET, dtype=np.uint64)
        idx = np.nonzero(present)[0]
        if idx.size == 0:
            return digest
        sub_start, sub_length = start[idx], length[idx]
        sub = digest[idx]
        prime = np.uint64(_FNV_PRIME)
        # One column per step, at most the capture width: the loop is over byte positions,
        # never over rows. uint64 multiplication wraps, which FNV wants.
        for k in range(int(min(sub_length.max(), self.width))):
            more = k < sub_length
            byte = self.padded[idx, np.clip(sub_start + k, 0, self.width)].astype(np.uint64)
            sub = np.where(more, (sub ^ byte) * prime, sub)
        digest[idx] = sub
        return digest


def decode_headers(payload: npt.ArrayLike, lengths: npt.ArrayLike) -> UadpHeaders:
    """Decode UADP headers from an (N, W) uint8 array of payload prefixes (W is usually
    CAPTURE_BYTES) and the N real payload lengths. Never raises on the bytes' content."""
    data = np.asarray(payload, dtype=np.uint8)
    if data.ndim != 2:
        raise ValueError(f"payload must be a 2-D (N, width) array, got shape {data.shape}")
    real_lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if real_lengths.shape[0] != data.shape[0]:
        raise ValueError(f"{data.shape[0]} payload rows but {real_lengths.shape[0]} lengths")
    n = data.shape[0]
    c = _Columns(data, real_lengths)
    everywhere = np.ones(n, dtype=bool)

    def bit(value: npt.NDArray[np.uint64], mask: int) -> npt.NDArray[np.bool_]:
        return (value & np.uint64(mask)) != 0

    def step(present: npt.NDArray[np.bool_], size: npt.ArrayLike) -> npt.NDArray[np.int64]:
        return np.where(present, size, 0).astype(np.int64)

    pos = np.zeros(n, dtype=np.int64)
    flags = c.read(everywhere, pos, 1)
    c.ok &= (flags & np.uint64(0x0F)) == 1
    pos += 1
    has_ext1 = bit(flags, 0x80)
    ext1 = c.read(has_ext1, pos, 1)
    pos += step(has_ext1, 1)
    has_ext2 = bit(ext1, 0x80)
    ext2 = c.read(has_ext2, pos, 1)
    pos += step(has_ext2, 1)

    has_publisher = bit(flags, 0x10)
    pid_type = (ext1 & np.uint64(0x07)).astype(np.int64)
    c.ok &= ~has_publisher | (pid_type <= PublisherIdType.String)
    pid_type = np.minimum(pid_type, int(PublisherIdType.String))
    is_string = has_publisher & (pid_type == PublisherIdType.String)
    pid_size = _PUBLISHER_ID_SIZES[pid_type]
    c.require(has_publisher, pos + pid_size)
    raw_pid = c.gather(pos, 8)
    # String PublisherId: Int32 length; null (-1) or negative is malformed, as in uadp.
    string_length = (raw_pid & np.uint64(0xFFFFFFFF)).astype(np.int64)
    string_length = np.where(string_length >= 1 << 31, -1, string_length)
    c.ok &= ~is_string | (string_length >= 0)
    string_length = np.maximum(string_length, 0)
    c.require(is_string, pos + 4 + string_length)
    publisher_id = np.where(
        ~has_publisher,
        np.uint64(0),
        np.where(
            is_string,
            c.fnv1a(is_string, pos + 4, string_length),
            raw_pid & _PUBLISHER_ID_MASKS[pid_type],
        ),
    )
    pos += step(has_publisher, pid_size + np.where(is_string, string_length, 0))
    publisher_id_type = np.where(has_publisher, pid_type, -1).astype(np.int8)

    pos += step(bit(ext1, 0x08), 16)  # DataSetClassId

    has_group = bit(flags, 0x20)
    group_flags = c.read(has_group, pos, 1)
    pos += step(has_group, 1)
    has_writer_group = has_group & bit(group_flags, 0x01)
    writer_group_id = c.read(has_writer_group, pos, 2)
    pos += step(has_writer_group, 2)
    pos += step(has_group & bit(group_flags, 0x02), 4)  # GroupVersion
    pos += step(has_group & bit(group_flags, 0x04), 2)  # NetworkMessageNumber
    has_network_sequence = has_group & bit(group_flags, 0x08)
    network_sequence = c.read(has_network_sequence, pos, 2)
    pos += step(has_network_sequence, 2)

    has_payload_header = bit(flags, 0x40)
    count = c.read(has_payload_header, pos, 1).astype(np.int64)
    pos += step(has_payload_header, 1)
    has_writer_id = has_payload_header & (count >= 1)
    dataset_writer_id = c.read(has_writer_id, pos, 2)
    pos += step(has_payload_header, 2 * count)

    pos += step(bit(ext1, 0x20), 8)  # Timestamp
    pos += step(bit(ext1, 0x40), 2)  # PicoSeconds
    has_promoted = bit(ext2, 0x02)
    promoted_size = c.read(has_promoted, pos, 2).astype(np.int64)
    pos += step(has_promoted, 2 + promoted_size)

    has_security = bit(ext1, 0x10)
    security_flags = c.read(has_security, pos, 1)
    nonce_length = c.read(has_security, pos + 5, 1).astype(np.int64)
    pos += step(has_security, 6 + nonce_length)
    has_footer = has_security & bit(security_flags, 0x04)
    pos += step(has_footer, 2)
    c.require(everywhere, pos)

    # Secured, chunk and discovery payloads are opaque to the scalar codec too.
    message_type = (ext2 >> np.uint64(2)) & np.uint64(0x07)
    readable = ~has_security & ~bit(ext2, 0x01) & (message_type == 0)
    pos += step(readable & has_payload_header & (count > 1), 2 * count)  # Sizes
    has_dataset = readable & (~has_payload_header | (count >= 1))
    ds_flags1 = c.read(has_dataset, pos, 1)
    pos += step(has_dataset, 1)
    has_flags2 = has_dataset & bit(ds_flags1, 0x80)
    ds_flags2 = c.read(has_flags2, pos, 1)
    pos += step(has_flags2, 1)
    # Reserved field encoding 3 and reserved DataSetMessage types fail the scalar decode.
    c.ok &= ~has_dataset | (((ds_flags1 >> np.uint64(1)) & np.uint64(0x03)) != 3)
    c.ok &= ~has_dataset | ((ds_flags2 & np.uint64(0x0F)) <= 3)
    has_dataset_sequence = has_dataset & bit(ds_flags1, 0x08)
    dataset_sequence = c.read(has_dataset_sequence, pos, 2)

    def or_absent(present: npt.NDArray[np.bool_], value: npt.NDArray) -> npt.NDArray[np.int32]:
        return np.where(present, value.astype(np.int64), -1).astype(np.int32)

    return UadpHeaders(
        valid=c.ok,
        publisher_id_type=publisher_id_type,
        publisher_id=publisher_id.astype(np.uint64),
        writer_group_id=or_absent(has_writer_group, writer_group_id),
        network_sequence=or_absent(has_network_sequence, network_sequence),
        dataset_writer_id=or_absent(has_writer_id, dataset_writer_id),
        dataset_sequence=or_absent(has_dataset_sequence, dataset_sequence),
    )
