"""The Prometheus endpoint (Warren issue #11) read by the official Python client's
parsers, as a Prometheus server reads it: RabbitMQ's default text format 0.0.4 and, on
request, OpenMetrics (Warren; RabbitMQ 3.10 always answers 0.0.4). The metric families
the RabbitMQ-Overview Grafana dashboard uses must be there with their types. Runs when
PROMETHEUS_URL is set (./test.sh sets it for Warren; RabbitMQ: http://127.0.0.1:15692
with the rabbitmq_prometheus plugin)."""

import os
import urllib.error
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

URL = os.environ.get("PROMETHEUS_URL")
pytestmark = pytest.mark.skipif(not URL, reason="set PROMETHEUS_URL to run")

# family name (as the parsers name it: counters without `_total`) -> type
EXPECTED = {
    "rabbitmq_identity_info": ("gauge", "untyped", "unknown"),
    "rabbitmq_build_info": ("gauge", "untyped", "unknown"),
    "rabbitmq_connections": ("gauge",),
    "rabbitmq_channels": ("gauge",),
    "rabbitmq_queues": ("gauge",),
    "rabbitmq_consumers": ("gauge",),
    "rabbitmq_connections_opened": ("counter",),
    "rabbitmq_connections_closed": ("counter",),
    "rabbitmq_channels_opened": ("counter",),
    "rabbitmq_channels_closed": ("counter",),
    "rabbitmq_queues_declared": ("counter",),
    "rabbitmq_queues_created": ("counter",),
    "rabbitmq_queues_deleted": ("counter",),
    "rabbitmq_queue_messages_ready": ("gauge",),
    "rabbitmq_queue_messages_unacked": ("gauge",),
    "rabbitmq_queue_messages_published": ("counter",),
    "rabbitmq_channel_messages_published": ("counter",),
    "rabbitmq_channel_messages_confirmed": ("counter",),
    "rabbitmq_channel_messages_delivered": ("counter",),
    "rabbitmq_channel_messages_delivered_ack": ("counter",),
    "rabbitmq_channel_messages_acked": ("counter",),
    "rabbitmq_channel_messages_redelivered": ("counter",),
    "rabbitmq_channel_messages_unroutable_returned": ("counter",),
    "rabbitmq_channel_messages_unroutable_dropped": ("counter",),
    "rabbitmq_channel_messages_unconfirmed": ("gauge",),
    "rabbitmq_channel_get": ("counter",),
    "rabbitmq_channel_get_ack": ("counter",),
    "rabbitmq_channel_get_empty": ("counter",),
    "rabbitmq_process_resident_memory_bytes": ("gauge",),
    "rabbitmq_process_open_fds": ("gauge",),
    "rabbitmq_process_max_fds": ("gauge",),
    "rabbitmq_resident_memory_limit_bytes": ("gauge",),
    "rabbitmq_disk_space_available_bytes": ("gauge",),
    "rabbitmq_alarms_memory_used_watermark": ("gauge", "untyped", "unknown"),
    "rabbitmq_alarms_free_disk_space_watermark": ("gauge", "untyped", "unknown"),
    "rabbitmq_alarms_file_descriptor_limit": ("gauge", "untyped", "unknown"),
}


def fetch(path, accept=None):
    req = urllib.request.Request(URL + path)
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers.get("content-type", ""), r.read().decode()


def check(families):
    found = {f.name: f.type for f in families}
    problems = [f"{name} missing" for name in EXPECTED if name not in found]
    problems += [f"{name} is {found[name]}, not {' or '.join(types)}"
                 for name, types in EXPECTED.items()
                 if name in found and found[name] not in types]
    assert not problems, "\n".join(problems)
    return found


def test_default_text_format_parses_and_has_rabbitmqs_families(broker):
    conn = broker.connect()  # at least one connection and channel
    conn.channel()
    try:
        ctype, text = fetch("/metrics")
        assert ctype.startswith("text/plain"), ctype
        check(list(parse_text(text)))
    finally:
        conn.close()


def test_openmetrics_on_request_parses(broker):
    try:
        ctype, text = fetch("/metrics", "application/openmetrics-text; version=1.0.0")
    except urllib.error.HTTPError as e:
        pytest.skip(f"the broker answers {e.code} (RabbitMQ 3.10 serves only 0.0.4)")
    if not ctype.startswith("application/openmetrics-text"):
        pytest.skip(f"the broker answers {ctype} (RabbitMQ 3.10 serves only 0.0.4)")
    check(list(parse_om(text)))


def test_per_object_series_carry_vhost_and_queue_labels(broker):
    from amqp_support import uname
    q = uname("prom")
    conn = broker.connect()
    try:
        ch = conn.channel()
        ch.queue_declare(q, auto_delete=True)
        ch.basic_consume(q, lambda *a: None)
        _, text = fetch("/metrics/per-object")
        ready = [s for f in parse_text(text) if f.name == "rabbitmq_queue_messages_ready"
                 for s in f.samples]
        assert any(s.labels.get("queue") == q and s.labels.get("vhost") == broker.vhost
                   for s in ready), ready[:5]
    finally:
        conn.close()
