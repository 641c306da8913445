"""Super streams and single active consumer over the stream protocol, with `rstream`.

A super stream is a direct exchange with `x-super-stream: true` bound to stream queues,
each binding carrying `x-stream-partition-order`. It can be declared over AMQP 0-9-1,
asked for its partitions and routes over the stream protocol (RabbitMQ 3.11+: 3.10
answers `route` and `partitions` with the request's key, which clients cannot decode),
created and deleted with the stream protocol's own commands (RabbitMQ 3.13+), and read
by a single active consumer group (RabbitMQ 3.11+).

Against RabbitMQ 3.10 (this repository's reference run) the tests that need 3.11 or
3.13 skip themselves, reading the broker's version from the peer properties; against
Warren every test runs.
"""

import asyncio
import os

import pika
import pytest

rstream = pytest.importorskip("rstream")
from rstream import (AMQPMessage, Consumer, ConsumerOffsetSpecification,  # noqa: E402
                     OffsetSpecification, OffsetType, Producer, RouteType,
                     SuperStreamConsumer, SuperStreamProducer, amqp_decoder)

from amqp_support import uname, stream_endpoint  # noqa: E402

STREAM_URL = os.environ.get("STREAM_URL")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
pytestmark = pytest.mark.skipif(not STREAM_URL, reason="STREAM_URL is not set")


def endpoint():
    return stream_endpoint(STREAM_URL)


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


def text(v):
    return v.decode() if isinstance(v, bytes) else v


async def eventually(fn, what, timeout=10.0):
    """Waits (without blocking the event loop) until ``fn()`` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not fn():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


def app_property(name):
    """A routing extractor (the client awaits it) reading an application property."""
    async def extract(msg):
        return text(msg.application_properties[name])
    return extract


def body(msg):
    return bytes(msg.body) if not isinstance(msg.body, list) else b"".join(msg.body)


async def broker_version():
    async with Producer(**endpoint()) as p:
        props = (await p.default_client).server_properties
    product = text(props.get("product", ""))
    version = tuple(int(x) for x in text(props.get("version", "0")).split(".")[:2] if x.isdigit())
    return product, version


def require_rabbitmq(minimum):
    """Skips on a RabbitMQ older than ``minimum`` (Warren runs everything)."""
    product, version = run(broker_version())
    if product == "RabbitMQ" and version < minimum:
        pytest.skip(f"needs RabbitMQ {'.'.join(map(str, minimum))}+ (this is {version})")


def declare_over_amqp(name, keys):
    """A super stream declared as RabbitMQ's tooling does it over AMQP 0-9-1; the
    bindings are made in reverse so that order comes from the binding argument."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.exchange_declare(name, "direct", durable=True, arguments={"x-super-stream": True})
    partitions = [f"{name}-{k}" for k in keys]
    for p in partitions:
        ch.queue_declare(p, durable=True, arguments={"x-queue-type": "stream"})
    for i in reversed(range(len(keys))):
        ch.queue_bind(partitions[i], name, keys[i], arguments={"x-stream-partition-order": i})
    conn.close()
    return partitions


def delete_over_amqp(name, partitions):
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    for p in partitions:
        ch.queue_delete(p)
    ch.exchange_delete(name)
    conn.close()


@pytest.fixture
def super_stream():
    name = uname("ss")
    made = []

    def make(keys):
        made.extend(declare_over_amqp(name, keys))
        return name, list(made)

    yield make
    delete_over_amqp(name, made)


async def read_all(stream, n):
    """The bodies of the first ``n`` messages of ``stream``."""
    got = []
    done = asyncio.Event()

    async def on(msg, ctx):
        got.append(body(msg).decode())
        if len(got) >= n:
            done.set()

    async with Consumer(**endpoint()) as c:
        await c.subscribe(stream, on, decoder=amqp_decoder,
                          offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None))
        task = asyncio.create_task(c.run())
        try:
            await asyncio.wait_for(done.wait(), timeout=10)
        finally:
            task.cancel()
    return got


def test_route_of_a_super_stream_declared_over_amqp(super_stream):
    require_rabbitmq((3, 11))  # 3.10's `route` answer cannot be decoded either
    name, partitions = super_stream(["amer", "emea", "apac"])

    async def go():
        async with Producer(**endpoint()) as p:
            client = await p.default_client
            return await client.route("emea", name), await client.route("nowhere", name)

    routed, unrouted = run(go())
    assert routed == [f"{name}-emea"]
    assert unrouted == []


def test_partitions_of_a_super_stream_declared_over_amqp(super_stream):
    # RabbitMQ 3.10 answers `partitions` with the request's key (0x0019, not 0x8019),
    # which clients cannot decode; 3.11 fixed it.
    require_rabbitmq((3, 11))
    name, partitions = super_stream(["amer", "emea", "apac"])

    async def go():
        async with Producer(**endpoint()) as p:
            return await (await p.default_client).partitions(name)

    assert run(go()) == partitions


def test_amqp_publishes_to_a_super_stream_reach_the_partition_of_their_key(super_stream):
    """Publishing to the super stream's exchange over AMQP 0-9-1 routes by binding key;
    stream clients read each partition. (rstream's key-routing producer caches the first
    route for every key, so it cannot be used for this.)"""
    name, partitions = super_stream(["0", "1", "2"])
    sent = {p: [] for p in partitions}
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(12):
        k = str(i % 3)
        b = f"m{i}"
        sent[f"{name}-{k}"].append(b)
        ch.basic_publish(name, k, b.encode(), mandatory=True)
    conn.close()
    for p in partitions:
        assert run(read_all(p, len(sent[p]))) == sent[p]


def test_hash_routing_spreads_messages_and_a_super_stream_consumer_reads_them_all(super_stream):
    require_rabbitmq((3, 11))  # the producer and consumer ask for the partitions
    name, partitions = super_stream(["0", "1", "2"])
    n = 60

    async def go():
        async with SuperStreamProducer(**endpoint(), super_stream=name, routing=RouteType.Hash,
                                       routing_extractor=app_property("id")) as p:
            for i in range(n):
                await p.send(AMQPMessage(body=f"h{i}".encode(), application_properties={"id": f"id-{i}"}))
        got = []
        done = asyncio.Event()

        async def on(msg, ctx):
            got.append((ctx.stream, body(msg).decode()))
            if len(got) >= n:
                done.set()

        async with SuperStreamConsumer(**endpoint(), super_stream=name) as c:
            await c.subscribe(on, decoder=amqp_decoder,
                              offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None))
            task = asyncio.create_task(c.run())
            try:
                await asyncio.wait_for(done.wait(), timeout=15)
            finally:
                task.cancel()
        return got

    got = run(go())
    assert sorted(b for _, b in got) == sorted(f"h{i}" for i in range(n))
    used = {s for s, _ in got}
    assert used <= set(partitions) and len(used) > 1, used


def test_super_stream_created_and_deleted_through_the_protocol():
    require_rabbitmq((3, 13))
    name = uname("ssp")

    async def go():
        async with Producer(**endpoint()) as p:
            client = await p.default_client
            await client.create_super_stream(name, [f"{name}-a", f"{name}-b"], ["a", "b"], {"max-age": "1h"})
            with pytest.raises(rstream.exceptions.StreamAlreadyExists):
                await client.create_super_stream(name, [f"{name}-a", f"{name}-b"], ["a", "b"], {})
            listed = await client.partitions(name)
            routed = await client.route("b", name)
            exists = await client.stream_exists(f"{name}-a")
            await client.delete_super_stream(name)
            gone = not await client.stream_exists(f"{name}-a") and not await client.stream_exists(f"{name}-b")
            with pytest.raises(rstream.exceptions.StreamDoesNotExist):
                await client.delete_super_stream(name)
            return listed, routed, exists, gone

    listed, routed, exists, gone = run(go())
    assert listed == [f"{name}-a", f"{name}-b"]
    assert routed == [f"{name}-b"]
    assert exists and gone
    # The partitions were made as streams: gone from AMQP 0-9-1 too.
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(f"{name}-a", passive=True)
    assert e.value.reply_code == 404
    conn.close()


def test_single_active_consumer_on_a_stream_fails_over_to_the_next_member():
    require_rabbitmq((3, 11))
    stream = uname("sac")

    async def go():
        async with Producer(**endpoint()) as p:
            await p.create_stream(stream)
            try:
                got = {1: [], 2: []}
                states = {1: [], 2: []}
                first_has_five = asyncio.Event()
                second_has_rest = asyncio.Event()

                def make(who):
                    async def on(msg, ctx):
                        got[who].append(body(msg).decode())
                        if who == 1 and len(got[1]) >= 5:
                            first_has_five.set()
                        if who == 2 and len(got[2]) >= 5:
                            second_has_rest.set()

                    async def update(active, ctx):
                        states[who].append(active)
                        # Resume after what the group has processed (both share it).
                        return OffsetSpecification(OffsetType.OFFSET, len(got[1]))
                    return on, update

                props = {"single-active-consumer": "true", "name": "app-1"}
                c1 = Consumer(**endpoint())
                c2 = Consumer(**endpoint())
                await c1.start()
                await c2.start()
                on1, up1 = make(1)
                on2, up2 = make(2)
                await c1.subscribe(stream, on1, decoder=amqp_decoder, properties=props, consumer_update_listener=up1)
                await c2.subscribe(stream, on2, decoder=amqp_decoder, properties=props, consumer_update_listener=up2)
                for i in range(5):
                    await p.send_wait(stream, AMQPMessage(body=f"a{i}".encode()))
                await asyncio.wait_for(first_has_five.wait(), timeout=10)
                assert got[2] == [], "the waiting member got messages"
                assert states[1] == [True]
                await c1.close()
                for i in range(5):
                    await p.send_wait(stream, AMQPMessage(body=f"b{i}".encode()))
                await asyncio.wait_for(second_has_rest.wait(), timeout=10)
                await c2.close()
                return got, states
            finally:
                await p.delete_stream(stream, missing_ok=True)

    got, states = run(go())
    assert got[1] == [f"a{i}" for i in range(5)]
    assert got[2] == [f"b{i}" for i in range(5)]
    assert states[2] == [True]


def test_single_active_consumer_spreads_super_stream_partitions_over_a_group(super_stream):
    require_rabbitmq((3, 11))
    name, partitions = super_stream(["0", "1", "2"])

    async def go():
        got = {1: [], 2: []}
        active = {1: set(), 2: set()}

        def make(who):
            async def on(msg, ctx):
                got[who].append((ctx.stream, body(msg).decode()))

            async def update(is_active, ctx):
                (active[who].add if is_active else active[who].discard)(ctx.stream)
                return OffsetSpecification(OffsetType.NEXT, 0)
            return on, update

        # rstream does not add the partition's super stream itself (RabbitMQ's Java client
        # does): without it every partition would be a plain group, active on member 0.
        props = {"single-active-consumer": "true", "name": "workers", "super-stream": name}
        c1 = SuperStreamConsumer(**endpoint(), super_stream=name)
        c2 = SuperStreamConsumer(**endpoint(), super_stream=name)
        await c1.start()
        await c2.start()
        on1, up1 = make(1)
        on2, up2 = make(2)
        await c1.subscribe(on1, decoder=amqp_decoder, properties=props, consumer_update_listener=up1)
        await eventually(lambda: len(active[1]) == 3, what="the only member active on every partition")
        await c2.subscribe(on2, decoder=amqp_decoder, properties=props, consumer_update_listener=up2)
        # Partition i goes to member i mod 2: the second member takes over partition 1.
        await eventually(lambda: active[2] == {f"{name}-1"} and active[1] == {f"{name}-0", f"{name}-2"},
                         what="partition 1 handed over")
        async with Producer(**endpoint()) as p:
            for i in range(9):
                await p.send_wait(f"{name}-{i % 3}", AMQPMessage(body=f"w{i}".encode()))
        await eventually(lambda: len(got[1]) + len(got[2]) >= 9, what="all nine delivered")
        await c1.close()
        await c2.close()
        return got

    got = run(go())
    assert sorted(s for s, _ in got[2]) == [f"{name}-1"] * 3
    assert sorted(s for s, _ in got[1]) == [f"{name}-0"] * 3 + [f"{name}-2"] * 3


def test_a_deleted_stream_is_announced_to_its_consumers():
    stream = uname("gone")
    closed = []

    async def go():
        async with Producer(**endpoint()) as p:
            await p.create_stream(stream)
            await p.send_wait(stream, AMQPMessage(body=b"x"))
            got = asyncio.Event()
            announced = asyncio.Event()

            async def on(msg, ctx):
                got.set()

            async def on_close(info):
                closed.append((info.reason, [text(s) for s in info.streams]))
                announced.set()

            async with Consumer(**endpoint(), on_close_handler=on_close) as c:
                await c.subscribe(stream, on, decoder=amqp_decoder,
                                  offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None))
                task = asyncio.create_task(c.run())
                await asyncio.wait_for(got.wait(), timeout=10)
                await p.delete_stream(stream)
                await asyncio.wait_for(announced.wait(), timeout=10)
                task.cancel()

    run(go())
    # The client's handler for a `metadata update` frame (stream not available).
    assert closed[0] == ("Metadata Update", [stream])
