"""Validation of queue x-arguments (and the x-priority consume argument is in
test_consumers_ext.py, x-max-priority in test_priority.py).

Every invalid argument is a *channel* error 406 PRECONDITION_FAILED; the
connection stays usable.  Arguments are validated only when the queue is
created: an existing queue is only compared (inequivalent arg ...), and a
passive declare ignores arguments altogether.
"""

import datetime
import decimal
import struct

import pika
import pytest

from amqp_support import PRECONDITION_FAILED, expect_channel_close, uname


class Typed:
    """An argument value sent with an explicit AMQP field-type tag."""

    def __init__(self, tag, fmt, value):
        self.tag, self.fmt, self.value = tag, fmt, value

    def __repr__(self):
        return f"Typed({self.tag!r}, {self.value!r})"


@pytest.fixture
def typed_args(monkeypatch):
    real = pika.data.encode_value

    def encode_value(pieces, value):
        if isinstance(value, Typed):
            packed = struct.pack(">c" + value.fmt, value.tag, value.value)
            pieces.append(packed)
            return len(packed)
        if isinstance(value, float):
            pieces.append(struct.pack(">cd", b"d", value))
            return 9
        return real(pieces, value)

    monkeypatch.setattr(pika.data, "encode_value", encode_value)


def invalid_arg(name, detail):
    """The text of RabbitMQ's check of one argument (Q and V filled in)."""
    return ("PRECONDITION_FAILED - invalid arg '" + name +
            "' for queue '{q}' in vhost '{v}': " + detail)


def int_type(name, got):
    return invalid_arg(name, f'"expected integer, got {got}"')


def bad_type(name, got):
    return invalid_arg(name, "{unacceptable_type," + got + "}")


def dlx_type(got):
    return ("PRECONDITION_FAILED - invalid type '" + got +
            "' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '{v}'")


def not_for_classic(name):
    return ("PRECONDITION_FAILED - invalid arg '" + name +
            "' for queue '{q}' in vhost '{v}' of queue type rabbit_classic_queue")


TOO_LARGE = 315360000001  # RabbitMQ's limit for TTLs is 315360000000 ms

INVALID = [
    # x-message-ttl
    ({"x-message-ttl": -1}, invalid_arg("x-message-ttl", "{value_negative,-1}")),
    ({"x-message-ttl": TOO_LARGE},
     invalid_arg("x-message-ttl", "{value_too_large,315360000001}")),
    ({"x-message-ttl": "abc"}, int_type("x-message-ttl", "longstr")),
    ({"x-message-ttl": True}, int_type("x-message-ttl", "bool")),
    ({"x-message-ttl": None}, int_type("x-message-ttl", "void")),
    ({"x-message-ttl": 1.5}, int_type("x-message-ttl", "double")),
    ({"x-message-ttl": b"1"}, int_type("x-message-ttl", "binary")),
    ({"x-message-ttl": {"a": 1}}, int_type("x-message-ttl", "table")),
    ({"x-message-ttl": [1]}, int_type("x-message-ttl", "array")),
    ({"x-message-ttl": datetime.datetime(2020, 1, 1)},
     int_type("x-message-ttl", "timestamp")),
    ({"x-message-ttl": decimal.Decimal("1.5")}, int_type("x-message-ttl", "decimal")),
    # x-expires
    ({"x-expires": 0}, invalid_arg("x-expires", "{value_zero,0}")),
    ({"x-expires": -1}, invalid_arg("x-expires", "{value_negative,-1}")),
    ({"x-expires": TOO_LARGE},
     invalid_arg("x-expires", "{value_too_large,315360000001}")),
    ({"x-expires": "abc"}, int_type("x-expires", "longstr")),
    # x-max-length / x-max-length-bytes
    ({"x-max-length": -1}, invalid_arg("x-max-length", "{value_negative,-1}")),
    ({"x-max-length": "abc"}, int_type("x-max-length", "longstr")),
    ({"x-max-length": True}, int_type("x-max-length", "bool")),
    ({"x-max-length-bytes": -1},
     invalid_arg("x-max-length-bytes", "{value_negative,-1}")),
    ({"x-max-length-bytes": "x"}, int_type("x-max-length-bytes", "longstr")),
    # x-overflow
    ({"x-overflow": "foo"}, invalid_arg("x-overflow", "invalid_overflow")),
    ({"x-overflow": "Drop-Head"}, invalid_arg("x-overflow", "invalid_overflow")),
    ({"x-overflow": 1}, bad_type("x-overflow", "signedint")),
    ({"x-overflow": b"drop-head"}, bad_type("x-overflow", "binary")),
    ({"x-overflow": None}, bad_type("x-overflow", "void")),
    # x-max-priority (more in test_priority.py)
    ({"x-max-priority": 256}, invalid_arg("x-max-priority", "{max_value_exceeded,256}")),
    ({"x-max-priority": -1}, invalid_arg("x-max-priority", "{value_negative,-1}")),
    ({"x-max-priority": "a"}, int_type("x-max-priority", "longstr")),
    # x-dead-letter-exchange: a different message format
    ({"x-dead-letter-exchange": 5}, dlx_type("signedint")),
    ({"x-dead-letter-exchange": True}, dlx_type("bool")),
    ({"x-dead-letter-exchange": b"bytes"}, dlx_type("binary")),
    ({"x-dead-letter-exchange": None}, dlx_type("void")),
    ({"x-dead-letter-exchange": ["a"]}, dlx_type("array")),
    # x-dead-letter-routing-key
    ({"x-dead-letter-routing-key": "k"},
     invalid_arg("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")),
    ({"x-dead-letter-routing-key": ""},
     invalid_arg("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")),
    ({"x-dead-letter-exchange": "a", "x-dead-letter-routing-key": 5},
     bad_type("x-dead-letter-routing-key", "signedint")),
    ({"x-dead-letter-exchange": "a", "x-dead-letter-routing-key": None},
     bad_type("x-dead-letter-routing-key", "void")),
    # x-single-active-consumer
    ({"x-single-active-consumer": "yes"},
     bad_type("x-single-active-consumer", "longstr")),
    ({"x-single-active-consumer": 1},
     bad_type("x-single-active-consumer", "signedint")),
    ({"x-single-active-consumer": None},
     bad_type("x-single-active-consumer", "void")),
    # x-queue-type / x-queue-mode / x-queue-version
    ({"x-queue-type": "foo"},
     invalid_arg("x-queue-type", "\"unsupported queue type 'foo'\"")),
    ({"x-queue-type": 5}, bad_type("x-queue-type", "signedint")),
    ({"x-queue-type": None}, bad_type("x-queue-type", "void")),
    ({"x-queue-mode": "foo"},
     invalid_arg("x-queue-mode", "\"unsupported queue mode 'foo'\"")),
    ({"x-queue-version": 3},
     invalid_arg("x-queue-version", "\"unsupported queue version '3'\"")),
    ({"x-queue-version": "a"}, int_type("x-queue-version", "longstr")),
    # arguments of other queue types are refused on a classic queue
    ({"x-delivery-limit": 5}, not_for_classic("x-delivery-limit")),
    ({"x-max-in-memory-length": 5}, not_for_classic("x-max-in-memory-length")),
    ({"x-dead-letter-strategy": "at-least-once"},
     not_for_classic("x-dead-letter-strategy")),
]


def fill(text, q, v):
    return text.replace("{q}", q).replace("{v}", v)


def _id(case):
    args, _ = case
    return ",".join(f"{k}={v!r}" for k, v in args.items())


@pytest.mark.parametrize("args, text", INVALID, ids=[_id(c) for c in INVALID])
def test_invalid_queue_argument(conn, ch, vhost, typed_args, args, text):
    q = uname("args")
    expected = fill(text, q, vhost)
    with expect_channel_close(ch, PRECONDITION_FAILED, expected,
                              conn=conn) as out:
        ch.queue_declare(q, arguments=args)
    assert out.reply_text == expected


def test_quorum_queue_must_be_durable(conn, ch, vhost):
    q = uname("args")
    expected = (f"PRECONDITION_FAILED - invalid property 'non-durable' for "
                f"queue '{q}' in vhost '{vhost}'")
    with expect_channel_close(ch, PRECONDITION_FAILED, expected,
                              conn=conn) as out:
        ch.queue_declare(q, arguments={"x-queue-type": "quorum"})
    assert out.reply_text == expected


VALID = [
    {"x-message-ttl": 0},
    {"x-message-ttl": 315360000000},
    {"x-expires": 1},
    {"x-expires": 315360000000},
    {"x-max-length": 0},
    {"x-max-length": 2 ** 40},
    {"x-max-length-bytes": 0},
    {"x-overflow": "drop-head"},
    {"x-overflow": "reject-publish"},
    {"x-overflow": "reject-publish-dlx"},
    {"x-max-priority": 0},
    {"x-max-priority": 255},
    {"x-dead-letter-exchange": ""},
    {"x-dead-letter-exchange": "conf.no-such-exchange"},
    {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": ""},
    {"x-single-active-consumer": True},
    {"x-single-active-consumer": False},
    {"x-queue-type": "classic"},
    {"x-queue-mode": "lazy"},
    {"x-queue-mode": "default"},
    {"x-queue-version": 1},
    {"x-queue-version": 2},
    {"x-no-such-argument": "whatever"},
]


@pytest.mark.parametrize("args", VALID, ids=[_id((a, None)) for a in VALID])
def test_valid_queue_argument(ch, cleanup, args):
    q = cleanup.queue(uname("args"))
    # (the declare-ok is the check: with x-expires=1 the queue is gone 1 ms
    # later)
    assert ch.queue_declare(q, arguments=args).method.queue == q


@pytest.mark.parametrize("tag, fmt", [
    (b"b", "b"), (b"B", "B"), (b"s", "h"), (b"u", "H"), (b"I", "i"),
    (b"i", "I"), (b"l", "q"), (b"L", "Q"),
], ids=lambda v: v.decode() if isinstance(v, bytes) else v)
def test_every_integer_type_is_accepted(ch, make_queue, typed_args, tag, fmt):
    make_queue(arguments={"x-max-priority": Typed(tag, fmt, 10),
                          "x-message-ttl": Typed(tag, fmt, 120),
                          "x-max-length": Typed(tag, fmt, 100)})


def test_float_type_name(conn, ch, vhost, typed_args):
    q = uname("args")
    expected = fill(int_type("x-message-ttl", "float"), q, vhost)
    with expect_channel_close(ch, PRECONDITION_FAILED, expected,
                              conn=conn) as out:
        ch.queue_declare(q, arguments={"x-message-ttl": Typed(b"f", "f", 1.5)})
    assert out.reply_text == expected


def test_short_type_name(conn, ch, vhost, typed_args):
    q = uname("args")
    expected = fill(bad_type("x-overflow", "short"), q, vhost)
    with expect_channel_close(ch, PRECONDITION_FAILED, expected,
                              conn=conn) as out:
        ch.queue_declare(q, arguments={"x-overflow": Typed(b"s", "h", 1)})
    assert out.reply_text == expected


def test_integer_types_are_equivalent_on_redeclare(ch, make_queue, typed_args):
    q = make_queue(arguments={"x-max-priority": Typed(b"b", "b", 10),
                              "x-message-ttl": Typed(b"L", "Q", 100)})
    ch.queue_declare(q, arguments={"x-max-priority": 10, "x-message-ttl": 100})
    ch.queue_declare(q, arguments={"x-max-priority": Typed(b"l", "q", 10),
                                   "x-message-ttl": Typed(b"s", "h", 100)})


# ------------------------------------------------------------ order of checks

@pytest.mark.parametrize("args, first", [
    # x-expires is checked before x-message-ttl, whatever the table order
    ({"x-message-ttl": -1, "x-expires": 0}, "x-expires"),
    ({"x-expires": 0, "x-message-ttl": -1}, "x-expires"),
    ({"x-max-priority": 256, "x-message-ttl": -1}, "x-message-ttl"),
    ({"x-max-length-bytes": -1, "x-max-length": -1}, "x-max-length"),
    ({"x-max-priority": 256, "x-max-length-bytes": -1}, "x-max-length-bytes"),
    ({"x-overflow": "a", "x-max-priority": 256}, "x-max-priority"),
    ({"x-single-active-consumer": 1, "x-overflow": "foo"}, "x-overflow"),
    ({"x-max-length": -1, "x-dead-letter-routing-key": "k"},
     "x-dead-letter-routing-key"),
    # the queue type is resolved before everything else
    ({"x-message-ttl": -1, "x-queue-type": "foo"}, "x-queue-type"),
    # the type of x-dead-letter-exchange is checked before everything else
    ({"x-message-ttl": -1, "x-dead-letter-exchange": 5},
     "x-dead-letter-exchange"),
    # queue-type specific arguments come last
    ({"x-delivery-limit": 5, "x-message-ttl": -1}, "x-message-ttl"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_which_argument_is_reported_first(conn, ch, args, first):
    with expect_channel_close(ch, PRECONDITION_FAILED, conn=conn) as out:
        ch.queue_declare(uname("args"), arguments=args)
    assert f"arg '{first}'" in out.reply_text, out.reply_text


# ------------------------------------------------------------ existing queues

@pytest.mark.parametrize("args, detail", [
    ({"x-message-ttl": -1},
     "received the value '-1' of type 'signedint' but current is none"),
    ({"x-message-ttl": "abc"},
     "received the value 'abc' of type 'longstr' but current is none"),
    ({"x-dead-letter-exchange": 5},
     "received the value '5' of type 'signedint' but current is none"),
])
def test_existing_queue_args_are_compared_not_validated(conn, ch, make_queue,
                                                        vhost, args, detail):
    q = make_queue()
    (name,) = args
    expected = (f"PRECONDITION_FAILED - inequivalent arg '{name}' for queue "
                f"'{q}' in vhost '{vhost}': {detail}")
    with expect_channel_close(ch, PRECONDITION_FAILED, expected,
                              conn=conn) as out:
        ch.queue_declare(q, arguments=args)
    assert out.reply_text == expected


@pytest.mark.parametrize("args", [
    {"x-message-ttl": 10}, {"x-expires": 100000}, {"x-max-length": 1},
    {"x-overflow": "drop-head"}, {"x-dead-letter-exchange": "a"},
    {"x-single-active-consumer": False},
], ids=lambda a: next(iter(a)))
def test_adding_an_argument_on_redeclare_is_inequivalent(conn, ch, make_queue,
                                                         vhost, args):
    q = make_queue()
    ((name, value),) = args.items()
    kind = {int: "signedint", str: "longstr", bool: "bool"}[type(value)]
    shown = str(value).lower() if isinstance(value, bool) else value
    expected = (f"PRECONDITION_FAILED - inequivalent arg '{name}' for queue "
                f"'{q}' in vhost '{vhost}': received the value '{shown}' of "
                f"type '{kind}' but current is none")
    with expect_channel_close(ch, PRECONDITION_FAILED, expected,
                              conn=conn) as out:
        ch.queue_declare(q, arguments=args)
    assert out.reply_text == expected


def test_passive_declare_ignores_arguments(ch, make_queue):
    q = make_queue()
    ok = ch.queue_declare(q, passive=True,
                          arguments={"x-message-ttl": -1, "x-expires": "a"})
    assert ok.method.queue == q
