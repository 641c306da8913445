"""Message TTL (x-message-ttl, the expiration property) and queue TTL
(x-expires).  Dead-lettering of expired messages is in test_dlx.py.

Time has to pass in these tests, so TTLs are short (50-300 ms) and every wait
is on an observable effect (eventually).  Where a test needs "at least T ms
have passed" without any other effect to wait for, it uses a *sentinel*: a
message with the same TTL in a separate queue that dead-letters it to a
witness queue; once the witness holds it, the TTL has elapsed.
"""

import pika
import pytest

from amqp_support import (NOT_FOUND, PRECONDITION_FAILED, Collector,
                          eventually, expect_channel_close, queue_counts,
                          queue_routable, uname)


def start_sentinel(ch, pub, make_queue, ttl_ms):
    """Publish a sentinel message that shows up in the returned witness queue
    no earlier than ``ttl_ms`` after this call."""
    witness = make_queue(prefix="witness")
    clock = make_queue(prefix="clock", arguments={
        "x-message-ttl": ttl_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": witness,
    })
    pub.basic_publish("", clock, b"tick")
    return witness


def wait_sentinel(ch, witness):
    eventually(lambda: queue_counts(ch, witness)[0] == 1, timeout=5,
               msg="sentinel never dead-lettered")


# ----------------------------------------------------- per-queue message TTL

def test_queue_ttl_expired_message_is_not_returned_by_get(ch, pub, make_queue):
    q = make_queue(arguments={"x-message-ttl": 50})
    pub.basic_publish("", q, b"short-lived")
    eventually(lambda: queue_counts(ch, q) == (0, 0), timeout=5,
               msg="message with x-message-ttl=50 never expired")
    assert ch.basic_get(q, auto_ack=True)[0] is None


def test_queue_ttl_consumer_attached_later_gets_nothing(conn, ch, pub, make_queue):
    q = make_queue(arguments={"x-message-ttl": 100})
    pub.basic_publish("", q, b"expired")
    eventually(lambda: queue_counts(ch, q)[0] == 0, timeout=5)
    c = Collector(ch, q, auto_ack=True)
    # a fresh message reaches the waiting consumer at once (before its TTL);
    # the expired one, which was ahead of it, is never delivered
    pub.basic_publish("", q, b"fresh")
    eventually(lambda: c.messages, conns=conn)
    assert c.bodies == [b"fresh"]


def test_queue_ttl_zero_without_consumer_discards(ch, pub, make_queue):
    q = make_queue(arguments={"x-message-ttl": 0})
    pub.basic_publish("", q, b"now-or-never")
    eventually(lambda: queue_counts(ch, q) == (0, 0), timeout=5)
    assert ch.basic_get(q, auto_ack=True)[0] is None


@pytest.mark.parametrize("auto_ack", [True, False])
def test_queue_ttl_zero_delivers_to_waiting_consumer(connect, pub, make_queue,
                                                     auto_ack):
    q = make_queue(arguments={"x-message-ttl": 0})
    cconn = connect()
    c = Collector(cconn.channel(), q, auto_ack=auto_ack)
    pub.basic_publish("", q, b"caught")
    eventually(lambda: c.messages, conns=cconn,
               msg="TTL 0 message not delivered to the waiting consumer")
    assert c.bodies == [b"caught"]


def test_queue_ttl_zero_expires_when_consumer_has_no_credit(conn, ch, pub,
                                                            make_queue):
    q = make_queue(arguments={"x-message-ttl": 0})
    ch.basic_qos(prefetch_count=1)
    c = Collector(ch, q)
    for i in range(3):
        pub.basic_publish("", q, b"p%d" % i)
    eventually(lambda: len(c.messages) == 1, conns=conn)
    # p1 and p2 could not be delivered immediately (prefetch full): expired
    assert queue_counts(pub, q) == (0, 1)
    ch.basic_ack(c.messages[0][0].delivery_tag)
    pub.basic_publish("", q, b"after-ack")
    eventually(lambda: len(c.messages) == 2, conns=conn)
    assert c.bodies == [b"p0", b"after-ack"]


# ----------------------------------------------------- per-message TTL

def test_per_message_ttl_expires(ch, pub, make_queue):
    q = make_queue()
    pub.basic_publish("", q, b"short", pika.BasicProperties(expiration="50"))
    pub.basic_publish("", q, b"long", pika.BasicProperties(expiration="600000"))
    eventually(lambda: queue_counts(ch, q)[0] == 1, timeout=5,
               msg="message with expiration=50 never expired")
    m, props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"long"
    assert props.expiration == "600000"  # the property is delivered unchanged


def test_per_message_ttl_zero(connect, ch, pub, make_queue):
    q = make_queue()
    pub.basic_publish("", q, b"gone", pika.BasicProperties(expiration="0"))
    eventually(lambda: queue_counts(ch, q) == (0, 0), timeout=5)
    assert ch.basic_get(q, auto_ack=True)[0] is None
    # ... but a waiting consumer gets it
    cconn = connect()
    c = Collector(cconn.channel(), q)
    pub.basic_publish("", q, b"caught", pika.BasicProperties(expiration="0"))
    eventually(lambda: c.messages, conns=cconn)
    assert c.bodies == [b"caught"]
    assert c.messages[0][1].expiration == "0"


@pytest.mark.parametrize("queue_ttl, expiration", [
    (600000, "50"),   # the message's TTL is lower
    (50, "600000"),   # the queue's TTL is lower
], ids=["message-lower", "queue-lower"])
def test_lower_of_queue_and_message_ttl_applies(ch, pub, make_queue, queue_ttl,
                                                expiration):
    q = make_queue(arguments={"x-message-ttl": queue_ttl})
    pub.basic_publish("", q, b"x", pika.BasicProperties(expiration=expiration))
    eventually(lambda: queue_counts(ch, q)[0] == 0, timeout=5,
               msg="the lower TTL was not applied")
    assert ch.basic_get(q, auto_ack=True)[0] is None


def test_queue_ttl_does_not_set_expiration_property(ch, pub, make_queue):
    q = make_queue(arguments={"x-message-ttl": 600000})
    pub.basic_publish("", q, b"x")
    props = ch.basic_get(q, auto_ack=True)[1]
    assert props.expiration is None


def test_expired_message_behind_live_head_stays_until_it_reaches_head(
        ch, pub, make_queue):
    """RabbitMQ only expires messages at the head of a classic queue: an
    expired message behind one that has not expired still counts (and is
    dropped when it reaches the head)."""
    q = make_queue()
    pub.basic_publish("", q, b"head")  # no TTL
    pub.basic_publish("", q, b"behind", pika.BasicProperties(expiration="50"))
    witness = start_sentinel(ch, pub, make_queue, 50)
    wait_sentinel(ch, witness)  # 'behind' has passed its TTL by now
    assert queue_counts(ch, q)[0] == 2
    assert ch.basic_get(q, auto_ack=True)[2] == b"head"
    eventually(lambda: queue_counts(ch, q)[0] == 0, timeout=5)
    assert ch.basic_get(q, auto_ack=True)[0] is None


def test_requeued_message_keeps_its_original_expiry(ch, pub, make_queue):
    q = make_queue(arguments={"x-message-ttl": 300})
    pub.basic_publish("", q, b"x")
    m = ch.basic_get(q)[0]
    assert m is not None
    witness = start_sentinel(ch, pub, make_queue, 300)
    wait_sentinel(ch, witness)  # the message's TTL has passed while unacked
    ch.basic_nack(m.delivery_tag, requeue=True)
    eventually(lambda: queue_counts(ch, q)[0] == 0, timeout=5,
               msg="a requeued message got a new TTL")
    assert ch.basic_get(q, auto_ack=True)[0] is None


@pytest.mark.parametrize("expiration, detail", [
    ("-1", "{value_negative,-1}"),
    ("1.5", '{leftover_string,".5"}'),
    ("1e3", '{leftover_string,"e3"}'),
    ("", "no_integer"),
    (" 5", "no_integer"),
    ("315360000001", "{value_too_large,315360000001}"),
])
def test_invalid_expiration_property(conn, ch, expiration, detail):
    q = ch.queue_declare("", exclusive=True).method.queue
    with expect_channel_close(
            ch, PRECONDITION_FAILED,
            f"PRECONDITION_FAILED - invalid expiration '{expiration}': {detail}",
            conn=conn) as out:
        ch.basic_publish("", q, b"x", pika.BasicProperties(expiration=expiration))
    assert out.reply_text == (
        f"PRECONDITION_FAILED - invalid expiration '{expiration}': {detail}")


@pytest.mark.parametrize("expiration", ["0", "00", "+5", "315360000000"])
def test_valid_expiration_edge_values(ch, pub, make_queue, expiration):
    q = make_queue()
    pub.basic_publish("", q, b"x", pika.BasicProperties(expiration=expiration))
    assert pub.is_open


# ----------------------------------------------------- queue TTL (x-expires)

def test_unused_queue_expires(conn, ch, pub, cleanup, vhost):
    q = cleanup.queue(uname("expires"))
    ch.queue_declare(q, arguments={"x-expires": 100})
    # poll with a mandatory publish: a passive declare would renew the lease
    eventually(lambda: not queue_routable(pub, q), timeout=5,
               msg="queue with x-expires=100 was not deleted")
    with expect_channel_close(ch, NOT_FOUND,
                              f"NOT_FOUND - no queue '{q}' in vhost '{vhost}'",
                              conn=conn):
        ch.queue_declare(q, passive=True)


def test_queue_with_consumer_does_not_expire(conn, ch, pub, cleanup):
    busy = cleanup.queue(uname("expires.busy"))
    idle = cleanup.queue(uname("expires.idle"))
    ch.queue_declare(busy, arguments={"x-expires": 100})
    cons = conn.channel()
    tag = cons.basic_consume(busy, lambda *a: None)
    ch.queue_declare(idle, arguments={"x-expires": 100})  # declared later
    eventually(lambda: not queue_routable(pub, idle), timeout=5)
    # 'busy' is older than 'idle' but has a consumer: still there
    assert queue_routable(pub, busy)
    cons.basic_cancel(tag)
    # without its consumer it expires
    eventually(lambda: not queue_routable(pub, busy), timeout=5,
               msg="queue did not expire after its consumer cancelled")


def test_passive_declare_renews_queue_lease(conn, ch, pub, cleanup):
    """A passive queue.declare counts as using the queue (it resets the
    x-expires timer), like a redeclare or a basic.get."""
    polled = cleanup.queue(uname("expires.polled"))
    idle = cleanup.queue(uname("expires.idle"))
    ch.queue_declare(polled, arguments={"x-expires": 300})
    ch.queue_declare(idle, arguments={"x-expires": 300})  # declared later

    def idle_gone():
        ch.queue_declare(polled, passive=True)
        return not queue_routable(pub, idle)

    eventually(idle_gone, timeout=5)
    assert queue_routable(pub, polled)
    eventually(lambda: not queue_routable(pub, polled), timeout=5)
