"""Queue length limits: x-max-length, x-max-length-bytes and x-overflow
(drop-head, reject-publish, reject-publish-dlx)."""

import pika
import pika.exceptions as pex
import pytest
from pika import spec

from amqp_support import (PRECONDITION_FAILED, Collector, eventually,
                          expect_channel_close, get_all, queue_counts,
                          raw_rpc, wait_get)


def dlx_args(dead, **extra):
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}
    args.update(extra)
    return args


def publish_all(pub, q, bodies):
    """Publish on a confirm channel; returns 'ack' / 'nack' per message."""
    out = []
    for b in bodies:
        try:
            pub.basic_publish("", q, b)
            out.append("ack")
        except pex.NackError:
            out.append("nack")
    return out


# ------------------------------------------------------------ drop-head

def test_drop_head_drops_oldest(ch, pub, make_queue):
    q = make_queue(arguments={"x-max-length": 2})
    assert publish_all(pub, q, [b"m0", b"m1", b"m2", b"m3"]) == ["ack"] * 4
    assert queue_counts(ch, q) == (2, 0)
    assert get_all(ch, q) == [b"m2", b"m3"]


def test_drop_head_explicit_overflow(ch, pub, make_queue):
    q = make_queue(arguments={"x-max-length": 1, "x-overflow": "drop-head"})
    publish_all(pub, q, [b"a", b"b"])
    assert get_all(ch, q) == [b"b"]


def test_drop_head_dead_letters_with_reason_maxlen(ch, pub, make_queue):
    dead = make_queue(prefix="dead")
    q = make_queue(arguments=dlx_args(dead, **{"x-max-length": 2}))
    publish_all(pub, q, [b"m0", b"m1", b"m2", b"m3"])
    got = [wait_get(ch, dead) for _ in range(2)]
    assert [b for _, _, b in got] == [b"m0", b"m1"]
    for m, props, _ in got:
        assert (m.exchange, m.routing_key) == ("", dead)
        (death,) = props.headers["x-death"]
        assert death["reason"] == "maxlen"
        assert death["queue"] == q and death["count"] == 1
        assert death["exchange"] == "" and death["routing-keys"] == [q]
        assert props.headers["x-first-death-reason"] == "maxlen"
    assert get_all(ch, q) == [b"m2", b"m3"]


def test_max_length_counts_ready_messages_only(ch, pub, make_queue):
    """Unacknowledged messages do not count towards x-max-length."""
    q = make_queue(arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    publish_all(pub, q, [b"m0"])
    m0 = ch.basic_get(q)[0]  # now unacked
    assert publish_all(pub, q, [b"m1", b"m2"]) == ["ack", "nack"]
    ch.basic_ack(m0.delivery_tag)
    assert get_all(ch, q) == [b"m1"]


def test_requeue_into_full_drop_head_queue_drops_the_requeued_head(ch, pub,
                                                                   make_queue):
    q = make_queue(arguments={"x-max-length": 1})
    publish_all(pub, q, [b"m0"])
    m0 = ch.basic_get(q)[0]
    publish_all(pub, q, [b"m1", b"m2"])  # m1 dropped, m2 ready
    ch.basic_nack(m0.delivery_tag, requeue=True)
    # m0 goes back to the head of a full queue and is dropped from there
    eventually(lambda: queue_counts(pub, q) == (1, 0), timeout=5)
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"m2" and m.redelivered is False


# ------------------------------------------------------------ x-max-length-bytes

def test_max_length_bytes_counts_body_only(ch, pub, make_queue):
    q = make_queue(arguments={"x-max-length-bytes": 10})
    big_headers = pika.BasicProperties(headers={"pad": "x" * 1000})
    for _ in range(3):
        pub.basic_publish("", q, b"12345", big_headers)
    # 2 x 5 body bytes fit; headers do not count
    assert get_all(ch, q) == [b"12345", b"12345"]


def test_max_length_bytes_drop_head_can_drop_the_new_message(ch, pub, make_queue):
    q = make_queue(arguments={"x-max-length-bytes": 10})
    assert publish_all(pub, q, [b"12345678901", b"1"]) == ["ack", "ack"]
    # an 11-byte message alone is over the limit: it is dropped at once
    assert get_all(ch, q) == [b"1"]


def test_max_length_bytes_reject_publish(ch, pub, make_queue):
    q = make_queue(arguments={"x-max-length-bytes": 10,
                              "x-overflow": "reject-publish"})
    # 6 + 4 = 10 fits exactly; 1 more byte does not; an empty body does
    assert publish_all(pub, q, [b"123456", b"1234", b"1", b""]) == [
        "ack", "ack", "nack", "ack"]
    assert get_all(ch, q) == [b"123456", b"1234", b""]


def test_max_length_bytes_reject_publish_oversized_into_empty_queue(
        ch, pub, make_queue):
    q = make_queue(arguments={"x-max-length-bytes": 10,
                              "x-overflow": "reject-publish"})
    assert publish_all(pub, q, [b"12345678901", b"1"]) == ["nack", "ack"]
    assert get_all(ch, q) == [b"1"]


# ------------------------------------------------------------ reject-publish

def test_reject_publish_nacks_and_keeps_old_messages(ch, pub, make_queue):
    dead = make_queue(prefix="dead")
    q = make_queue(arguments=dlx_args(dead, **{
        "x-max-length": 2, "x-overflow": "reject-publish"}))
    assert publish_all(pub, q, [b"m0", b"m1", b"m2", b"m3"]) == [
        "ack", "ack", "nack", "nack"]
    assert queue_counts(ch, q) == (2, 0)
    # reject-publish does not dead-letter: reject m0 to push a marker down
    # the same dead-letter path; it arrives alone
    m0 = ch.basic_get(q)[0]
    ch.basic_reject(m0.delivery_tag, requeue=False)
    assert wait_get(ch, dead)[2] == b"m0"
    assert queue_counts(ch, dead)[0] == 0
    assert get_all(ch, q) == [b"m1"]


def test_reject_publish_nack_error_from_pika(pub, make_queue):
    q = make_queue(arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    pub.basic_publish("", q, b"fits")
    with pytest.raises(pex.NackError):
        pub.basic_publish("", q, b"rejected")
    assert pub.is_open  # a nack is not an error: the channel stays open
    pub.exchange_declare("amq.direct", passive=True)  # and usable


def test_reject_publish_confirm_frames(conn, ch, make_queue):
    """Raw confirms: publishes 1-2 are acked, 3-5 nacked (RabbitMQ may
    coalesce nacks with multiple=true once everything before is confirmed)."""
    q = make_queue(arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    frames = []
    ch._impl.add_callback(lambda f: frames.append(f.method),
                          [spec.Basic.Ack, spec.Basic.Nack], one_shot=False)
    raw_rpc(conn, ch, spec.Confirm.Select(), [spec.Confirm.SelectOk])
    for i in range(5):
        ch.basic_publish("", q, b"m%d" % i)

    def outcome():
        res, last = {}, 0
        for f in frames:
            kind = "ack" if isinstance(f, spec.Basic.Ack) else "nack"
            tags = (range(last + 1, f.delivery_tag + 1) if f.multiple
                    else [f.delivery_tag])
            for t in tags:
                res.setdefault(t, kind)
            last = max(last, f.delivery_tag)
        return res

    eventually(lambda: len(outcome()) == 5, conns=conn,
               msg=f"not all publishes confirmed: {frames!r}")
    assert outcome() == {1: "ack", 2: "ack", 3: "nack", 4: "nack", 5: "nack"}


def test_reject_publish_accepts_again_after_consuming(ch, pub, make_queue):
    q = make_queue(arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    assert publish_all(pub, q, [b"a", b"b"]) == ["ack", "nack"]
    assert ch.basic_get(q, auto_ack=True)[2] == b"a"
    assert publish_all(pub, q, [b"c"]) == ["ack"]
    assert get_all(ch, q) == [b"c"]


def test_reject_publish_nacks_even_if_another_queue_took_it(ch, pub, make_queue,
                                                            make_exchange):
    x = make_exchange("fanout")
    full = make_queue(prefix="full", arguments={"x-max-length": 0,
                                                "x-overflow": "reject-publish"})
    ok = make_queue(prefix="ok")
    ch.queue_bind(full, x)
    ch.queue_bind(ok, x)
    with pytest.raises(pex.NackError):
        pub.basic_publish(x, "", b"x")
    assert queue_counts(ch, ok) == (1, 0)
    assert queue_counts(ch, full) == (0, 0)


def test_reject_publish_mandatory_gives_nack_not_return(pub, make_queue):
    q = make_queue(arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    with pytest.raises(pex.NackError):
        pub.basic_publish("", q, b"x", mandatory=True)


def test_reject_publish_in_transaction_fails_commit(conn, ch, make_queue):
    q = make_queue(arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    ch.tx_select()
    ch.basic_publish("", q, b"x")
    with expect_channel_close(ch, PRECONDITION_FAILED, conn=conn) as out:
        ch.tx_commit()
    assert out.reply_text == "PRECONDITION_FAILED - partial tx completion"


# ------------------------------------------------------------ reject-publish-dlx

def test_reject_publish_dlx_nacks_and_dead_letters(ch, pub, make_queue):
    dead = make_queue(prefix="dead")
    q = make_queue(arguments=dlx_args(dead, **{
        "x-max-length": 2, "x-overflow": "reject-publish-dlx"}))
    assert publish_all(pub, q, [b"m0", b"m1", b"m2", b"m3"]) == [
        "ack", "ack", "nack", "nack"]
    got = [wait_get(ch, dead) for _ in range(2)]
    assert [b for _, _, b in got] == [b"m2", b"m3"]
    for m, props, _ in got:
        (death,) = props.headers["x-death"]
        assert (death["reason"], death["queue"], death["count"]) == (
            "maxlen", q, 1)
    assert get_all(ch, q) == [b"m0", b"m1"]


# ------------------------------------------------------------ x-max-length = 0

def test_max_length_zero_drop_head(ch, pub, make_queue):
    dead = make_queue(prefix="dead")
    q = make_queue(arguments=dlx_args(dead, **{"x-max-length": 0}))
    assert publish_all(pub, q, [b"z0", b"z1"]) == ["ack", "ack"]
    assert queue_counts(ch, q) == (0, 0)
    got = [wait_get(ch, dead) for _ in range(2)]
    assert [b for _, _, b in got] == [b"z0", b"z1"]
    assert got[0][1].headers["x-death"][0]["reason"] == "maxlen"


def test_max_length_zero_drop_head_delivers_to_waiting_consumer(conn, ch, pub,
                                                                make_queue):
    q = make_queue(arguments={"x-max-length": 0})
    c = Collector(ch, q, auto_ack=True)
    pub.basic_publish("", q, b"direct")
    eventually(lambda: c.messages, conns=conn)
    assert c.bodies == [b"direct"]


@pytest.mark.parametrize("overflow", ["reject-publish", "reject-publish-dlx"])
def test_max_length_zero_reject_publish_refuses_even_with_consumer(
        conn, ch, pub, make_queue, overflow):
    dead = make_queue(prefix="dead")
    q = make_queue(arguments=dlx_args(dead, **{"x-max-length": 0,
                                               "x-overflow": overflow}))
    c = Collector(ch, q, auto_ack=True)
    assert publish_all(pub, q, [b"x"]) == ["nack"]
    if overflow == "reject-publish-dlx":
        assert wait_get(pub, dead)[2] == b"x"
    # nothing is ever enqueued or delivered: every publish is refused
    assert publish_all(pub, q, [b"y"]) == ["nack"]
    assert queue_counts(pub, q) == (0, 1)
    assert c.messages == []
