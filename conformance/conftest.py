"""Fixtures for the Warren AMQP 0-9-1 conformance suite.

The suite starts no broker.  It connects to AMQP_URL (default
amqp://guest:guest@127.0.0.1:5672/%2F); --host / --port override the URL's
host and port.
"""

import pika
import pika.exceptions as pex
import pytest

from amqp_support import Broker, uname


def pytest_addoption(parser):
    group = parser.getgroup("amqp", "AMQP broker under test")
    group.addoption("--host", default=None,
                    help="broker host (overrides the host in AMQP_URL)")
    group.addoption("--port", default=None, type=int,
                    help="broker port (overrides the port in AMQP_URL)")


@pytest.fixture(scope="session")
def broker(pytestconfig):
    b = Broker(host=pytestconfig.getoption("--host"),
               port=pytestconfig.getoption("--port"))
    try:
        c = b.connect()
    except pex.AMQPError as e:
        pytest.exit(f"cannot connect to the broker under test {b!r}: {e!r}",
                    returncode=3)
    c.close()
    return b


@pytest.fixture
def vhost(broker):
    return broker.vhost


@pytest.fixture
def connect(broker):
    """Factory: connect(**ConnectionParameters overrides) -> BlockingConnection.
    Every connection made is closed at teardown."""
    made = []

    def _connect(**overrides):
        c = broker.connect(**overrides)
        made.append(c)
        return c

    yield _connect
    for c in made:
        try:
            if c.is_open:
                c.close()
        except Exception:
            pass


@pytest.fixture
def conn(connect):
    return connect()


@pytest.fixture
def ch(conn):
    return conn.channel()


@pytest.fixture
def pub(conn):
    """A second channel on ``conn`` in publisher-confirm mode: when
    basic_publish returns, the broker has routed (and enqueued) the message."""
    c = conn.channel()
    c.confirm_delivery()
    return c


class Cleanup:
    def __init__(self, broker):
        self.broker = broker
        self.queues = []
        self.exchanges = []

    def queue(self, name):
        self.queues.append(name)
        return name

    def exchange(self, name):
        self.exchanges.append(name)
        return name

    def run(self):
        if not (self.queues or self.exchanges):
            return
        try:
            c = self.broker.connect()
        except Exception:
            return
        try:
            for q in self.queues:
                try:
                    chan = c.channel()
                    chan.queue_delete(q)
                    chan.close()
                except Exception:
                    if not c.is_open:
                        c = self.broker.connect()
            for x in self.exchanges:
                try:
                    chan = c.channel()
                    chan.exchange_delete(x)
                    chan.close()
                except Exception:
                    if not c.is_open:
                        c = self.broker.connect()
        finally:
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def cleanup(broker):
    """Register queue / exchange names to delete after the test."""
    cl = Cleanup(broker)
    yield cl
    cl.run()


@pytest.fixture
def make_queue(ch, cleanup):
    """Factory: declare a uniquely named queue (deleted after the test).

    make_queue(channel=None, prefix='q', **queue_declare kwargs) -> name
    """

    def _make(channel=None, prefix="q", **kwargs):
        name = uname(prefix)
        (channel or ch).queue_declare(name, **kwargs)
        return cleanup.queue(name)

    return _make


@pytest.fixture
def make_exchange(ch, cleanup):
    """Factory: declare a uniquely named exchange (deleted after the test)."""

    def _make(exchange_type="direct", channel=None, prefix="x", **kwargs):
        name = uname(prefix)
        (channel or ch).exchange_declare(name, exchange_type=exchange_type, **kwargs)
        return cleanup.exchange(name)

    return _make


@pytest.fixture
def props():
    return pika.BasicProperties


@pytest.fixture
def raw_props(monkeypatch):
    """Records the raw property bytes of every content header pika decodes
    (newest last), so tests can check header field types and order with
    amqp_support.typed_headers()."""
    seen = []
    real_decode = pika.spec.BasicProperties.decode

    def decode(self, encoded, offset=0):
        seen.append(bytes(encoded[offset:]))
        return real_decode(self, encoded, offset)

    monkeypatch.setattr(pika.spec.BasicProperties, "decode", decode)
    return seen
