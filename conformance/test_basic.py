"""basic.*: qos, consume, cancel, return, get, ack / nack / reject, recover."""

import pika
import pytest
from pika import spec

from amqp_support import (ACCESS_REFUSED, NOT_ALLOWED, NOT_FOUND,
                          NOT_IMPLEMENTED, PRECONDITION_FAILED, Collector,
                          eventually, expect_channel_close,
                          expect_connection_close, queue_counts, raw_rpc,
                          raw_send, uname)


def fill(pub, q, n, prefix=b"m"):
    bodies = [prefix + str(i).encode() for i in range(n)]
    for b in bodies:
        pub.basic_publish("", q, b)
    return bodies


# ------------------------------------------------------------------ qos

def test_prefetch_count_limits_unacked_deliveries(conn, ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 5)
    ch.basic_qos(prefetch_count=2)
    c = Collector(ch, q)
    eventually(lambda: len(c.messages) == 2, conns=conn)
    # exactly 2 left the queue: 3 still ready
    assert queue_counts(pub, q) == (3, 1)
    assert len(c.messages) == 2
    assert c.bodies == [b"m0", b"m1"]
    # ack one -> exactly one more
    ch.basic_ack(c.messages[0][0].delivery_tag)
    eventually(lambda: len(c.messages) == 3, conns=conn)
    assert queue_counts(pub, q) == (2, 1)
    # ack everything so far with multiple -> two more
    ch.basic_ack(c.messages[2][0].delivery_tag, multiple=True)
    eventually(lambda: len(c.messages) == 5, conns=conn)
    assert c.bodies == [b"m0", b"m1", b"m2", b"m3", b"m4"]


def test_prefetch_is_per_consumer(conn, ch, pub, make_queue):
    q1, q2 = make_queue(), make_queue()
    fill(pub, q1, 5)
    fill(pub, q2, 5)
    ch.basic_qos(prefetch_count=2)  # global=False: applies to each new consumer
    a = Collector(ch, q1)
    b = Collector(ch, q2)
    eventually(lambda: len(a.messages) == 2 and len(b.messages) == 2, conns=conn)
    assert queue_counts(pub, q1)[0] == 3
    assert queue_counts(pub, q2)[0] == 3


def test_global_qos_is_per_channel(conn, ch, pub, make_queue):
    q1, q2 = make_queue(), make_queue()
    fill(pub, q1, 5)
    fill(pub, q2, 5)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    a = Collector(ch, q1)
    b = Collector(ch, q2)
    eventually(lambda: len(a.messages) + len(b.messages) == 3, conns=conn)
    ready = queue_counts(pub, q1)[0] + queue_counts(pub, q2)[0]
    assert ready == 7
    assert len(a.messages) + len(b.messages) == 3


def test_per_consumer_then_global_qos_both_apply(conn, ch, pub, make_queue):
    # the order RabbitMQ's consumer-prefetch guide uses: per-consumer, then global
    q1, q2 = make_queue(), make_queue()
    fill(pub, q1, 5)
    fill(pub, q2, 5)
    ch.basic_qos(prefetch_count=2, global_qos=False)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    a = Collector(ch, q1)
    eventually(lambda: len(a.messages) == 2, conns=conn)
    assert queue_counts(pub, q1)[0] == 3   # per-consumer limit 2
    b = Collector(ch, q2)
    eventually(lambda: len(b.messages) == 1, conns=conn)
    assert queue_counts(pub, q2)[0] == 4   # channel limit 3 reached
    assert len(a.messages) == 2


def test_per_consumer_qos_clears_global_limit(conn, ch, pub, make_queue):
    # RabbitMQ 3.10: basic.qos(global=false) removes a channel-wide limit set
    # earlier by basic.qos(global=true) (rabbit_limiter:unlimit_prefetch)
    q1, q2 = make_queue(), make_queue()
    fill(pub, q1, 5)
    fill(pub, q2, 5)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    ch.basic_qos(prefetch_count=2, global_qos=False)
    a = Collector(ch, q1)
    b = Collector(ch, q2)
    eventually(lambda: len(a.messages) == 2 and len(b.messages) == 2, conns=conn)
    assert queue_counts(pub, q1)[0] == 3
    assert queue_counts(pub, q2)[0] == 3


def test_prefetch_zero_is_unlimited(conn, ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 20)
    ch.basic_qos(prefetch_count=0)
    c = Collector(ch, q)
    eventually(lambda: len(c.messages) == 20, conns=conn)


def test_prefetch_does_not_apply_to_auto_ack(conn, ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 6)
    ch.basic_qos(prefetch_count=1)
    c = Collector(ch, q, auto_ack=True)
    eventually(lambda: len(c.messages) == 6, conns=conn)
    assert queue_counts(pub, q) == (0, 1)


def test_qos_prefetch_size_not_implemented(conn, ch):
    with expect_connection_close(conn, NOT_IMPLEMENTED,
                                 "NOT_IMPLEMENTED - prefetch_size!=0 (1)"):
        ch.basic_qos(prefetch_size=1)


# -------------------------------------------------------------- consume

def test_consume_server_generated_tag(conn, ch, make_queue):
    q = make_queue()
    ok = raw_rpc(conn, ch, spec.Basic.Consume(queue=q, consumer_tag=""),
                 [spec.Basic.ConsumeOk])
    assert ok.consumer_tag.startswith("amq.ctag-"), ok.consumer_tag
    assert queue_counts(ch, q)[1] == 1
    ok = raw_rpc(conn, ch, spec.Basic.Cancel(consumer_tag=ok.consumer_tag),
                 [spec.Basic.CancelOk])
    assert ok.consumer_tag.startswith("amq.ctag-")
    assert queue_counts(ch, q)[1] == 0


def test_consume_client_tag_echoed(conn, ch, pub, make_queue):
    q = make_queue()
    tag = uname("tag")
    c = Collector(ch, q, consumer_tag=tag)
    assert c.tag == tag
    pub.basic_publish("", q, b"x")
    eventually(lambda: c.messages, conns=conn)
    m = c.messages[0][0]
    assert m.consumer_tag == tag
    assert m.exchange == "" and m.routing_key == q and m.redelivered is False
    assert m.delivery_tag == 1


def test_consume_missing_queue(conn, ch, vhost):
    name = uname("missing")
    with expect_channel_close(ch, NOT_FOUND,
                              f"NOT_FOUND - no queue '{name}' in vhost '{vhost}'",
                              conn=conn):
        ch.basic_consume(name, lambda *a: None)


def test_exclusive_consumer_blocks_second_consumer(conn, ch, make_queue, vhost):
    q = make_queue()
    Collector(ch, q, exclusive=True)
    other = conn.channel()
    with expect_channel_close(
            other, ACCESS_REFUSED,
            f"ACCESS_REFUSED - queue '{q}' in vhost '{vhost}' in exclusive use",
            conn=conn):
        other.basic_consume(q, lambda *a: None)
    assert queue_counts(ch, q)[1] == 1


def test_exclusive_consume_refused_when_queue_has_consumer(conn, ch, make_queue, vhost):
    q = make_queue()
    Collector(ch, q)
    other = conn.channel()
    with expect_channel_close(
            other, ACCESS_REFUSED,
            f"ACCESS_REFUSED - queue '{q}' in vhost '{vhost}' in exclusive use",
            conn=conn):
        other.basic_consume(q, lambda *a: None, exclusive=True)


def test_reuse_consumer_tag_on_channel_is_connection_error(conn, ch, make_queue):
    q = make_queue()
    Collector(ch, q, consumer_tag="dup-tag")
    # pika refuses to send a duplicate tag itself, so send the method raw
    with expect_connection_close(conn, NOT_ALLOWED,
                                 "NOT_ALLOWED - attempt to reuse consumer tag 'dup-tag'"):
        raw_rpc(conn, ch, spec.Basic.Consume(queue=q, consumer_tag="dup-tag"),
                [spec.Basic.ConsumeOk])


def test_same_consumer_tag_on_different_channels(conn, make_queue):
    q = make_queue()
    c1, c2 = conn.channel(), conn.channel()
    Collector(c1, q, consumer_tag="same")
    Collector(c2, q, consumer_tag="same")
    assert queue_counts(c1, q)[1] == 2


def test_cancel_stops_deliveries(conn, ch, pub, make_queue):
    q = make_queue()
    c = Collector(ch, q, auto_ack=True)
    pub.basic_publish("", q, b"before")
    eventually(lambda: c.bodies == [b"before"], conns=conn)
    c.cancel()
    assert queue_counts(pub, q) == (0, 0)
    pub.basic_publish("", q, b"after")
    assert queue_counts(pub, q) == (1, 0)
    assert c.bodies == [b"before"]
    assert ch.basic_get(q, auto_ack=True)[2] == b"after"


def test_cancel_leaves_unacked_messages_unacked(conn, ch, pub, make_queue):
    q = make_queue()
    c = Collector(ch, q)
    pub.basic_publish("", q, b"pending")
    eventually(lambda: c.messages, conns=conn)
    c.cancel()
    assert queue_counts(pub, q) == (0, 0)
    # the delivery can still be acked after the cancel
    ch.basic_ack(c.messages[0][0].delivery_tag)
    ch.basic_qos(prefetch_count=0)  # sync round trip: the ack was accepted
    assert ch.is_open


def test_round_robin_between_consumers(conn, ch, pub, make_queue):
    q = make_queue()
    a = Collector(ch, q, auto_ack=True)
    b = Collector(ch, q, auto_ack=True)
    fill(pub, q, 6)
    eventually(lambda: len(a.messages) + len(b.messages) == 6, conns=conn)
    assert len(a.messages) == 3 and len(b.messages) == 3
    assert sorted(a.bodies + b.bodies) == sorted(b"m%d" % i for i in range(6))
    # strictly alternating
    assert {tuple(a.bodies), tuple(b.bodies)} == {(b"m0", b"m2", b"m4"),
                                                  (b"m1", b"m3", b"m5")}


# -------------------------------------------------------------- return

def test_mandatory_unroutable_is_returned(conn, ch, make_exchange):
    x = make_exchange("direct")
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, p, b)))
    props = pika.BasicProperties(content_type="text/plain", headers={"h": 1},
                                 message_id="mid-1")
    ch.basic_publish(x, "nowhere", b"bounce", properties=props, mandatory=True)
    eventually(lambda: returned, conns=conn, msg="no basic.return")
    m, p, body = returned[0]
    assert isinstance(m, spec.Basic.Return)
    assert m.reply_code == 312
    assert m.reply_text == "NO_ROUTE"
    assert m.exchange == x
    assert m.routing_key == "nowhere"
    assert body == b"bounce"
    assert p.content_type == "text/plain" and p.headers == {"h": 1}
    assert p.message_id == "mid-1"
    assert ch.is_open


def test_mandatory_to_default_exchange_missing_queue_is_returned(conn, ch):
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, p, b)))
    rk = uname("noqueue")
    ch.basic_publish("", rk, b"x", mandatory=True)
    eventually(lambda: returned, conns=conn)
    assert returned[0][0].reply_code == 312
    assert returned[0][0].exchange == ""
    assert returned[0][0].routing_key == rk


def test_non_mandatory_unroutable_is_dropped_silently(pub, make_exchange):
    x = make_exchange("fanout")
    # confirmed (basic.ack), not returned
    pub.basic_publish(x, "k", b"dropped", mandatory=False)
    assert pub.is_open


def test_publish_immediate_not_implemented(conn, ch):
    # pika 1.x has no 'immediate' argument: send basic.publish raw
    with expect_connection_close(conn, NOT_IMPLEMENTED,
                                 "NOT_IMPLEMENTED - immediate=true", ch=ch):
        raw_send(ch, spec.Basic.Publish(exchange="", routing_key="x",
                                        immediate=True), body=b"now")


# ------------------------------------------------------------------ get

def test_get_and_get_empty(ch, pub, make_queue):
    q = make_queue()
    assert ch.basic_get(q) == (None, None, None)  # get-empty
    fill(pub, q, 3)
    m, p, body = ch.basic_get(q, auto_ack=True)
    assert isinstance(m, spec.Basic.GetOk)
    assert body == b"m0"
    assert m.message_count == 2  # messages remaining after this one
    assert m.redelivered is False
    assert m.exchange == "" and m.routing_key == q
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert (body, m.message_count) == (b"m1", 1)
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert (body, m.message_count) == (b"m2", 0)
    assert ch.basic_get(q) == (None, None, None)


def test_get_delivery_tags_are_per_channel_and_increase(conn, pub, make_queue):
    q = make_queue()
    fill(pub, q, 4)
    c1, c2 = conn.channel(), conn.channel()
    assert c1.basic_get(q)[0].delivery_tag == 1
    assert c1.basic_get(q)[0].delivery_tag == 2
    assert c2.basic_get(q)[0].delivery_tag == 1
    assert c2.basic_get(q)[0].delivery_tag == 2


def test_get_missing_queue(conn, ch, vhost):
    name = uname("missing")
    with expect_channel_close(ch, NOT_FOUND,
                              f"NOT_FOUND - no queue '{name}' in vhost '{vhost}'",
                              conn=conn):
        ch.basic_get(name)


# ------------------------------------------------- ack / nack / reject

def test_ack_removes_message(ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 1)
    m, _, _ = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.close()
    eventually(lambda: queue_counts(pub, q) == (0, 0), timeout=5)


def test_ack_multiple(conn, ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 4)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(4)]
    assert tags == [1, 2, 3, 4]
    ch.basic_ack(3, multiple=True)  # acks 1..3
    ch.close()
    # only tag 4 was unacked, requeued on channel close
    eventually(lambda: queue_counts(pub, q) == (1, 0), timeout=5)
    m, _, body = pub.basic_get(q, auto_ack=True)
    assert body == b"m3" and m.redelivered is True


def test_ack_zero_multiple_acks_everything(ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 3)
    for _ in range(3):
        ch.basic_get(q)
    ch.basic_ack(0, multiple=True)
    ch.close()
    eventually(lambda: queue_counts(pub, q) == (0, 0), timeout=5)


def test_reject_requeue_goes_back_to_head(ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 3)
    m, _, body = ch.basic_get(q)
    assert body == b"m0"
    ch.basic_reject(m.delivery_tag, requeue=True)
    m, _, body = ch.basic_get(q)
    assert body == b"m0"
    assert m.redelivered is True
    assert m.message_count == 2


def test_requeue_restores_original_order(ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 4)
    t0 = ch.basic_get(q)[0].delivery_tag
    t1 = ch.basic_get(q)[0].delivery_tag
    t2 = ch.basic_get(q)[0].delivery_tag
    # requeue out of order: the queue puts them back in their original place
    ch.basic_nack(t2, requeue=True)
    ch.basic_nack(t0, requeue=True)
    ch.basic_reject(t1, requeue=True)
    got = [ch.basic_get(q, auto_ack=True) for _ in range(4)]
    assert [g[2] for g in got] == [b"m0", b"m1", b"m2", b"m3"]
    assert [g[0].redelivered for g in got] == [True, True, True, False]


def test_reject_without_requeue_drops(ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 2)
    m, _, _ = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    ch.close()
    eventually(lambda: queue_counts(pub, q) == (1, 0), timeout=5)
    assert pub.basic_get(q, auto_ack=True)[2] == b"m1"


def test_nack_multiple_requeue(ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 3)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[1], multiple=True, requeue=True)  # m0, m1 back
    eventually(lambda: queue_counts(ch, q) == (2, 0), timeout=5)
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"m0" and m.redelivered
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"m1" and m.redelivered
    # m2 (tag 3) is still unacked
    ch.basic_ack(tags[2])
    ch.close()
    eventually(lambda: queue_counts(pub, q) == (0, 0), timeout=5)


def test_nack_multiple_without_requeue_drops(ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 3)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[2], multiple=True, requeue=False)
    ch.close()
    eventually(lambda: queue_counts(pub, q) == (0, 0), timeout=5)


def test_nack_requeue_redelivers_to_consumer(conn, ch, pub, make_queue):
    q = make_queue()
    c = Collector(ch, q)
    pub.basic_publish("", q, b"again")
    eventually(lambda: len(c.messages) == 1, conns=conn)
    assert c.messages[0][0].redelivered is False
    ch.basic_nack(c.messages[0][0].delivery_tag, requeue=True)
    eventually(lambda: len(c.messages) == 2, conns=conn)
    m = c.messages[1][0]
    assert c.messages[1][2] == b"again"
    assert m.redelivered is True
    assert m.delivery_tag == 2  # a redelivery gets a new delivery tag


@pytest.mark.parametrize("method", ["ack", "nack", "reject"])
def test_unknown_delivery_tag(conn, ch, method):
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - unknown delivery tag 42",
                              conn=conn):
        if method == "ack":
            ch.basic_ack(42)
        elif method == "nack":
            ch.basic_nack(42)
        else:
            ch.basic_reject(42)


def test_double_ack(conn, ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 1)
    m, _, _ = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              f"PRECONDITION_FAILED - unknown delivery tag {m.delivery_tag}",
                              conn=conn):
        ch.basic_ack(m.delivery_tag)


def test_ack_of_auto_acked_delivery(conn, ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 1)
    m, _, _ = ch.basic_get(q, auto_ack=True)
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - unknown delivery tag 1",
                              conn=conn):
        ch.basic_ack(m.delivery_tag)


def test_ack_on_other_channel_is_unknown(conn, ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 1)
    m, _, _ = ch.basic_get(q)
    other = conn.channel()
    with expect_channel_close(other, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - unknown delivery tag 1",
                              conn=conn):
        other.basic_ack(m.delivery_tag)
    ch.basic_ack(m.delivery_tag)
    ch.basic_qos()
    assert queue_counts(pub, q) == (0, 0)


# ------------------------------------- unacked messages go back on close

def test_unacked_requeued_when_channel_closes(conn, ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 3)
    consumer_ch = conn.channel()
    c = Collector(consumer_ch, q)
    eventually(lambda: len(c.messages) == 3, conns=conn)
    consumer_ch.basic_ack(c.messages[1][0].delivery_tag)
    consumer_ch.close()
    eventually(lambda: queue_counts(ch, q)[0] == 2, conns=conn)
    got = [ch.basic_get(q, auto_ack=True) for _ in range(2)]
    assert [g[2] for g in got] == [b"m0", b"m2"]
    assert all(g[0].redelivered for g in got)


def test_unacked_requeued_when_connection_closes(connect, ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 2)
    other = connect()
    och = other.channel()
    och.basic_get(q)
    och.basic_get(q)
    assert queue_counts(ch, q)[0] == 0
    other.close()
    eventually(lambda: queue_counts(ch, q)[0] == 2, timeout=5)
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"m0" and m.redelivered is True


# ------------------------------------------------------------- recover

def test_recover_requeue_true(conn, ch, pub, make_queue):
    q = make_queue()
    fill(pub, q, 2)
    ch.basic_get(q)
    ch.basic_get(q)
    assert queue_counts(pub, q)[0] == 0
    ch.basic_recover(requeue=True)
    eventually(lambda: queue_counts(pub, q)[0] == 2, timeout=5)
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"m0" and m.redelivered is True


def test_recover_requeue_redelivers_to_consumer(conn, ch, pub, make_queue):
    q = make_queue()
    c = Collector(ch, q)
    fill(pub, q, 2)
    eventually(lambda: len(c.messages) == 2, conns=conn)
    ch.basic_recover(requeue=True)
    eventually(lambda: len(c.messages) == 4, conns=conn)
    assert c.bodies == [b"m0", b"m1", b"m0", b"m1"]
    assert [m[0].redelivered for m in c.messages] == [False, False, True, True]
    # the old tags are gone after a recover
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - unknown delivery tag 1",
                              conn=conn):
        ch.basic_ack(c.messages[3][0].delivery_tag)
        ch.basic_ack(c.messages[0][0].delivery_tag)


def test_recover_requeue_false_not_implemented(conn, ch):
    with expect_connection_close(conn, NOT_IMPLEMENTED,
                                 "NOT_IMPLEMENTED - requeue=false"):
        ch.basic_recover(requeue=False)


def test_channel_flow_false_not_implemented(conn, ch):
    with expect_connection_close(conn, NOT_IMPLEMENTED,
                                 "NOT_IMPLEMENTED - active=false"):
        ch.flow(False)
