"""Channels: many per connection, soft errors close only the channel, client close."""

import pika.exceptions as pex
import pytest

from amqp_support import (NOT_FOUND, Collector, eventually, expect_channel_close,
                          queue_counts, uname)


def test_many_channels_on_one_connection(conn):
    chans = [conn.channel() for _ in range(50)]
    numbers = [c.channel_number for c in chans]
    assert len(set(numbers)) == 50
    assert all(n >= 1 for n in numbers)
    # every channel is independently usable
    for i, c in enumerate(chans):
        q = c.queue_declare("", exclusive=True).method.queue
        c.basic_publish("", q, f"m{i}".encode())
    for i, c in enumerate(chans):
        q = c.queue_declare("", exclusive=True).method.queue  # fresh, empty
        assert c.basic_get(q)[0] is None
    for c in chans:
        c.close()
    assert conn.is_open


def test_messages_on_different_channels_do_not_mix(conn):
    a, b = conn.channel(), conn.channel()
    qa = a.queue_declare("", exclusive=True).method.queue
    qb = b.queue_declare("", exclusive=True).method.queue
    a.confirm_delivery()
    b.confirm_delivery()
    a.basic_publish("", qa, b"for-a")
    b.basic_publish("", qb, b"for-b")
    # exclusive queues are per connection, not per channel: both channels see both
    assert b.basic_get(qa, auto_ack=True)[2] == b"for-a"
    assert a.basic_get(qb, auto_ack=True)[2] == b"for-b"


def test_channel_error_closes_only_that_channel(conn, vhost):
    good = conn.channel()
    q = good.queue_declare("", exclusive=True).method.queue
    bad = conn.channel()
    missing = uname("missing")
    with expect_channel_close(bad, NOT_FOUND,
                              f"NOT_FOUND - no queue '{missing}' in vhost '{vhost}'",
                              conn=conn) as err:
        bad.queue_declare(missing, passive=True)
    assert err.reply_code == 404
    assert bad.is_closed
    assert good.is_open
    assert conn.is_open
    # the other channel still works, including with its exclusive queue
    good.confirm_delivery()
    good.basic_publish("", q, b"still here")
    assert good.basic_get(q, auto_ack=True)[2] == b"still here"


def test_closed_channel_rejects_further_use(conn):
    bad = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker):
        bad.queue_declare(uname("missing"), passive=True)
    with pytest.raises(pex.ChannelWrongStateError):
        bad.queue_declare("", exclusive=True)


def test_client_channel_close(conn):
    c1 = conn.channel()
    c2 = conn.channel()
    c1.close()
    assert c1.is_closed
    assert c2.is_open
    c2.exchange_declare("amq.direct", passive=True)
    # a new channel can be opened after one was closed
    c3 = conn.channel()
    c3.exchange_declare("amq.direct", passive=True)
    assert conn.is_open


def test_channel_close_cancels_its_consumers(conn, ch, make_queue):
    q = make_queue()
    other = conn.channel()
    Collector(other, q)
    Collector(other, q)
    assert queue_counts(ch, q) == (0, 2)
    other.close()
    eventually(lambda: queue_counts(ch, q)[1] == 0, timeout=5)


def test_channel_flow_active_true(ch):
    assert ch.flow(True) is True


def test_many_channels_after_error_reopen(conn):
    # error, reopen, error, reopen ... the connection survives all of it
    for _ in range(5):
        c = conn.channel()
        with pytest.raises(pex.ChannelClosedByBroker) as ei:
            c.exchange_declare(uname("nx"), passive=True)
        assert ei.value.reply_code == 404
    assert conn.is_open
    conn.channel().exchange_declare("amq.fanout", passive=True)
