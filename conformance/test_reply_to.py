"""Direct reply-to: the pseudo-queue amq.rabbitmq.reply-to."""

import pika
import pika.exceptions as pex
import pytest

from amqp_support import (NOT_FOUND, PRECONDITION_FAILED, Collector, eventually,
                          expect_channel_close)

REPLY_TO = "amq.rabbitmq.reply-to"
PREFIX = REPLY_TO + "."


def rpc_request(conn, make_queue, server, body=b"req", **props):
    """Requester channel consuming from amq.rabbitmq.reply-to publishes a
    request to a server queue; returns (requester channel, reply Collector,
    the request as the server got it: (method, props, body))."""
    q = make_queue(channel=server, prefix="rpc")
    req = conn.channel()
    replies = Collector(req, REPLY_TO, auto_ack=True)
    req.basic_publish("", q, body, pika.BasicProperties(reply_to=REPLY_TO,
                                                        **props))
    box = []

    def got():
        r = server.basic_get(q, auto_ack=True)
        if r[0] is not None:
            box.append(r)
        return box

    eventually(got, timeout=5, conns=conn)
    return req, replies, box[0]


def test_round_trip(connect, conn, make_queue):
    sconn = connect()
    server = sconn.channel()
    server.confirm_delivery()
    req, replies, (m, props, body) = rpc_request(conn, make_queue, server,
                                                 correlation_id="c1")
    assert body == b"req"
    assert props.correlation_id == "c1"
    # the server sees a rewritten, channel-specific reply_to
    assert props.reply_to.startswith(PREFIX)
    assert len(props.reply_to) > len(PREFIX)
    server.basic_publish("", props.reply_to, b"resp",
                         pika.BasicProperties(correlation_id="c1"))
    eventually(lambda: replies.messages, conns=conn,
               msg="the reply never reached the requester")
    rm, rprops, rbody = replies.messages[0]
    assert rbody == b"resp"
    assert rprops.correlation_id == "c1"
    assert rm.consumer_tag == replies.tag
    assert rm.exchange == ""
    assert rm.routing_key == props.reply_to
    assert rm.redelivered is False


def test_several_replies_on_one_reply_to(connect, conn, make_queue):
    server = connect().channel()
    req, replies, (m, props, body) = rpc_request(conn, make_queue, server)
    for i in range(3):
        server.basic_publish("", props.reply_to, b"r%d" % i)
    eventually(lambda: len(replies.messages) == 3, conns=conn)
    assert replies.bodies == [b"r0", b"r1", b"r2"]


def test_other_reply_to_values_are_not_rewritten(conn, ch, make_queue):
    Collector(ch, REPLY_TO, auto_ack=True)
    q = make_queue()
    for value in [REPLY_TO + ".foo", "something", REPLY_TO + "x"]:
        ch.basic_publish("", q, b"x", pika.BasicProperties(reply_to=value))
        assert ch.basic_get(q, auto_ack=True)[1].reply_to == value


def test_reply_via_other_exchange_is_not_delivered(connect, conn, make_queue):
    server = connect().channel()
    server.confirm_delivery()
    req, replies, (m, props, body) = rpc_request(conn, make_queue, server)
    # only the default exchange delivers replies; amq.direct has no binding
    with pytest.raises(pex.UnroutableError):
        server.basic_publish("amq.direct", props.reply_to, b"lost",
                             mandatory=True)
    server.basic_publish("", props.reply_to, b"marker")
    eventually(lambda: replies.messages, conns=conn)
    assert replies.bodies == [b"marker"]


def test_mandatory_reply_is_delivered_and_also_returned(connect, conn,
                                                        make_queue):
    """RabbitMQ 3.10 quirk: a mandatory reply is delivered, yet the publisher
    also gets basic.return 312 NO_ROUTE for it."""
    server = connect().channel()
    server.confirm_delivery()
    req, replies, (m, props, body) = rpc_request(conn, make_queue, server)
    with pytest.raises(pex.UnroutableError) as ei:
        server.basic_publish("", props.reply_to, b"both", mandatory=True)
    ret = ei.value.messages[0].method
    assert (ret.reply_code, ret.reply_text) == (312, "NO_ROUTE")
    assert (ret.exchange, ret.routing_key) == ("", props.reply_to)
    eventually(lambda: replies.messages, conns=conn)
    assert replies.bodies == [b"both"]


@pytest.mark.parametrize("suffix", ["", ".bogus", "."])
def test_reply_to_unknown_name_is_dropped(pub, suffix):
    pub.basic_publish("", REPLY_TO + suffix, b"x")  # acked, no error
    assert pub.is_open


def test_reply_after_requester_cancelled_is_dropped(connect, conn, make_queue):
    server = connect().channel()
    server.confirm_delivery()
    req, replies, (m, props, body) = rpc_request(conn, make_queue, server)
    replies.cancel()
    server.basic_publish("", props.reply_to, b"late")  # acked and dropped
    req.close()
    server.basic_publish("", props.reply_to, b"later")
    assert server.is_open


# ------------------------------------------------------------ errors

def test_consume_with_ack_refused(conn, ch):
    text = "PRECONDITION_FAILED - reply consumer cannot acknowledge"
    with expect_channel_close(ch, PRECONDITION_FAILED, text, conn=conn) as out:
        ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=False)
    assert out.reply_text == text


def test_consume_twice_refused(conn, ch):
    Collector(ch, REPLY_TO, auto_ack=True)
    text = "PRECONDITION_FAILED - reply consumer already set"
    with expect_channel_close(ch, PRECONDITION_FAILED, text, conn=conn) as out:
        ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    assert out.reply_text == text


def test_exclusive_consume_allowed(ch):
    tag = ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True,
                           exclusive=True)
    assert tag


def test_publish_with_reply_to_without_consumer(conn, ch, make_queue):
    q = make_queue()
    text = "PRECONDITION_FAILED - fast reply consumer does not exist"
    with expect_channel_close(ch, PRECONDITION_FAILED, text, conn=conn) as out:
        ch.basic_publish("", q, b"x", pika.BasicProperties(reply_to=REPLY_TO))
    assert out.reply_text == text


def test_publish_with_reply_to_from_another_channel(conn, ch, make_queue):
    """The reply consumer must be on the publishing channel."""
    q = make_queue()
    Collector(ch, REPLY_TO, auto_ack=True)
    other = conn.channel()
    text = "PRECONDITION_FAILED - fast reply consumer does not exist"
    with expect_channel_close(other, PRECONDITION_FAILED, text,
                              conn=conn) as out:
        other.basic_publish("", q, b"x",
                            pika.BasicProperties(reply_to=REPLY_TO))
    assert out.reply_text == text
    assert ch.is_open


def test_publish_with_reply_to_after_cancel(conn, ch, make_queue):
    q = make_queue()
    c = Collector(ch, REPLY_TO, auto_ack=True)
    c.cancel()
    text = "PRECONDITION_FAILED - fast reply consumer does not exist"
    with expect_channel_close(ch, PRECONDITION_FAILED, text, conn=conn) as out:
        ch.basic_publish("", q, b"x", pika.BasicProperties(reply_to=REPLY_TO))
    assert out.reply_text == text


# ------------------------------------------------------------ the pseudo-queue

@pytest.mark.parametrize("kwargs", [
    {"passive": True}, {}, {"durable": True}, {"exclusive": True},
], ids=["passive", "plain", "durable", "exclusive"])
def test_declare_reply_to_succeeds(ch, kwargs):
    """Even without a reply consumer: a fixed declare-ok."""
    ok = ch.queue_declare(REPLY_TO, **kwargs).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (REPLY_TO, 0, 1)


def test_passive_declare_of_issued_reply_name(connect, conn, make_queue):
    server = connect().channel()
    req, replies, (m, props, body) = rpc_request(conn, make_queue, server)
    ok = server.queue_declare(props.reply_to, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (
        props.reply_to, 0, 1)


def test_passive_declare_of_bogus_reply_name(conn, ch, vhost):
    name = REPLY_TO + ".foo"
    text = f"NOT_FOUND - no queue '{name}' in vhost '{vhost}'"
    with expect_channel_close(ch, NOT_FOUND, text, conn=conn) as out:
        ch.queue_declare(name, passive=True)
    assert out.reply_text == text


def test_delete_reply_to_is_a_no_op(ch):
    assert ch.queue_delete(REPLY_TO).method.message_count == 0
    assert ch.queue_declare(REPLY_TO, passive=True).method.queue == REPLY_TO


@pytest.mark.parametrize("op", ["bind", "purge", "get"])
def test_reply_to_is_not_a_real_queue(conn, ch, vhost, op):
    text = f"NOT_FOUND - no queue '{REPLY_TO}' in vhost '{vhost}'"
    with expect_channel_close(ch, NOT_FOUND, text, conn=conn) as out:
        if op == "bind":
            ch.queue_bind(REPLY_TO, "amq.direct", "k")
        elif op == "purge":
            ch.queue_purge(REPLY_TO)
        else:
            ch.basic_get(REPLY_TO)
    assert out.reply_text == text


def test_reply_to_is_not_an_exchange(conn, ch, vhost):
    text = f"NOT_FOUND - no exchange '{REPLY_TO}' in vhost '{vhost}'"
    with expect_channel_close(ch, NOT_FOUND, text, conn=conn):
        ch.exchange_declare(REPLY_TO, passive=True)
