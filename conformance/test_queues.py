"""queue.declare / bind / unbind / purge / delete, exclusivity, auto-delete."""

import pika
import pika.exceptions as pex
import pytest

from amqp_support import (ACCESS_REFUSED, NOT_FOUND, PRECONDITION_FAILED,
                          RESOURCE_LOCKED, Collector, eventually,
                          expect_channel_close, queue_counts, queue_exists,
                          uname)


def locked_text(q, vhost):
    return (f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue "
            f"'{q}' in vhost '{vhost}'. It could be originally declared on another "
            f"connection or the exclusive property value does not match that of "
            f"the original declaration.")


def test_server_named_queue(ch):
    ok = ch.queue_declare("", exclusive=True).method
    assert isinstance(ok, pika.spec.Queue.DeclareOk)
    assert ok.queue.startswith("amq.gen-"), ok.queue
    assert len(ok.queue) > len("amq.gen-")
    assert ok.message_count == 0 and ok.consumer_count == 0
    # each server-named queue is distinct
    assert ch.queue_declare("", exclusive=True).method.queue != ok.queue


def test_declare_ok_counts(conn, ch, pub, make_queue):
    q = make_queue()
    ok = ch.queue_declare(q).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 0, 0)
    for i in range(3):
        pub.basic_publish("", q, b"m%d" % i)
    ok = ch.queue_declare(q).method
    assert (ok.message_count, ok.consumer_count) == (3, 0)
    # two consumers with prefetch 1 take one message each; unacked messages
    # are not counted in message_count
    other = conn.channel()
    other.basic_qos(prefetch_count=1)
    c1 = Collector(other, q)
    c2 = Collector(other, q)
    eventually(lambda: len(c1.messages) + len(c2.messages) == 2, conns=conn)
    assert queue_counts(ch, q) == (1, 2)
    c1.cancel()
    assert queue_counts(ch, q) == (1, 1)


def test_declare_ok_message_count_ready_only(ch, pub, make_queue):
    q = make_queue()
    for i in range(5):
        pub.basic_publish("", q, b"m%d" % i)
    assert queue_counts(ch, q) == (5, 0)
    ch.basic_get(q, auto_ack=False)  # one unacked
    ok = ch.queue_declare(q).method
    assert ok.message_count == 4
    assert ok.consumer_count == 0


def test_passive_declare_missing_queue(conn, ch, vhost):
    name = uname("missing")
    with expect_channel_close(ch, NOT_FOUND,
                              f"NOT_FOUND - no queue '{name}' in vhost '{vhost}'",
                              conn=conn):
        ch.queue_declare(name, passive=True)


def test_passive_declare_ignores_flags(ch, make_queue):
    q = make_queue(durable=False)
    ok = ch.queue_declare(q, passive=True, durable=True, auto_delete=True).method
    assert ok.queue == q


@pytest.mark.parametrize("field,first,second,received,current", [
    ("durable", dict(durable=False), dict(durable=True), "true", "false"),
    ("durable", dict(durable=True), dict(durable=False), "false", "true"),
    ("auto_delete", dict(auto_delete=False), dict(auto_delete=True), "true", "false"),
])
def test_redeclare_inequivalent_flags(conn, ch, make_queue, vhost, field, first,
                                      second, received, current):
    q = make_queue(**first)
    with expect_channel_close(
            ch, PRECONDITION_FAILED,
            f"PRECONDITION_FAILED - inequivalent arg '{field}' for queue '{q}' in "
            f"vhost '{vhost}': received '{received}' but current is '{current}'",
            conn=conn):
        ch.queue_declare(q, **second)


def test_redeclare_inequivalent_x_argument(conn, ch, make_queue, vhost):
    q = make_queue(arguments={"x-message-ttl": 60000})
    # an equivalent redeclare is fine
    ch.queue_declare(q, arguments={"x-message-ttl": 60000})
    with expect_channel_close(
            ch, PRECONDITION_FAILED,
            f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue "
            f"'{q}' in vhost '{vhost}': received '1000' but current is '60000'",
            conn=conn):
        ch.queue_declare(q, arguments={"x-message-ttl": 1000})


def test_redeclare_unknown_x_argument_ignored(ch, make_queue):
    q = make_queue(arguments={"x-whatever": "a"})
    ch.queue_declare(q, arguments={"x-whatever": "b"})
    ch.queue_declare(q)


def test_redeclare_exclusive_mismatch_is_locked(conn, ch, make_queue, vhost):
    q = make_queue()
    with expect_channel_close(ch, RESOURCE_LOCKED, locked_text(q, vhost), conn=conn):
        ch.queue_declare(q, exclusive=True)


def test_declare_reserved_amq_prefix_refused(conn, ch, vhost):
    name = "amq." + uname("mine")
    with expect_channel_close(
            ch, ACCESS_REFUSED,
            f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'",
            conn=conn):
        ch.queue_declare(name)


def test_passive_declare_missing_amq_queue_not_found(conn, ch, vhost):
    name = "amq.gen-" + uname("none")
    with expect_channel_close(ch, NOT_FOUND,
                              f"NOT_FOUND - no queue '{name}' in vhost '{vhost}'",
                              conn=conn):
        ch.queue_declare(name, passive=True)


@pytest.mark.parametrize("operation", [
    "declare", "passive_declare", "consume", "get", "purge", "delete", "bind",
    "publish_ok"])
def test_exclusive_queue_from_another_connection(connect, cleanup, vhost, operation):
    owner = connect()
    och = owner.channel()
    q = cleanup.queue(uname("excl"))
    och.queue_declare(q, exclusive=True)

    other = connect()
    ch2 = other.channel()
    if operation == "publish_ok":
        # publishing to an exclusive queue from another connection is allowed
        ch2.confirm_delivery()
        ch2.basic_publish("", q, b"from-other", mandatory=True)
        assert och.basic_get(q, auto_ack=True)[2] == b"from-other"
        return
    actions = {
        "declare": lambda: ch2.queue_declare(q, exclusive=True),
        "passive_declare": lambda: ch2.queue_declare(q, passive=True),
        "consume": lambda: ch2.basic_consume(q, lambda *a: None),
        "get": lambda: ch2.basic_get(q),
        "purge": lambda: ch2.queue_purge(q),
        "delete": lambda: ch2.queue_delete(q),
        "bind": lambda: ch2.queue_bind(q, "amq.direct", routing_key="k"),
    }
    with expect_channel_close(ch2, RESOURCE_LOCKED, locked_text(q, vhost), conn=other):
        actions[operation]()
    # the owner is unaffected
    assert queue_counts(och, q) == (0, 0)


def test_exclusive_queue_deleted_when_connection_closes(connect, conn):
    owner = connect()
    q = owner.channel().queue_declare(uname("excl"), exclusive=True).method.queue
    owner.close()

    eventually(lambda: not queue_exists(conn, q), timeout=5,
               msg="exclusive queue not deleted when its connection closed")


def test_exclusive_queue_survives_channel_close(conn, ch):
    c1 = conn.channel()
    q = c1.queue_declare("", exclusive=True).method.queue
    c1.close()
    # exclusivity is per connection: still there, usable from another channel
    ch.queue_declare(q, passive=True)
    ch.basic_publish("", q, b"x")
    assert ch.basic_get(q, auto_ack=True)[2] == b"x"


def test_auto_delete_queue_deleted_after_last_consumer_cancels(conn, ch, cleanup):
    q = cleanup.queue(uname("ad"))
    ch.queue_declare(q, auto_delete=True)
    # never consumed: stays
    ch.queue_declare(q, passive=True)
    c1 = Collector(ch, q)
    c2 = Collector(ch, q)
    c1.cancel()
    ch.queue_declare(q, passive=True)  # one consumer left: still there
    c2.cancel()

    eventually(lambda: not queue_exists(conn, q), timeout=5,
               msg="auto-delete queue not deleted")


def test_auto_delete_queue_deleted_when_consumer_channel_closes(conn, ch, cleanup):
    q = cleanup.queue(uname("ad"))
    ch.queue_declare(q, auto_delete=True)
    other = conn.channel()
    Collector(other, q)
    other.close()

    eventually(lambda: not queue_exists(conn, q), timeout=5,
               msg="auto-delete queue not deleted")


def test_bind_and_unbind(ch, pub, make_exchange):
    x = make_exchange("direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ok = ch.queue_bind(q, x, routing_key="k")
    assert isinstance(ok.method, pika.spec.Queue.BindOk)
    ch.queue_bind(q, x, routing_key="k")  # binding twice is idempotent
    pub.basic_publish(x, "k", b"1", mandatory=True)
    assert ch.basic_get(q, auto_ack=True)[2] == b"1"
    assert ch.basic_get(q, auto_ack=True)[0] is None
    ok = ch.queue_unbind(q, x, routing_key="k")
    assert isinstance(ok.method, pika.spec.Queue.UnbindOk)
    with pytest.raises(pex.UnroutableError):
        pub.basic_publish(x, "k", b"2", mandatory=True)


def test_binding_arguments_are_part_of_binding_identity(ch, pub, make_exchange):
    x = make_exchange("direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, routing_key="k", arguments={"tag": "a"})
    ch.queue_bind(q, x, routing_key="k")
    pub.basic_publish(x, "k", b"one-copy", mandatory=True)
    assert ch.basic_get(q, auto_ack=True)[2] == b"one-copy"
    assert ch.basic_get(q, auto_ack=True)[0] is None
    # unbinding with different arguments removes nothing (and is not an error)
    ch.queue_unbind(q, x, routing_key="k", arguments={"tag": "zzz"})
    ch.queue_unbind(q, x, routing_key="k", arguments={"tag": "a"})
    pub.basic_publish(x, "k", b"still-bound", mandatory=True)
    assert ch.basic_get(q, auto_ack=True)[2] == b"still-bound"
    ch.queue_unbind(q, x, routing_key="k")
    with pytest.raises(pex.UnroutableError):
        pub.basic_publish(x, "k", b"gone", mandatory=True)


def test_unbind_missing_binding_succeeds(ch, make_exchange):
    x = make_exchange("direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ok = ch.queue_unbind(q, x, routing_key="never-bound")
    assert isinstance(ok.method, pika.spec.Queue.UnbindOk)


def test_bind_to_missing_exchange(conn, ch, vhost):
    q = ch.queue_declare("", exclusive=True).method.queue
    name = uname("missing")
    with expect_channel_close(ch, NOT_FOUND,
                              f"NOT_FOUND - no exchange '{name}' in vhost '{vhost}'",
                              conn=conn):
        ch.queue_bind(q, name, routing_key="k")


def test_bind_missing_queue(conn, ch, vhost):
    name = uname("missing")
    with expect_channel_close(ch, NOT_FOUND,
                              f"NOT_FOUND - no queue '{name}' in vhost '{vhost}'",
                              conn=conn):
        ch.queue_bind(name, "amq.direct", routing_key="k")


def test_purge_returns_count(ch, pub, make_queue):
    q = make_queue()
    for i in range(4):
        pub.basic_publish("", q, b"m")
    ch.basic_get(q, auto_ack=False)  # one unacked: not purged, not counted
    ok = ch.queue_purge(q).method
    assert isinstance(ok, pika.spec.Queue.PurgeOk)
    assert ok.message_count == 3
    assert queue_counts(ch, q)[0] == 0
    assert ch.queue_purge(q).method.message_count == 0


def test_purge_missing_queue(conn, ch, vhost):
    name = uname("missing")
    with expect_channel_close(ch, NOT_FOUND,
                              f"NOT_FOUND - no queue '{name}' in vhost '{vhost}'",
                              conn=conn):
        ch.queue_purge(name)


def test_delete_returns_message_count(ch, pub, make_queue):
    q = make_queue()
    for i in range(3):
        pub.basic_publish("", q, b"m")
    ok = ch.queue_delete(q).method
    assert isinstance(ok, pika.spec.Queue.DeleteOk)
    assert ok.message_count == 3


def test_delete_counts_only_ready_messages(conn, ch, pub, make_queue):
    q = make_queue()
    for i in range(3):
        pub.basic_publish("", q, b"m")
    getter = conn.channel()
    getter.basic_get(q, auto_ack=False)
    assert ch.queue_delete(q).method.message_count == 2


def test_delete_if_unused_with_consumer(conn, ch, make_queue, vhost):
    q = make_queue()
    other = conn.channel()
    Collector(other, q)
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              f"PRECONDITION_FAILED - queue '{q}' in vhost '{vhost}' in use",
                              conn=conn):
        ch.queue_delete(q, if_unused=True)
    c2 = conn.channel()
    assert queue_counts(c2, q) == (0, 1)


def test_delete_if_empty_with_messages(conn, ch, pub, make_queue, vhost):
    q = make_queue()
    pub.basic_publish("", q, b"m")
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              f"PRECONDITION_FAILED - queue '{q}' in vhost '{vhost}' not empty",
                              conn=conn):
        ch.queue_delete(q, if_empty=True)
    c2 = conn.channel()
    assert queue_counts(c2, q) == (1, 0)


def test_delete_if_unused_and_if_empty_on_idle_empty_queue(ch, make_queue):
    q = make_queue()
    ok = ch.queue_delete(q, if_unused=True, if_empty=True).method
    assert ok.message_count == 0


def test_delete_missing_queue_succeeds(ch):
    ok = ch.queue_delete(uname("missing")).method
    assert isinstance(ok, pika.spec.Queue.DeleteOk)
    assert ok.message_count == 0


def test_delete_queue_with_consumer_notifies_consumer(conn, ch, make_queue):
    q = make_queue()
    other = conn.channel()
    cancelled = []
    other.add_on_cancel_callback(lambda frame: cancelled.append(frame.method))
    c = Collector(other, q)
    ch.queue_delete(q)
    eventually(lambda: cancelled, conns=conn,
               msg="no basic.cancel after deleting the consumed queue")
    assert cancelled[0].consumer_tag == c.tag
    assert other.is_open


def test_empty_queue_name_means_last_declared_queue(ch, pub, make_exchange):
    x = make_exchange("direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind("", x, routing_key="k")  # '' = the channel's last declared queue
    pub.basic_publish(x, "k", b"via-last", mandatory=True)
    assert queue_counts(ch, q) == (1, 0)
    m, _, body = ch.basic_get("", auto_ack=True)
    assert body == b"via-last" and m.routing_key == "k"
    assert ch.queue_purge("").method.message_count == 0


def test_empty_queue_name_without_previous_declare(conn, ch):
    with expect_channel_close(ch, NOT_FOUND,
                              "NOT_FOUND - no previously declared queue",
                              conn=conn):
        ch.queue_bind("", "amq.direct", routing_key="k")
