"""Definitions exported by one broker import into another (Warren issue #11): Warren's
export into RabbitMQ and RabbitMQ's export into Warren. Needs two management APIs:
MANAGEMENT_URL (the broker under test) and PEER_MANAGEMENT_URL (the other one), both
with guest/guest administrators, e.g. Warren on 15720 and RabbitMQ on 15672:

    MANAGEMENT_URL=http://127.0.0.1:15720 PEER_MANAGEMENT_URL=http://127.0.0.1:15672 \\
      AMQP_URL=amqp://guest:guest@127.0.0.1:5720/%2F pytest conformance/test_definitions_round_trip.py
"""

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import pytest

from amqp_support import uname

URL = os.environ.get("MANAGEMENT_URL")
PEER = os.environ.get("PEER_MANAGEMENT_URL")
pytestmark = pytest.mark.skipif(not (URL and PEER),
                                reason="set MANAGEMENT_URL and PEER_MANAGEMENT_URL to run")


def http(base, method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, (json.loads(text) if text else None)


def populate(base, vhost):
    vh = urllib.parse.quote(vhost, safe="")
    user = vhost + "-user"
    steps = [
        ("PUT", f"/api/vhosts/{vh}", {"description": "round trip"}),
        ("PUT", f"/api/users/{user}", {"password": "pw", "tags": "monitoring"}),
        ("PUT", f"/api/permissions/{vh}/{user}", {"configure": ".*", "write": "^a", "read": ".*"}),
        ("PUT", f"/api/permissions/{vh}/guest", {"configure": ".*", "write": ".*", "read": ".*"}),
        ("PUT", f"/api/topic-permissions/{vh}/{user}", {"exchange": "ax", "write": "^k", "read": ".*"}),
        ("PUT", f"/api/policies/{vh}/cap", {"pattern": "^a", "definition": {"max-length": 4},
                                            "apply-to": "queues", "priority": 2}),
        ("PUT", f"/api/operator-policies/{vh}/opcap", {"pattern": "^a",
                                                       "definition": {"max-length": 2}}),
        ("PUT", f"/api/vhost-limits/{vh}/max-queues", {"value": 10}),
        ("PUT", f"/api/queues/{vh}/aq", {"durable": True, "arguments": {"x-message-ttl": 1000}}),
        ("PUT", f"/api/exchanges/{vh}/ax", {"type": "topic", "durable": True}),
        ("POST", f"/api/bindings/{vh}/e/ax/q/aq", {"routing_key": "k.#"}),
    ]
    for method, path, body in steps:
        status, reply = http(base, method, path, body)
        assert status in (201, 204), (method, path, status, reply)
    return vh, user


def check(base, vhost, user, defs):
    vh = urllib.parse.quote(vhost, safe="")
    entry = next(v for v in defs["vhosts"] if v["name"] == vhost)
    # RabbitMQ 3.10 exports a vhost as its name alone (3.13 adds the description).
    if "description" in entry or "description" in entry.get("metadata", {}):
        assert http(base, "GET", f"/api/vhosts/{vh}")[1]["description"] == "round trip"
    else:
        assert http(base, "GET", f"/api/vhosts/{vh}")[0] == 200
    assert http(base, "GET", f"/api/users/{user}")[1]["tags"] == ["monitoring"]
    perm = http(base, "GET", f"/api/permissions/{vh}/{user}")[1]
    assert (perm["configure"], perm["write"], perm["read"]) == (".*", "^a", ".*")
    topic = http(base, "GET", f"/api/topic-permissions/{vh}/{user}")[1]
    assert [(t["exchange"], t["write"], t["read"]) for t in topic] == [("ax", "^k", ".*")]
    policy = http(base, "GET", f"/api/policies/{vh}/cap")[1]
    assert (policy["pattern"], policy["definition"], policy["apply-to"], policy["priority"]) == (
        "^a", {"max-length": 4}, "queues", 2)
    op = http(base, "GET", f"/api/operator-policies/{vh}/opcap")[1]
    assert op["definition"] == {"max-length": 2}
    limits = http(base, "GET", f"/api/vhost-limits/{vh}")[1]
    assert limits[0]["value"] == {"max-queues": 10}
    q = http(base, "GET", f"/api/queues/{vh}/aq")[1]
    assert (q["durable"], q["arguments"]) == (True, {"x-message-ttl": 1000})
    x = http(base, "GET", f"/api/exchanges/{vh}/ax")[1]
    assert (x["type"], x["durable"]) == ("topic", True)
    b = http(base, "GET", f"/api/bindings/{vh}/e/ax/q/aq")[1]
    assert [(e["routing_key"], e["properties_key"]) for e in b] == [("k.#", "k.%23")]


def cleanup(vhost, user):
    vh = urllib.parse.quote(vhost, safe="")
    for base in (URL, PEER):
        http(base, "DELETE", f"/api/vhosts/{vh}")
        http(base, "DELETE", f"/api/users/{user}")


@pytest.mark.parametrize("source,target", [("under test", "peer"), ("peer", "under test")])
def test_definitions_move_between_the_brokers(source, target):
    src, dst = (URL, PEER) if source == "under test" else (PEER, URL)
    vhost = uname("defs")
    _, user = populate(src, vhost)
    try:
        status, defs = http(src, "GET", "/api/definitions")
        assert status == 200
        status, reply = http(dst, "POST", "/api/definitions", defs)
        assert status in (201, 204), reply
        check(dst, vhost, user, defs)
    finally:
        cleanup(vhost, user)
