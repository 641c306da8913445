"""Connection handshake: server properties, authentication, vhost, tune, heartbeat."""

import math

import pika
import pika.exceptions as pex
import pytest

from amqp_support import eventually, uname


def test_seed_example_hello_world(broker, cleanup):
    """The 'Hello World' from the RabbitMQ tutorial, exactly as written except
    that it honours the configured host/port."""
    cleanup.queue("hello")
    # make sure we start from an empty 'hello' queue
    setup = broker.connect()
    setup.channel().queue_delete("hello")
    setup.close()

    # --- the seed example ---
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(broker.host, broker.port))
    channel = connection.channel()
    channel.queue_declare(queue='hello')
    channel.basic_publish(exchange='', routing_key='hello', body='Hello World!')
    connection.close()
    # --- end of seed example ---

    check = broker.connect()
    try:
        chan = check.channel()
        method, props, body = chan.basic_get("hello", auto_ack=True)
        assert method is not None, "the message published by the seed example was lost"
        assert body == b"Hello World!"
        assert method.exchange == ""
        assert method.routing_key == "hello"
        assert method.redelivered is False
        assert method.message_count == 0
        chan.queue_delete("hello")
    finally:
        check.close()


def test_server_properties(conn):
    sp = conn._impl.server_properties
    for key in ("product", "version", "platform"):
        assert key in sp, f"server_properties lacks {key!r}: {sp!r}"
        assert isinstance(sp[key], (str, bytes)) and len(sp[key]) > 0
    caps = sp.get("capabilities")
    assert isinstance(caps, dict), f"capabilities must be a table: {caps!r}"
    for cap in ("publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                "consumer_cancel_notify", "connection.blocked",
                "authentication_failure_close", "per_consumer_qos"):
        assert caps.get(cap) is True, f"capability {cap!r} should be true: {caps!r}"


def test_bad_password_is_access_refused(broker):
    # pika advertises authentication_failure_close, so RabbitMQ answers with
    # connection.close 403 before closing the socket; pika surfaces it as
    # ProbableAuthenticationError carrying the broker's close.
    creds = pika.PlainCredentials(broker.username, broker.password + "-wrong")
    with pytest.raises(pex.ProbableAuthenticationError) as ei:
        pika.BlockingConnection(broker.params(credentials=creds))
    text = str(ei.value)
    assert "(403)" in text, text
    assert ("ACCESS_REFUSED - Login was refused using authentication "
            "mechanism PLAIN") in text, text


def test_unknown_user_is_access_refused(broker):
    creds = pika.PlainCredentials("no-such-user-" + uname("u"), "x")
    with pytest.raises(pex.ProbableAuthenticationError) as ei:
        pika.BlockingConnection(broker.params(credentials=creds))
    assert "(403)" in str(ei.value)
    assert "ACCESS_REFUSED - Login was refused" in str(ei.value)


def test_unknown_vhost_is_not_allowed(broker):
    vhost = "no-such-vhost-" + uname("v")
    with pytest.raises(pex.ProbableAccessDeniedError) as ei:
        pika.BlockingConnection(broker.params(virtual_host=vhost))
    text = str(ei.value)
    assert "(530)" in text, text
    assert f"NOT_ALLOWED - vhost {vhost} not found" in text, text


def test_default_tune_values(conn):
    # pika proposes frame_max=131072 and channel_max=65535 and takes the
    # server's heartbeat; the negotiated values are the server's defaults.
    p = conn._impl.params
    assert p.frame_max == 131072
    assert p.channel_max == 2047
    assert p.heartbeat == 60


def test_channel_max_negotiated_down(connect):
    c = connect(channel_max=10)
    assert c._impl.params.channel_max == 10
    chans = [c.channel() for _ in range(10)]
    assert len({x.channel_number for x in chans}) == 10
    for x in chans:
        x.exchange_declare("amq.direct", passive=True)


def _count_frames(monkeypatch):
    """Count frames pika decodes, by type."""
    counts = {"body": 0, "heartbeat": 0, "body_sizes": []}
    real = pika.frame.decode_frame

    def wrapper(data):
        consumed, fr = real(data)
        if isinstance(fr, pika.frame.Body):
            counts["body"] += 1
            counts["body_sizes"].append(len(fr.fragment))
        elif isinstance(fr, pika.frame.Heartbeat):
            counts["heartbeat"] += 1
        return consumed, fr

    monkeypatch.setattr(pika.frame, "decode_frame", wrapper)
    return counts


def test_small_frame_max_splits_body(connect, cleanup, monkeypatch):
    counts = _count_frames(monkeypatch)
    c = connect(frame_max=8192)
    assert c._impl.params.frame_max == 8192
    chan = c.channel()
    q = cleanup.queue(uname("q"))
    chan.queue_declare(q, exclusive=True)
    body = bytes(range(256)) * 400  # 100 KiB
    assert len(body) == 102400
    chan.confirm_delivery()
    chan.basic_publish("", q, body)
    method, props, got = chan.basic_get(q, auto_ack=True)
    assert got == body
    # frame payload of a body frame is at most frame_max - 8
    assert counts["body"] == math.ceil(len(body) / (8192 - 8))
    assert max(counts["body_sizes"]) == 8192 - 8


def test_heartbeat_negotiated_to_client_value(connect):
    c = connect(heartbeat=7)
    assert c._impl.params.heartbeat == 7


def test_heartbeat_zero_disables(connect):
    c = connect(heartbeat=0)
    assert c._impl.params.heartbeat == 0


def test_heartbeat_callable_sees_server_proposal(connect):
    seen = []

    def choose(connection, server_value):
        seen.append(server_value)
        return 5

    c = connect(heartbeat=choose)
    assert seen == [60]
    assert c._impl.params.heartbeat == 5


def test_server_sends_heartbeats(connect, monkeypatch):
    counts = _count_frames(monkeypatch)
    c = connect(heartbeat=1)
    eventually(lambda: counts["heartbeat"] >= 2, timeout=10, conns=c,
               msg="server sent no heartbeats with heartbeat=1")
    assert c.is_open


def test_client_close(conn):
    chan = conn.channel()
    chan.exchange_declare("amq.direct", passive=True)
    conn.close()
    assert conn.is_closed
    assert chan.is_closed
