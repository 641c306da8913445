"""exchange.declare / delete / bind / unbind, reserved names, internal exchanges."""

import pika
import pika.exceptions as pex
import pytest

from amqp_support import (ACCESS_REFUSED, COMMAND_INVALID, NOT_FOUND,
                          PRECONDITION_FAILED, eventually, exchange_exists,
                          expect_channel_close, expect_connection_close, uname)


@pytest.mark.parametrize("xtype", ["direct", "fanout", "topic", "headers"])
def test_declare_each_type(ch, cleanup, xtype):
    name = cleanup.exchange(uname(xtype))
    ok = ch.exchange_declare(name, exchange_type=xtype)
    assert isinstance(ok.method, pika.spec.Exchange.DeclareOk)
    # passive declare of an existing exchange succeeds
    ch.exchange_declare(name, passive=True)
    # redeclare with identical properties succeeds
    ch.exchange_declare(name, exchange_type=xtype)


def test_declare_durable_auto_delete_internal(ch, cleanup):
    name = cleanup.exchange(uname("flags"))
    ch.exchange_declare(name, "topic", durable=True, auto_delete=False, internal=True)
    ch.exchange_declare(name, "topic", durable=True, auto_delete=False, internal=True)
    ch.exchange_declare(name, passive=True)


def test_passive_declare_missing_exchange(conn, ch, vhost):
    name = uname("missing")
    with expect_channel_close(ch, NOT_FOUND,
                              f"NOT_FOUND - no exchange '{name}' in vhost '{vhost}'",
                              conn=conn):
        ch.exchange_declare(name, passive=True)


def test_passive_declare_ignores_type_and_flags(ch, make_exchange):
    name = make_exchange("direct")
    ch.exchange_declare(name, exchange_type="fanout", passive=True, durable=True)


@pytest.mark.parametrize("field,first,second,received,current", [
    ("type", dict(exchange_type="direct"), dict(exchange_type="fanout"), "fanout", "direct"),
    ("durable", dict(durable=False), dict(durable=True), "true", "false"),
    ("auto_delete", dict(auto_delete=False), dict(auto_delete=True), "true", "false"),
    ("internal", dict(internal=False), dict(internal=True), "true", "false"),
])
def test_redeclare_inequivalent(conn, ch, cleanup, vhost, field, first, second,
                                received, current):
    name = cleanup.exchange(uname("ineq"))
    ch.exchange_declare(name, **first)
    with expect_channel_close(
            ch, PRECONDITION_FAILED,
            f"PRECONDITION_FAILED - inequivalent arg '{field}' for exchange "
            f"'{name}' in vhost '{vhost}': received '{received}' but current is "
            f"'{current}'",
            conn=conn):
        ch.exchange_declare(name, **second)


def test_redeclare_with_other_arguments_is_ok(ch, make_exchange):
    # only alternate-exchange is compared among the arguments
    name = make_exchange("direct", arguments={"x-foo": "bar"})
    ch.exchange_declare(name, "direct", arguments={"x-foo": "baz", "other": 1})
    ch.exchange_declare(name, "direct")


def test_redeclare_with_different_alternate_exchange(conn, ch, make_exchange, vhost):
    name = make_exchange("direct", arguments={"alternate-exchange": "ae1"})
    with expect_channel_close(
            ch, PRECONDITION_FAILED,
            f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for "
            f"exchange '{name}' in vhost '{vhost}': received 'ae2' but current is 'ae1'",
            conn=conn):
        ch.exchange_declare(name, "direct", arguments={"alternate-exchange": "ae2"})


def test_unknown_exchange_type_closes_connection(conn, ch):
    # RabbitMQ 3.10: a hard error 503 (later versions use 406 channel error)
    with expect_connection_close(conn, COMMAND_INVALID,
                                 "COMMAND_INVALID - unknown exchange type 'no-such-type'"):
        ch.exchange_declare(uname("badtype"), exchange_type="no-such-type")


def test_delete_if_unused_on_bound_exchange(conn, ch, make_exchange, vhost):
    x = make_exchange("direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, routing_key="k")
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              f"PRECONDITION_FAILED - exchange '{x}' in vhost '{vhost}' in use",
                              conn=conn):
        ch.exchange_delete(x, if_unused=True)
    ch2 = conn.channel()
    ch2.exchange_declare(x, passive=True)  # still there
    ch2.queue_unbind(q, x, routing_key="k")
    ch2.exchange_delete(x, if_unused=True)  # now unused
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch2.exchange_declare(x, passive=True)
    assert ei.value.reply_code == NOT_FOUND


def test_delete_if_unused_on_unbound_exchange(ch, make_exchange):
    x = make_exchange("fanout")
    ch.exchange_delete(x, if_unused=True)


def test_delete_exchange_removes_its_bindings(ch, pub, make_exchange):
    x = make_exchange("fanout")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x)
    ch.exchange_delete(x)
    ch.exchange_declare(x, "fanout")
    with pytest.raises(pex.UnroutableError):
        pub.basic_publish(x, "", b"x", mandatory=True)


def test_delete_missing_exchange_succeeds(ch):
    ok = ch.exchange_delete(uname("missing"))
    assert isinstance(ok.method, pika.spec.Exchange.DeleteOk)


@pytest.mark.parametrize("name", ["amq.direct", "amq.fanout", "amq.topic",
                                  "amq.headers", "amq.match"])
def test_predeclared_exchanges_exist(ch, name):
    ch.exchange_declare(name, passive=True)


@pytest.mark.parametrize("name,xtype", [("amq.direct", "direct"),
                                        ("amq.fanout", "fanout"),
                                        ("amq.topic", "topic"),
                                        ("amq.headers", "headers"),
                                        ("amq.match", "headers")])
def test_predeclared_exchanges_redeclare_equivalent(ch, name, xtype):
    # An equivalent (durable, same type) redeclare of an existing amq.* exchange
    # is allowed; the reserved-prefix check only applies to creating one.
    ch.exchange_declare(name, exchange_type=xtype, durable=True)


def test_predeclared_exchange_redeclare_inequivalent(conn, ch, vhost):
    with expect_channel_close(
            ch, PRECONDITION_FAILED,
            f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange "
            f"'amq.direct' in vhost '{vhost}': received 'fanout' but current is 'direct'",
            conn=conn):
        ch.exchange_declare("amq.direct", exchange_type="fanout", durable=True)


def test_declare_reserved_amq_prefix_refused(conn, ch):
    name = "amq." + uname("mine")
    with expect_channel_close(
            ch, ACCESS_REFUSED,
            f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'",
            conn=conn):
        ch.exchange_declare(name, "direct")


def test_passive_declare_missing_amq_exchange_is_not_found(conn, ch, vhost):
    name = "amq." + uname("mine")
    with expect_channel_close(ch, NOT_FOUND,
                              f"NOT_FOUND - no exchange '{name}' in vhost '{vhost}'",
                              conn=conn):
        ch.exchange_declare(name, passive=True)


def test_delete_predeclared_exchange_refused(conn, ch, vhost):
    with expect_channel_close(
            ch, ACCESS_REFUSED,
            f"ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '{vhost}' not allowed",
            conn=conn):
        ch.exchange_delete("amq.direct")
    conn.channel().exchange_declare("amq.direct", passive=True)


DEFAULT_EXCHANGE_TEXT = "ACCESS_REFUSED - operation not permitted on the default exchange"


def test_default_exchange_cannot_be_declared(conn, ch):
    with expect_channel_close(ch, ACCESS_REFUSED, DEFAULT_EXCHANGE_TEXT, conn=conn):
        ch.exchange_declare("", "direct")


def test_default_exchange_passive_declare(conn, ch):
    with expect_channel_close(ch, ACCESS_REFUSED, DEFAULT_EXCHANGE_TEXT, conn=conn):
        ch.exchange_declare("", passive=True)


def test_default_exchange_cannot_be_deleted(conn, ch):
    with expect_channel_close(ch, ACCESS_REFUSED, DEFAULT_EXCHANGE_TEXT, conn=conn):
        ch.exchange_delete("")


def test_default_exchange_cannot_be_bound(conn, ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    with expect_channel_close(ch, ACCESS_REFUSED, DEFAULT_EXCHANGE_TEXT, conn=conn):
        ch.queue_bind(q, "", routing_key="anything")


def test_default_exchange_cannot_be_unbound(conn, ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    with expect_channel_close(ch, ACCESS_REFUSED, DEFAULT_EXCHANGE_TEXT, conn=conn):
        ch.queue_unbind(q, "", routing_key=q)


def test_default_exchange_not_in_exchange_bindings(conn, ch, make_exchange):
    x = make_exchange("fanout")
    with expect_channel_close(ch, ACCESS_REFUSED, DEFAULT_EXCHANGE_TEXT, conn=conn):
        ch.exchange_bind(destination=x, source="", routing_key="k")


def test_default_exchange_routes_by_queue_name(ch, pub):
    q = ch.queue_declare("", exclusive=True).method.queue
    pub.basic_publish("", q, b"direct-to-queue")
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"direct-to-queue"
    assert m.exchange == "" and m.routing_key == q


def test_publish_to_missing_exchange(conn, ch, vhost):
    name = uname("missing")
    with expect_channel_close(ch, NOT_FOUND,
                              f"NOT_FOUND - no exchange '{name}' in vhost '{vhost}'",
                              conn=conn):
        ch.basic_publish(name, "rk", b"lost")


def test_publish_to_internal_exchange_refused(conn, ch, make_exchange, vhost):
    x = make_exchange("fanout", internal=True)
    with expect_channel_close(
            ch, ACCESS_REFUSED,
            f"ACCESS_REFUSED - cannot publish to internal exchange '{x}' in vhost '{vhost}'",
            conn=conn):
        ch.basic_publish(x, "", b"nope")


def test_internal_exchange_reachable_through_exchange_binding(ch, pub, make_exchange):
    inner = make_exchange("fanout", internal=True)
    outer = make_exchange("direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, inner)
    ch.exchange_bind(destination=inner, source=outer, routing_key="k")
    pub.basic_publish(outer, "k", b"via-e2e", mandatory=True)
    assert ch.basic_get(q, auto_ack=True)[2] == b"via-e2e"


def test_exchange_to_exchange_bind_unbind(ch, pub, make_exchange):
    src = make_exchange("topic")
    dst = make_exchange("fanout")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, dst)
    ok = ch.exchange_bind(destination=dst, source=src, routing_key="a.*")
    assert isinstance(ok.method, pika.spec.Exchange.BindOk)
    pub.basic_publish(src, "a.b", b"1", mandatory=True)
    with pytest.raises(pex.UnroutableError):
        pub.basic_publish(src, "x.y", b"2", mandatory=True)
    assert ch.basic_get(q, auto_ack=True)[2] == b"1"
    ok = ch.exchange_unbind(destination=dst, source=src, routing_key="a.*")
    assert isinstance(ok.method, pika.spec.Exchange.UnbindOk)
    with pytest.raises(pex.UnroutableError):
        pub.basic_publish(src, "a.b", b"3", mandatory=True)


def test_exchange_bind_missing_source(conn, ch, make_exchange, vhost):
    dst = make_exchange("fanout")
    name = uname("missing")
    with expect_channel_close(ch, NOT_FOUND,
                              f"NOT_FOUND - no exchange '{name}' in vhost '{vhost}'",
                              conn=conn):
        ch.exchange_bind(destination=dst, source=name, routing_key="")


def test_exchange_binding_cycle_delivers_once(ch, pub, make_exchange):
    a = make_exchange("fanout")
    b = make_exchange("fanout")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.exchange_bind(destination=b, source=a)
    ch.exchange_bind(destination=a, source=b)
    ch.queue_bind(q, a)
    ch.queue_bind(q, b)
    pub.basic_publish(a, "", b"loop", mandatory=True)
    assert ch.basic_get(q, auto_ack=True)[2] == b"loop"
    assert ch.basic_get(q, auto_ack=True)[0] is None


def test_auto_delete_exchange_goes_when_last_binding_removed(conn, ch, cleanup):
    x = cleanup.exchange(uname("ad"))
    ch.exchange_declare(x, "direct", auto_delete=True)
    # an auto-delete exchange that never had a binding stays
    ch.exchange_declare(x, passive=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, "a")
    ch.queue_bind(q, x, "b")
    ch.queue_unbind(q, x, "a")
    ch.exchange_declare(x, passive=True)
    ch.queue_unbind(q, x, "b")
    eventually(lambda: not exchange_exists(conn, x), timeout=5,
               msg="auto-delete exchange not deleted after its last binding went")


def test_alternate_exchange_receives_unroutable(ch, pub, make_exchange):
    ae = make_exchange("fanout")
    x = make_exchange("direct", arguments={"alternate-exchange": ae})
    q_main = ch.queue_declare("", exclusive=True).method.queue
    q_alt = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_main, x, "known")
    ch.queue_bind(q_alt, ae)
    pub.basic_publish(x, "known", b"routed", mandatory=True)
    # routed via the alternate exchange: counts as routed, no basic.return
    pub.basic_publish(x, "unknown", b"to-ae", mandatory=True)
    assert ch.basic_get(q_main, auto_ack=True)[2] == b"routed"
    m, _, body = ch.basic_get(q_alt, auto_ack=True)
    assert body == b"to-ae"
    assert m.exchange == x and m.routing_key == "unknown"
