"""Consumer priorities (the x-priority consume argument) and single active
consumer (x-single-active-consumer).  The basic.cancel notification when a
queue is deleted is in test_queues.py."""

import pytest

from amqp_support import (PRECONDITION_FAILED, Collector, eventually,
                          expect_channel_close, queue_counts)


def fill(pub, q, n, start=0):
    for i in range(start, start + n):
        pub.basic_publish("", q, b"m%d" % i)


# ------------------------------------------------------------ consumer priority

def test_higher_priority_consumer_gets_messages_while_it_has_credit(
        conn, pub, make_queue):
    q = make_queue()
    lo_ch, hi_ch = conn.channel(), conn.channel()
    lo_ch.basic_qos(prefetch_count=10)
    hi_ch.basic_qos(prefetch_count=2)
    lo = Collector(lo_ch, q, arguments={"x-priority": 1})
    hi = Collector(hi_ch, q, arguments={"x-priority": 5})
    fill(pub, q, 5)
    eventually(lambda: len(lo.messages) + len(hi.messages) == 5, conns=conn)
    # hi takes what its prefetch allows, lo only gets the rest
    assert hi.bodies == [b"m0", b"m1"]
    assert lo.bodies == [b"m2", b"m3", b"m4"]
    # once hi has credit again it is preferred again
    hi_ch.basic_ack(hi.messages[0][0].delivery_tag)
    fill(pub, q, 2, start=5)
    eventually(lambda: len(lo.messages) + len(hi.messages) == 7, conns=conn)
    assert hi.bodies == [b"m0", b"m1", b"m5"]
    assert lo.bodies == [b"m2", b"m3", b"m4", b"m6"]


def test_equal_priorities_round_robin_and_lower_starves(conn, pub, make_queue):
    q = make_queue()
    low = Collector(conn.channel(), q, auto_ack=True,
                    arguments={"x-priority": -1})
    default = Collector(conn.channel(), q, auto_ack=True)  # priority 0
    zero = Collector(conn.channel(), q, auto_ack=True,
                     arguments={"x-priority": 0})
    fill(pub, q, 4)
    eventually(lambda: len(default.messages) + len(zero.messages) == 4,
               conns=conn)
    assert default.bodies == [b"m0", b"m2"]
    assert zero.bodies == [b"m1", b"m3"]
    assert low.messages == []


@pytest.mark.parametrize("value", [2 ** 40, -5])
def test_consumer_priority_any_integer_accepted(ch, make_queue, value):
    q = make_queue()
    Collector(ch, q, arguments={"x-priority": value})
    assert queue_counts(ch, q) == (0, 1)


@pytest.mark.parametrize("value, got", [("a", "longstr"), (True, "bool")])
def test_consumer_priority_wrong_type(conn, ch, make_queue, vhost, value, got):
    q = make_queue()
    text = (f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{q}' "
            f"in vhost '{vhost}': \"expected integer, got {got}\"")
    with expect_channel_close(ch, PRECONDITION_FAILED, text, conn=conn) as out:
        ch.basic_consume(q, lambda *a: None, arguments={"x-priority": value})
    assert out.reply_text == text


def test_consumer_unknown_argument_ignored(ch, make_queue):
    q = make_queue()
    Collector(ch, q, arguments={"x-no-such-thing": "a"})
    assert queue_counts(ch, q) == (0, 1)


# ------------------------------------------------------------ single active consumer

def sac_queue(make_queue):
    return make_queue(arguments={"x-single-active-consumer": True})


def test_sac_only_first_consumer_receives(conn, pub, make_queue):
    q = sac_queue(make_queue)
    a = Collector(conn.channel(), q, auto_ack=True)
    b = Collector(conn.channel(), q, auto_ack=True)
    fill(pub, q, 4)
    eventually(lambda: len(a.messages) == 4, conns=conn)
    assert b.messages == []
    # declare-ok counts every consumer, active or not
    assert queue_counts(pub, q) == (0, 2)


def test_sac_next_consumer_takes_over_after_cancel(conn, pub, make_queue):
    q = sac_queue(make_queue)
    a_ch = conn.channel()
    a_ch.basic_qos(prefetch_count=1)
    a = Collector(a_ch, q)
    b = Collector(conn.channel(), q)
    c = Collector(conn.channel(), q)
    fill(pub, q, 4)
    eventually(lambda: len(a.messages) == 1, conns=conn)
    a_ch.basic_ack(a.messages[0][0].delivery_tag)
    a.cancel()
    # b (the next in consume order) becomes active and gets the rest
    eventually(lambda: len(b.messages) == 3, conns=conn)
    assert a.bodies == [b"m0"]
    assert b.bodies == [b"m1", b"m2", b"m3"]
    assert c.messages == []
    assert queue_counts(pub, q) == (0, 2)


def test_sac_unacked_messages_go_to_next_consumer_when_channel_closes(
        conn, pub, make_queue):
    q = sac_queue(make_queue)
    a_ch = conn.channel()
    a_ch.basic_qos(prefetch_count=1)
    a = Collector(a_ch, q)
    b = Collector(conn.channel(), q)
    fill(pub, q, 3)
    eventually(lambda: len(a.messages) == 1, conns=conn)
    a_ch.close()  # m0 requeued; b becomes active
    eventually(lambda: len(b.messages) == 3, conns=conn)
    assert [(m.redelivered, body) for m, _, body in b.messages] == [
        (True, b"m0"), (False, b"m1"), (False, b"m2")]


def test_sac_later_higher_priority_consumer_does_not_take_over(conn, pub,
                                                               make_queue):
    """In 3.10, x-priority does not change which consumer of a
    single-active-consumer queue is active."""
    q = sac_queue(make_queue)
    a = Collector(conn.channel(), q, auto_ack=True)
    b = Collector(conn.channel(), q, auto_ack=True,
                  arguments={"x-priority": 10})
    fill(pub, q, 3)
    eventually(lambda: len(a.messages) == 3, conns=conn)
    assert b.messages == []


def test_sac_basic_get_is_allowed(ch, pub, make_queue):
    """basic.get on a single-active-consumer (classic) queue works in 3.10,
    with or without consumers."""
    q = sac_queue(make_queue)
    fill(pub, q, 2)
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"m0" and m.message_count == 1
    Collector(pub, q)  # an active consumer takes m1
    eventually(lambda: queue_counts(ch, q) == (0, 1), timeout=5)
    assert ch.basic_get(q, auto_ack=True)[0] is None


def test_sac_false_is_round_robin(conn, pub, make_queue):
    q = make_queue(arguments={"x-single-active-consumer": False})
    a = Collector(conn.channel(), q, auto_ack=True)
    b = Collector(conn.channel(), q, auto_ack=True)
    fill(pub, q, 4)
    eventually(lambda: len(a.messages) + len(b.messages) == 4, conns=conn)
    assert a.bodies == [b"m0", b"m2"]
    assert b.bodies == [b"m1", b"m3"]


def test_sac_exclusive_consume_refused_when_consumers_exist(conn, ch, make_queue,
                                                            vhost):
    q = sac_queue(make_queue)
    Collector(conn.channel(), q)
    text = f"ACCESS_REFUSED - queue '{q}' in vhost '{vhost}' in exclusive use"
    with expect_channel_close(ch, 403, text, conn=conn) as out:
        ch.basic_consume(q, lambda *a: None, exclusive=True)
    assert out.reply_text == text
