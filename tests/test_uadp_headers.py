"""The vectorized header decoder agrees with the scalar codec and never raises on bytes."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pubsub_helpers import network_messages

from udptrace.pubsub.headers import CAPTURE_BYTES, UadpHeaders, decode_headers, publisher_key
from udptrace.pubsub.uadp import (
    DataSetMessage,
    NetworkMessage,
    PublisherId,
    PublisherIdType,
    decode_network_message,
    encode_network_message,
)

TUTORIAL = bytes.fromhex(
    "f101ba08016400014df4e11081f2e3f3b67cdd01e54167ce8b4167ce01000d7af3e3f3b67cdd01"
)


def capture(datagrams: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """What the tracer hands over: the first CAPTURE_BYTES of each payload, zero-filled."""
    rows = np.zeros((len(datagrams), CAPTURE_BYTES), dtype=np.uint8)
    for i, data in enumerate(datagrams):
        head = data[:CAPTURE_BYTES]
        rows[i, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    return rows, np.array([len(d) for d in datagrams], dtype=np.int64)


def row(headers: UadpHeaders, i: int) -> dict[str, int]:
    return {f.name: int(getattr(headers, f.name)[i]) for f in dataclasses.fields(headers)}


def expected_row(msg: NetworkMessage) -> dict[str, int]:
    group = msg.group_header
    ids = msg.dataset_writer_ids
    first = None if msg.payload_is_opaque or not msg.dataset_messages else msg.dataset_messages[0]

    def present(value: int | None) -> int:
        return -1 if value is None else value

    return {
        "valid": 1,
        "publisher_id_type": present(msg.publisher_id and msg.publisher_id.type),
        "publisher_id": publisher_key(msg.publisher_id) if msg.publisher_id else 0,
        "writer_group_id": present(group and group.writer_group_id),
        "network_sequence": present(group and group.sequence_number),
        "dataset_writer_id": ids[0] if ids else -1,
        "dataset_sequence": present(first and first.sequence_number),
    }


def header_only(msg: NetworkMessage) -> NetworkMessage:
    """msg without field values: its encoding is at least as long as the header bytes
    decode_headers needs, so if it fits the capture the row must be valid."""
    bare = [
        dataclasses.replace(m, fields=[], delta_fields=[], raw=None, padding=0)
        for m in msg.dataset_messages
    ]
    opaque = b"" if msg.payload_is_opaque else None
    return dataclasses.replace(msg, dataset_messages=bare, opaque_payload=opaque)


def test_tutorial_message() -> None:
    headers = decode_headers(*capture([TUTORIAL]))
    assert row(headers, 0) == {
        "valid": 1,
        "publisher_id_type": PublisherIdType.UInt16,
        "publisher_id": 2234,
        "writer_group_id": 100,
        "network_sequence": -1,
        "dataset_writer_id": 62541,
        "dataset_sequence": -1,
    }


def test_column_types() -> None:
    headers = decode_headers(*capture([TUTORIAL, b""]))
    assert headers.valid.dtype == np.bool_
    assert headers.publisher_id.dtype == np.uint64
    assert headers.publisher_id_type.dtype == np.int8
    for name in ("writer_group_id", "network_sequence", "dataset_writer_id", "dataset_sequence"):
        assert getattr(headers, name).dtype == np.int32
    assert not headers.valid[1]


def test_a_datagram_shorter_than_its_header_is_invalid() -> None:
    rows, lengths = capture([TUTORIAL] * (len(TUTORIAL) + 1))
    lengths[:] = np.arange(len(TUTORIAL) + 1)  # claims: only the first k bytes are real
    headers = decode_headers(rows, lengths)
    # The first DataSetMessage's flags sit at byte 10 and 11; its sequence number is absent.
    assert not headers.valid[:12].any()
    assert headers.valid[12:].all()


def test_string_publisher_id_is_hashed_like_publisher_key() -> None:
    pid = PublisherId(PublisherIdType.String, "foobar")
    data = encode_network_message(
        NetworkMessage(publisher_id=pid, dataset_messages=[DataSetMessage()])
    )
    headers = decode_headers(*capture([data]))
    assert headers.valid[0]
    assert headers.publisher_id_type[0] == PublisherIdType.String
    # FNV-1a 64 of "foobar", from the FNV reference test vectors.
    assert int(headers.publisher_id[0]) == publisher_key(pid) == 0x85944171F73967E8


@given(st.lists(network_messages(), min_size=1, max_size=12))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_agrees_with_the_scalar_codec(messages: list[NetworkMessage]) -> None:
    datagrams = [encode_network_message(m) for m in messages]
    headers = decode_headers(*capture(datagrams))
    for i, msg in enumerate(messages):
        if len(encode_network_message(header_only(msg))) <= CAPTURE_BYTES:
            assert headers.valid[i]
        if headers.valid[i]:
            assert row(headers, i) == expected_row(msg)


@given(
    hnp.arrays(np.uint8, st.tuples(st.integers(0, 40), st.just(CAPTURE_BYTES))),
    st.data(),
)
@settings(max_examples=300)
def test_arbitrary_bytes_never_raise(rows: np.ndarray, data: st.DataObject) -> None:
    lengths = np.array(
        data.draw(st.lists(st.integers(-5, 70_000), min_size=len(rows), max_size=len(rows))),
        dtype=np.int64,
    )
    headers = decode_headers(rows, lengths)
    assert all(len(getattr(headers, f.name)) == len(rows) for f in dataclasses.fields(headers))


@given(st.lists(st.binary(min_size=1, max_size=CAPTURE_BYTES), min_size=1, max_size=30))
@settings(max_examples=300)
def test_valid_rows_of_random_bytes_agree_with_the_codec_where_it_decodes(
    datagrams: list[bytes],
) -> None:
    # Arbitrary datagrams whose full decode succeeds must look the same in both decoders.
    headers = decode_headers(*capture(datagrams))
    for i, data in enumerate(datagrams):
        try:
            msg = decode_network_message(data)
        except ValueError:
            continue
        assert headers.valid[i]
        assert row(headers, i) == expected_row(msg)


def test_a_million_rows_take_seconds_not_minutes() -> None:
    rows, lengths = capture([TUTORIAL])
    many = np.repeat(rows, 1_000_000, axis=0)
    headers = decode_headers(many, np.repeat(lengths, 1_000_000))
    assert headers.valid.all()
    assert (headers.dataset_writer_id == 62541).all()
