"""Hypothesis strategies for UADP messages, shared by the codec and header tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from udptrace.pubsub.uadp import (
    BuiltinType,
    DataSetMessage,
    DataSetMessageType,
    DataValue,
    DateTime,
    DeltaField,
    FieldEncoding,
    FieldValue,
    GroupHeader,
    NetworkMessage,
    PublisherId,
    PublisherIdType,
    SecurityHeader,
    Variant,
)

B = BuiltinType


def _ints(bits: int, signed: bool) -> st.SearchStrategy[int]:
    if signed:
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return st.integers(0, (1 << bits) - 1)


u8, u16, u32, u64 = (_ints(bits, False) for bits in (8, 16, 32, 64))
text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)

# asyncua clamps DateTimes outside 1601..9999 and keeps microseconds only; these bounds let
# the cross-check compare exactly while the codec tests use the full Int64 range.
SANE_TICKS = (0, 2_650_467_743_989_999_999)


def scalar_values(t: BuiltinType, *, sane_dates: bool = False) -> st.SearchStrategy[Any]:
    if t is B.DateTime:
        low, high = SANE_TICKS if sane_dates else (-(1 << 63), (1 << 63) - 1)
        return st.integers(low, high).map(DateTime)
    return {
        B.Boolean: st.booleans(),
        B.SByte: _ints(8, True),
        B.Byte: u8,
        B.Int16: _ints(16, True),
        B.UInt16: u16,
        B.Int32: _ints(32, True),
        B.UInt32: u32,
        B.Int64: _ints(64, True),
        B.UInt64: u64,
        B.Float: st.floats(width=32),
        B.Double: st.floats(),
        B.String: st.none() | text,
        B.Guid: st.uuids(),
        B.ByteString: st.none() | st.binary(max_size=12),
        B.StatusCode: u32,
    }[t]


SCALAR_TYPES = [t for t in BuiltinType if t is not B.Null]


def variants(*, arrays: bool = True, sane_dates: bool = False) -> st.SearchStrategy[Variant]:
    def of_type(t: BuiltinType) -> st.SearchStrategy[Variant]:
        values = scalar_values(t, sane_dates=sane_dates)
        scalar = values.map(lambda v: Variant(t, v))
        if not arrays:
            return scalar
        array = (st.none() | st.lists(values, max_size=4).map(tuple)).map(
            lambda v: Variant(t, v, is_array=True)
        )
        return scalar | array

    typed = st.sampled_from(SCALAR_TYPES).flatmap(of_type)
    return typed | st.just(Variant(B.Null)) if arrays else typed


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def data_values(*, sane_dates: bool = False) -> st.SearchStrategy[DataValue]:
    stamps = scalar_values(B.DateTime, sane_dates=sane_dates)
    return st.builds(
        DataValue,
        value=optional(variants(sane_dates=sane_dates)),
        status=optional(u32),
        source_timestamp=optional(stamps),
        source_picoseconds=optional(u16),
        server_timestamp=optional(stamps),
        server_picoseconds=optional(u16),
    )


def field_values(
    encoding: FieldEncoding, *, sane_dates: bool = False
) -> st.SearchStrategy[FieldValue]:
    if encoding is FieldEncoding.DataValue:
        return data_values(sane_dates=sane_dates)
    return variants(arrays=encoding is FieldEncoding.Variant, sane_dates=sane_dates)


@st.composite
def dataset_messages(
    draw: st.DrawFn,
    *,
    sane_dates: bool = False,
    padding: bool = True,
    encodings: tuple[FieldEncoding, ...] = tuple(FieldEncoding),
) -> DataSetMessage:
    encoding = draw(st.sampled_from(encodings))
    m = DataSetMessage(
        message_type=draw(st.sampled_from(DataSetMessageType)),
        field_encoding=encoding,
        valid=draw(st.booleans()),
        sequence_number=draw(optional(u16)),
        timestamp=draw(optional(scalar_values(B.DateTime, sane_dates=sane_dates))),
        picoseconds=draw(optional(u16)),
        status=draw(optional(u16)),
        config_version_major=draw(optional(u32)),
        config_version_minor=draw(optional(u32)),
        padding=draw(st.integers(0, 3)) if padding else 0,
    )
    values = field_values(encoding, sane_dates=sane_dates)
    if m.message_type is DataSetMessageType.KeepAlive:
        return m
    if encoding is FieldEncoding.RawData and draw(st.booleans()):
        m.raw = draw(st.binary(max_size=16))
    elif m.message_type is DataSetMessageType.DeltaFrame:
        m.delta_fields = draw(st.lists(st.builds(DeltaField, u16, values), max_size=3))
    else:
        m.fields = draw(st.lists(values, max_size=4))
    return m


def publisher_ids(
    types: tuple[PublisherIdType, ...] = tuple(PublisherIdType),
) -> st.SearchStrategy[PublisherId]:
    values: dict[PublisherIdType, st.SearchStrategy[Any]] = {
        PublisherIdType.Byte: u8,
        PublisherIdType.UInt16: u16,
        PublisherIdType.UInt32: u32,
        PublisherIdType.UInt64: u64,
        PublisherIdType.String: text,
    }

    def of_type(t: PublisherIdType) -> st.SearchStrategy[PublisherId]:
        return values[t].map(lambda v: PublisherId(t, v))

    return st.sampled_from(types).flatmap(of_type)


group_headers = st.builds(GroupHeader, optional(u16), optional(u32), optional(u16), optional(u16))
security_headers = st.builds(
    SecurityHeader,
    signed=st.booleans(),
    encrypted=st.booleans(),
    force_key_reset=st.booleans(),
    token_id=u32,
    nonce=st.binary(max_size=8),
    footer_size=optional(u16),
)


@st.composite
def network_messages(
    draw: st.DrawFn,
    *,
    publisher_id_types: tuple[PublisherIdType, ...] = tuple(PublisherIdType),
    extended: bool = True,
    sane_dates: bool = False,
    padding: bool = True,
    encodings: tuple[FieldEncoding, ...] = tuple(FieldEncoding),
) -> NetworkMessage:
    """Any NetworkMessage the codec can encode. extended=False leaves out what asyncua
    cannot read (PromotedFields, SecurityHeader, chunk and discovery messages)."""
    msg = NetworkMessage(
        publisher_id=draw(optional(publisher_ids(publisher_id_types))),
        dataset_class_id=draw(optional(st.uuids())),
        group_header=draw(optional(group_headers)),
        timestamp=draw(optional(scalar_values(B.DateTime, sane_dates=sane_dates))),
        picoseconds=draw(optional(u16)),
    )
    if extended:
        msg.promoted_fields = draw(optional(st.lists(variants(), max_size=3).map(tuple)))
        if draw(st.integers(0, 4)) == 0:
            msg.security = draw(optional(security_headers))
            msg.chunk = draw(st.booleans())
            msg.message_type = draw(st.integers(0, 7))
    ids = draw(optional(st.lists(u16, max_size=3).map(tuple)))
    msg.dataset_writer_ids = ids
    if msg.payload_is_opaque:
        msg.opaque_payload = draw(st.binary(max_size=24))
        return msg
    count = 1 if ids is None else len(ids)
    msg.dataset_messages = draw(
        st.lists(
            dataset_messages(sane_dates=sane_dates, padding=padding, encodings=encodings),
            min_size=count,
            max_size=count,
        )
    )
    return msg
