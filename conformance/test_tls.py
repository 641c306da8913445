"""AMQPS with pika (Warren issue #10): server certificate verification, SASL EXTERNAL
with a client certificate, and clients that get TLS wrong.

Runs when AMQPS_PORT is set. ./test.sh makes a CA, a server and a client certificate
with openssl and starts Warren with them (`--tls-verify peer`, EXTERNAL enabled with
`ssl_cert_login_from = "common_name"`). Against RabbitMQ the same cases need RabbitMQ's
own TLS setup: `listeners.ssl.default = 5671`, `ssl_options.cacertfile/certfile/keyfile`
from the same files, `ssl_options.verify = verify_peer`, the `rabbitmq_auth_mechanism_ssl`
plugin with `auth_mechanisms.3 = EXTERNAL` and `ssl_cert_login_from = common_name`; then
set AMQPS_PORT=5671, TLS_CA, TLS_CLIENT_CERT, TLS_CLIENT_KEY, TLS_CLIENT_USER and
MANAGEMENT_URL."""

import base64
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request

import pika
import pika.exceptions as pex
import pytest

from amqp_support import uname

PORT = os.environ.get("AMQPS_PORT")
CA = os.environ.get("TLS_CA")
CLIENT_CERT = os.environ.get("TLS_CLIENT_CERT")
CLIENT_KEY = os.environ.get("TLS_CLIENT_KEY")
CLIENT_USER = os.environ.get("TLS_CLIENT_USER", "warren-tls-client")
MANAGEMENT_URL = os.environ.get("MANAGEMENT_URL")

pytestmark = pytest.mark.skipif(not (PORT and CA), reason="set AMQPS_PORT and TLS_CA to run")


def tls_params(broker, credentials=None, client_cert=False, cafile=CA, port=None):
    ctx = ssl.create_default_context(cafile=cafile)
    if client_cert:
        ctx.load_cert_chain(CLIENT_CERT, CLIENT_KEY)
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=int(port or PORT),
        virtual_host=broker.vhost,
        credentials=credentials or pika.PlainCredentials(broker.username, broker.password),
        ssl_options=pika.SSLOptions(ctx, "localhost"),
        connection_attempts=1,
        socket_timeout=10,
        blocked_connection_timeout=10,
    )


def http(broker, method, path, body=None):
    req = urllib.request.Request(MANAGEMENT_URL + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    token = base64.b64encode(f"{broker.username}:{broker.password}".encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, None


def round_trip(conn, body):
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare(uname("tls"), exclusive=True).method.queue
    ch.basic_publish("", q, body)
    for method, _props, got in ch.consume(q, auto_ack=True, inactivity_timeout=10):
        assert method is not None, "no delivery within 10 s"
        assert got == body
        break
    ch.cancel()


def test_pika_round_trip_over_tls_with_a_verified_server_certificate(broker):
    conn = pika.BlockingConnection(tls_params(broker))
    try:
        # Spans many TLS records and several AMQP frames.
        round_trip(conn, os.urandom(1_000_000))
    finally:
        conn.close()


@pytest.mark.skipif(not (CLIENT_CERT and CLIENT_KEY and MANAGEMENT_URL),
                    reason="needs a client certificate and MANAGEMENT_URL")
def test_external_logs_in_as_the_client_certificate_user(broker):
    vh = urllib.parse.quote(broker.vhost, safe="")
    user = urllib.parse.quote(CLIENT_USER, safe="")
    assert http(broker, "PUT", f"/api/users/{user}", {"password_hash": "", "tags": ""})[0] in (201, 204)
    try:
        assert http(broker, "PUT", f"/api/permissions/{vh}/{user}",
                    {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
        conn = pika.BlockingConnection(
            tls_params(broker, credentials=pika.credentials.ExternalCredentials(), client_cert=True))
        try:
            round_trip(conn, b"external")
            status, conns = http(broker, "GET", "/api/connections")
            assert status == 200
            mine = [c for c in conns if c["user"] == CLIENT_USER]
            assert len(mine) == 1, conns
            assert mine[0]["ssl"] is True
        finally:
            conn.close()
    finally:
        http(broker, "DELETE", f"/api/users/{user}")


def test_external_without_a_client_certificate_is_not_offered(broker):
    with pytest.raises(pex.AMQPConnectionError):
        pika.BlockingConnection(
            tls_params(broker, credentials=pika.credentials.ExternalCredentials()))


def test_a_client_that_does_not_trust_the_server_certificate_fails(broker):
    # The system trust store does not know the test CA (pika raises the ssl error).
    with pytest.raises((pex.AMQPConnectionError, ssl.SSLError)):
        pika.BlockingConnection(tls_params(broker, cafile=None))


def test_a_plain_client_on_the_tls_port_fails_and_the_broker_carries_on(broker):
    plain = broker.params(port=int(PORT), connection_attempts=1, socket_timeout=5)
    with pytest.raises(pex.AMQPConnectionError):
        pika.BlockingConnection(plain)
    conn = pika.BlockingConnection(tls_params(broker))
    try:
        round_trip(conn, b"still serving")
    finally:
        conn.close()


STREAMS_PORT = os.environ.get("STREAMS_PORT")


@pytest.mark.skipif(not STREAMS_PORT, reason="set STREAMS_PORT (RabbitMQ: stream.listeners.ssl.default = 5551)")
def test_rstream_publishes_and_consumes_over_the_stream_protocol_tls_listener(broker):
    rstream = pytest.importorskip("rstream")
    import asyncio

    ctx = ssl.create_default_context(cafile=CA)
    ctx.load_cert_chain(CLIENT_CERT, CLIENT_KEY)
    ctx.check_hostname = False  # rstream connects to the address, the certificate names localhost
    stream = uname("tls-stream")
    kw = dict(host="127.0.0.1", port=int(STREAMS_PORT), vhost=broker.vhost, username=broker.username,
              password=broker.password, ssl_context=ctx)

    async def go():
        async with rstream.Producer(**kw) as p:
            await p.create_stream(stream)
            try:
                await p.send_wait(stream, rstream.AMQPMessage(body=b"over tls"))
                got = asyncio.get_running_loop().create_future()

                async def on(msg, ctx):
                    if not got.done():
                        got.set_result(bytes(msg.body) if not isinstance(msg.body, list) else b"".join(msg.body))

                async with rstream.Consumer(**kw) as c:
                    await c.subscribe(stream, on, decoder=rstream.amqp_decoder,
                                      offset_specification=rstream.ConsumerOffsetSpecification(
                                          rstream.OffsetType.FIRST, None))
                    task = asyncio.create_task(c.run())
                    try:
                        return await asyncio.wait_for(got, timeout=10)
                    finally:
                        task.cancel()
            finally:
                await p.delete_stream(stream, missing_ok=True)

    assert asyncio.run(asyncio.wait_for(go(), timeout=30)) == b"over tls"
