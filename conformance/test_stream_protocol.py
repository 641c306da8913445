"""RabbitMQ's stream protocol (port 5552) with the `rstream` client: publish with
confirms, consume from first / next / last / an offset / a timestamp, server-side offset
tracking across reconnects, deduplication by publisher name, stream creation with
arguments, the same stream read over AMQP 0-9-1, and stream connections in the
management API (with MANAGEMENT_URL).

Needs STREAM_URL (rabbitmq-stream://user:pass@host:port/vhost); ./test.sh sets it for
Warren. Against RabbitMQ: `rabbitmq-plugins enable rabbitmq_stream` and
STREAM_URL=rabbitmq-stream://guest:guest@127.0.0.1:5552/%2f. Super streams and single
active consumer are in test_super_streams.py.
"""

import asyncio
import base64
import json
import os
import time
import urllib.parse
import urllib.request

import pika
import pytest

rstream = pytest.importorskip("rstream")
from rstream import (AMQPMessage, Consumer, ConsumerOffsetSpecification,  # noqa: E402
                     OffsetType, Producer, amqp_decoder)

from amqp_support import eventually, uname, stream_endpoint  # noqa: E402

STREAM_URL = os.environ.get("STREAM_URL")
pytestmark = pytest.mark.skipif(not STREAM_URL, reason="STREAM_URL is not set")


def endpoint():
    return stream_endpoint(STREAM_URL)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def props_of(msg):
    """Application properties with text keys and values (the client decodes both
    strings and symbols to bytes)."""
    return {text(k): text(v) for k, v in (msg.application_properties or {}).items()}


async def consume(stream, n, offset=ConsumerOffsetSpecification(OffsetType.FIRST, None), **kw):
    """The first ``n`` messages a new subscription gets: (offset, body, app props)."""
    got = []
    done = asyncio.Event()

    async def on(msg, ctx):
        got.append((ctx.offset, bytes(msg.body) if not isinstance(msg.body, list) else b"".join(msg.body),
                    props_of(msg)))
        if len(got) >= n:
            done.set()

    async with Consumer(**endpoint(), **kw) as consumer:
        await consumer.subscribe(stream, on, decoder=amqp_decoder, offset_specification=offset)
        task = asyncio.create_task(consumer.run())
        try:
            await asyncio.wait_for(done.wait(), timeout=10)
        finally:
            task.cancel()
    return got[:n]


@pytest.fixture
def stream():
    name = uname("sp")
    yield name

    async def delete():
        async with Producer(**endpoint()) as p:
            await p.delete_stream(name, missing_ok=True)

    run(delete())


def test_publish_with_confirms_and_consume_from_first(stream):
    async def go():
        async with Producer(**endpoint()) as p:
            await p.create_stream(stream)
            for i in range(10):
                await p.send_wait(stream, AMQPMessage(body=b"m%d" % i,
                                                      application_properties={"i": i, "k": "v"}))
        return await consume(stream, 10)

    got = run(go())
    assert [o for o, _, _ in got] == list(range(10))
    assert [b for _, b, _ in got] == [b"m%d" % i for i in range(10)]
    assert all(p["k"] == "v" and p["i"] == i for i, (_, _, p) in enumerate(got))


def test_offset_specifications(stream):
    async def go():
        async with Producer(**endpoint()) as p:
            await p.create_stream(stream)
            for i in range(5):
                await p.send_wait(stream, AMQPMessage(body=b"a%d" % i))
        at = await consume(stream, 3, ConsumerOffsetSpecification(OffsetType.OFFSET, 2))
        last = await consume(stream, 1, ConsumerOffsetSpecification(OffsetType.LAST, None))
        since = await consume(stream, 5, ConsumerOffsetSpecification(
            OffsetType.TIMESTAMP, int(time.time() * 1000) - 3_600_000))
        return at, last, since

    at, last, since = run(go())
    assert [b for _, b, _ in at] == [b"a2", b"a3", b"a4"]
    # One message per confirmed publish: the last chunk holds the last message.
    assert [b for _, b, _ in last] == [b"a4"]
    assert len(since) == 5


def test_next_receives_only_new_messages(stream):
    async def go():
        got = []
        ready = asyncio.Event()
        async with Producer(**endpoint()) as p:
            await p.create_stream(stream)
            await p.send_wait(stream, AMQPMessage(body=b"old"))

            async def on(msg, ctx):
                got.append(bytes(msg.body))
                ready.set()

            async with Consumer(**endpoint()) as c:
                await c.subscribe(stream, on, decoder=amqp_decoder,
                                  offset_specification=ConsumerOffsetSpecification(OffsetType.NEXT, None))
                task = asyncio.create_task(c.run())
                await p.send_wait(stream, AMQPMessage(body=b"new"))
                await asyncio.wait_for(ready.wait(), timeout=10)
                task.cancel()
        return got

    assert run(go()) == [b"new"]


def test_server_side_offset_tracking_across_connections(stream):
    async def go():
        async with Producer(**endpoint()) as p:
            await p.create_stream(stream)
            for i in range(3):
                await p.send_wait(stream, AMQPMessage(body=b"t%d" % i))
        async with Consumer(**endpoint()) as c:
            await c.store_offset(stream, "reader-1", 1)
        async with Consumer(**endpoint()) as c:
            return await c.query_offset(stream, "reader-1")

    assert run(go()) == 1


def with_id(message, publishing_id):
    """A message with its own publishing id (rstream's constructor does not take it)."""
    message.publishing_id = publishing_id
    return message


def test_deduplication_by_publisher_name(stream):
    async def go():
        async with Producer(**endpoint()) as p:
            await p.create_stream(stream)
            for i in (1, 2, 3):
                await p.send_wait(stream, with_id(AMQPMessage(body=b"d%d" % i), i),
                                  publisher_name="dedup-1")
        async with Producer(**endpoint()) as p:
            # Ids already stored are confirmed and dropped; a new one is stored.
            for i in (2, 3, 4):
                await p.send_wait(stream, with_id(AMQPMessage(body=b"again%d" % i), i),
                                  publisher_name="dedup-1")
        return await consume(stream, 4)

    got = run(go())
    assert [b for _, b, _ in got] == [b"d1", b"d2", b"d3", b"again4"]


def test_create_with_arguments_exists_and_delete(stream):
    args = {"max-length-bytes": 1_000_000, "max-age": "1h"}

    async def go():
        async with Producer(**endpoint()) as p:
            await p.create_stream(stream, arguments=args)
            exists = await p.stream_exists(stream)
            # The same arguments again: "stream already exists" (exists_ok takes it).
            await p.create_stream(stream, arguments=args, exists_ok=True)
            # Other arguments: precondition failed.
            try:
                await p.create_stream(stream, exists_ok=True)
                other = "accepted"
            except rstream.exceptions.PreconditionFailed:
                other = "precondition failed"
            await p.delete_stream(stream)
            gone = not await p.stream_exists(stream)
        return exists, other, gone

    assert run(go()) == (True, "precondition failed", True)


def test_the_same_stream_over_amqp_0_9_1(stream):
    async def publish():
        async with Producer(**endpoint()) as p:
            await p.create_stream(stream)
            await p.send_wait(stream, AMQPMessage(body=b"from-stream-protocol",
                                                  application_properties={"origin": "rstream"}))

    run(publish())
    params = pika.URLParameters(os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", stream, b"from-amqp", pika.BasicProperties(headers={"origin": "pika"}))
        ch.basic_qos(prefetch_count=10)
        got = []
        ch.basic_consume(stream, lambda c, m, p, b: got.append((b, (p.headers or {}).get("origin"))),
                         arguments={"x-stream-offset": "first"})
        eventually(lambda: len(got) == 2, conns=conn)
    finally:
        conn.close()
    assert got[0][0] == b"from-stream-protocol"
    assert got[1] == (b"from-amqp", "pika")
    back = run(consume(stream, 2))
    assert back[1][1] == b"from-amqp"
    assert back[1][2].get("origin") == "pika"


def test_wrong_password_is_refused():
    e = endpoint()
    e["password"] = "not-the-password"

    async def go():
        async with Producer(**e, max_retries=1) as p:
            await p.create_stream(uname("never"))

    with pytest.raises(Exception):
        run(go())


MANAGEMENT_URL = os.environ.get("MANAGEMENT_URL")


def api(method, path):
    e = endpoint()
    req = urllib.request.Request(MANAGEMENT_URL + path, method=method)
    token = base64.b64encode(f"{e['username']}:{e['password']}".encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
        return json.loads(body) if body else None


@pytest.mark.skipif(not MANAGEMENT_URL, reason="MANAGEMENT_URL is not set")
def test_stream_connections_are_listed_and_closed_by_the_management_api(stream):
    """A stream client's connection is in /api/connections with protocol "stream" (as
    in RabbitMQ), and DELETE /api/connections/NAME closes it."""
    conn_name = uname("api-listed")

    def mine():
        return [c for c in api("GET", "/api/connections")
                if (c.get("client_properties") or {}).get("connection_name") == conn_name]

    async def go():
        p = Producer(**endpoint(), connection_name=conn_name)
        await p.start()
        try:
            await p.create_stream(stream)
            await p.send_wait(stream, b"x")
            listed = await asyncio.to_thread(eventually, mine, 20)
            await asyncio.to_thread(
                api, "DELETE", "/api/connections/" + urllib.parse.quote(listed[0]["name"], safe=""))
            await asyncio.to_thread(eventually, lambda: not mine(), 20)
            return listed[0]
        finally:
            try:
                await asyncio.wait_for(p.close(), 5)
            except Exception:
                pass  # the broker closed it

    c = run(go())
    e = endpoint()
    assert (c["protocol"], c["user"], c["vhost"]) == ("stream", e["username"], e["vhost"])
    assert c["client_properties"]["product"] == "RabbitMQ Stream"
    # RabbitMQ's name for it: "PEER -> LOCAL", the local end on the stream port.
    assert c["name"].endswith(f":{e['port']}") and " -> " in c["name"]
