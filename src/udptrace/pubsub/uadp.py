"""UADP NetworkMessage codec (OPC UA Part 14, 7.2.4), byte-exact in both directions.

Decoding never trusts a count or a length on the wire: every loop is bounded by the bytes
that remain, and every malformed input raises UadpDecodeError with the byte offset where
decoding stopped. A datagram off the network can therefore neither crash nor stall the
caller with any other exception.

What stays undecoded, by design:
- a secured payload (SecurityHeader present): the header is decoded, the rest is kept in
  ``opaque_payload`` because the signature length depends on the security policy, which is
  not on the wire;
- chunk and discovery NetworkMessages: kept in ``opaque_payload``;
- RawData fields without metadata: kept in ``DataSetMessage.raw``.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum

__all__ = [
    "BuiltinType",
    "DataSetMessage",
    "DataSetMessageType",
    "DataValue",
    "DateTime",
    "DeltaField",
    "FieldEncoding",
    "FieldValue",
    "GroupHeader",
    "NetworkMessage",
    "PublisherId",
    "PublisherIdType",
    "SecurityHeader",
    "UadpDecodeError",
    "UadpEncodeError",
    "Variant",
    "decode_network_message",
    "encode_network_message",
]

UADP_VERSION = 1


class UadpDecodeError(ValueError):
    """The bytes are not a UADP NetworkMessage this codec can read."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


class UadpEncodeError(ValueError):
    """A NetworkMessage that cannot be put on the wire as given."""


# 1601-01-01 (the OPC UA epoch) to 1970-01-01, in 100 ns ticks.
_UNIX_EPOCH_TICKS = 116_444_736_000_000_000
_TICKS_PER_SECOND = 10_000_000


class DateTime(int):
    """OPC UA DateTime: signed 64-bit count of 100 ns ticks since 1601-01-01 UTC.

    An int so that no tick is lost: Python's datetime only resolves microseconds.
    """

    __slots__ = ()

    @classmethod
    def from_unix_ns(cls, ns: int) -> DateTime:
        return cls(ns // 100 + _UNIX_EPOCH_TICKS)

    @classmethod
    def now(cls) -> DateTime:
        return cls.from_unix_ns(time.time_ns())

    def to_unix_ns(self) -> int:
        return (int(self) - _UNIX_EPOCH_TICKS) * 100

    def isoformat(self) -> str:
        """UTC with all seven tick digits, e.g. ``2026-11-25T08:28:30.8677249Z``."""
        seconds, ticks = divmod(int(self) - _UNIX_EPOCH_TICKS, _TICKS_PER_SECOND)
        try:
            wall = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
        except OverflowError:
            return f"ticks:{int(self)}"
        return f"{wall:%Y-%m-%dT%H:%M:%S}.{ticks:07d}Z"

    def __repr__(self) -> str:
        return f"DateTime({int(self)})"


class BuiltinType(IntEnum):
    """OPC UA built-in type ids (Part 6, 5.1.2) that this codec carries.

    Member names are the OPC UA spellings so that ``BuiltinType["DateTime"]`` parses
    what a user types. Null is the empty Variant.
    """

    Null = 0
    Boolean = 1
    SByte = 2
    Byte = 3
    Int16 = 4
    UInt16 = 5
    Int32 = 6
    UInt32 = 7
    Int64 = 8
    UInt64 = 9
    Float = 10
    Double = 11
    String = 12
    DateTime = 13
    Guid = 14
    ByteString = 15
    StatusCode = 19


class PublisherIdType(IntEnum):
    """ExtendedFlags1 bits 0-2; 5-7 are reserved."""

    Byte = 0
    UInt16 = 1
    UInt32 = 2
    UInt64 = 3
    String = 4


class DataSetMessageType(IntEnum):
    """DataSetFlags2 bits 0-3; other values are reserved."""

    KeyFrame = 0
    DeltaFrame = 1
    Event = 2
    KeepAlive = 3


class FieldEncoding(IntEnum):
    """DataSetFlags1 bits 1-2; 3 is reserved."""

    Variant = 0
    RawData = 1
    DataValue = 2


@dataclass(frozen=True)
class Variant:
    """A typed value. Arrays are one-dimensional tuples; None is a null String, ByteString
    or array (length -1 on the wire)."""

    type: BuiltinType
    value: object = None
    is_array: bool = False


@dataclass(frozen=True)
class DataValue:
    """A Variant with its quality and timestamps; each part is optional on the wire."""

    value: Variant | None = None
    status: int | None = None
    source_timestamp: DateTime | None = None
    source_picoseconds: int | None = None
    server_timestamp: DateTime | None = None
    server_picoseconds: int | None = None


FieldValue = Variant | DataValue


@dataclass(frozen=True)
class DeltaField:
    """One changed field of a delta frame: its index in the DataSet and its new value."""

    index: int
    value: FieldValue


@dataclass(frozen=True)
class PublisherId:
    type: PublisherIdType
    value: int | str

    def __str__(self) -> str:
        return f"{self.type.name}:{self.value}"


@dataclass(frozen=True)
class GroupHeader:
    """Each part is present on the wire when not None (GroupFlags bits 0-3)."""

    writer_group_id: int | None = None
    group_version: int | None = None
    network_message_number: int | None = None
    sequence_number: int | None = None


@dataclass(frozen=True)
class SecurityHeader:
    """Reported as found; no signature check and no decryption."""

    signed: bool = False
    encrypted: bool = False
    force_key_reset: bool = False
    token_id: int = 0
    nonce: bytes = b""
    footer_size: int | None = None


@dataclass
class DataSetMessage:
    """One DataSetMessage: header parts are present on the wire when not None.

    Key frames and events carry ``fields``; delta frames carry ``delta_fields``; keep-alive
    messages carry neither. RawData fields decoded without metadata stay in ``raw``.
    ``padding`` counts the zero bytes after the fields (Part 14: padding up to the
    configured size).
    """

    message_type: DataSetMessageType = DataSetMessageType.KeyFrame
    field_encoding: FieldEncoding = FieldEncoding.Variant
    valid: bool = True
    sequence_number: int | None = None
    timestamp: DateTime | None = None
    picoseconds: int | None = None
    status: int | None = None
    config_version_major: int | None = None
    config_version_minor: int | None = None
    fields: list[FieldValue] = field(default_factory=list)
    delta_fields: list[DeltaField] = field(default_factory=list)
    raw: bytes | None = None
    padding: int = 0


@dataclass
class NetworkMessage:
    """A UADP NetworkMessage; header parts are present on the wire when not None.

    ``dataset_writer_ids`` is the PayloadHeader (None: no PayloadHeader, in which case the
    payload is exactly one DataSetMessage, as receivers without configuration assume).
    ``message_type`` is ExtendedFlags2 bits 2-4: 0 DataSetMessages, 1 discovery request,
    2 discovery response. ``opaque_payload`` holds what follows the headers of a secured,
    chunk or discovery message.
    """

    publisher_id: PublisherId | None = None
    dataset_class_id: uuid.UUID | None = None
    group_header: GroupHeader | None = None
    dataset_writer_ids: tuple[int, ...] | None = None
    timestamp: DateTime | None = None
    picoseconds: int | None = None
    promoted_fields: tuple[Variant, ...] | None = None
    security: SecurityHeader | None = None
    chunk: bool = False
    message_type: int = 0
    dataset_messages: list[DataSetMessage] = field(default_factory=list)
    opaque_payload: bytes | None = None

    @property
    def payload_is_opaque(self) -> bool:
        return self.security is not None or self.chunk or self.message_type != 0

    def writer_messages(self) -> list[tuple[int | None, DataSetMessage]]:
        """Each DataSetMessage with its DataSetWriterId (None without a PayloadHeader)."""
        ids: Sequence[int | None] = self.dataset_writer_ids or [None]
        return list(zip(ids, self.dataset_messages, strict=False))


# --- wire primitives ---------------------------------------------------------------------

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")

_FIXED: dict[BuiltinType, struct.Struct] = {
    # Part 6 asks decoders to read any non-zero Boolean byte as true, which "?" does.
    BuiltinType.Boolean: struct.Struct("<?"),
    BuiltinType.SByte: struct.Struct("<b"),
    BuiltinType.Byte: _U8,
    BuiltinType.Int16: struct.Struct("<h"),
    BuiltinType.UInt16: _U16,
    BuiltinType.Int32: _I32,
    BuiltinType.UInt32: _U32,
    BuiltinType.Int64: _I64,
    BuiltinType.UInt64: _U64,
    BuiltinType.Float: struct.Struct("<f"),
    BuiltinType.Double: struct.Struct("<d"),
    BuiltinType.DateTime: _I64,
    BuiltinType.StatusCode: _U32,
}
_GUID_SIZE = 16
_LENGTH_PREFIX_SIZE = 4
_TYPE_BY_ID = {int(t): t for t in BuiltinType}

_VARIANT_ARRAY = 0x80
_VARIANT_DIMENSIONS = 0x40
_VARIANT_TYPE_MASK = 0x3F


def _min_size(t: BuiltinType) -> int:
    """Fewest bytes one value of type t occupies; bounds array lengths read off the wire."""
    fixed = _FIXED.get(t)
    if fixed is not None:
        return fixed.size
    return _GUID_SIZE if t is BuiltinType.Guid else _LENGTH_PREFIX_SIZE


class _Reader:
    """Cursor over data[pos:end]; offsets in errors are offsets into the whole datagram."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise UadpDecodeError(f"{what} needs {n} bytes, {self.remaining} left", self.pos)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: struct.Struct, what: str) -> int:
        value: int = fmt.unpack(self.take(fmt.size, what))[0]
        return value

    def u8(self, what: str) -> int:
        return self.unpack(_U8, what)

    def u16(self, what: str) -> int:
        return self.unpack(_U16, what)

    def u32(self, what: str) -> int:
        return self.unpack(_U32, what)

    def sub(self, n: int, what: str) -> _Reader:
        """A reader over the next n bytes, which this reader then skips."""
        if n > self.remaining:
            raise UadpDecodeError(f"{what} of {n} bytes, {self.remaining} left", self.pos)
        inner = _Reader(self.data, self.pos, self.pos + n)
        self.pos += n
        return inner

    def check_count(self, count: int, min_size: int, what: str) -> None:
        if count * min_size > self.remaining:
            raise UadpDecodeError(
                f"{what} count {count} needs at least {count * min_size} bytes,"
                f" {self.remaining} left",
                self.pos,
            )

    def length_prefixed(self, what: str) -> bytes | None:
        start = self.pos
        length = self.unpack(_I32, what)
        if length == -1:
            return None
        if length < 0:
            raise UadpDecodeError(f"{what} has negative length {length}", start)
        return self.take(length, what)


def _put_length_prefixed(out: bytearray, value: bytes | None) -> None:
    if value is None:
        out += _I32.pack(-1)
    else:
        out += _I32.pack(len(value))
        out += value


# --- values ------------------------------------------------------------------------------


def _put_scalar(out: bytearray, t: BuiltinType, value: object) -> None:
    fixed = _FIXED.get(t)
    if fixed is not None:
        out += fixed.pack(value)
    elif t is BuiltinType.Guid:
        if not isinstance(value, uuid.UUID):
            raise UadpEncodeError(f"Guid value must be a uuid.UUID, not {value!r}")
        out += value.bytes_le
    elif t is BuiltinType.String:
        if value is not None and not isinstance(value, str):
            raise UadpEncodeError(f"String value must be str or None, not {value!r}")
        _put_length_prefixed(out, None if value is None else value.encode("utf-8"))
    elif t is BuiltinType.ByteString:
        if value is not None and not isinstance(value, bytes | bytearray):
            raise UadpEncodeError(f"ByteString value must be bytes or None, not {value!r}")
        _put_length_prefixed(out, None if value is None else bytes(value))
    else:
        raise UadpEncodeError(f"no scalar encoding for {t.name}")


def _get_scalar(r: _Reader, t: BuiltinType) -> object:
    fixed = _FIXED.get(t)
    if fixed is not None:
        value = fixed.unpack(r.take(fixed.size, t.name))[0]
        return DateTime(value) if t is BuiltinType.DateTime else value
    if t is BuiltinType.Guid:
        return uuid.UUID(bytes_le=r.take(_GUID_SIZE, "Guid"))
    start = r.pos
    raw = r.length_prefixed(t.name)
    if t is BuiltinType.ByteString or raw is None:
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UadpDecodeError(f"String is not UTF-8: {exc.reason}", start) from None


def _put_variant(out: bytearray, v: Variant) -> None:
    if v.type is BuiltinType.Null:
        if v.is_array or v.value is not None:
            raise UadpEncodeError("a Null Variant has no value")
        out.append(0)
    elif not v.is_array:
        out.append(v.type)
        _put_scalar(out, v.type, v.value)
    else:
        out.append(v.type | _VARIANT_ARRAY)
        if v.value is None:
            out += _I32.pack(-1)
            return
        if not isinstance(v.value, Sequence) or isinstance(v.value, str | bytes):
            raise UadpEncodeError(f"array Variant needs a sequence, not {v.value!r}")
        out += _I32.pack(len(v.value))
        for element in v.value:
            _put_scalar(out, v.type, element)


def _get_variant(r: _Reader) -> Variant:
    start = r.pos
    mask = r.u8("Variant encoding mask")
    t = _TYPE_BY_ID.get(mask & _VARIANT_TYPE_MASK)
    if t is None:
        raise UadpDecodeError(
            f"Variant of built-in type {mask & _VARIANT_TYPE_MASK} is not supported", start
        )
    if mask & _VARIANT_DIMENSIONS:
        raise UadpDecodeError("multi-dimensional Variant arrays are not supported", start)
    if t is BuiltinType.Null:
        if mask & _VARIANT_ARRAY:
            raise UadpDecodeError("array of Null", start)
        return Variant(t)
    if not mask & _VARIANT_ARRAY:
        return Variant(t, _get_scalar(r, t))
    length_at = r.pos
    length = r.unpack(_I32, "array length")
    if length == -1:
        return Variant(t, None, is_array=True)
    if length < 0:
        raise UadpDecodeError(f"negative array length {length}", length_at)
    r.check_count(length, _min_size(t), f"{t.name} array")
    return Variant(t, tuple(_get_scalar(r, t) for _ in range(length)), is_array=True)


_DV_VALUE = 0x01
_DV_STATUS = 0x02
_DV_SOURCE_TS = 0x04
_DV_SERVER_TS = 0x08
_DV_SOURCE_PICO = 0x10
_DV_SERVER_PICO = 0x20


def _put_data_value(out: bytearray, dv: DataValue) -> None:
    mask = (
        (_DV_VALUE if dv.value is not None else 0)
        | (_DV_STATUS if dv.status is not None else 0)
        | (_DV_SOURCE_TS if dv.source_timestamp is not None else 0)
        | (_DV_SERVER_TS if dv.server_timestamp is not None else 0)
        | (_DV_SOURCE_PICO if dv.source_picoseconds is not None else 0)
        | (_DV_SERVER_PICO if dv.server_picoseconds is not None else 0)
    )
    out.append(mask)
    # Part 6, 5.2.2.17: source picoseconds follow the source timestamp, not the end.
    if dv.value is not None:
        _put_variant(out, dv.value)
    if dv.status is not None:
        out += _U32.pack(dv.status)
    if dv.source_timestamp is not None:
        out += _I64.pack(dv.source_timestamp)
    if dv.source_picoseconds is not None:
        out += _U16.pack(dv.source_picoseconds)
    if dv.server_timestamp is not None:
        out += _I64.pack(dv.server_timestamp)
    if dv.server_picoseconds is not None:
        out += _U16.pack(dv.server_picoseconds)


def _get_data_value(r: _Reader) -> DataValue:
    mask = r.u8("DataValue encoding mask")
    value = _get_variant(r) if mask & _DV_VALUE else None
    status = r.u32("DataValue status") if mask & _DV_STATUS else None
    source_ts = DateTime(r.unpack(_I64, "source timestamp")) if mask & _DV_SOURCE_TS else None
    source_ps = r.u16("source picoseconds") if mask & _DV_SOURCE_PICO else None
    server_ts = DateTime(r.unpack(_I64, "server timestamp")) if mask & _DV_SERVER_TS else None
    server_ps = r.u16("server picoseconds") if mask & _DV_SERVER_PICO else None
    return DataValue(value, status, source_ts, source_ps, server_ts, server_ps)


# --- DataSetMessage ----------------------------------------------------------------------

_DS1_VALID = 0x01
_DS1_SEQUENCE = 0x08
_DS1_STATUS = 0x10
_DS1_MAJOR = 0x20
_DS1_MINOR = 0x40
_DS1_FLAGS2 = 0x80
_DS2_TIMESTAMP = 0x10
_DS2_PICOSECONDS = 0x20


def _put_field(out: bytearray, encoding: FieldEncoding, value: FieldValue) -> None:
    if encoding is FieldEncoding.DataValue:
        if not isinstance(value, DataValue):
            raise UadpEncodeError("DataValue field encoding needs DataValue fields")
        _put_data_value(out, value)
        return
    if not isinstance(value, Variant):
        raise UadpEncodeError(f"{encoding.name} field encoding needs Variant fields")
    if encoding is FieldEncoding.Variant:
        _put_variant(out, value)
    elif value.is_array or value.type is BuiltinType.Null:
        raise UadpEncodeError("RawData fields here are scalars of a built-in type")
    else:
        _put_scalar(out, value.type, value.value)


def _get_field(r: _Reader, encoding: FieldEncoding, raw_type: BuiltinType | None) -> FieldValue:
    if encoding is FieldEncoding.DataValue:
        return _get_data_value(r)
    if raw_type is None:
        return _get_variant(r)
    return Variant(raw_type, _get_scalar(r, raw_type))


def _dataset_message_bytes(m: DataSetMessage) -> bytes:
    if m.message_type is DataSetMessageType.KeepAlive and (m.fields or m.delta_fields or m.raw):
        raise UadpEncodeError("a keep-alive DataSetMessage carries no fields")
    if m.message_type is DataSetMessageType.DeltaFrame and m.fields:
        raise UadpEncodeError("a delta frame carries delta_fields, not fields")
    if m.message_type is not DataSetMessageType.DeltaFrame and m.delta_fields:
        raise UadpEncodeError("only a delta frame carries delta_fields")
    if m.raw is not None and m.field_encoding is not FieldEncoding.RawData:
        raise UadpEncodeError("raw bytes need RawData field encoding")

    flags2 = (
        int(m.message_type)
        | (_DS2_TIMESTAMP if m.timestamp is not None else 0)
        | (_DS2_PICOSECONDS if m.picoseconds is not None else 0)
    )
    flags1 = (
        (_DS1_VALID if m.valid else 0)
        | int(m.field_encoding) << 1
        | (_DS1_SEQUENCE if m.sequence_number is not None else 0)
        | (_DS1_STATUS if m.status is not None else 0)
        | (_DS1_MAJOR if m.config_version_major is not None else 0)
        | (_DS1_MINOR if m.config_version_minor is not None else 0)
        | (_DS1_FLAGS2 if flags2 else 0)
    )
    out = bytearray([flags1])
    if flags2:
        out.append(flags2)
    if m.sequence_number is not None:
        out += _U16.pack(m.sequence_number)
    if m.timestamp is not None:
        out += _I64.pack(m.timestamp)
    if m.picoseconds is not None:
        out += _U16.pack(m.picoseconds)
    if m.status is not None:
        out += _U16.pack(m.status)
    if m.config_version_major is not None:
        out += _U32.pack(m.config_version_major)
    if m.config_version_minor is not None:
        out += _U32.pack(m.config_version_minor)

    raw_data = m.field_encoding is FieldEncoding.RawData
    if m.raw is not None:
        out += m.raw
    elif m.message_type is DataSetMessageType.DeltaFrame:
        out += _U16.pack(len(m.delta_fields))
        for delta in m.delta_fields:
            out += _U16.pack(delta.index)
            _put_field(out, m.field_encoding, delta.value)
    elif m.message_type is not DataSetMessageType.KeepAlive:
        # Part 14: a RawData key frame has no FieldCount; the receiver's metadata has it.
        if not raw_data:
            out += _U16.pack(len(m.fields))
        for value in m.fields:
            _put_field(out, m.field_encoding, value)
    out += bytes(m.padding)
    return bytes(out)


def _get_dataset_message(r: _Reader, raw_types: Sequence[BuiltinType] | None) -> DataSetMessage:
    """Decode one DataSetMessage that spans exactly what r has left."""
    start = r.pos
    flags1 = r.u8("DataSetFlags1")
    flags2 = r.u8("DataSetFlags2") if flags1 & _DS1_FLAGS2 else 0
    encoding_bits = (flags1 >> 1) & 0x03
    if encoding_bits == 3:
        raise UadpDecodeError("reserved DataSetMessage field encoding 3", start)
    type_bits = flags2 & 0x0F
    if type_bits > DataSetMessageType.KeepAlive:
        raise UadpDecodeError(f"reserved DataSetMessage type {type_bits}", start)
    m = DataSetMessage(
        message_type=DataSetMessageType(type_bits),
        field_encoding=FieldEncoding(encoding_bits),
        valid=bool(flags1 & _DS1_VALID),
    )
    if flags1 & _DS1_SEQUENCE:
        m.sequence_number = r.u16("DataSetMessage sequence number")
    if flags2 & _DS2_TIMESTAMP:
        m.timestamp = DateTime(r.unpack(_I64, "DataSetMessage timestamp"))
    if flags2 & _DS2_PICOSECONDS:
        m.picoseconds = r.u16("DataSetMessage picoseconds")
    if flags1 & _DS1_STATUS:
        m.status = r.u16("DataSetMessage status")
    if flags1 & _DS1_MAJOR:
        m.config_version_major = r.u32("ConfigurationVersion major")
    if flags1 & _DS1_MINOR:
        m.config_version_minor = r.u32("ConfigurationVersion minor")

    raw_data = m.field_encoding is FieldEncoding.RawData
    if m.message_type is DataSetMessageType.KeepAlive:
        pass
    elif raw_data and raw_types is None:
        m.raw = r.take(r.remaining, "RawData fields")
    elif m.message_type is DataSetMessageType.DeltaFrame:
        count = r.u16("delta frame field count")
        r.check_count(count, 3, "delta frame field")
        for _ in range(count):
            index_at = r.pos
            index = r.u16("delta frame field index")
            raw_type = None
            if raw_types is not None:
                if index >= len(raw_types):
                    raise UadpDecodeError(
                        f"delta field index {index} beyond the {len(raw_types)} known fields",
                        index_at,
                    )
                raw_type = raw_types[index]
            m.delta_fields.append(DeltaField(index, _get_field(r, m.field_encoding, raw_type)))
    elif raw_types is not None and raw_data:
        m.fields = [_get_field(r, m.field_encoding, t) for t in raw_types]
    else:
        count = r.u16("field count")
        r.check_count(count, 1, "field")
        m.fields = [_get_field(r, m.field_encoding, None) for _ in range(count)]

    padding_at = r.pos
    padding = r.take(r.remaining, "padding")
    if padding.strip(b"\x00"):
        offset = padding_at + next(i for i, b in enumerate(padding) if b)
        raise UadpDecodeError("non-zero byte after the DataSetMessage fields", offset)
    m.padding = len(padding)
    return m


# --- NetworkMessage ----------------------------------------------------------------------

_NM_PUBLISHER_ID = 0x10
_NM_GROUP_HEADER = 0x20
_NM_PAYLOAD_HEADER = 0x40
_NM_EXT1 = 0x80
_EXT1_CLASS_ID = 0x08
_EXT1_SECURITY = 0x10
_EXT1_TIMESTAMP = 0x20
_EXT1_PICOSECONDS = 0x40
_EXT1_EXT2 = 0x80
_EXT2_CHUNK = 0x01
_EXT2_PROMOTED = 0x02
_GROUP_WRITER_GROUP_ID = 0x01
_GROUP_VERSION = 0x02
_GROUP_NETWORK_MESSAGE_NUMBER = 0x04
_GROUP_SEQUENCE = 0x08
_SEC_SIGNED = 0x01
_SEC_ENCRYPTED = 0x02
_SEC_FOOTER = 0x04
_SEC_FORCE_KEY_RESET = 0x08

_PUBLISHER_ID_FORMATS = {
    PublisherIdType.Byte: _U8,
    PublisherIdType.UInt16: _U16,
    PublisherIdType.UInt32: _U32,
    PublisherIdType.UInt64: _U64,
}


def encode_network_message(msg: NetworkMessage) -> bytes:
    """The wire bytes of msg; raises UadpEncodeError if a value does not fit its field."""
    try:
        return _encode(msg)
    except (struct.error, OverflowError, UnicodeEncodeError) as exc:
        raise UadpEncodeError(f"cannot encode NetworkMessage: {exc}") from exc


def _encode(msg: NetworkMessage) -> bytes:
    if msg.payload_is_opaque:
        if msg.dataset_messages:
            raise UadpEncodeError("a secured, chunk or discovery message has an opaque payload")
    elif msg.opaque_payload is not None:
        raise UadpEncodeError("opaque_payload is only for secured, chunk or discovery messages")
    elif msg.dataset_writer_ids is None and len(msg.dataset_messages) != 1:
        raise UadpEncodeError("without a PayloadHeader a NetworkMessage has one DataSetMessage")
    elif msg.dataset_writer_ids is not None and len(msg.dataset_writer_ids) != len(
        msg.dataset_messages
    ):
        raise UadpEncodeError("one DataSetWriterId per DataSetMessage")

    ext2 = (
        (_EXT2_CHUNK if msg.chunk else 0)
        | (_EXT2_PROMOTED if msg.promoted_fields is not None else 0)
        | (msg.message_type & 0x07) << 2
    )
    ext1 = (
        (msg.publisher_id.type if msg.publisher_id is not None else 0)
        | (_EXT1_CLASS_ID if msg.dataset_class_id is not None else 0)
        | (_EXT1_SECURITY if msg.security is not None else 0)
        | (_EXT1_TIMESTAMP if msg.timestamp is not None else 0)
        | (_EXT1_PICOSECONDS if msg.picoseconds is not None else 0)
        | (_EXT1_EXT2 if ext2 else 0)
    )
    flags = (
        UADP_VERSION
        | (_NM_PUBLISHER_ID if msg.publisher_id is not None else 0)
        | (_NM_GROUP_HEADER if msg.group_header is not None else 0)
        | (_NM_PAYLOAD_HEADER if msg.dataset_writer_ids is not None else 0)
        | (_NM_EXT1 if ext1 else 0)
    )
    out = bytearray([flags])
    if ext1:
        out.append(ext1)
    if ext2:
        out.append(ext2)

    pid = msg.publisher_id
    if pid is not None:
        if pid.type is PublisherIdType.String:
            if not isinstance(pid.value, str):
                raise UadpEncodeError("a String PublisherId needs a str value")
            _put_length_prefixed(out, pid.value.encode("utf-8"))
        else:
            out += _PUBLISHER_ID_FORMATS[pid.type].pack(pid.value)
    if msg.dataset_class_id is not None:
        out += msg.dataset_class_id.bytes_le

    group = msg.group_header
    if group is not None:
        out.append(
            (_GROUP_WRITER_GROUP_ID if group.writer_group_id is not None else 0)
            | (_GROUP_VERSION if group.group_version is not None else 0)
            | (_GROUP_NETWORK_MESSAGE_NUMBER if group.network_message_number is not None else 0)
            | (_GROUP_SEQUENCE if group.sequence_number is not None else 0)
        )
        if group.writer_group_id is not None:
            out += _U16.pack(group.writer_group_id)
        if group.group_version is not None:
            out += _U32.pack(group.group_version)
        if group.network_message_number is not None:
            out += _U16.pack(group.network_message_number)
        if group.sequence_number is not None:
            out += _U16.pack(group.sequence_number)

    if msg.dataset_writer_ids is not None:
        out += _U8.pack(len(msg.dataset_writer_ids))
        for writer_id in msg.dataset_writer_ids:
            out += _U16.pack(writer_id)

    if msg.timestamp is not None:
        out += _I64.pack(msg.timestamp)
    if msg.picoseconds is not None:
        out += _U16.pack(msg.picoseconds)
    if msg.promoted_fields is not None:
        promoted = bytearray()
        for variant in msg.promoted_fields:
            _put_variant(promoted, variant)
        # The size is in bytes, not a count (Part 14 Table 154; open62541 agrees).
        out += _U16.pack(len(promoted))
        out += promoted

    sec = msg.security
    if sec is not None:
        out.append(
            (_SEC_SIGNED if sec.signed else 0)
            | (_SEC_ENCRYPTED if sec.encrypted else 0)
            | (_SEC_FOOTER if sec.footer_size is not None else 0)
            | (_SEC_FORCE_KEY_RESET if sec.force_key_reset else 0)
        )
        out += _U32.pack(sec.token_id)
        out += _U8.pack(len(sec.nonce))
        out += sec.nonce
        if sec.footer_size is not None:
            out += _U16.pack(sec.footer_size)

    if msg.payload_is_opaque:
        out += msg.opaque_payload or b""
        return bytes(out)

    bodies = [_dataset_message_bytes(m) for m in msg.dataset_messages]
    if len(bodies) > 1:
        for body in bodies:
            out += _U16.pack(len(body))
    for body in bodies:
        out += body
    return bytes(out)


def decode_network_message(
    data: bytes | bytearray | memoryview,
    *,
    raw_field_types: Sequence[BuiltinType] | None = None,
) -> NetworkMessage:
    """Decode one datagram's UDP payload.

    raw_field_types is the receiver's metadata for RawData DataSetMessages (the built-in
    type of each field, scalars only); without it their fields stay in ``raw``.
    Raises UadpDecodeError, and nothing else, on malformed input.
    """
    r = _Reader(bytes(data))
    flags = r.u8("UADPFlags")
    if flags & 0x0F != UADP_VERSION:
        raise UadpDecodeError(f"UADP version {flags & 0x0F}, expected {UADP_VERSION}", 0)
    ext1 = r.u8("ExtendedFlags1") if flags & _NM_EXT1 else 0
    ext2 = r.u8("ExtendedFlags2") if ext1 & _EXT1_EXT2 else 0
    msg = NetworkMessage(chunk=bool(ext2 & _EXT2_CHUNK), message_type=(ext2 >> 2) & 0x07)

    if flags & _NM_PUBLISHER_ID:
        msg.publisher_id = _get_publisher_id(r, ext1 & 0x07)
    if ext1 & _EXT1_CLASS_ID:
        msg.dataset_class_id = uuid.UUID(bytes_le=r.take(_GUID_SIZE, "DataSetClassId"))
    if flags & _NM_GROUP_HEADER:
        msg.group_header = _get_group_header(r)
    if flags & _NM_PAYLOAD_HEADER:
        count = r.u8("PayloadHeader count")
        r.check_count(count, 2, "DataSetWriterId")
        msg.dataset_writer_ids = tuple(r.u16("DataSetWriterId") for _ in range(count))
    if ext1 & _EXT1_TIMESTAMP:
        msg.timestamp = DateTime(r.unpack(_I64, "NetworkMessage timestamp"))
    if ext1 & _EXT1_PICOSECONDS:
        msg.picoseconds = r.u16("NetworkMessage picoseconds")
    if ext2 & _EXT2_PROMOTED:
        promoted = r.sub(r.u16("PromotedFields size"), "PromotedFields")
        fields: list[Variant] = []
        while promoted.remaining:
            fields.append(_get_variant(promoted))
        msg.promoted_fields = tuple(fields)
    if ext1 & _EXT1_SECURITY:
        msg.security = _get_security_header(r)

    if msg.payload_is_opaque:
        msg.opaque_payload = r.take(r.remaining, "payload")
        return msg

    ids = msg.dataset_writer_ids
    if ids is None or len(ids) == 1:
        msg.dataset_messages = [_get_dataset_message(r, raw_field_types)]
        return msg
    sizes = [r.u16("DataSetMessage size") for _ in ids]
    for size in sizes:
        if size == 0:
            raise UadpDecodeError("DataSetMessage of size 0", r.pos)
        msg.dataset_messages.append(
            _get_dataset_message(r.sub(size, "DataSetMessage"), raw_field_types)
        )
    if r.remaining:
        raise UadpDecodeError(f"{r.remaining} bytes after the last DataSetMessage", r.pos)
    return msg


def _get_publisher_id(r: _Reader, type_bits: int) -> PublisherId:
    start = r.pos
    if type_bits > PublisherIdType.String:
        raise UadpDecodeError(f"reserved PublisherId type {type_bits}", start)
    pid_type = PublisherIdType(type_bits)
    if pid_type is PublisherIdType.String:
        value = _get_scalar(r, BuiltinType.String)
        if value is None:
            raise UadpDecodeError("null String PublisherId", start)
        assert isinstance(value, str)
        return PublisherId(pid_type, value)
    return PublisherId(pid_type, r.unpack(_PUBLISHER_ID_FORMATS[pid_type], "PublisherId"))


def _get_group_header(r: _Reader) -> GroupHeader:
    flags = r.u8("GroupFlags")
    return GroupHeader(
        writer_group_id=r.u16("WriterGroupId") if flags & _GROUP_WRITER_GROUP_ID else None,
        group_version=r.u32("GroupVersion") if flags & _GROUP_VERSION else None,
        network_message_number=(
            r.u16("NetworkMessageNumber") if flags & _GROUP_NETWORK_MESSAGE_NUMBER else None
        ),
        sequence_number=r.u16("SequenceNumber") if flags & _GROUP_SEQUENCE else None,
    )


def _get_security_header(r: _Reader) -> SecurityHeader:
    flags = r.u8("SecurityFlags")
    token_id = r.u32("SecurityTokenId")
    nonce = r.take(r.u8("NonceLength"), "MessageNonce")
    footer_size = r.u16("SecurityFooterSize") if flags & _SEC_FOOTER else None
    return SecurityHeader(
        signed=bool(flags & _SEC_SIGNED),
        encrypted=bool(flags & _SEC_ENCRYPTED),
        force_key_reset=bool(flags & _SEC_FORCE_KEY_RESET),
        token_id=token_id,
        nonce=nonce,
        footer_size=footer_size,
    )
