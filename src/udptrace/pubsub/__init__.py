"""OPC UA PubSub over UDP (Part 14, UADP): the codec, a vectorized header decoder for
captured datagrams, and a publisher and subscriber to make and check traffic."""

from udptrace.pubsub.headers import CAPTURE_BYTES, UadpHeaders, decode_headers, publisher_key
from udptrace.pubsub.publisher import Publisher, PublisherConfig, PublishSummary
from udptrace.pubsub.stats import IntervalStats
from udptrace.pubsub.subscriber import (
    Received,
    SequenceTracker,
    StreamSummary,
    Subscriber,
    SubscriberConfig,
    SubscribeSummary,
    Tally,
)
from udptrace.pubsub.uadp import (
    BuiltinType,
    DataSetMessage,
    DataSetMessageType,
    DataValue,
    DateTime,
    DeltaField,
    FieldEncoding,
    GroupHeader,
    NetworkMessage,
    PublisherId,
    PublisherIdType,
    SecurityHeader,
    UadpDecodeError,
    UadpEncodeError,
    Variant,
    decode_network_message,
    encode_network_message,
)
from udptrace.pubsub.url import DEFAULT_PORT, DEFAULT_URL, UdpEndpoint, parse_url

__all__ = [
    "CAPTURE_BYTES",
    "DEFAULT_PORT",
    "DEFAULT_URL",
    "BuiltinType",
    "DataSetMessage",
    "DataSetMessageType",
    "DataValue",
    "DateTime",
    "DeltaField",
    "FieldEncoding",
    "GroupHeader",
    "IntervalStats",
    "NetworkMessage",
    "PublishSummary",
    "Publisher",
    "PublisherConfig",
    "PublisherId",
    "PublisherIdType",
    "Received",
    "SecurityHeader",
    "SequenceTracker",
    "StreamSummary",
    "SubscribeSummary",
    "Subscriber",
    "SubscriberConfig",
    "Tally",
    "UadpDecodeError",
    "UadpEncodeError",
    "UadpHeaders",
    "UdpEndpoint",
    "Variant",
    "decode_headers",
    "decode_network_message",
    "encode_network_message",
    "parse_url",
    "publisher_key",
]
