"""basic.nack from the client (the cases test_basic.py does not cover) and
its interplay with dead-lettering.  Publisher nacks from the broker
(x-overflow=reject-publish) are in test_maxlength.py."""

from amqp_support import (PRECONDITION_FAILED, Collector, eventually,
                          expect_channel_close, get_all, queue_counts, wait_get)


def fill(pub, q, n, prefix=b"m"):
    for i in range(n):
        pub.basic_publish("", q, prefix + str(i).encode())


def test_nack_zero_multiple_requeues_everything(ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 3)
    for _ in range(3):
        ch.basic_get(q)
    ch.basic_nack(0, multiple=True, requeue=True)
    eventually(lambda: queue_counts(pub, q) == (3, 0), timeout=5)
    assert get_all(pub, q) == [b"m0", b"m1", b"m2"]


def test_nack_zero_multiple_with_nothing_outstanding_is_fine(conn, ch):
    ch.basic_nack(0, multiple=True, requeue=True)
    ch.exchange_declare("amq.direct", passive=True)  # channel still open
    assert ch.is_open


def test_nack_zero_single_is_unknown_tag(conn, ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 1)
    ch.basic_get(q)
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - unknown delivery tag 0",
                              conn=conn) as out:
        ch.basic_nack(0, multiple=False, requeue=True)
    assert out.reply_text == "PRECONDITION_FAILED - unknown delivery tag 0"


def test_nack_multiple_beyond_last_tag_is_unknown(conn, ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 2)
    ch.basic_get(q)
    ch.basic_get(q)
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - unknown delivery tag 99",
                              conn=conn) as out:
        ch.basic_nack(99, multiple=True, requeue=True)
    assert out.reply_text == "PRECONDITION_FAILED - unknown delivery tag 99"
    # the failed nack changed nothing: closing the channel requeues both
    eventually(lambda: queue_counts(pub, q) == (2, 0), timeout=5)


def test_nack_multiple_spans_consumers_and_queues_on_the_channel(conn, ch, pub,
                                                                 make_queue):
    q1, q2 = make_queue(), make_queue()
    a = Collector(ch, q1)
    b = Collector(ch, q2)
    pub.basic_publish("", q1, b"a0")
    eventually(lambda: a.messages, conns=conn)
    pub.basic_publish("", q2, b"b0")
    eventually(lambda: b.messages, conns=conn)
    a.cancel()
    b.cancel()
    last = max(a.messages[0][0].delivery_tag, b.messages[0][0].delivery_tag)
    ch.basic_nack(last, multiple=True, requeue=True)
    eventually(lambda: queue_counts(pub, q1)[0] == 1
               and queue_counts(pub, q2)[0] == 1, timeout=5)
    m, _, body = pub.basic_get(q1, auto_ack=True)
    assert (body, m.redelivered) == (b"a0", True)
    m, _, body = pub.basic_get(q2, auto_ack=True)
    assert (body, m.redelivered) == (b"b0", True)


def test_nack_multiple_requeue_redelivers_to_consumer_in_order(conn, ch, pub,
                                                               make_queue):
    q = make_queue()
    c = Collector(ch, q)
    fill(pub, q, 3)
    eventually(lambda: len(c.messages) == 3, conns=conn)
    ch.basic_nack(c.messages[-1][0].delivery_tag, multiple=True, requeue=True)
    eventually(lambda: len(c.messages) == 6, conns=conn)
    again = c.messages[3:]
    assert [body for _, _, body in again] == [b"m0", b"m1", b"m2"]
    assert all(m.redelivered for m, _, _ in again)
    assert [m.delivery_tag for m, _, _ in again] == [4, 5, 6]


def test_nack_zero_multiple_without_requeue_dead_letters_all(ch, pub, make_queue):
    dead = make_queue(prefix="dead")
    q = make_queue(arguments={"x-dead-letter-exchange": "",
                              "x-dead-letter-routing-key": dead})
    fill(pub, q, 3)
    for _ in range(3):
        ch.basic_get(q)
    ch.basic_nack(0, multiple=True, requeue=False)
    got = [wait_get(pub, dead) for _ in range(3)]
    assert [b for _, _, b in got] == [b"m0", b"m1", b"m2"]
    assert {p.headers["x-death"][0]["reason"] for _, p, _ in got} == {"rejected"}
    assert queue_counts(pub, q) == (0, 0)


def test_partial_nack_then_ack_rest(ch, pub, make_queue):
    dead = make_queue(prefix="dead")
    q = make_queue(arguments={"x-dead-letter-exchange": "",
                              "x-dead-letter-routing-key": dead})
    fill(pub, q, 4)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(4)]
    ch.basic_nack(tags[1], multiple=True, requeue=False)  # m0, m1 dead
    ch.basic_nack(tags[2], requeue=True)                  # m2 back
    ch.basic_ack(tags[3])                                 # m3 done
    got = [wait_get(pub, dead)[2] for _ in range(2)]
    assert got == [b"m0", b"m1"]
    eventually(lambda: queue_counts(pub, q)[0] == 1, timeout=5)
    m, _, body = pub.basic_get(q, auto_ack=True)
    assert (body, m.redelivered) == (b"m2", True)
