"""Shared helpers for the Warren AMQP 0-9-1 conformance suite.

Everything here is plain pika (BlockingConnection) plus a few small helpers:

* ``Broker``          -- where the broker is and how to build ConnectionParameters
* ``eventually``      -- wait for a condition with a timeout (no fixed sleeps)
* ``expect_channel_close`` / ``expect_connection_close`` -- assert that the
  broker closed a channel / the connection with a given reply code and text
* ``raw_rpc`` / ``raw_send`` -- send a method pika's public API refuses to send
  (e.g. a consume with an empty consumer tag), through pika's channel impl.
"""

import contextlib
import os
import struct
import time
import urllib.parse
import uuid

import pika
import pika.exceptions as pex

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

# Reply codes (AMQP 0-9-1 + RabbitMQ)
REPLY_SUCCESS = 200
NO_ROUTE = 312
CONNECTION_FORCED = 320
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540


class Broker:
    """Broker address built from AMQP_URL, optionally overridden by --host/--port."""

    def __init__(self, url=None, host=None, port=None):
        self.url = url or os.environ.get("AMQP_URL") or DEFAULT_URL
        base = pika.URLParameters(self.url)
        self.host = host or base.host
        self.port = int(port or base.port)
        self.vhost = base.virtual_host
        self.credentials = base.credentials
        self.username = base.credentials.username
        self.password = base.credentials.password

    def params(self, **overrides):
        """pika.ConnectionParameters for this broker; keyword args override."""
        kw = dict(
            host=self.host,
            port=self.port,
            virtual_host=self.vhost,
            credentials=self.credentials,
            connection_attempts=1,
            socket_timeout=10,
            stack_timeout=30,
            blocked_connection_timeout=60,
        )
        kw.update(overrides)
        return pika.ConnectionParameters(**kw)

    def connect(self, **overrides):
        return pika.BlockingConnection(self.params(**overrides))

    def __repr__(self):
        return f"Broker({self.host}:{self.port} vhost={self.vhost!r})"


def uname(prefix="t"):
    """A unique name for a queue / exchange so tests never collide."""
    return f"conf.{prefix}.{uuid.uuid4().hex[:12]}"


def eventually(fn, timeout=5.0, conns=(), interval=0.05, msg=None):
    """Poll ``fn`` until it returns a truthy value, or fail after ``timeout``.

    While waiting, pika I/O is pumped on every connection in ``conns`` (one
    BlockingConnection or a list of them) so that deliveries, returns,
    cancels and channel closes are processed.  Returns fn's truthy result.
    """
    if isinstance(conns, pika.BlockingConnection):
        conns = [conns]
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(msg or f"condition not met within {timeout}s")
        if conns:
            for c in conns:
                if c.is_open:
                    c.process_data_events(time_limit=interval / max(1, len(conns)))
        else:
            time.sleep(interval)


def pump(conn, ch, predicate, timeout=5.0, msg=None):
    """Like eventually() for one connection, but re-raises a broker channel
    close of ``ch`` instead of timing out."""

    def check():
        if ch is not None and ch.is_closed:
            reason = getattr(ch, "_closing_reason", None)
            if isinstance(reason, pex.ChannelClosedByBroker):
                raise reason
            raise AssertionError(f"channel closed unexpectedly: {reason!r}")
        return predicate()

    return eventually(check, timeout=timeout, conns=conn, msg=msg)


def sync_probe(ch):
    """A synchronous round trip on ``ch`` that changes no state.

    Used after an asynchronous method (publish, ack, ...) to make sure any
    channel.close the broker sent in response has been received: the broker
    answers methods in order, so either the probe's reply arrives or the close
    does (and pika raises it)."""
    ch.exchange_declare("amq.direct", passive=True)


def _log_close(kind, exc):
    """If CONFORMANCE_LOG_CLOSES names a file, append every broker close the
    suite asserts on (handy for diffing Warren's reply texts against
    RabbitMQ's)."""
    path = os.environ.get("CONFORMANCE_LOG_CLOSES")
    if path:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{test}\t{kind}\t{exc.reply_code}\t{exc.reply_text}\n")


def _check_text(actual, expected_prefix):
    if expected_prefix is None:
        return
    assert actual.startswith(expected_prefix), (
        f"reply_text {actual!r} does not start with {expected_prefix!r}"
    )


class _Outcome:
    exc = None

    @property
    def reply_code(self):
        return self.exc.reply_code

    @property
    def reply_text(self):
        return self.exc.reply_text


@contextlib.contextmanager
def expect_channel_close(ch, code, text_prefix=None, conn=None):
    """Assert that the body makes the broker close ``ch`` (and only ``ch``).

    If the body itself does not raise (e.g. it only did an asynchronous
    method such as basic.publish or basic.ack), a synchronous probe is sent
    on the channel to flush out the broker's channel.close.

    After the close, if ``conn`` is given, checks that the connection is
    still open and usable (a soft error closes only the channel).
    """
    out = _Outcome()
    try:
        yield out
        sync_probe(ch)
    except pex.ChannelClosedByBroker as e:
        out.exc = e
    except pex.ConnectionClosedByBroker as e:  # pragma: no cover - diagnostic
        raise AssertionError(
            f"expected channel close {code}, but the broker closed the "
            f"connection: {e.reply_code} {e.reply_text!r}"
        ) from e
    if out.exc is None:
        raise AssertionError(f"expected channel close {code}, but nothing was raised")
    _log_close("channel", out.exc)
    assert out.exc.reply_code == code, (
        f"expected reply code {code}, got {out.exc.reply_code} {out.exc.reply_text!r}"
    )
    _check_text(out.exc.reply_text, text_prefix)
    assert ch.is_closed
    if conn is not None:
        assert conn.is_open, "a channel error must not close the connection"
        # the connection still works: a new channel can do a round trip
        probe = conn.channel()
        probe.exchange_declare("amq.direct", passive=True)
        probe.close()


@contextlib.contextmanager
def expect_connection_close(conn, code, text_prefix=None, ch=None):
    """Assert that the body makes the broker close the whole connection."""
    out = _Outcome()
    try:
        yield out
        if ch is not None:
            sync_probe(ch)
        else:
            # pump I/O until the close shows up
            eventually(lambda: conn.is_closed, timeout=5.0, conns=conn)
    except pex.ConnectionClosedByBroker as e:
        out.exc = e
    except pex.ChannelClosedByBroker as e:  # pragma: no cover - diagnostic
        raise AssertionError(
            f"expected connection close {code}, but only the channel was "
            f"closed: {e.reply_code} {e.reply_text!r}"
        ) from e
    if out.exc is None:
        raise AssertionError(
            f"expected connection close {code}, but nothing was raised"
        )
    _log_close("connection", out.exc)
    assert out.exc.reply_code == code, (
        f"expected reply code {code}, got {out.exc.reply_code} {out.exc.reply_text!r}"
    )
    _check_text(out.exc.reply_text, text_prefix)
    assert conn.is_closed


def raw_rpc(conn, ch, method, replies, timeout=5.0):
    """Send ``method`` through pika's channel implementation and wait for one of
    ``replies`` (a list of pika.spec method classes). Returns the reply method.
    Broker-initiated channel/connection closes are raised as pika exceptions.
    """
    box = []
    ch._impl._rpc(method, lambda frame: box.append(frame.method), replies)

    def done():
        if conn.is_closed:
            return True
        if ch.is_closed:
            return True
        return bool(box)

    try:
        eventually(done, timeout=timeout, conns=conn)
    except pex.ConnectionClosedByBroker:
        raise
    if conn.is_closed:
        raise _connection_close_reason(conn)
    if ch.is_closed:
        reason = getattr(ch, "_closing_reason", None)
        if isinstance(reason, pex.ChannelClosedByBroker):
            raise reason
        raise AssertionError(f"channel closed: {reason!r}")
    return box[0]


def raw_send(ch, method, properties=None, body=None):
    """Send a method (with optional content) without waiting for a reply."""
    content = None
    if body is not None:
        content = (properties or pika.BasicProperties(), body)
    ch._impl._send_method(method, content)


def _connection_close_reason(conn):
    reason = getattr(conn._impl, "_error", None)
    if isinstance(reason, pex.ConnectionClosedByBroker):
        return reason
    return pex.ConnectionClosedByBroker(0, f"connection closed: {reason!r}")


class Collector:
    """basic.consume into a list of (method, properties, body)."""

    def __init__(self, ch, queue, auto_ack=False, exclusive=False,
                 consumer_tag=None, arguments=None):
        self.ch = ch
        self.queue = queue
        self.messages = []
        self.tag = ch.basic_consume(
            queue,
            self._on_message,
            auto_ack=auto_ack,
            exclusive=exclusive,
            consumer_tag=consumer_tag,
            arguments=arguments,
        )

    def _on_message(self, ch, method, props, body):
        self.messages.append((method, props, body))

    @property
    def bodies(self):
        return [m[2] for m in self.messages]

    def cancel(self):
        self.ch.basic_cancel(self.tag)


def queue_counts(ch, queue):
    """(message_count, consumer_count) from a passive queue.declare."""
    ok = ch.queue_declare(queue, passive=True).method
    return ok.message_count, ok.consumer_count


def get_all(ch, queue, auto_ack=True, limit=1000):
    """basic.get until get-empty; returns the list of bodies."""
    out = []
    for _ in range(limit):
        method, props, body = ch.basic_get(queue, auto_ack=auto_ack)
        if method is None:
            return out
        out.append(body)
    raise AssertionError("queue did not drain")


def queue_exists(conn, name):
    """Passive-declare ``name`` on a fresh channel of ``conn``: True if it
    exists, False on 404 (any other close is an assertion failure)."""
    c = conn.channel()
    try:
        c.queue_declare(name, passive=True)
    except pex.ChannelClosedByBroker as e:
        assert e.reply_code == NOT_FOUND, (e.reply_code, e.reply_text)
        return False
    c.close()
    return True


def exchange_exists(conn, name):
    c = conn.channel()
    try:
        c.exchange_declare(name, passive=True)
    except pex.ChannelClosedByBroker as e:
        assert e.reply_code == NOT_FOUND, (e.reply_code, e.reply_text)
        return False
    c.close()
    return True


# --------------------------------------------------------------------------
# Helpers for the RabbitMQ-extension tests (TTL, DLX, max-length, ...)

def queue_routable(pub, queue):
    """True if a mandatory publish of an empty message to ``queue`` through
    the default exchange is routed; False if it comes back unroutable.

    ``pub`` must be a confirm-mode channel.  Unlike a passive queue.declare,
    this does not count as "using" the queue, so it can poll a queue with
    x-expires without renewing its lease (the probe message is left in the
    queue)."""
    try:
        pub.basic_publish("", queue, b"", mandatory=True)
    except pex.UnroutableError:
        return False
    return True


def wait_get(ch, queue, timeout=5.0, auto_ack=True):
    """basic.get ``queue`` until a message arrives (e.g. one that is being
    dead-lettered); returns (method, properties, body)."""
    box = []

    def got():
        m, p, b = ch.basic_get(queue, auto_ack=auto_ack)
        if m is not None:
            box.append((m, p, b))
        return bool(box)

    eventually(got, timeout=timeout, msg=f"no message arrived in {queue!r}")
    return box[0]


def _shortstr(buf, off):
    n = buf[off]
    return buf[off + 1:off + 1 + n].decode("utf-8"), off + 1 + n


def decode_field_value(buf, off):
    """Decode one AMQP 0-9-1 field value (RabbitMQ's type tags).  Returns
    (type_tag, value, new_offset).  Tables decode to a list of
    (key, tag, value) in wire order, arrays to a list of (tag, value)."""
    tag = chr(buf[off])
    off += 1
    fixed = {"b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i",
             "i": ">I", "l": ">q", "L": ">Q", "T": ">Q", "f": ">f",
             "d": ">d"}
    if tag in fixed:
        fmt = fixed[tag]
        (v,) = struct.unpack_from(fmt, buf, off)
        return tag, v, off + struct.calcsize(fmt)
    if tag in "Sx":
        (n,) = struct.unpack_from(">I", buf, off)
        return tag, bytes(buf[off + 4:off + 4 + n]), off + 4 + n
    if tag == "t":
        return tag, bool(buf[off]), off + 1
    if tag == "D":
        (scale, v) = struct.unpack_from(">Bi", buf, off)
        return tag, (scale, v), off + 5
    if tag == "V":
        return tag, None, off
    if tag == "F":
        (n,) = struct.unpack_from(">I", buf, off)
        return tag, decode_field_table(buf[off + 4:off + 4 + n]), off + 4 + n
    if tag == "A":
        (n,) = struct.unpack_from(">I", buf, off)
        end, off, items = off + 4 + n, off + 4, []
        while off < end:
            t, v, off = decode_field_value(buf, off)
            items.append((t, v))
        return tag, items, end
    raise ValueError(f"unknown field type {tag!r}")


def decode_field_table(buf):
    """A field table as a list of (key, type_tag, value), in wire order."""
    off, out = 0, []
    while off < len(buf):
        key, off = _shortstr(buf, off)
        tag, value, off = decode_field_value(buf, off)
        out.append((key, tag, value))
    return out


def typed_headers(raw_properties):
    """The headers table of a raw basic content-header property list (the
    bytes after the body size), decoded with decode_field_table; None if the
    message has no headers property."""
    (flags,) = struct.unpack_from(">H", raw_properties, 0)
    off = 2
    if flags & 0x8000:  # content-type
        _, off = _shortstr(raw_properties, off)
    if flags & 0x4000:  # content-encoding
        _, off = _shortstr(raw_properties, off)
    if not flags & 0x2000:
        return None
    (n,) = struct.unpack_from(">I", raw_properties, off)
    return decode_field_table(raw_properties[off + 4:off + 4 + n])


def stream_endpoint(url):
    """rstream's connection keywords for a `rabbitmq-stream://user:pass@host:port/vhost`
    URL (STREAM_URL)."""
    u = urllib.parse.urlparse(url)
    vhost = urllib.parse.unquote(u.path[1:]) if len(u.path) > 1 else "/"
    return dict(host=u.hostname, port=u.port or 5552, username=urllib.parse.unquote(u.username or "guest"),
                password=urllib.parse.unquote(u.password or "guest"), vhost=vhost)
