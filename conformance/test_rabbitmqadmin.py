"""The classic rabbitmqadmin (v1, the Python script shipped in RabbitMQ's management
plugin) against the broker's management API: declare, list, publish, get, purge,
export, import, delete. Runs when MANAGEMENT_URL (http://HOST:PORT) and RABBITMQADMIN
(the script's path) are set; ./test.sh extracts the script from Debian's
rabbitmq-server package and runs this against Warren. Against RabbitMQ:
MANAGEMENT_URL=http://127.0.0.1:15672 RABBITMQADMIN=$(which rabbitmqadmin)."""

import json
import os
import subprocess
import sys
import urllib.parse

import pytest

from amqp_support import uname

URL = os.environ.get("MANAGEMENT_URL")
SCRIPT = os.environ.get("RABBITMQADMIN")

pytestmark = pytest.mark.skipif(
    not (URL and SCRIPT), reason="set MANAGEMENT_URL and RABBITMQADMIN to run")


def admin(broker, *args, check=True):
    u = urllib.parse.urlparse(URL or "")
    cmd = [sys.executable, SCRIPT, "-H", u.hostname, "-P", str(u.port),
           "-u", broker.username, "-p", broker.password, "-V", broker.vhost, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def test_declare_list_publish_get_purge_delete_a_queue(broker):
    q = uname("adminq")
    assert "queue declared" in admin(broker, "declare", "queue", f"name={q}",
                                     "durable=false").stdout
    listed = admin(broker, "list", "queues", "name", "messages", "-f", "tsv").stdout
    assert q in listed
    out = admin(broker, "publish", "exchange=amq.default", f"routing_key={q}",
                "payload=hello").stdout
    assert "Message published" in out
    # (RabbitMQ's `messages` field is sampled every 5 s, so the message is checked with
    # get, which reads the queue itself.)
    got = json.loads(admin(broker, "-f", "raw_json", "get", f"queue={q}",
                           "ackmode=ack_requeue_true").stdout)
    assert [m["payload"] for m in got] == ["hello"]
    assert "queue purged" in admin(broker, "purge", "queue", f"name={q}").stdout
    got = json.loads(admin(broker, "-f", "raw_json", "get", f"queue={q}",
                           "ackmode=ack_requeue_true").stdout)
    assert got == []
    assert "queue deleted" in admin(broker, "delete", "queue", f"name={q}").stdout
    assert q not in admin(broker, "list", "queues", "name").stdout


def test_exchange_and_binding(broker):
    x, q = uname("adminx"), uname("adminq")
    admin(broker, "declare", "exchange", f"name={x}", "type=topic", "durable=false")
    admin(broker, "declare", "queue", f"name={q}", "durable=false")
    admin(broker, "declare", "binding", f"source={x}", f"destination={q}",
          "routing_key=a.#")
    bindings = json.loads(admin(broker, "-f", "raw_json", "list", "bindings").stdout)
    assert any(b["source"] == x and b["destination"] == q and b["routing_key"] == "a.#"
               for b in bindings)
    out = admin(broker, "publish", f"exchange={x}", "routing_key=a.b", "payload=x").stdout
    assert "Message published" in out and "not routed" not in out
    admin(broker, "delete", "queue", f"name={q}")
    admin(broker, "delete", "exchange", f"name={x}")


def test_export_and_import_definitions(broker, tmp_path):
    q = uname("adminq")
    admin(broker, "declare", "queue", f"name={q}", "durable=true")
    path = tmp_path / "defs.json"
    assert "Exported definitions" in admin(broker, "export", str(path)).stdout
    defs = json.loads(path.read_text())
    assert any(x["name"] == q for x in defs["queues"])
    admin(broker, "delete", "queue", f"name={q}")
    assert "Uploaded definitions" in admin(broker, "import", str(path)).stdout
    assert q in admin(broker, "list", "queues", "name").stdout
    admin(broker, "delete", "queue", f"name={q}")


def test_a_missing_queue_is_an_error(broker):
    r = admin(broker, "delete", "queue", f"name={uname('nope')}", check=False)
    assert r.returncode != 0
    assert "Not found" in r.stderr
