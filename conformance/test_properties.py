"""Message properties and bodies round-trip unchanged."""

import datetime
import decimal
import hashlib
import os
import struct

import pika
import pika.data
import pytest

from amqp_support import PRECONDITION_FAILED, Collector, eventually, expect_channel_close

# Every field type pika can encode in a header table:
#   str -> 'S', bytes -> 'x', int -> 'I' (32-bit) or 'l'/'L' (64-bit),
#   bool -> 't', Decimal -> 'D', datetime -> 'T', dict -> 'F', list -> 'A',
#   None -> 'V'.
# pika 1.3.2 cannot encode a float at all (UnsupportedAMQPFieldException), so
# the ``encoder`` fixture below teaches it 'd' (double) for floats and, via
# Typed(), the other field types RabbitMQ accepts ('b', 'B', 's', 'u', 'i',
# 'f').


class Typed:
    """A header value sent with an explicit AMQP field-type tag."""

    def __init__(self, tag, fmt, value):
        self.tag, self.fmt, self.value = tag, fmt, value

    def __repr__(self):
        return f"Typed({self.tag!r}, {self.value!r})"


@pytest.fixture
def encoder(monkeypatch):
    real = pika.data.encode_value

    def encode_value(pieces, value):
        if isinstance(value, Typed):
            packed = struct.pack(">c" + value.fmt, value.tag, value.value)
            pieces.append(packed)
            return len(packed)
        if isinstance(value, float):
            pieces.append(struct.pack(">cd", b"d", value))
            return 9
        return real(pieces, value)

    monkeypatch.setattr(pika.data, "encode_value", encode_value)


HEADERS = {
    "str": "hello \u00e9\u4e16",
    "empty-str": "",
    "bytes": b"\x00\x01\xff raw",
    "int-small": 42,
    "int-zero": 0,
    "int-negative": -7,
    "int-max32": 2 ** 31 - 1,
    "int-min32": -(2 ** 31),
    "int-large": 2 ** 40 + 3,
    "int-large-negative": -(2 ** 40) - 3,
    "int-max64": 2 ** 63 - 1,
    "bool-true": True,
    "bool-false": False,
    "float": 2.0,
    "decimal": decimal.Decimal("3.14"),
    "decimal-negative": decimal.Decimal("-12.5"),
    "decimal-int": decimal.Decimal("7"),
    "datetime": datetime.datetime(2024, 2, 29, 12, 34, 56),
    "nested": {"a": 1, "b": {"c": "deep", "d": [1, "two", None]}},
    "empty-table": {},
    "list": [1, "two", b"three", True, None, {"k": "v"}, [4, 5]],
    "empty-list": [],
    "none": None,
}


def expected_header_value(value):
    """What pika 1.3.2 decodes a value back to.  pika decodes a 'd' double
    with int() (a pika bug), so floats come back truncated to int; the raw
    bytes are compared exactly in test_property_bytes_pass_through."""
    if isinstance(value, float):
        return int(value)
    if isinstance(value, dict):
        return {k: expected_header_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expected_header_value(v) for v in value]
    return value


def full_properties():
    return pika.BasicProperties(
        content_type="application/json",
        content_encoding="gzip",
        headers=HEADERS,
        delivery_mode=2,
        priority=7,
        correlation_id="corr-123",
        reply_to="reply.queue",
        expiration="600000",
        message_id="msg-456",
        timestamp=1700000000,
        type="order.created",
        user_id="guest",
        app_id="conformance",
        cluster_id="cluster-x",
    )


def roundtrip_get(ch, pub, q, body, properties=None):
    pub.basic_publish("", q, body, properties=properties)
    m, p, got = ch.basic_get(q, auto_ack=True)
    assert m is not None, "message lost"
    return p, got


def test_all_properties_round_trip_via_get(ch, pub, broker, encoder):
    q = ch.queue_declare("", exclusive=True).method.queue
    sent = full_properties()
    sent.user_id = broker.username
    p, body = roundtrip_get(ch, pub, q, b"{}", sent)
    assert body == b"{}"
    for field in ("content_type", "content_encoding", "delivery_mode", "priority",
                  "correlation_id", "reply_to", "expiration", "message_id",
                  "timestamp", "type", "user_id", "app_id", "cluster_id"):
        assert getattr(p, field) == getattr(sent, field), field
    assert p.headers == expected_header_value(HEADERS)


def test_all_properties_round_trip_via_consume(conn, ch, pub, broker, encoder):
    q = ch.queue_declare("", exclusive=True).method.queue
    sent = full_properties()
    sent.user_id = broker.username
    c = Collector(ch, q, auto_ack=True)
    pub.basic_publish("", q, b"payload", properties=sent)
    eventually(lambda: c.messages, conns=conn)
    _, p, body = c.messages[0]
    assert body == b"payload"
    assert p.headers == expected_header_value(HEADERS)
    assert p.message_id == "msg-456" and p.timestamp == 1700000000
    assert p.priority == 7 and p.delivery_mode == 2


def test_header_value_types(ch, pub, encoder):
    q = ch.queue_declare("", exclusive=True).method.queue
    p, _ = roundtrip_get(ch, pub, q, b"", pika.BasicProperties(headers=HEADERS))
    h = p.headers
    assert isinstance(h["str"], str) and h["str"] == HEADERS["str"]
    assert isinstance(h["bytes"], bytes) and h["bytes"] == HEADERS["bytes"]
    assert h["int-large"] == 2 ** 40 + 3
    assert h["int-large-negative"] == -(2 ** 40) - 3
    assert h["int-max64"] == 2 ** 63 - 1
    assert h["bool-true"] is True and h["bool-false"] is False
    assert isinstance(h["decimal"], decimal.Decimal)
    assert h["decimal"] == decimal.Decimal("3.14")
    assert h["decimal-negative"] == decimal.Decimal("-12.5")
    assert h["datetime"] == datetime.datetime(2024, 2, 29, 12, 34, 56)
    assert h["nested"]["b"]["d"] == [1, "two", None]
    assert h["list"] == [1, "two", b"three", True, None, {"k": "v"}, [4, 5]]
    assert h["none"] is None
    assert h["empty-table"] == {} and h["empty-list"] == []


def test_property_bytes_pass_through(ch, pub, broker, monkeypatch, encoder):
    """The encoded property list the consumer receives is byte-for-byte the one
    the publisher sent (RabbitMQ forwards it untouched)."""
    sent_raw, recv_raw = [], []
    real_encode = pika.spec.BasicProperties.encode
    real_decode = pika.spec.BasicProperties.decode

    def encode(self):
        pieces = real_encode(self)
        sent_raw.append(b"".join(pieces))
        return pieces

    def decode(self, encoded, offset=0):
        recv_raw.append(bytes(encoded[offset:]))
        return real_decode(self, encoded, offset)

    monkeypatch.setattr(pika.spec.BasicProperties, "encode", encode)
    monkeypatch.setattr(pika.spec.BasicProperties, "decode", decode)
    q = ch.queue_declare("", exclusive=True).method.queue
    sent = full_properties()
    sent.user_id = broker.username
    sent.headers = dict(
        HEADERS, float_frac=1.25, float_neg=-0.5,
        short_short=Typed(b"b", "b", -5), short_short_u=Typed(b"B", "B", 250),
        short=Typed(b"s", "h", -300), short_u=Typed(b"u", "H", 65000),
        long_u=Typed(b"i", "I", 4000000000), float32=Typed(b"f", "f", 1.5),
        in_list=[Typed(b"s", "h", 7), Typed(b"f", "f", -2.5)])
    roundtrip_get(ch, pub, q, b"raw", sent)
    assert len(sent_raw) == 1 and len(recv_raw) == 1
    assert recv_raw[0] == sent_raw[0]


def test_no_properties(ch, pub):
    q = ch.queue_declare("", exclusive=True).method.queue
    p, body = roundtrip_get(ch, pub, q, b"bare")
    assert body == b"bare"
    for field in ("content_type", "content_encoding", "headers", "delivery_mode",
                  "priority", "correlation_id", "reply_to", "expiration",
                  "message_id", "timestamp", "type", "user_id", "app_id",
                  "cluster_id"):
        assert getattr(p, field) is None, field


def test_empty_headers_table(ch, pub):
    q = ch.queue_declare("", exclusive=True).method.queue
    p, _ = roundtrip_get(ch, pub, q, b"x", pika.BasicProperties(headers={}))
    assert p.headers == {}


def test_user_id_mismatch_refused(conn, ch, broker):
    q = ch.queue_declare("", exclusive=True).method.queue
    with expect_channel_close(
            ch, PRECONDITION_FAILED,
            f"PRECONDITION_FAILED - user_id property set to 'somebody-else' but "
            f"authenticated user was '{broker.username}'",
            conn=conn):
        ch.basic_publish("", q, b"x", properties=pika.BasicProperties(
            user_id="somebody-else"))


def test_invalid_expiration_refused(conn, ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - invalid expiration 'soon'",
                              conn=conn):
        ch.basic_publish("", q, b"x", properties=pika.BasicProperties(
            expiration="soon"))


# ------------------------------------------------------------------ bodies

def body_of(size):
    # deterministic, non-repeating-ish content so misplaced chunks are caught
    block = hashlib.sha256(str(size).encode()).digest() * 32  # 1 KiB
    reps, rest = divmod(size, len(block))
    return block * reps + block[:rest]


FM = 131072  # RabbitMQ's default frame_max (negotiated with pika's default)


@pytest.mark.parametrize("size", [0, 1, 2, 100, FM - 9, FM - 8, FM - 7,
                                  2 * (FM - 8), 2 * (FM - 8) + 1, 1024 * 1024])
def test_body_sizes(ch, pub, size):
    assert ch.connection._impl.params.frame_max == FM
    q = ch.queue_declare("", exclusive=True).method.queue
    body = body_of(size)
    p, got = roundtrip_get(ch, pub, q, body)
    assert len(got) == size
    assert got == body


@pytest.mark.parametrize("size", [0, 1, 8192 - 9, 8192 - 8, 8192 - 7,
                                  3 * (8192 - 8), 3 * (8192 - 8) + 1])
def test_body_sizes_small_frame_max(connect, size):
    c = connect(frame_max=8192)
    ch = c.channel()
    pub = c.channel()
    pub.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    body = body_of(size)
    p, got = roundtrip_get(ch, pub, q, body)
    assert got == body


def test_body_delivered_to_consumer_with_small_frame_max(connect):
    c = connect(frame_max=8192)
    ch = c.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    col = Collector(ch, q, auto_ack=True)
    bodies = [body_of(n) for n in (0, 8184, 8185, 50000)]
    for b in bodies:
        ch.basic_publish("", q, b)
    eventually(lambda: len(col.messages) == len(bodies), conns=c)
    assert col.bodies == bodies


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_very_large_body(ch, pub):
    """~120 MiB: RabbitMQ 3.10's default max_message_size is 128 MiB."""
    size = 120 * 1024 * 1024 + 12345
    body = os.urandom(1024 * 1024) * 120 + os.urandom(12345)
    assert len(body) == size
    q = ch.queue_declare("", exclusive=True).method.queue
    pub.basic_publish("", q, body)
    m, p, got = ch.basic_get(q, auto_ack=True)
    assert len(got) == size
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_body_over_max_message_size(conn, ch):
    """RabbitMQ 3.10: max_message_size defaults to 128 MiB; one byte more is a
    channel error (4.x lowered the default to 16 MiB)."""
    q = ch.queue_declare("", exclusive=True).method.queue
    size = 128 * 1024 * 1024 + 1
    with expect_channel_close(
            ch, PRECONDITION_FAILED,
            f"PRECONDITION_FAILED - message size {size} is larger than configured "
            f"max size {128 * 1024 * 1024}",
            conn=conn):
        ch.basic_publish("", q, b"\x00" * size)
