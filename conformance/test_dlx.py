"""Dead-letter exchanges: x-dead-letter-exchange / x-dead-letter-routing-key,
the x-death and x-first-death-* headers, and dead-letter cycles.

Dead-lettering by max-length overflow is in test_maxlength.py.

The x-death structure is checked on the wire: ``raw_props`` records the raw
property bytes and ``typed_headers`` decodes them with their AMQP type tags
and in wire order.
"""

import datetime
import time

import pika

from amqp_support import (Collector, eventually, queue_counts, typed_headers,
                          wait_get)

# Field order of an x-death entry when RabbitMQ creates it.  When an entry is
# updated (its count incremented) or added after the first one, RabbitMQ
# sorts its fields by name instead (see SORTED_FIELDS).
NEW_FIELDS = ["count", "reason", "queue", "time", "exchange", "routing-keys"]
SORTED_FIELDS = ["count", "exchange", "queue", "reason", "routing-keys", "time"]


def get_typed(ch, raw_props, queue):
    """wait_get + the typed headers of the message just fetched."""
    raw_props.clear()
    m, props, body = wait_get(ch, queue)
    return m, props, body, typed_headers(raw_props[-1])


def field(entries, key):
    """Value of ``key`` in a typed table (list of (key, tag, value))."""
    for k, tag, value in entries:
        if k == key:
            return tag, value
    raise KeyError(key)


def deaths(typed):
    tag, value = field(typed, "x-death")
    assert tag == "A"
    assert all(t == "F" for t, _ in value), value
    return [entry for _, entry in value]


def summary(entry):
    """(queue, reason, count) of one typed x-death entry."""
    d = {k: v for k, _, v in entry}
    return d["queue"].decode(), d["reason"].decode(), d["count"]


def dlx_pair(make_queue, **extra):
    """A dead-letter queue and a source queue that dead-letters into it via
    the default exchange."""
    dead = make_queue(prefix="dead")
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}
    args.update(extra)
    src = make_queue(prefix="src", arguments=args)
    return src, dead


def reject(ch, q, requeue=False):
    m = ch.basic_get(q)[0]
    assert m is not None, f"nothing to reject in {q}"
    ch.basic_reject(m.delivery_tag, requeue=requeue)
    return m


# -------------------------------------------------------------- triggers

def test_reject_dead_letters_with_full_x_death(ch, pub, make_queue,
                                               make_exchange, raw_props):
    dlx = make_exchange("direct")
    dead = make_queue(prefix="dead")
    ch.queue_bind(dead, dlx, "rk")
    src = make_queue(prefix="src",
                     arguments={"x-dead-letter-exchange": dlx})
    x = make_exchange("direct")
    ch.queue_bind(src, x, "rk")
    before = int(time.time())
    pub.basic_publish(x, "rk", b"body", pika.BasicProperties(
        message_id="mid", priority=3, correlation_id="cid", delivery_mode=2,
        content_type="text/plain", headers={"h": "v"}))
    reject(ch, src)
    m, props, body, typed = get_typed(ch, raw_props, dead)
    after = int(time.time())

    assert body == b"body"
    assert m.exchange == dlx and m.routing_key == "rk"
    assert m.redelivered is False
    # the other properties are kept
    assert (props.message_id, props.priority, props.correlation_id,
            props.delivery_mode, props.content_type) == (
                "mid", 3, "cid", 2, "text/plain")

    # the whole headers table, on the wire: keys sorted, types exact
    assert [k for k, _, _ in typed] == [
        "h", "x-death", "x-first-death-exchange", "x-first-death-queue",
        "x-first-death-reason"]
    assert field(typed, "h") == ("S", b"v")
    assert field(typed, "x-first-death-exchange") == ("S", x.encode())
    assert field(typed, "x-first-death-queue") == ("S", src.encode())
    assert field(typed, "x-first-death-reason") == ("S", b"rejected")
    # 3.10 has no x-last-death-* headers
    assert not any(k.startswith("x-last-death") for k, _, _ in typed)

    (entry,) = deaths(typed)
    assert [k for k, _, _ in entry] == NEW_FIELDS
    e = {k: (t, v) for k, t, v in entry}
    assert e["count"] == ("l", 1)
    assert e["reason"] == ("S", b"rejected")
    assert e["queue"] == ("S", src.encode())
    assert e["exchange"] == ("S", x.encode())
    assert e["routing-keys"] == ("A", [("S", b"rk")])
    assert e["time"][0] == "T"
    assert before - 1 <= e["time"][1] <= after + 1  # seconds since the epoch

    # what pika makes of it
    xd = props.headers["x-death"]
    assert xd == [{"count": 1, "reason": "rejected", "queue": src,
                   "time": xd[0]["time"], "exchange": x,
                   "routing-keys": ["rk"]}]


def test_nack_multiple_without_requeue_dead_letters_in_order(ch, pub,
                                                             make_queue):
    src, dead = dlx_pair(make_queue)
    for i in range(3):
        pub.basic_publish("", src, b"m%d" % i)
    tags = [ch.basic_get(src)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[-1], multiple=True, requeue=False)
    bodies = []
    for _ in range(3):
        m, props, body = wait_get(ch, dead)
        assert props.headers["x-death"][0]["reason"] == "rejected"
        bodies.append(body)
    assert bodies == [b"m0", b"m1", b"m2"]
    assert queue_counts(ch, src) == (0, 0)


def test_reject_from_consumer_dead_letters(conn, ch, pub, make_queue):
    src, dead = dlx_pair(make_queue)
    c = Collector(ch, src)
    pub.basic_publish("", src, b"bad")
    eventually(lambda: c.messages, conns=conn)
    ch.basic_nack(c.messages[0][0].delivery_tag, requeue=False)
    assert wait_get(pub, dead)[2] == b"bad"


def test_requeue_true_does_not_dead_letter(ch, pub, make_queue):
    src, dead = dlx_pair(make_queue)
    pub.basic_publish("", src, b"x")
    reject(ch, src, requeue=True)
    eventually(lambda: queue_counts(ch, src)[0] == 1, timeout=5)
    m, _, _ = ch.basic_get(src, auto_ack=True)
    assert m.redelivered is True
    assert queue_counts(ch, dead)[0] == 0


def test_expired_message_dead_lettered(ch, pub, make_queue, raw_props):
    src, dead = dlx_pair(make_queue, **{"x-message-ttl": 50})
    pub.basic_publish("", src, b"old")
    m, props, body, typed = get_typed(ch, raw_props, dead)
    assert body == b"old"
    (entry,) = deaths(typed)
    # a queue TTL leaves no original-expiration
    assert [k for k, _, _ in entry] == NEW_FIELDS
    assert summary(entry) == (src, "expired", 1)
    assert field(typed, "x-first-death-reason") == ("S", b"expired")
    assert props.expiration is None


def test_per_message_ttl_dead_letter_moves_expiration(ch, pub, make_queue,
                                                      raw_props):
    src, dead = dlx_pair(make_queue)
    pub.basic_publish("", src, b"x", pika.BasicProperties(expiration="50"))
    m, props, body, typed = get_typed(ch, raw_props, dead)
    # the expiration property is removed and kept in the x-death entry
    assert props.expiration is None
    (entry,) = deaths(typed)
    assert [k for k, _, _ in entry] == NEW_FIELDS + ["original-expiration"]
    assert field(entry, "original-expiration") == ("S", b"50")
    assert summary(entry) == (src, "expired", 1)


def test_rejected_message_with_expiration_gets_original_expiration(
        ch, pub, make_queue, raw_props):
    src, dead = dlx_pair(make_queue)
    pub.basic_publish("", src, b"x", pika.BasicProperties(expiration="600000"))
    reject(ch, src)
    m, props, body, typed = get_typed(ch, raw_props, dead)
    assert props.expiration is None
    (entry,) = deaths(typed)
    assert field(entry, "original-expiration") == ("S", b"600000")
    assert summary(entry) == (src, "rejected", 1)


def test_missing_dead_letter_exchange_drops_silently(conn, ch, pub, make_queue):
    src = make_queue(arguments={"x-dead-letter-exchange": "conf.no-such-x"})
    pub.basic_publish("", src, b"x")
    reject(ch, src)
    eventually(lambda: queue_counts(pub, src) == (0, 0), timeout=5)
    assert ch.is_open and conn.is_open


# -------------------------------------------------------------- routing keys

def test_dead_letter_routing_key_replaces_routing_key(ch, pub, make_queue,
                                                      make_exchange):
    dlx = make_exchange("direct")
    dead = make_queue(prefix="dead")
    ch.queue_bind(dead, dlx, "dl-key")
    src = make_queue(prefix="src", arguments={
        "x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dl-key"})
    pub.basic_publish("", src, b"x")
    reject(ch, src)
    m, props, body = wait_get(ch, dead)
    assert (m.exchange, m.routing_key) == (dlx, "dl-key")
    # x-death records the routing keys the message was published with
    assert props.headers["x-death"][0]["routing-keys"] == [src]


def test_original_routing_keys_used_including_cc_and_bcc(ch, pub, make_queue,
                                                        make_exchange,
                                                        raw_props):
    """Without x-dead-letter-routing-key the message is routed with all the
    routing keys it was published with: the routing key, the CC keys and the
    BCC keys.  x-death lists the routing key and the CC keys, not BCC."""
    x = make_exchange("direct")
    dlx = make_exchange("direct")
    src = make_queue(prefix="src", arguments={"x-dead-letter-exchange": dlx})
    ch.queue_bind(src, x, "a")
    dead = {k: make_queue(prefix="dead." + k) for k in "abc"}
    for k, q in dead.items():
        ch.queue_bind(q, dlx, k)
    pub.basic_publish(x, "a", b"x", pika.BasicProperties(
        headers={"CC": ["b"], "BCC": ["c"]}))
    reject(ch, src)
    for k in "abc":
        m, props, body = wait_get(ch, dead[k])
        assert m.routing_key == "a"  # the delivery shows the publish key
        assert props.headers["CC"] == ["b"]
        assert "BCC" not in props.headers
        assert props.headers["x-death"][0]["routing-keys"] == ["a", "b"]


def test_dead_letter_routing_key_drops_cc(ch, pub, make_queue, make_exchange):
    x = make_exchange("direct")
    dlx = make_exchange("direct")
    src = make_queue(prefix="src", arguments={
        "x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dl"})
    ch.queue_bind(src, x, "a")
    dl_q = make_queue(prefix="dead.dl")
    cc_q = make_queue(prefix="dead.cc")
    ch.queue_bind(dl_q, dlx, "dl")
    ch.queue_bind(cc_q, dlx, "cc")
    pub.basic_publish(x, "a", b"x", pika.BasicProperties(
        headers={"CC": ["cc"], "keep": 1}))
    reject(ch, src)
    m, props, body = wait_get(ch, dl_q)
    assert m.routing_key == "dl"
    assert "CC" not in props.headers  # removed with a dead-letter routing key
    assert props.headers["keep"] == 1
    assert props.headers["x-death"][0]["routing-keys"] == ["a", "cc"]
    # a reject of a second message on the same queue proves the first was
    # never routed by its CC key: dead-letters from one queue stay in order
    pub.basic_publish(x, "a", b"y", pika.BasicProperties(headers={"CC": ["cc"]}))
    reject(ch, src)
    assert wait_get(ch, dl_q)[2] == b"y"
    assert queue_counts(ch, cc_q)[0] == 0


# -------------------------------------------------------------- x-death history

def test_headers_table_is_sorted_after_dead_lettering(ch, pub, make_queue,
                                                      raw_props):
    src, dead = dlx_pair(make_queue)
    pub.basic_publish("", src, b"x", pika.BasicProperties(
        headers={"zeta": 1, "Alpha": 2, "beta": 3}))
    reject(ch, src)
    _, _, _, typed = get_typed(ch, raw_props, dead)
    assert [k for k, _, _ in typed] == [
        "Alpha", "beta", "x-death", "x-first-death-exchange",
        "x-first-death-queue", "x-first-death-reason", "zeta"]


def test_two_hops_most_recent_first(ch, pub, make_queue, make_exchange,
                                    raw_props):
    x1 = make_exchange("fanout")
    dead = make_queue(prefix="dead")
    q1 = make_queue(prefix="q1", arguments={
        "x-dead-letter-exchange": x1, "x-dead-letter-routing-key": "rk1"})
    q2 = make_queue(prefix="q2", arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
    ch.queue_bind(q2, x1)
    pub.basic_publish("", q1, b"x")
    reject(ch, q1)
    m = wait_get(ch, q2, auto_ack=False)[0]
    assert (m.exchange, m.routing_key) == (x1, "rk1")
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, props, body, typed = get_typed(ch, raw_props, dead)
    first, second = deaths(typed)
    # the newest entry first; it was added to an existing x-death, so its
    # fields are sorted by name; the older entry is unchanged
    assert [k for k, _, _ in first] == SORTED_FIELDS
    assert [k for k, _, _ in second] == NEW_FIELDS
    assert summary(first) == (q2, "rejected", 1)
    assert field(first, "exchange") == ("S", x1.encode())
    assert field(first, "routing-keys") == ("A", [("S", b"rk1")])
    assert summary(second) == (q1, "rejected", 1)
    assert field(second, "exchange") == ("S", b"")
    assert field(second, "routing-keys") == ("A", [("S", q1.encode())])
    # x-first-death-* keep the first death
    assert field(typed, "x-first-death-queue") == ("S", q1.encode())
    assert field(typed, "x-first-death-exchange") == ("S", b"")
    assert field(typed, "x-first-death-reason") == ("S", b"rejected")


def test_repeated_dead_lettering_increments_count(ch, pub, make_queue, raw_props):
    """A queue that dead-letters rejected messages to itself: one x-death
    entry per {queue, reason}, whose count goes up."""
    q = make_queue(arguments={"x-dead-letter-exchange": ""})  # back to q
    pub.basic_publish("", q, b"x")
    reject(ch, q)
    counts = []
    for _ in range(3):
        raw_props.clear()
        m = wait_get(ch, q, auto_ack=False)[0]
        typed = typed_headers(raw_props[-1])
        counts.append([summary(e) for e in deaths(typed)])
        ch.basic_reject(m.delivery_tag, requeue=False)  # round it goes again
    assert counts == [[(q, "rejected", 1)], [(q, "rejected", 2)],
                      [(q, "rejected", 3)]]
    (entry,) = deaths(typed)
    assert field(entry, "count") == ("l", 3)
    assert [k for k, _, _ in entry] == SORTED_FIELDS  # updated: sorted


def test_same_queue_two_reasons_gives_two_entries(ch, pub, make_queue,
                                                  make_exchange, raw_props):
    """Entries are per {queue, reason}.  q dead-letters to a fanout that
    routes back to q and to a witness queue."""
    dlx = make_exchange("fanout")
    q = make_queue(arguments={"x-dead-letter-exchange": dlx})
    witness = make_queue(prefix="witness")
    ch.queue_bind(q, dlx)
    ch.queue_bind(witness, dlx)
    pub.basic_publish("", q, b"x")
    reject(ch, q)  # a rejection may cycle: copies in q and in the witness
    wait_get(ch, witness)
    _, props, _, _ = get_typed(ch, raw_props, q)
    # publish q's copy (with its x-death) again, now with a per-message TTL
    props.expiration = "50"
    pub.basic_publish("", q, b"x", props)
    _, props2, _, typed = get_typed(ch, raw_props, witness)
    assert [summary(e) for e in deaths(typed)] == [
        (q, "expired", 1), (q, "rejected", 1)]
    first = deaths(typed)[0]
    # added to an existing x-death: fields sorted by name, and
    # original-expiration sorts between exchange and queue
    assert [k for k, _, _ in first] == [
        "count", "exchange", "original-expiration", "queue", "reason",
        "routing-keys", "time"]
    assert field(first, "original-expiration") == ("S", b"50")
    assert props2.expiration is None
    # the expired copy routed back to q was dropped (a cycle without a
    # rejection since q's last death)
    assert queue_counts(ch, q)[0] == 0


def test_update_of_client_supplied_x_death(ch, pub, make_queue, raw_props):
    """An x-death header the publisher supplied is treated like one RabbitMQ
    built: the matching {queue, reason} entry gets count + 1 (as a long) and
    is sorted, but keeps its other fields - including the old time; other
    entries pass through untouched; x-first-death-* are only added when there
    was no x-death yet."""
    src, dead = dlx_pair(make_queue)
    old = datetime.datetime(2020, 1, 1)
    pub.basic_publish("", src, b"x", pika.BasicProperties(headers={
        "x-death": [
            {"count": 5, "reason": "rejected", "queue": src, "time": old,
             "exchange": "orig-x", "routing-keys": ["orig-rk"]},
            {"count": 7, "reason": "expired", "queue": "other"},
        ],
        "x-first-death-queue": "client-value",
    }))
    reject(ch, src)
    _, _, _, typed = get_typed(ch, raw_props, dead)
    assert [k for k, _, _ in typed] == ["x-death", "x-first-death-queue"]
    assert field(typed, "x-first-death-queue") == ("S", b"client-value")
    updated, other = deaths(typed)
    assert updated == [
        ("count", "l", 6), ("exchange", "S", b"orig-x"),
        ("queue", "S", src.encode()), ("reason", "S", b"rejected"),
        ("routing-keys", "A", [("S", b"orig-rk")]),
        ("time", "T", 1577836800)]
    assert other == [("count", "I", 7), ("reason", "S", b"expired"),
                     ("queue", "S", b"other")]


def test_x_death_order_after_repeated_chain(ch, pub, make_queue, raw_props):
    """RabbitMQ 3.10 puts the new (or updated) entry first and the *other*
    entries after it in reverse of their previous order (when there are two
    or more of them).  Traced through a chain q0 -> q1 -> q2 -> final, run
    twice."""
    final = make_queue(prefix="final")
    qs = []
    nxt = final
    for i in (2, 1, 0):
        qs.insert(0, make_queue(prefix=f"chain{i}", arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": nxt}))
        nxt = qs[0]
    q0, q1, q2 = qs

    def run_chain(props=None):
        pub.basic_publish("", q0, b"x", props)
        orders = []
        for q in qs:
            m, p, _ = wait_get(ch, q, auto_ack=False)
            if q is not q0:
                orders.append([summary(e)[:1] + summary(e)[2:]
                               for e in deaths(typed_headers(raw_props[-1]))])
            ch.basic_reject(m.delivery_tag, requeue=False)
        _, p, _, typed = get_typed(ch, raw_props, final)
        orders.append([summary(e)[:1] + summary(e)[2:] for e in deaths(typed)])
        return p, orders

    props, orders = run_chain()
    assert orders == [
        [(q0, 1)],                      # at q1
        [(q1, 1), (q0, 1)],             # at q2
        [(q2, 1), (q0, 1), (q1, 1)],    # at final: others reversed
    ]
    _, orders = run_chain(props)
    assert orders == [
        [(q0, 2), (q1, 1), (q2, 1)],    # at q1
        [(q1, 2), (q2, 1), (q0, 2)],    # at q2
        [(q2, 2), (q0, 2), (q1, 2)],    # at final
    ]


# -------------------------------------------------------------- cycles

def test_expiry_self_cycle_is_dropped(ch, pub, make_queue, make_exchange,
                                      raw_props):
    """A queue whose expired messages are dead-lettered back to itself: the
    cycle is detected (no rejection in it) and the copy for the queue is
    dropped.  A witness queue on the same fanout DLX gets its copy."""
    dlx = make_exchange("fanout")
    q = make_queue(arguments={"x-message-ttl": 50,
                              "x-dead-letter-exchange": dlx})
    witness = make_queue(prefix="witness")
    ch.queue_bind(q, dlx)
    ch.queue_bind(witness, dlx)
    pub.basic_publish("", q, b"x")
    _, _, _, typed = get_typed(ch, raw_props, witness)
    assert [summary(e) for e in deaths(typed)] == [(q, "expired", 1)]
    # the copy routed back to q was dropped in the same routing step
    assert queue_counts(ch, q)[0] == 0


def test_expiry_cycle_through_default_exchange_is_dropped(ch, pub, make_queue):
    q = make_queue(arguments={"x-message-ttl": 50,
                              "x-dead-letter-exchange": ""})  # back to q
    pub.basic_publish("", q, b"x")
    eventually(lambda: queue_counts(ch, q)[0] == 0, timeout=5)
    assert ch.basic_get(q, auto_ack=True)[0] is None


def test_two_queue_expiry_cycle_is_dropped(ch, pub, make_queue, make_exchange,
                                           raw_props):
    back = make_exchange("fanout")
    q1 = make_queue(prefix="cyc1", arguments={
        "x-message-ttl": 50, "x-dead-letter-exchange": back})
    q2 = make_queue(prefix="cyc2", arguments={
        "x-message-ttl": 50, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": q1})
    witness = make_queue(prefix="witness")
    # q2 expires into q1 via the default exchange; q1 expires into 'back',
    # which routes to q2 and to the witness
    ch.queue_bind(q2, back)
    ch.queue_bind(witness, back)
    pub.basic_publish("", q2, b"x")
    # q2 -> q1 (no cycle yet) -> back: q2 already in x-death: cycle, dropped
    _, _, _, typed = get_typed(ch, raw_props, witness)
    assert [summary(e) for e in deaths(typed)] == [
        (q1, "expired", 1), (q2, "expired", 1)]
    assert queue_counts(ch, q2)[0] == 0
    assert queue_counts(ch, q1)[0] == 0


def test_cycle_with_a_rejection_is_not_dropped(ch, pub, make_queue, raw_props):
    """q4 rejects into q5, which expires back into q4: the cycle contains a
    rejection, so the message goes round."""
    q4 = make_queue(prefix="q4")
    q5 = make_queue(prefix="q5", arguments={
        "x-message-ttl": 50, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": q4})
    # redeclare q4 with its DLX now that q5's name is known
    ch.queue_delete(q4)
    ch.queue_declare(q4, arguments={"x-dead-letter-exchange": "",
                                    "x-dead-letter-routing-key": q5})
    pub.basic_publish("", q4, b"x")
    reject(ch, q4)
    _, _, _, typed = get_typed(ch, raw_props, q4)
    assert [summary(e) for e in deaths(typed)] == [
        (q5, "expired", 1), (q4, "rejected", 1)]


def test_maxlen_self_cycle_is_dropped(ch, pub, make_queue):
    q = make_queue(arguments={"x-max-length": 1,
                              "x-dead-letter-exchange": ""})  # back to q
    pub.basic_publish("", q, b"a")
    pub.basic_publish("", q, b"b")  # drops 'a', which would cycle back
    assert queue_counts(ch, q)[0] == 1
    assert ch.basic_get(q, auto_ack=True)[2] == b"b"
    assert ch.basic_get(q, auto_ack=True)[0] is None
