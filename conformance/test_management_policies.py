"""Policies, operator policies and parameters over the management API (Warren issue
#11), checked against RabbitMQ and Warren alike: status codes, JSON shapes, RabbitMQ's
error texts, and a policy set at run time applying to a queue that already exists.
Runs when MANAGEMENT_URL is set (./test.sh sets it for Warren; for RabbitMQ use
MANAGEMENT_URL=http://127.0.0.1:15672 with the management plugin enabled)."""

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import pika
import pytest

from amqp_support import eventually, uname

URL = os.environ.get("MANAGEMENT_URL")
pytestmark = pytest.mark.skipif(not URL, reason="set MANAGEMENT_URL to run")


def http(broker, method, path, body=None):
    req = urllib.request.Request(URL + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    token = base64.b64encode(f"{broker.username}:{broker.password}".encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, (json.loads(text) if text else None)


@pytest.fixture
def names(broker):
    """A unique policy name and queue prefix; the policy is removed afterwards."""
    pname = uname("pol").replace(".", "_")
    prefix = uname("polq") + "."
    vh = urllib.parse.quote(broker.vhost, safe="")
    yield vh, pname, prefix
    http(broker, "DELETE", f"/api/policies/{vh}/{pname}")
    http(broker, "DELETE", f"/api/operator-policies/{vh}/{pname}")


def ready(broker, queue):
    conn = broker.connect()
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def test_a_policy_set_at_run_time_caps_an_existing_queue(broker, names):
    vh, pname, prefix = names
    queue = prefix + "q"
    conn = broker.connect()
    try:
        ch = conn.channel()
        ch.queue_declare(queue)
        ch.confirm_delivery()
        for i in range(10):
            ch.basic_publish("", queue, str(i).encode())
        pattern = "^" + prefix.replace(".", "\\.")
        status, _ = http(broker, "PUT", f"/api/policies/{vh}/{pname}",
                         {"pattern": pattern, "definition": {"max-length": 3},
                          "apply-to": "queues", "priority": 1})
        assert status == 201
        eventually(lambda: ready(broker, queue) == 3, msg="policy applied to the queue")
        # drop-head kept the newest three.
        bodies = [ch.basic_get(queue, auto_ack=True)[2] for _ in range(3)]
        assert bodies == [b"7", b"8", b"9"]
        status, p = http(broker, "GET", f"/api/policies/{vh}/{pname}")
        assert status == 200
        assert p == {"vhost": broker.vhost, "name": pname, "pattern": pattern,
                     "apply-to": "queues", "definition": {"max-length": 3}, "priority": 1}
        status, _ = http(broker, "PUT", f"/api/policies/{vh}/{pname}",
                         {"pattern": pattern, "definition": {"max-length": 5}})
        assert status == 204
        status, p = http(broker, "GET", f"/api/policies/{vh}/{pname}")
        assert p["apply-to"] == "all" and p["priority"] == 0
        ch.queue_delete(queue)
    finally:
        conn.close()
    assert http(broker, "DELETE", f"/api/policies/{vh}/{pname}")[0] == 204
    assert http(broker, "DELETE", f"/api/policies/{vh}/{pname}")[0] == 404
    assert http(broker, "GET", f"/api/policies/{vh}/{pname}") == (
        404, {"error": "Object Not Found", "reason": "Not Found"})


@pytest.mark.parametrize("body,reason", [
    ({"pattern": "x", "definition": {"foo": "bar"}},
     "Validation failed\n\n[{&lt;&lt;\"foo\"&gt;&gt;,&lt;&lt;\"bar\"&gt;&gt;}] are not recognised policy settings\n"),
    ({"pattern": "x", "definition": {"max-length": "five"}},
     "Validation failed\n\n&lt;&lt;\"five\"&gt;&gt; is not a valid maximum length\n"),
    ({"definition": {"max-length": 5}}, "[{key_missing,pattern}]"),
    ({"pattern": "x"}, "[{key_missing,definition}]"),
    ({"pattern": "x", "definition": {}}, "Validation failed\n\nno policy provided\n"),
    ({"pattern": "x", "definition": {"max-length": 5}, "apply-to": "bogus"},
     "Validation failed\n\napply-to 'bogus' unrecognised; should be 'queues', 'exchanges' or 'all'\n"),
    ({"pattern": "x", "definition": {"max-length": 5}, "priority": "2"},
     "Validation failed\n\npriority should be a number, actually was &lt;&lt;\"2\"&gt;&gt;\n"),
])
def test_invalid_policies_are_refused_with_rabbitmqs_reason(broker, names, body, reason):
    vh, pname, _ = names
    assert http(broker, "PUT", f"/api/policies/{vh}/{pname}", body) == (
        400, {"error": "bad_request", "reason": reason})


def test_policy_in_a_missing_vhost_is_404(broker, names):
    _, pname, _ = names
    assert http(broker, "PUT", f"/api/policies/no-such-vhost-{pname}/{pname}",
                {"pattern": "x", "definition": {"max-length": 1}}) == (
        404, {"error": "not_found", "reason": "vhost_not_found"})


def test_operator_policies_take_limits_only(broker, names):
    vh, pname, prefix = names
    status, body = http(broker, "PUT", f"/api/operator-policies/{vh}/{pname}",
                        {"pattern": "x", "definition": {"dead-letter-exchange": "x"}})
    assert (status, body) == (400, {
        "error": "bad_request",
        "reason": "Validation failed\n\n[{<<\"dead-letter-exchange\">>,<<\"x\">>}] are not recognised policy settings\n"})
    pattern = "^" + prefix.replace(".", "\\.")
    assert http(broker, "PUT", f"/api/operator-policies/{vh}/{pname}",
                {"pattern": pattern, "definition": {"max-length": 3, "message-ttl": 100},
                 "apply-to": "queues"})[0] == 201
    status, listed = http(broker, "GET", "/api/operator-policies")
    assert status == 200
    mine = [p for p in listed if p["name"] == pname]
    assert mine == [{"vhost": broker.vhost, "name": pname, "pattern": pattern,
                     "apply-to": "queues", "definition": {"max-length": 3, "message-ttl": 100},
                     "priority": 0}]
    status, params = http(broker, "GET", "/api/parameters")
    assert status == 200
    assert any(p["component"] == "operator_policy" and p["name"] == pname for p in params)
    assert http(broker, "DELETE", f"/api/operator-policies/{vh}/{pname}")[0] == 204


def test_parameters_of_a_missing_plugin_are_refused(broker):
    vh = urllib.parse.quote(broker.vhost, safe="")
    assert http(broker, "PUT", f"/api/parameters/federation-upstream/{vh}/up",
                {"value": {"uri": "amqp://localhost"}}) == (
        400, {"error": "bad_request",
              "reason": "Validation failed\n\ncomponent federation-upstream not found\n"})
    assert http(broker, "GET", "/api/parameters/federation-upstream") == (200, [])


def test_global_parameters_round_trip(broker):
    name = uname("gp").replace(".", "_")
    assert http(broker, "PUT", f"/api/global-parameters/{name}", {"value": {"a": 1}})[0] == 201
    assert http(broker, "PUT", f"/api/global-parameters/{name}", {"value": {"a": 2}})[0] == 204
    assert http(broker, "GET", f"/api/global-parameters/{name}") == (
        200, {"name": name, "value": {"a": 2}})
    status, listed = http(broker, "GET", "/api/global-parameters")
    assert status == 200 and {"name": name, "value": {"a": 2}} in listed
    assert http(broker, "DELETE", f"/api/global-parameters/{name}")[0] == 204
    assert http(broker, "GET", f"/api/global-parameters/{name}")[0] == 404
