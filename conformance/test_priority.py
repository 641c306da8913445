"""Priority queues (x-max-priority)."""

import pika
import pytest

from amqp_support import (PRECONDITION_FAILED, Collector, eventually,
                          expect_channel_close, queue_counts, uname)


def publish_prios(pub, q, seq):
    for prio, body in seq:
        pub.basic_publish("", q, body.encode(),
                          pika.BasicProperties(priority=prio))


def drain(ch, q):
    out = []
    while True:
        m, props, body = ch.basic_get(q, auto_ack=True)
        if m is None:
            return out
        out.append((body.decode(), props.priority))


SEQ = [(None, "n0"), (5, "a5"), (1, "b1"), (10, "c10"), (5, "d5"),
       (200, "e200"), (0, "f0"), (None, "g0"), (11, "h11"), (10, "i10")]


def test_highest_priority_first_fifo_within_priority(ch, pub, make_queue):
    q = make_queue(arguments={"x-max-priority": 10})
    publish_prios(pub, q, SEQ)
    # above max counts as max (10, FIFO with the real 10s); no priority
    # counts as 0; the priority property itself is delivered unchanged
    assert drain(ch, q) == [
        ("c10", 10), ("e200", 200), ("h11", 11), ("i10", 10),
        ("a5", 5), ("d5", 5), ("b1", 1),
        ("n0", None), ("f0", 0), ("g0", None)]


def test_consumer_gets_priority_order(conn, ch, pub, make_queue):
    q = make_queue(arguments={"x-max-priority": 5})
    publish_prios(pub, q, [(1, "low"), (None, "none"), (5, "high"), (3, "mid")])
    c = Collector(ch, q, auto_ack=True)
    eventually(lambda: len(c.messages) == 4, conns=conn)
    assert c.bodies == [b"high", b"mid", b"low", b"none"]


def test_max_priority_zero_is_fifo(ch, pub, make_queue):
    q = make_queue(arguments={"x-max-priority": 0})
    publish_prios(pub, q, SEQ)
    assert [b for b, _ in drain(ch, q)] == [b for _, b in SEQ]


def test_plain_queue_ignores_priority(ch, pub, make_queue):
    q = make_queue()
    publish_prios(pub, q, SEQ)
    assert [b for b, _ in drain(ch, q)] == [b for _, b in SEQ]


def test_requeued_message_goes_back_ahead_of_same_priority(ch, pub, make_queue):
    q = make_queue(arguments={"x-max-priority": 10})
    publish_prios(pub, q, [(1, "x1"), (5, "y5")])
    ch.basic_get(q)
    ch.basic_get(q)
    publish_prios(pub, q, [(5, "z5")])
    ch.basic_nack(0, multiple=True, requeue=True)
    eventually(lambda: queue_counts(pub, q)[0] == 3, timeout=5)
    got = []
    while True:
        m, props, body = ch.basic_get(q, auto_ack=True)
        if m is None:
            break
        got.append((body, m.redelivered))
    assert got == [(b"y5", True), (b"z5", False), (b"x1", True)]


def test_max_priority_255_is_accepted(ch, pub, make_queue):
    q = make_queue(arguments={"x-max-priority": 255})
    publish_prios(pub, q, [(1, "a"), (255, "b")])
    assert [b for b, _ in drain(ch, q)] == ["b", "a"]


@pytest.mark.parametrize("value, detail", [
    (256, "{max_value_exceeded,256}"),
    (2 ** 40, "{max_value_exceeded,1099511627776}"),
    (-1, "{value_negative,-1}"),
    ("10", '"expected integer, got longstr"'),
    (True, '"expected integer, got bool"'),
])
def test_invalid_max_priority(conn, ch, vhost, value, detail):
    q = uname("prio")
    text = (f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue "
            f"'{q}' in vhost '{vhost}': {detail}")
    with expect_channel_close(ch, PRECONDITION_FAILED, text, conn=conn) as out:
        ch.queue_declare(q, arguments={"x-max-priority": value})
    assert out.reply_text == text


@pytest.mark.parametrize("second, detail", [
    ({"x-max-priority": 5}, "received '5' but current is '10'"),
    # an invalid value on an existing queue is only compared, not validated
    ({"x-max-priority": 256}, "received '256' but current is '10'"),
    # same number, different field type: not equivalent (and the text shows
    # the same value twice)
    ({"x-max-priority": "10"}, "received '10' but current is '10'"),
    ({}, "received none but current is the value '10' of type 'signedint'"),
], ids=["other-value", "invalid-value", "string", "missing"])
def test_redeclare_with_different_max_priority(conn, ch, make_queue, vhost,
                                               second, detail):
    q = make_queue(arguments={"x-max-priority": 10})
    text = (f"PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for "
            f"queue '{q}' in vhost '{vhost}': {detail}")
    with expect_channel_close(ch, PRECONDITION_FAILED, text, conn=conn) as out:
        ch.queue_declare(q, arguments=second)
    assert out.reply_text == text


def test_redeclare_adding_max_priority(conn, ch, make_queue, vhost):
    q = make_queue()
    text = (f"PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for "
            f"queue '{q}' in vhost '{vhost}': received the value '10' of type "
            f"'signedint' but current is none")
    with expect_channel_close(ch, PRECONDITION_FAILED, text, conn=conn) as out:
        ch.queue_declare(q, arguments={"x-max-priority": 10})
    assert out.reply_text == text


def test_redeclare_same_max_priority_is_ok(ch, make_queue):
    q = make_queue(arguments={"x-max-priority": 10})
    ok = ch.queue_declare(q, arguments={"x-max-priority": 10}).method
    assert ok.queue == q
