"""The JSON shapes of the management API (Warren issue #11): every field RabbitMQ
3.10.8 returns for an overview, node, vhost, user, permission, queue, exchange, binding,
connection, channel, consumer and definitions export is returned with the same JSON
type. management_shapes.json was captured from RabbitMQ 3.10.8 with the same scenario
(Erlang VM internals such as garbage_collection, reductions and io_* left out; they are
listed in docs/management.md). Runs when MANAGEMENT_URL is set; passes on RabbitMQ and
on Warren."""

import base64
import json
import os
import pathlib
import urllib.parse
import urllib.request

import pytest

from amqp_support import eventually, uname

URL = os.environ.get("MANAGEMENT_URL")
pytestmark = pytest.mark.skipif(not URL, reason="set MANAGEMENT_URL to run")
SHAPES = json.loads((pathlib.Path(__file__).parent / "management_shapes.json").read_text())
# Fields RabbitMQ gives only in some states: a queue's idle_since only while the queue
# is idle (a run against RabbitMQ 3.10.8 showed it missing right after a consumer came).
ONLY_SOMETIMES = {("queue", "idle_since")}


def get(broker, path):
    req = urllib.request.Request(URL + path)
    token = base64.b64encode(f"{broker.username}:{broker.password}".encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def kind(v):
    return {dict: "object", list: "array", str: "string", bool: "bool", int: "number",
            float: "number", type(None): "null"}[type(v)]


def test_every_rabbitmq_field_is_there_with_its_type(broker):
    q, x = uname("shape"), uname("shapex")
    vh = urllib.parse.quote(broker.vhost, safe="")
    conn = broker.connect()
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(q, auto_delete=True)
        ch.exchange_declare(x, "topic", auto_delete=True)
        ch.queue_bind(q, x, "k")
        ch.basic_publish(x, "k", b"x")
        ch.basic_consume(q, lambda *a: None)
        # RabbitMQ's statistics arrive every 5 s: wait until they show the traffic.
        eventually(lambda: "message_stats" in get(broker, f"/api/queues/{vh}/{q}")
                   and get(broker, "/api/channels")
                   and "message_stats" in get(broker, "/api/channels")[0],
                   timeout=30, conns=conn, msg="statistics visible")
        mine = [c for c in get(broker, "/api/connections")
                if c["user"] == broker.username and c["protocol"] != "stream"]
        name = urllib.parse.quote(mine[0]["name"], safe="")
        objects = {
            "overview": get(broker, "/api/overview"),
            "whoami": get(broker, "/api/whoami"),
            "node": get(broker, "/api/nodes")[0],
            "vhost": get(broker, f"/api/vhosts/{vh}"),
            "user": get(broker, f"/api/users/{broker.username}"),
            "permission": get(broker, f"/api/permissions/{vh}/{broker.username}"),
            "queue": get(broker, f"/api/queues/{vh}/{q}"),
            "exchange": get(broker, f"/api/exchanges/{vh}/{x}"),
            "binding": get(broker, f"/api/bindings/{vh}/e/{x}/q/{q}")[0],
            "connection": get(broker, f"/api/connections/{name}"),
            "channel": get(broker, "/api/channels")[0],
            "consumer": get(broker, "/api/consumers")[0],
            "definitions": get(broker, "/api/definitions"),
        }
        for key in ("overview", "queue", "channel"):
            objects[key + ".message_stats"] = objects[key]["message_stats"]
        problems = []
        for key, fields in SHAPES.items():
            obj = objects[key]
            for field, expected in fields.items():
                if field not in obj and (key, field) in ONLY_SOMETIMES:
                    continue
                if field not in obj:
                    problems.append(f"{key}.{field} missing")
                elif expected != "any" and kind(obj[field]) != expected:
                    problems.append(f"{key}.{field} is {kind(obj[field])}, not {expected}")
        assert not problems, "\n".join(problems)
    finally:
        conn.close()
