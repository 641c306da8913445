"""Publisher confirms (confirm.select) and transactions (tx.*)."""

import pika.exceptions as pex
import pytest
from pika import spec

from amqp_support import (NOT_FOUND, PRECONDITION_FAILED, eventually,
                          expect_channel_close, queue_counts, raw_rpc, uname)


# ------------------------------------------------------------- confirms

def test_confirm_select_ok(conn, ch):
    ok = raw_rpc(conn, ch, spec.Confirm.Select(), [spec.Confirm.SelectOk])
    assert isinstance(ok, spec.Confirm.SelectOk)


def test_confirm_select_twice_is_fine(conn, ch):
    raw_rpc(conn, ch, spec.Confirm.Select(), [spec.Confirm.SelectOk])
    raw_rpc(conn, ch, spec.Confirm.Select(), [spec.Confirm.SelectOk])


def test_each_publish_is_acked(ch, make_queue):
    q = make_queue()
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", q, b"m%d" % i)  # raises on nack / return
    assert queue_counts(ch, q) == (10, 0)


def test_confirm_delivery_tags_and_multiple(conn, ch, make_queue):
    """Watch the raw basic.ack frames: delivery tags count publishes from 1 on
    the channel, and every publish is covered exactly once."""
    q = make_queue()
    acks = []
    ch._impl.add_callback(lambda frame: acks.append(frame.method),
                          [spec.Basic.Ack], one_shot=False)
    raw_rpc(conn, ch, spec.Confirm.Select(), [spec.Confirm.SelectOk])
    for i in range(20):
        ch.basic_publish("", q, b"m%d" % i)

    def covered():
        seen = set()
        last = 0
        for a in acks:
            tags = range(last + 1, a.delivery_tag + 1) if a.multiple else [a.delivery_tag]
            seen.update(tags)
            last = max(last, a.delivery_tag)
        return seen

    eventually(lambda: covered() == set(range(1, 21)), conns=conn,
               msg=f"publishes not all confirmed: {acks!r}")
    assert all(isinstance(a, spec.Basic.Ack) for a in acks)
    assert max(a.delivery_tag for a in acks) == 20


def test_unroutable_mandatory_publish_in_confirm_mode(ch, make_exchange):
    x = make_exchange("direct")
    ch.confirm_delivery()
    with pytest.raises(pex.UnroutableError) as ei:
        ch.basic_publish(x, "nowhere", b"bounce", mandatory=True)
    returned = ei.value.messages
    assert len(returned) == 1
    assert returned[0].method.reply_code == 312
    assert returned[0].method.reply_text == "NO_ROUTE"
    assert returned[0].body == b"bounce"
    assert ch.is_open


def test_unroutable_non_mandatory_publish_is_acked(ch, make_exchange):
    x = make_exchange("direct")
    ch.confirm_delivery()
    ch.basic_publish(x, "nowhere", b"dropped")  # acked, no error


def test_confirm_publish_to_missing_exchange(conn, ch, vhost):
    ch.confirm_delivery()
    name = uname("missing")
    with expect_channel_close(ch, NOT_FOUND,
                              f"NOT_FOUND - no exchange '{name}' in vhost '{vhost}'",
                              conn=conn):
        ch.basic_publish(name, "k", b"x")


# ------------------------------------------------------------------- tx

def test_tx_publish_rollback(conn, ch, make_queue):
    q = make_queue()
    ok = ch.tx_select()
    assert isinstance(ok.method, spec.Tx.SelectOk)
    ch.basic_publish("", q, b"never")
    ok = ch.tx_rollback()
    assert isinstance(ok.method, spec.Tx.RollbackOk)
    assert queue_counts(ch, q) == (0, 0)
    # a commit after the rollback has nothing to commit
    ch.tx_commit()
    assert queue_counts(ch, q) == (0, 0)


def test_tx_publish_commit(conn, ch, make_queue):
    q = make_queue()
    other = conn.channel()
    ch.tx_select()
    ch.basic_publish("", q, b"one")
    ch.basic_publish("", q, b"two")
    # not visible before commit
    assert queue_counts(other, q) == (0, 0)
    assert other.basic_get(q)[0] is None
    ok = ch.tx_commit()
    assert isinstance(ok.method, spec.Tx.CommitOk)
    assert queue_counts(other, q) == (2, 0)
    assert other.basic_get(q, auto_ack=True)[2] == b"one"
    assert other.basic_get(q, auto_ack=True)[2] == b"two"


def test_tx_is_a_sequence_of_transactions(ch, make_queue):
    q = make_queue()
    ch.tx_select()
    ch.basic_publish("", q, b"a")
    ch.tx_commit()
    ch.basic_publish("", q, b"b")
    ch.tx_rollback()
    ch.basic_publish("", q, b"c")
    ch.tx_commit()
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)] == [b"a", b"c"]
    ch.tx_commit()


def test_tx_ack_rollback_leaves_message_unacked(conn, ch, pub, make_queue):
    q = make_queue()
    pub.basic_publish("", q, b"m")
    ch.tx_select()
    m, _, _ = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()
    # RabbitMQ: the rolled-back ack is discarded but the message is NOT
    # requeued -- it stays unacked on the channel
    assert queue_counts(pub, q) == (0, 0)
    assert pub.basic_get(q)[0] is None
    # so it can be acked again, and a commit makes that ack stick
    ch.basic_ack(m.delivery_tag)
    ch.tx_commit()
    ch.close()
    eventually(lambda: queue_counts(pub, q) == (0, 0), timeout=5)
    assert pub.basic_get(q)[0] is None


def test_tx_ack_rollback_then_close_requeues(conn, ch, pub, make_queue):
    q = make_queue()
    pub.basic_publish("", q, b"m")
    ch.tx_select()
    m, _, _ = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()
    ch.close()  # still unacked -> requeued when the channel closes
    eventually(lambda: queue_counts(pub, q) == (1, 0), timeout=5)
    m, _, body = pub.basic_get(q, auto_ack=True)
    assert body == b"m" and m.redelivered is True


def test_tx_ack_commit_removes_message(conn, ch, pub, make_queue):
    q = make_queue()
    pub.basic_publish("", q, b"m")
    ch.tx_select()
    m, _, _ = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.tx_commit()
    ch.close()
    eventually(lambda: queue_counts(pub, q) == (0, 0), timeout=5)
    assert pub.basic_get(q)[0] is None


def test_tx_ack_not_applied_before_commit(conn, ch, pub, make_queue):
    q = make_queue()
    pub.basic_publish("", q, b"m")
    ch.tx_select()
    m, _, _ = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.close()  # uncommitted ack is discarded -> message requeued
    eventually(lambda: queue_counts(pub, q) == (1, 0), timeout=5)


def test_tx_reject_requeue_on_commit(conn, ch, pub, make_queue):
    q = make_queue()
    pub.basic_publish("", q, b"m")
    ch.tx_select()
    m, _, _ = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=True)
    assert queue_counts(pub, q) == (0, 0)  # not yet
    ch.tx_commit()
    eventually(lambda: queue_counts(pub, q) == (1, 0), timeout=5)


def test_tx_mandatory_return_sent_at_commit(conn, ch, make_exchange):
    x = make_exchange("direct")
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append(m))
    ch.tx_select()
    ch.basic_publish(x, "nowhere", b"r", mandatory=True)
    ch.basic_qos(prefetch_count=0)  # a round trip: no return yet
    assert returned == []
    ch.tx_commit()
    # RabbitMQ sends the basic.return before tx.commit-ok; pika dispatches it
    # on the next pass of the I/O loop
    eventually(lambda: returned, conns=conn)
    assert returned[0].reply_code == 312


def test_tx_commit_without_select(conn, ch):
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - channel is not transactional",
                              conn=conn):
        ch.tx_commit()


def test_tx_rollback_without_select(conn, ch):
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - channel is not transactional",
                              conn=conn):
        ch.tx_rollback()


def test_tx_select_twice_is_fine(ch):
    ch.tx_select()
    ch.tx_select()


def test_confirm_select_after_tx_select(conn, ch):
    ch.tx_select()
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
                              conn=conn):
        ch.confirm_delivery()


def test_tx_select_after_confirm_select(conn, ch):
    ch.confirm_delivery()
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - cannot switch from confirm to tx mode",
                              conn=conn):
        ch.tx_select()
