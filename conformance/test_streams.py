"""Streams over AMQP 0-9-1 (x-queue-type=stream): declare rules, non-destructive
consumers with x-stream-offset, credit from acks, and what RabbitMQ refuses.

Every case runs against RabbitMQ 3.10 (streams exist since 3.9) except the filtering
cases (x-stream-filter, RabbitMQ 3.13), which run only against a broker that reports
itself as Warren and say so when skipped.
"""

import datetime
import time

import pika
import pika.exceptions as pex
import pytest

from amqp_support import (NOT_IMPLEMENTED, PRECONDITION_FAILED, eventually,
                          expect_channel_close, expect_connection_close, uname)

STREAM = {"x-queue-type": "stream"}


@pytest.fixture
def make_stream(ch, cleanup):
    """Factory: declare a uniquely named stream (deleted after the test)."""

    def _make(arguments=None, channel=None):
        name = uname("stream")
        (channel or ch).queue_declare(name, durable=True,
                                      arguments={**STREAM, **(arguments or {})})
        return cleanup.queue(name)

    return _make


def publish(conn, q, bodies, headers=None):
    """Publishes each body with confirms (one at a time, as pika's
    BlockingChannel does), so each message is a chunk of its own on RabbitMQ."""
    pub = conn.channel()
    pub.confirm_delivery()
    for i, b in enumerate(bodies):
        h = dict(headers(i) if callable(headers) else (headers or {}))
        pub.basic_publish("", q, b, pika.BasicProperties(headers=h or None))
    pub.close()


def read(conn, q, n, offset=None, prefetch=100, ack=True, extra=None, timeout=5.0):
    """Consumes ``n`` deliveries from stream ``q`` on a new channel; returns
    [(delivery_tag, redelivered, body, headers)]."""
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got = []
    args = dict(extra or {})
    if offset is not None:
        args["x-stream-offset"] = offset

    def on(c, m, p, b):
        got.append((m.delivery_tag, m.redelivered, b, p.headers))
        if ack:
            c.basic_ack(m.delivery_tag)

    tag = ch.basic_consume(q, on, arguments=args)
    eventually(lambda: len(got) >= n, timeout=timeout, conns=conn,
               msg=f"{n} deliveries from {q} (got {len(got)})")
    ch.basic_cancel(tag)
    ch.close()
    return got


def vhost_name(broker):
    return broker.vhost


def qname(q, broker):
    return f"queue '{q}' in vhost '{broker.vhost}'"


# --- declare -------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,prop", [
    ({"durable": False}, "non-durable"),
    ({"durable": True, "exclusive": True}, "exclusive-owner"),
    ({"durable": True, "auto_delete": True}, "auto-delete"),
])
def test_stream_properties_are_refused(conn, broker, kwargs, prop):
    ch = conn.channel()
    q = uname("stream")
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              f"PRECONDITION_FAILED - invalid property '{prop}' for "
                              f"queue '{q}' in vhost '{broker.vhost}'", conn=conn):
        ch.queue_declare(q, arguments=STREAM, **kwargs)


def test_server_named_stream_is_refused(conn):
    ch = conn.channel()
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - Cannot declare a server-named "
                              "queue for type rabbit_stream_queue", conn=conn):
        ch.queue_declare("", durable=True, arguments=STREAM)


@pytest.mark.parametrize("arg,value", [
    ("x-message-ttl", 1000),
    ("x-max-length", 10),
    ("x-max-priority", 5),
    ("x-dead-letter-exchange", "dlx"),
    ("x-overflow", "reject-publish"),
    ("x-single-active-consumer", True),
    ("x-expires", 1000),
])
def test_classic_arguments_are_invalid_for_streams(conn, broker, arg, value):
    ch = conn.channel()
    q = uname("stream")
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              f"PRECONDITION_FAILED - invalid arg '{arg}' for queue "
                              f"'{q}' in vhost '{broker.vhost}' of queue type "
                              f"rabbit_stream_queue", conn=conn):
        ch.queue_declare(q, durable=True, arguments={**STREAM, arg: value})


@pytest.mark.parametrize("arg,value,reason", [
    ("x-max-age", "10X", "invalid arg 'x-max-age' for queue '{q}' in vhost '{v}': "
                         "invalid_max_age"),
    ("x-max-age", 10, "invalid arg 'x-max-age' for queue '{q}' in vhost '{v}': "
                      "{{unacceptable_type,signedint}}"),
    ("x-stream-max-segment-size-bytes", 4000000000,
     "Exceeded max value for x-stream-max-segment-size-bytes"),
])
def test_bad_stream_arguments(conn, broker, arg, value, reason):
    ch = conn.channel()
    q = uname("stream")
    text = "PRECONDITION_FAILED - " + reason.format(q=q, v=broker.vhost)
    with expect_channel_close(ch, PRECONDITION_FAILED, text, conn=conn):
        ch.queue_declare(q, durable=True, arguments={**STREAM, arg: value})


def test_stream_arguments_are_accepted_and_checked_on_redeclare(conn, broker, make_stream):
    args = {"x-max-age": "7D", "x-max-length-bytes": 10_000_000,
            "x-stream-max-segment-size-bytes": 1_000_000, "x-initial-cluster-size": 1}
    q = make_stream(args)
    ch = conn.channel()
    ok = ch.queue_declare(q, durable=True, arguments={**STREAM, **args}).method
    assert (ok.queue, ok.consumer_count) == (q, 0)
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              f"PRECONDITION_FAILED - inequivalent arg "
                              f"'x-max-length-bytes' for queue '{q}' in vhost "
                              f"'{broker.vhost}': received none but current is the "
                              f"value '10000000' of type 'signedint'", conn=conn):
        ch.queue_declare(q, durable=True)


# --- consuming -----------------------------------------------------------------

def test_offsets_first_next_absolute_and_interval(conn, make_stream):
    q = make_stream()
    publish(conn, q, [b"m%d" % i for i in range(5)], headers={"i": 1})
    first = read(conn, q, 5, "first")
    assert [b for _, _, b, _ in first] == [b"m%d" % i for i in range(5)]
    # Every delivery carries its offset (a long) and keeps its own headers.
    assert [h["x-stream-offset"] for _, _, _, h in first] == [0, 1, 2, 3, 4]
    assert all(h["i"] == 1 for _, _, _, h in first)
    # Delivery tags are the channel's, never redelivered.
    assert [(t, r) for t, r, _, _ in first] == [(i + 1, False) for i in range(5)]
    assert [b for _, _, b, _ in read(conn, q, 3, 2)] == [b"m2", b"m3", b"m4"]
    assert [b for _, _, b, _ in read(conn, q, 5, 0)] == [b"m%d" % i for i in range(5)]
    # A negative offset starts at the first message.
    assert [b for _, _, b, _ in read(conn, q, 5, -1)] == [b"m%d" % i for i in range(5)]
    assert [b for _, _, b, _ in read(conn, q, 5, "1h")] == [b"m%d" % i for i in range(5)]
    an_hour_ago = datetime.datetime.utcfromtimestamp(time.time() - 3600)
    assert len(read(conn, q, 5, an_hour_ago)) == 5


def test_last_starts_at_the_last_chunk_and_next_waits(conn, make_stream):
    q = make_stream()
    # Confirmed one at a time: each message is a chunk of its own.
    publish(conn, q, [b"a", b"b", b"c"])
    assert [b for _, _, b, _ in read(conn, q, 1, "last")] == [b"c"]
    # "next" (and no offset at all) start after the last message.
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), arguments={"x-stream-offset": "next"})
    ch2 = conn.channel()
    ch2.basic_qos(prefetch_count=10)
    got2 = []
    ch2.basic_consume(q, lambda c, m, p, b: got2.append(b))
    publish(conn, q, [b"d"])
    eventually(lambda: got == [b"d"] and got2 == [b"d"], conns=conn,
               msg=f"only the new message: {got} {got2}")


def test_an_offset_past_the_end_waits_for_that_offset(conn, make_stream):
    q = make_stream()
    publish(conn, q, [b"a"])
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), arguments={"x-stream-offset": 3})
    # Offsets 1 and 2 are not delivered: the consumer starts at 3 once it exists.
    publish(conn, q, [b"b", b"c", b"d"])
    eventually(lambda: got, conns=conn, msg="a delivery")
    assert got == [b"d"]


def test_consumers_read_independently_and_acks_free_credit(conn, make_stream):
    q = make_stream()
    publish(conn, q, [b"m%d" % i for i in range(6)])
    # Credit 2 and no acks: two deliveries, then nothing.
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2)
    held = []
    ch.basic_consume(q, lambda c, m, p, b: held.append(m.delivery_tag),
                     arguments={"x-stream-offset": "first"})
    eventually(lambda: len(held) == 2, conns=conn)
    # Another consumer still reads everything from the start.
    assert len(read(conn, q, 6, "first")) == 6
    assert len(held) == 2
    # Acking frees credit: the held consumer reads on.
    ch.basic_ack(held[-1], multiple=True)
    eventually(lambda: len(held) == 4, conns=conn, msg=f"held {held}")
    # Nothing was removed: the stream still has all six.
    assert len(read(conn, q, 6, "first")) == 6


def test_basic_get_is_not_implemented(conn, broker, make_stream):
    q = make_stream()
    ch = conn.channel()
    with expect_connection_close(conn, NOT_IMPLEMENTED,
                                 f"NOT_IMPLEMENTED - basic.get not supported by stream "
                                 f"queues {qname(q, broker)}"):
        ch.basic_get(q)


def test_purge_is_not_implemented(conn, broker, make_stream):
    q = make_stream()
    ch = conn.channel()
    with expect_connection_close(conn, NOT_IMPLEMENTED,
                                 f"NOT_IMPLEMENTED - queue.purge not supported by stream "
                                 f"queues {qname(q, broker)}"):
        ch.queue_purge(q)


def test_consume_needs_a_prefetch(conn, broker, make_stream):
    q = make_stream()
    ch = conn.channel()
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              f"PRECONDITION_FAILED - consumer prefetch count is not set "
                              f"for '{qname(q, broker)}'", conn=conn):
        ch.basic_consume(q, lambda *a: None)


def test_consume_without_acks_is_not_implemented(conn, broker, make_stream):
    q = make_stream()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    with expect_connection_close(conn, NOT_IMPLEMENTED,
                                 f"NOT_IMPLEMENTED - automatic acknowledgement not "
                                 f"supported by stream queues {qname(q, broker)}"):
        ch.basic_consume(q, lambda *a: None, auto_ack=True)


def test_global_qos_is_not_implemented(conn, broker, make_stream):
    q = make_stream()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    ch.basic_qos(prefetch_count=10, global_qos=True)
    with expect_connection_close(conn, NOT_IMPLEMENTED,
                                 f"NOT_IMPLEMENTED - {qname(q, broker)} does not support "
                                 f"global qos"):
        ch.basic_consume(q, lambda *a: None)


@pytest.mark.parametrize("requeue", [True, False])
@pytest.mark.parametrize("method", ["nack", "reject"])
def test_nack_and_reject_are_not_implemented(conn, broker, make_stream, method, requeue):
    q = make_stream()
    publish(conn, q, [b"x"])
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    tags = []
    ch.basic_consume(q, lambda c, m, p, b: tags.append(m.delivery_tag),
                     arguments={"x-stream-offset": "first"})
    eventually(lambda: tags, conns=conn)
    with expect_connection_close(conn, NOT_IMPLEMENTED,
                                 f"NOT_IMPLEMENTED - basic.nack and basic.reject not "
                                 f"supported by stream queues {qname(q, broker)}", ch=ch):
        if method == "nack":
            ch.basic_nack(tags[0], requeue=requeue)
        else:
            ch.basic_reject(tags[0], requeue=requeue)


def test_delete_a_stream(conn, make_stream):
    q = make_stream()
    publish(conn, q, [b"a", b"b"])
    ch = conn.channel()
    assert ch.queue_delete(q).method.message_count == 0
    with expect_channel_close(ch, 404):
        ch.queue_declare(q, passive=True)


# --- filtering (RabbitMQ 3.13; Warren only here) --------------------------------------

def is_warren(conn):
    props = conn._impl.server_properties or {}
    product = props.get("product", b"")
    product = product.decode() if isinstance(product, bytes) else str(product)
    return "warren" in product.lower()


def test_filtering_skips_chunks_without_the_wanted_values(conn, make_stream):
    if not is_warren(conn):
        pytest.skip("stream filtering needs RabbitMQ 3.13; this suite's RabbitMQ is 3.10")
    q = make_stream({"x-stream-filter-size-bytes": 32})
    # One value per chunk (confirmed one at a time).
    values = ["red", "blue", "red", "green", None]
    publish(conn, q, [b"%d" % i for i in range(len(values))],
            headers=lambda i: {"x-stream-filter-value": values[i]} if values[i] else {})
    got = read(conn, q, 2, "first", extra={"x-stream-filter": "red"})
    assert [b for _, _, b, _ in got] == [b"0", b"2"]
    got = read(conn, q, 3, "first",
               extra={"x-stream-filter": ["blue", "green"], "x-stream-match-unfiltered": True})
    assert [b for _, _, b, _ in got] == [b"1", b"3", b"4"]


def test_bad_filter_size_is_refused(conn):
    if not is_warren(conn):
        pytest.skip("x-stream-filter-size-bytes needs RabbitMQ 3.13")
    ch = conn.channel()
    q = uname("stream")
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - Invalid value for "
                              "x-stream-filter-size-bytes", conn=conn):
        ch.queue_declare(q, durable=True,
                         arguments={**STREAM, "x-stream-filter-size-bytes": 300})
