"""Permissions, topic permissions and limits (Warren issue #10), with users and vhosts
created through the management API (so the same cases run against RabbitMQ and Warren).
Runs when MANAGEMENT_URL is set (./test.sh sets it for Warren; for RabbitMQ use
MANAGEMENT_URL=http://127.0.0.1:15672 with the management plugin enabled)."""

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import pika
import pika.exceptions as pex
import pytest

from amqp_support import expect_channel_close, uname

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
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture
def restricted(broker):
    """A user allowed to configure/write/read only names starting with its own."""
    name = uname("user").replace(".", "_")
    prefix = name + "."
    vh = urllib.parse.quote(broker.vhost, safe="")
    assert http(broker, "PUT", f"/api/users/{name}", {"password": "pw", "tags": ""}) in (201, 204)
    pattern = "^" + prefix.replace(".", "\\.")
    assert http(broker, "PUT", f"/api/permissions/{vh}/{name}",
                {"configure": pattern, "write": pattern, "read": pattern}) in (201, 204)
    yield name, prefix
    http(broker, "DELETE", f"/api/users/{name}")


def connect_as(broker, user, password="pw", vhost=None):
    return pika.BlockingConnection(broker.params(
        credentials=pika.PlainCredentials(user, password),
        virtual_host=vhost or broker.vhost))


def refused(kind, name, vhost, user):
    return f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'"


def test_configure_write_and_read_are_checked(broker, restricted, cleanup):
    user, prefix = restricted
    c = connect_as(broker, user)
    try:
        own = prefix + "q"
        cleanup.queue(own)
        c.channel().queue_declare(own)
        ch = c.channel()
        with expect_channel_close(ch, 403, conn=c) as e:
            ch.queue_declare(uname("other"))
        assert e.reply_text.startswith("ACCESS_REFUSED - access to queue 'conf.other.")
        ch = c.channel()
        with expect_channel_close(ch, 403, conn=c) as e:
            ch.basic_publish("amq.direct", "k", b"x")
        assert e.reply_text == refused("exchange", "amq.direct", broker.vhost, user)
        ch = c.channel()
        with expect_channel_close(ch, 403, conn=c) as e:
            ch.basic_publish("", own, b"x")
        assert e.reply_text == refused("exchange", "amq.default", broker.vhost, user)
        ch = c.channel()
        with expect_channel_close(ch, 403, conn=c) as e:
            ch.queue_bind(own, "amq.direct", "k")
        assert e.reply_text == refused("exchange", "amq.direct", broker.vhost, user)
        ch = c.channel()
        with expect_channel_close(ch, 403, conn=c) as e:
            ch.basic_get("amq.not-mine")
        assert e.reply_text == refused("queue", "amq.not-mine", broker.vhost, user)
    finally:
        c.close()


def test_no_permissions_in_the_vhost_is_530(broker):
    name = uname("user").replace(".", "_")
    assert http(broker, "PUT", f"/api/users/{name}", {"password": "pw", "tags": ""}) in (201, 204)
    try:
        with pytest.raises(pex.ProbableAccessDeniedError) as ei:
            connect_as(broker, name)
        assert (f"NOT_ALLOWED - access to vhost '{broker.vhost}' refused for user '{name}'"
                in str(ei.value))
    finally:
        http(broker, "DELETE", f"/api/users/{name}")


def test_topic_permissions(broker, cleanup):
    name = uname("user").replace(".", "_")
    vh = urllib.parse.quote(broker.vhost, safe="")
    http(broker, "PUT", f"/api/users/{name}", {"password": "pw", "tags": ""})
    http(broker, "PUT", f"/api/permissions/{vh}/{name}",
         {"configure": ".*", "write": ".*", "read": ".*"})
    assert http(broker, "PUT", f"/api/topic-permissions/{vh}/{name}",
                {"exchange": "amq.topic", "write": "^{username}\\.", "read": ".*"}) in (201, 204)
    c = connect_as(broker, name)
    try:
        ch = c.channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", name + ".ok", b"x")
        with expect_channel_close(ch, 403, conn=c) as e:
            ch.basic_publish("amq.topic", "other.key", b"x")
        assert e.reply_text == (f"ACCESS_REFUSED - access to topic 'other.key' in exchange "
                                f"'amq.topic' in vhost '{broker.vhost}' refused for user '{name}'")
    finally:
        c.close()
        http(broker, "DELETE", f"/api/users/{name}")


def test_vhost_limits(broker):
    vhost = uname("vh")
    q = urllib.parse.quote(vhost, safe="")
    assert http(broker, "PUT", f"/api/vhosts/{q}", {}) in (201, 204)
    try:
        http(broker, "PUT", f"/api/permissions/{q}/{broker.username}",
             {"configure": ".*", "write": ".*", "read": ".*"})
        assert http(broker, "PUT", f"/api/vhost-limits/{q}/max-queues", {"value": 1}) == 204
        assert http(broker, "PUT", f"/api/vhost-limits/{q}/max-connections", {"value": 1}) == 204
        c = connect_as(broker, broker.username, broker.password, vhost)
        try:
            c.channel().queue_declare("l1")
            ch = c.channel()
            with expect_channel_close(ch, 406, conn=c) as e:
                ch.queue_declare("l2")
            assert e.reply_text == (f"PRECONDITION_FAILED - cannot declare queue 'l2': queue "
                                    f"limit in vhost '{vhost}' (1) is reached")
            with pytest.raises(pex.ProbableAccessDeniedError) as ei:
                connect_as(broker, broker.username, broker.password, vhost)
            assert "connection limit (1) is reached" in str(ei.value)
        finally:
            c.close()
    finally:
        http(broker, "DELETE", f"/api/vhosts/{q}")


def test_deleting_a_vhost_closes_its_connections(broker):
    vhost = uname("vh")
    q = urllib.parse.quote(vhost, safe="")
    http(broker, "PUT", f"/api/vhosts/{q}", {})
    http(broker, "PUT", f"/api/permissions/{q}/{broker.username}",
         {"configure": ".*", "write": ".*", "read": ".*"})
    c = connect_as(broker, broker.username, broker.password, vhost)
    assert http(broker, "DELETE", f"/api/vhosts/{q}") == 204
    with pytest.raises(pex.ConnectionClosedByBroker) as ei:
        for _ in range(100):
            c.process_data_events(time_limit=0.1)
    assert ei.value.reply_code == 320
    assert ei.value.reply_text == f"CONNECTION_FORCED - vhost '{vhost}' is deleted"
