"""Alternate exchanges and exchange-to-exchange bindings: the cases
test_exchanges.py does not cover (chains, cycles, missing or unroutable
alternates, alternates of exchanges reached through e2e bindings)."""

import pika.exceptions as pex
import pytest

from amqp_support import (NOT_FOUND, PRECONDITION_FAILED, expect_channel_close,
                          uname)


def returned(pub, x, rk):
    with pytest.raises(pex.UnroutableError) as ei:
        pub.basic_publish(x, rk, b"x", mandatory=True)
    ret = ei.value.messages[0].method
    assert (ret.reply_code, ret.reply_text) == (312, "NO_ROUTE")


def test_missing_alternate_exchange_is_unroutable(pub, make_exchange):
    x = make_exchange("direct", arguments={"alternate-exchange": uname("gone")})
    returned(pub, x, "k")


def test_alternate_exchange_without_route_is_unroutable(pub, make_exchange):
    ae = make_exchange("direct")  # no bindings
    x = make_exchange("direct", arguments={"alternate-exchange": ae})
    returned(pub, x, "k")


def test_alternate_exchange_chain(ch, pub, make_exchange):
    ae2 = make_exchange("fanout")
    ae1 = make_exchange("direct", arguments={"alternate-exchange": ae2})
    x = make_exchange("direct", arguments={"alternate-exchange": ae1})
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, ae2)
    pub.basic_publish(x, "k", b"chained", mandatory=True)
    m, _, body = ch.basic_get(q, auto_ack=True)
    # the delivery names the exchange the message was published to
    assert (body, m.exchange, m.routing_key) == (b"chained", x, "k")


def test_alternate_exchange_cycle_is_unroutable(ch, pub, cleanup):
    a, b = cleanup.exchange(uname("ae.a")), cleanup.exchange(uname("ae.b"))
    ch.exchange_declare(a, "direct", arguments={"alternate-exchange": b})
    ch.exchange_declare(b, "direct", arguments={"alternate-exchange": a})
    returned(pub, a, "k")
    # ... and routes once something in the cycle matches
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, b, "k")
    pub.basic_publish(a, "k", b"x", mandatory=True)
    assert ch.basic_get(q, auto_ack=True)[0].exchange == a
    assert ch.basic_get(q, auto_ack=True)[0] is None


def test_exchange_as_its_own_alternate(ch, pub, cleanup):
    x = cleanup.exchange(uname("ae.self"))
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": x})
    returned(pub, x, "k")


def test_internal_exchange_as_alternate(ch, pub, make_exchange):
    ae = make_exchange("fanout", internal=True)
    x = make_exchange("direct", arguments={"alternate-exchange": ae})
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, ae)
    pub.basic_publish(x, "k", b"x", mandatory=True)
    assert ch.basic_get(q, auto_ack=True)[2] == b"x"


def test_alternate_of_destination_exchange_used_through_e2e(ch, pub,
                                                            make_exchange):
    """An exchange reached through an exchange binding that routes nowhere
    hands the message to *its* alternate exchange."""
    ae = make_exchange("fanout")
    dst = make_exchange("direct", arguments={"alternate-exchange": ae})
    src = make_exchange("fanout")
    ch.exchange_bind(destination=dst, source=src)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, ae)
    pub.basic_publish(src, "k", b"x", mandatory=True)
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert (body, m.exchange) == (b"x", src)


def test_alternate_exchange_wrong_type(conn, ch, vhost):
    x = uname("ae.bad")
    text = (f"PRECONDITION_FAILED - invalid type 'signedint' for arg "
            f"'alternate-exchange' in exchange '{x}' in vhost '{vhost}'")
    with expect_channel_close(ch, PRECONDITION_FAILED, text, conn=conn) as out:
        ch.exchange_declare(x, "direct", arguments={"alternate-exchange": 5})
    assert out.reply_text == text


def test_exchange_bind_missing_destination(conn, ch, make_exchange, vhost):
    src = make_exchange("fanout")
    name = uname("missing")
    text = f"NOT_FOUND - no exchange '{name}' in vhost '{vhost}'"
    with expect_channel_close(ch, NOT_FOUND, text, conn=conn) as out:
        ch.exchange_bind(destination=name, source=src)
    assert out.reply_text == text


def test_exchange_unbind_missing_destination_or_binding_is_ok(ch, make_exchange):
    src = make_exchange("fanout")
    dst = make_exchange("direct")
    ch.exchange_unbind(destination=uname("missing"), source=src)
    ch.exchange_unbind(destination=dst, source=src, routing_key="never-bound")
