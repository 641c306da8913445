"""Routing through direct, fanout, topic and headers exchanges.

Routing is observed synchronously: publishes go out on a channel in confirm
mode with mandatory=True, so an unroutable message raises UnroutableError
(basic.return before basic.ack) and a routed one is in its queue when
basic_publish returns.
"""

import pika
import pika.exceptions as pex
import pytest

from amqp_support import PRECONDITION_FAILED, expect_channel_close, uname


def routes(pub, exchange, routing_key, headers=None):
    """True if the broker routed the message to at least one queue."""
    props = pika.BasicProperties(headers=headers) if headers is not None else None
    try:
        pub.basic_publish(exchange, routing_key, b"probe", properties=props,
                          mandatory=True)
    except pex.UnroutableError:
        return False
    return True


def drain(ch, q):
    out = []
    while True:
        m, p, body = ch.basic_get(q, auto_ack=True)
        if m is None:
            return out
        out.append(body)


# (binding pattern, routing key, routed?)
TOPIC_CASES = [
    # '#' alone matches everything, including the empty key
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("#", ".", True),
    ("#", "a..b", True),
    # '*' matches exactly one word
    ("*", "a", True),
    ("*", "", False),
    ("*", "a.b", False),
    ("*", ".", False),
    ("*.*", ".", True),        # two empty words
    ("*.*", "a", False),
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    ("a.*", "a.", True),       # trailing empty word is a word
    ("*.b", ".b", True),
    ("a.*.b", "a..b", True),   # empty middle word matches '*'
    ("a.*.b", "a.b", False),
    ("a.*.b", "a.x.b", True),
    # '#' matches zero or more words
    ("a.#", "a", True),
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("a.#", "ab", False),
    ("a.#", "b.a", False),
    ("#.a", "a", True),
    ("#.a", "x.y.a", True),
    ("#.a", "a.x", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.b.c", False),
    ("a.#.b", "a.b.b", True),
    ("#.#", "", True),
    ("#.#", "a.b", True),
    ("*.#", "", False),
    ("*.#", "a", True),
    ("*.#", "a.b.c", True),
    ("#.*", "a", True),
    ("#.*", "", False),
    ("#.*.#", "a.b", True),
    ("*.*.*", "a.b", False),
    ("*.*.*", "a.b.c", True),
    ("a.#.#.b", "a.b", True),
    ("#.b.#", "b", True),
    ("#.b.#", "a.b.c", True),
    ("#.b.#", "a.c", False),
    # literal words, empty words, case sensitivity
    ("a.b", "a.b", True),
    ("a.b", "a.B", False),
    ("a.b", "a.b.", False),
    ("a..b", "a..b", True),
    ("a..b", "a.b", False),
    ("", "", True),
    ("", "a", False),
    ("", ".", False),
    # '*' and '#' are only wildcards as whole words
    ("a*", "ab", False),
    ("a*", "a*", True),
    ("a#", "a", False),
    ("a#", "a#", True),
    ("a.b*", "a.b*", True),
    ("a.b*", "a.bc", False),
]


@pytest.mark.parametrize("pattern,key,expected", TOPIC_CASES,
                         ids=[f"{p!r}~{k!r}" for p, k, _ in TOPIC_CASES])
def test_topic_pattern(ch, pub, make_exchange, pattern, key, expected):
    x = make_exchange("topic")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, routing_key=pattern)
    assert routes(pub, x, key) is expected, (
        f"pattern {pattern!r} vs key {key!r}: expected "
        f"{'match' if expected else 'no match'}")
    if expected:
        m, _, body = ch.basic_get(q, auto_ack=True)
        assert m.routing_key == key and m.exchange == x


def test_topic_multiple_queues(ch, pub, make_exchange):
    x = make_exchange("topic")
    qs = {}
    for pat in ("stock.*.nyse", "stock.#", "*.ibm.*", "#"):
        qs[pat] = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(qs[pat], x, routing_key=pat)
    pub.basic_publish(x, "stock.ibm.nyse", b"1", mandatory=True)
    pub.basic_publish(x, "stock.msft.nasdaq", b"2", mandatory=True)
    pub.basic_publish(x, "bond.ibm.x", b"3", mandatory=True)
    assert drain(ch, qs["stock.*.nyse"]) == [b"1"]
    assert drain(ch, qs["stock.#"]) == [b"1", b"2"]
    assert drain(ch, qs["*.ibm.*"]) == [b"1", b"3"]
    assert drain(ch, qs["#"]) == [b"1", b"2", b"3"]


def test_topic_unbind_pattern(ch, pub, make_exchange):
    x = make_exchange("topic")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, routing_key="a.#")
    ch.queue_bind(q, x, routing_key="*.b")
    ch.queue_unbind(q, x, routing_key="a.#")
    assert routes(pub, x, "a.c") is False
    assert routes(pub, x, "a.b") is True


def test_direct_exact_match(ch, pub, make_exchange):
    x = make_exchange("direct")
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    q3 = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q1, x, routing_key="orange")
    ch.queue_bind(q2, x, routing_key="black")
    ch.queue_bind(q2, x, routing_key="green")
    ch.queue_bind(q3, x, routing_key="")
    for key in ("orange", "black", "green", ""):
        pub.basic_publish(x, key, key.encode(), mandatory=True)
    for key in ("Orange", "orange.", "#", "*", "blue"):
        assert routes(pub, x, key) is False, key
    assert drain(ch, q1) == [b"orange"]
    assert drain(ch, q2) == [b"black", b"green"]
    assert drain(ch, q3) == [b""]


def test_direct_same_key_several_queues(ch, pub, make_exchange):
    x = make_exchange("direct")
    qs = [ch.queue_declare("", exclusive=True).method.queue for _ in range(3)]
    for q in qs:
        ch.queue_bind(q, x, routing_key="k")
    pub.basic_publish(x, "k", b"multi", mandatory=True)
    for q in qs:
        assert drain(ch, q) == [b"multi"]


def test_fanout_ignores_routing_key(ch, pub, make_exchange):
    x = make_exchange("fanout")
    qs = [ch.queue_declare("", exclusive=True).method.queue for _ in range(3)]
    ch.queue_bind(qs[0], x, routing_key="")
    ch.queue_bind(qs[1], x, routing_key="something")
    ch.queue_bind(qs[2], x, routing_key="#")
    pub.basic_publish(x, "whatever", b"f1", mandatory=True)
    pub.basic_publish(x, "", b"f2", mandatory=True)
    for q in qs:
        assert drain(ch, q) == [b"f1", b"f2"]


def test_fanout_without_bindings_is_unroutable(pub, make_exchange):
    x = make_exchange("fanout")
    assert routes(pub, x, "k") is False


def test_amq_fanout_and_amq_topic_route(ch, pub):
    q = ch.queue_declare("", exclusive=True).method.queue
    key = uname("rk")
    ch.queue_bind(q, "amq.topic", routing_key=key + ".#")
    assert routes(pub, "amq.topic", key + ".x.y")
    ch.queue_bind(q, "amq.direct", routing_key=key)
    assert routes(pub, "amq.direct", key)
    assert drain(ch, q) == [b"probe", b"probe"]


# ---------------------------------------------------------------- headers

# (binding arguments, message headers, routed?)
HEADERS_CASES = [
    # x-match defaults to all
    ({"a": 1, "b": "two"}, {"a": 1, "b": "two"}, True),
    ({"a": 1, "b": "two"}, {"a": 1, "b": "two", "c": 3}, True),
    ({"a": 1, "b": "two"}, {"a": 1}, False),
    ({"a": 1, "b": "two"}, {"a": 2, "b": "two"}, False),
    # explicit all
    ({"x-match": "all", "a": 1, "b": 2}, {"a": 1, "b": 2}, True),
    ({"x-match": "all", "a": 1, "b": 2}, {"b": 2}, False),
    ({"x-match": "all", "a": 1, "b": 2}, {}, False),
    # any
    ({"x-match": "any", "a": 1, "b": 2}, {"a": 1}, True),
    ({"x-match": "any", "a": 1, "b": 2}, {"b": 2, "z": 0}, True),
    ({"x-match": "any", "a": 1, "b": 2}, {"a": 2, "b": 1}, False),
    ({"x-match": "any", "a": 1, "b": 2}, {}, False),
    # values are compared, not field types: a long string 'S' and a byte
    # array 'x' with the same bytes are equal; a string never equals an integer
    ({"a": 1}, {"a": 2 ** 40}, False),
    ({"a": 2 ** 40}, {"a": 2 ** 40}, True),
    ({"a": 1}, {"a": "1"}, False),
    ({"a": "x"}, {"a": b"x"}, True),
    ({"a": "x"}, {"a": "X"}, False),
    ({"a": True}, {"a": True}, True),
    ({"a": True}, {"a": False}, False),
    # a void (None) binding value matches any value of a present header
    ({"a": None}, {"a": "anything"}, True),
    ({"a": None}, {"b": 1}, False),
    # binding keys starting with x- are ignored by all / any ...
    ({"x-match": "all", "x-foo": "bar", "a": 1}, {"a": 1}, True),
    ({"x-match": "any", "x-foo": "bar", "a": 1}, {"x-foo": "bar"}, False),
    # ... and so are message headers starting with x-
    ({"x-match": "all", "a": 1}, {"a": 1, "x-foo": "y"}, True),
    # ... but considered by all-with-x / any-with-x
    ({"x-match": "all-with-x", "x-foo": "bar", "a": 1}, {"a": 1}, False),
    ({"x-match": "all-with-x", "x-foo": "bar", "a": 1}, {"a": 1, "x-foo": "bar"}, True),
    ({"x-match": "any-with-x", "x-foo": "bar", "a": 1}, {"x-foo": "bar"}, True),
    ({"x-match": "any-with-x", "x-foo": "bar", "a": 1}, {"x-foo": "baz"}, False),
    # no keys besides x-match: all matches everything, any matches nothing
    ({"x-match": "all"}, {}, True),
    ({"x-match": "all"}, {"q": 1}, True),
    ({}, {"q": 1}, True),
    ({"x-match": "any"}, {"q": 1}, False),
]


@pytest.mark.parametrize("binding,headers,expected", HEADERS_CASES,
                         ids=[f"{i}" for i in range(len(HEADERS_CASES))])
def test_headers_exchange(ch, pub, make_exchange, binding, headers, expected):
    x = make_exchange("headers")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, routing_key="", arguments=binding)
    assert routes(pub, x, "ignored-key", headers=headers) is expected, (
        f"binding {binding!r} vs headers {headers!r}")


def test_headers_exchange_without_headers_property(ch, pub, make_exchange):
    x = make_exchange("headers")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, arguments={"x-match": "any", "a": 1})
    assert routes(pub, x, "k", headers=None) is False
    q2 = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q2, x, arguments={"x-match": "all"})
    assert routes(pub, x, "k", headers=None) is True
    assert drain(ch, q2) == [b"probe"]


def test_headers_invalid_x_match(conn, ch, make_exchange):
    x = make_exchange("headers")
    q = ch.queue_declare("", exclusive=True).method.queue
    with expect_channel_close(ch, PRECONDITION_FAILED,
                              "PRECONDITION_FAILED - Invalid x-match field value",
                              conn=conn):
        ch.queue_bind(q, x, arguments={"x-match": "some"})


def test_amq_match_is_a_headers_exchange(ch, pub):
    q = ch.queue_declare("", exclusive=True).method.queue
    tag = uname("h")
    ch.queue_bind(q, "amq.match", arguments={"x-match": "all", "tag": tag})
    assert routes(pub, "amq.match", "", headers={"tag": tag})
    assert drain(ch, q) == [b"probe"]


# ---------------------------------------------------- one copy per queue

def test_one_copy_with_several_matching_topic_bindings(ch, pub, make_exchange):
    x = make_exchange("topic")
    q = ch.queue_declare("", exclusive=True).method.queue
    for pat in ("a.b", "a.*", "#", "*.b", "a.#"):
        ch.queue_bind(q, x, routing_key=pat)
    pub.basic_publish(x, "a.b", b"once", mandatory=True)
    assert drain(ch, q) == [b"once"]


def test_one_copy_with_several_headers_bindings(ch, pub, make_exchange):
    x = make_exchange("headers")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, arguments={"x-match": "any", "a": 1})
    ch.queue_bind(q, x, arguments={"x-match": "all", "b": 2})
    pub.basic_publish(x, "", b"once", properties=pika.BasicProperties(
        headers={"a": 1, "b": 2}), mandatory=True)
    assert drain(ch, q) == [b"once"]


def test_one_copy_via_queue_and_exchange_bindings(ch, pub, make_exchange):
    x = make_exchange("topic")
    y = make_exchange("fanout")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, routing_key="k")
    ch.queue_bind(q, y)
    ch.exchange_bind(destination=y, source=x, routing_key="#")
    pub.basic_publish(x, "k", b"once", mandatory=True)
    assert drain(ch, q) == [b"once"]


def test_one_copy_with_same_key_different_arguments(ch, pub, make_exchange):
    x = make_exchange("direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, routing_key="k")
    ch.queue_bind(q, x, routing_key="k", arguments={"v": 1})
    ch.queue_bind(q, x, routing_key="k", arguments={"v": 2})
    pub.basic_publish(x, "k", b"once", mandatory=True)
    assert drain(ch, q) == [b"once"]


def test_cc_and_bcc_headers(ch, pub, make_exchange):
    """RabbitMQ sender-selected distribution: CC and BCC add routing keys; BCC
    is removed from the delivered message."""
    x = make_exchange("direct")
    q_main = ch.queue_declare("", exclusive=True).method.queue
    q_cc = ch.queue_declare("", exclusive=True).method.queue
    q_bcc = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_main, x, "main")
    ch.queue_bind(q_cc, x, "cc")
    ch.queue_bind(q_bcc, x, "bcc")
    pub.basic_publish(x, "main", b"sel", mandatory=True, properties=pika.BasicProperties(
        headers={"CC": ["cc"], "BCC": ["bcc"], "keep": "me"}))
    for q in (q_main, q_cc, q_bcc):
        m, p, body = ch.basic_get(q, auto_ack=True)
        assert body == b"sel"
        assert m.routing_key == "main"
        assert p.headers.get("CC") == ["cc"]
        assert "BCC" not in p.headers
        assert p.headers.get("keep") == "me"
