"""Replies that must be identical to RabbitMQ 3.10's, found with other people's client
test suites and a raw-frame comparison (Warren issue #9). Each expectation was measured
on the Debian RabbitMQ 3.10.8; the raw cases use raw_amqp.RawConnection because client
libraries will not send these frames."""

import decimal
import socket
import struct

import pika
import pika.exceptions as pex
import pytest

from amqp_support import NOT_FOUND, PRECONDITION_FAILED, expect_channel_close, uname
from raw_amqp import (FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, PROTOCOL_HEADER,
                      RawConnection, frame, longstr, method, shortstr, start_ok,
                      table, tune_ok)


@pytest.fixture
def raw(broker):
    conns = []

    def _open(stop_before=None, **kw):
        c = RawConnection(broker.host, broker.port, timeout=10)
        conns.append(c)
        c.handshake(broker.username, broker.password, broker.vhost,
                    stop_before=stop_before, **kw)
        return c

    yield _open
    for c in conns:
        c.close()


def open_channel(c, n=1):
    c.send(method(n, 20, 10, shortstr("")))
    ch, cl, m, _ = c.read_method()
    assert (ch, cl, m) == (n, 20, 11)


def publish_frames(ch, exchange, key, body=b"x", properties=b"\x00\x00"):
    out = method(ch, 60, 40, b"\x00\x00" + shortstr(exchange) + shortstr(key) + b"\x00")
    out += frame(FRAME_HEADER, ch, struct.pack(">HHQ", 60, 0, len(body)) + properties)
    out += frame(FRAME_BODY, ch, body)
    return out


def close_args(args):
    code = struct.unpack(">H", args[:2])[0]
    n = args[2]
    text = args[3:3 + n].decode()
    cid, mid = struct.unpack(">HH", args[3 + n:7 + n])
    return code, text, cid, mid


def acks_then_close(c, ch):
    """basic.ack delivery tags seen before channel.close on ``ch``, and the close."""
    acks = []
    while True:
        n, cl, m, args = c.read_method()
        if n != ch:
            continue
        if (cl, m) == (60, 80):
            tag, multiple = struct.unpack(">QB", args[:9])
            acks.append((tag, bool(multiple & 1)))
        elif (cl, m) == (20, 40):
            c.send(method(ch, 20, 41))
            return acks, close_args(args)
        else:
            raise AssertionError(f"unexpected method {cl}.{m} on channel {ch}")


# --- publisher confirms -------------------------------------------------------

def test_publish_to_a_missing_exchange_is_never_confirmed(raw, make_queue):
    """RabbitMQ answers only channel.close 404, never basic.ack (rabbitpy's suite)."""
    q = make_queue()
    c = raw()
    open_channel(c)
    c.send(method(1, 85, 10, b"\x00"))  # confirm.select
    assert c.read_method()[1:3] == (85, 11)
    missing = uname("missing")
    c.send(publish_frames(1, "", q) + publish_frames(1, missing, "k"))
    acks, (code, text, cid, mid) = acks_then_close(c, 1)
    assert (code, cid, mid) == (NOT_FOUND, 60, 40)
    assert text == f"NOT_FOUND - no exchange '{missing}' in vhost '/'"
    for tag, multiple in acks:
        assert tag < 2, f"the refused publish (seq 2) was confirmed: {acks}"


def test_publish_with_an_invalid_delivery_mode_is_never_confirmed(raw):
    c = raw()
    open_channel(c)
    c.send(method(1, 85, 10, b"\x00"))
    assert c.read_method()[1:3] == (85, 11)
    c.send(publish_frames(1, "amq.direct", "k", properties=b"\x10\x00\x07"))
    acks, (code, text, _, _) = acks_then_close(c, 1)
    assert acks == []
    assert (code, text) == (
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - invalid message: {delivery_mode_unknown,7}")


# --- update-secret and capabilities -------------------------------------------

def test_update_secret_is_answered_and_the_connection_stays_usable(raw, broker):
    c = raw()
    c.send(method(0, 10, 70, longstr(broker.password) + shortstr("token refresh")))
    assert c.read_method()[:3] == (0, 10, 71)
    open_channel(c)


def test_pika_update_secret(conn, broker):
    conn.update_secret(broker.password, "pika's own test does this")
    ch = conn.channel()
    ch.exchange_declare("amq.direct", passive=True)


def test_server_capabilities_are_rabbitmq_3_10s(conn):
    caps = conn._impl.server_properties["capabilities"]
    assert sorted(k for k, v in caps.items() if v is True) == sorted([
        "authentication_failure_close", "basic.nack", "connection.blocked",
        "consumer_cancel_notify", "consumer_priorities", "direct_reply_to",
        "exchange_exchange_bindings", "per_consumer_qos", "publisher_confirms"])


# --- message validation -------------------------------------------------------

@pytest.mark.parametrize("mode", [0, 3, 255])
def test_unknown_delivery_mode_is_406(raw, mode):
    c = raw()
    open_channel(c)
    c.send(publish_frames(1, "amq.direct", "k", properties=bytes([0x10, 0, mode])))
    _, (code, text, cid, mid) = acks_then_close(c, 1)
    assert (code, cid, mid) == (PRECONDITION_FAILED, 60, 40)
    assert text == f"PRECONDITION_FAILED - invalid message: {{delivery_mode_unknown,{mode}}}"


@pytest.mark.parametrize("mode", [1, 2])
def test_delivery_modes_1_and_2_are_accepted(ch, mode):
    ch.confirm_delivery()
    ch.basic_publish("amq.direct", "k", b"x", pika.BasicProperties(delivery_mode=mode))


@pytest.mark.parametrize("header,value,type_name", [
    ("CC", "q", "longstr"), ("BCC", "q", "longstr"), ("CC", 1, "signedint")])
def test_cc_and_bcc_must_be_arrays(conn, header, value, type_name):
    ch = conn.channel()
    with expect_channel_close(ch, PRECONDITION_FAILED, conn=conn) as e:
        ch.basic_publish("amq.direct", "k", b"x",
                         pika.BasicProperties(headers={header: value}))
    assert e.reply_text == ("PRECONDITION_FAILED - invalid message: "
                            f"{{unacceptable_type_in_header,\"{header}\",{type_name}}}")


# Measured on RabbitMQ 3.10.8: typed values compare as Erlang terms, so a decimal
# matches only an equal decimal, never an integer of the same value.
HEADER_CASES = [
    ("decimal equals decimal", decimal.Decimal("1.5"), decimal.Decimal("1.5"), True),
    ("decimal 5 vs integer 5", decimal.Decimal(5), 5, False),
    ("decimal 5.0 vs integer 5", decimal.Decimal("5.0"), 5, False),
    ("integer vs integer", 5, 5, True),
    ("string vs integer", "5", 5, False),
    ("boolean vs integer", True, 1, False),
]


@pytest.mark.parametrize("name,bound,sent,routed", HEADER_CASES,
                         ids=[c[0] for c in HEADER_CASES])
def test_headers_exchange_typed_values(conn, make_exchange, name, bound, sent, routed):
    ch = conn.channel()
    ch.confirm_delivery()
    x = make_exchange("headers")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, arguments={"x-match": "all", "k": bound})
    try:
        ch.basic_publish(x, "", b"m", pika.BasicProperties(headers={"k": sent}),
                         mandatory=True)
        got = True
    except pex.UnroutableError:
        got = False
    assert got is routed, name


# --- idempotent unbind --------------------------------------------------------

def test_unbind_of_missing_things_is_ok(ch, make_queue):
    q = make_queue()
    ch.queue_unbind(uname("noq"), "amq.direct", "k")
    ch.queue_unbind(q, uname("nox"), "k")
    ch.queue_unbind(q, "amq.direct", "no-such-binding")
    ch.exchange_unbind(uname("nox"), "amq.direct", "k")
    ch.exchange_unbind("amq.fanout", uname("nox"), "k")
    ch.exchange_unbind("amq.fanout", "amq.direct", "k")
    assert ch.is_open


# --- frames RabbitMQ refuses on the connection --------------------------------

@pytest.mark.parametrize("class_id,method_id,args", [
    (50, 10, b"\x00\x00" + shortstr("x") + b"\x00" + table({})),
    (20, 10, shortstr(""))])
def test_non_connection_method_on_channel_0_is_504(raw, class_id, method_id, args):
    c = raw()
    c.send(method(0, class_id, method_id, args))
    assert c.expect_connection_close() == (
        504, "CHANNEL_ERROR - unexpected method in connection state running",
        class_id, method_id)


@pytest.mark.parametrize("kind,payload", [
    (FRAME_HEADER, struct.pack(">HHQH", 60, 0, 0, 0)), (FRAME_BODY, b"abc")])
def test_content_frame_on_channel_0_is_505(raw, kind, payload):
    c = raw()
    c.send(frame(kind, 0, payload))
    code, text, cid, mid = c.expect_connection_close()
    assert (code, cid, mid) == (505, 0, 0)
    assert text.startswith(f"UNEXPECTED_FRAME - type {kind}, all octets = <<")


def test_heartbeat_with_a_payload_is_501(raw):
    c = raw()
    c.send(frame(FRAME_HEARTBEAT, 0, b"xx"))
    code, text, cid, mid = c.expect_connection_close()
    assert (code, cid, mid) == (501, 0, 0)
    assert text == 'FRAME_ERROR - type 8, all octets = <<"xx">>: unknown_frame'


def test_channel_method_before_connection_open_is_505(raw):
    c = raw(stop_before="open")
    c.send(method(1, 20, 10, shortstr("")))
    assert c.expect_connection_close() == (
        505, "UNEXPECTED_FRAME - type 1, all octets = <<0,20,0,10,0>>", 0, 0)


def test_login_refusal_carries_class_0_method_0(broker):
    with RawConnection(broker.host, broker.port) as c:
        c.send(PROTOCOL_HEADER)
        c.read_method()
        c.send(start_ok(broker.username, broker.password + "-wrong"))
        assert c.expect_connection_close() == (
            403, "ACCESS_REFUSED - Login was refused using authentication mechanism "
                 "PLAIN. For details see the broker logfile.", 0, 0)


def test_channel_max_refusal_carries_class_0_method_0(raw):
    c = raw(channel_max=2)
    open_channel(c, 1)
    open_channel(c, 2)
    c.send(method(3, 20, 10, shortstr("")))
    assert c.expect_connection_close() == (
        530, "NOT_ALLOWED - number of channels opened (2) has reached the negotiated "
             "channel_max (2)", 0, 0)


# --- where RabbitMQ closes the socket without connection.close ---------------

@pytest.mark.timeout(60)
def test_unknown_sasl_mechanism_closes_the_socket(broker):
    # RabbitMQ waits about 3 s before closing; Warren closes at once.
    with RawConnection(broker.host, broker.port, timeout=20) as c:
        c.send(PROTOCOL_HEADER)
        c.read_method()
        c.send(start_ok(broker.username, broker.password, mechanism="FOO"))
        assert c.expect_socket_closed()


@pytest.mark.parametrize("frame_max", [1000, 200000])
def test_tune_ok_frame_max_out_of_range_closes_the_socket(raw, frame_max):
    c = raw(stop_before="tune_ok")
    c.send(tune_ok(frame_max=frame_max))
    assert c.expect_socket_closed()


@pytest.mark.parametrize("class_id,method_id", [(60, 999), (77, 10)])
def test_unknown_method_closes_the_socket(raw, class_id, method_id):
    c = raw()
    open_channel(c)
    c.send(method(1, class_id, method_id))
    assert c.expect_socket_closed()


# --- listener -----------------------------------------------------------------

def test_ipv6_loopback_reaches_the_broker(broker):
    if broker.host not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("only meaningful for a broker on this machine")
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback on this host")
    with RawConnection("::1", broker.port) as c:
        c.handshake(broker.username, broker.password, broker.vhost)
        open_channel(c)
