"""rabbitmqadmin (the classic v1 syntax) against the broker's management API: declare,
list, publish, get, purge, export, import, delete; run with two implementations: the
Python script shipped in RabbitMQ's management plugin (RABBITMQADMIN, the script's
path) and Warren's native one (RABBITMQADMIN_NATIVE, a link named rabbitmqadmin to the
warren binary). Where both are set, the native tool's output, errors and exit codes are
compared with the script's, byte for byte. Needs MANAGEMENT_URL (http://HOST:PORT).
./test.sh extracts the script from Debian's rabbitmq-server package and runs this
against Warren. Against RabbitMQ: MANAGEMENT_URL=http://127.0.0.1:15672
RABBITMQADMIN=$(which rabbitmqadmin) RABBITMQADMIN_NATIVE=/path/to/links/rabbitmqadmin."""

import json
import os
import subprocess
import sys
import urllib.parse

import pytest

from amqp_support import uname

URL = os.environ.get("MANAGEMENT_URL")
SCRIPT = os.environ.get("RABBITMQADMIN")
NATIVE = os.environ.get("RABBITMQADMIN_NATIVE")

IMPLEMENTATIONS = {}
if SCRIPT:
    IMPLEMENTATIONS["python"] = [sys.executable, SCRIPT]
if NATIVE:
    IMPLEMENTATIONS["native"] = [NATIVE]

pytestmark = pytest.mark.skipif(
    not (URL and IMPLEMENTATIONS),
    reason="set MANAGEMENT_URL and RABBITMQADMIN and/or RABBITMQADMIN_NATIVE to run")


def run_admin(command, broker, *args, check=True, stdin=None, connect=True):
    u = urllib.parse.urlparse(URL or "")
    opts = ["-H", u.hostname, "-P", str(u.port), "-u", broker.username,
            "-p", broker.password, "-V", broker.vhost] if connect else []
    r = subprocess.run([*command, *opts, *args], capture_output=True, text=True,
                       timeout=60, input=stdin if stdin is not None else "")
    if check:
        assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(params=sorted(IMPLEMENTATIONS) or ["none"])
def admin(request):
    command = IMPLEMENTATIONS.get(request.param)
    return lambda broker, *args, **kw: run_admin(command, broker, *args, **kw)


def test_declare_list_publish_get_purge_delete_a_queue(admin, broker):
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


def test_exchange_and_binding(admin, broker):
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


def test_export_and_import_definitions(admin, broker, tmp_path):
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


def test_a_missing_queue_is_an_error(admin, broker):
    r = admin(broker, "delete", "queue", f"name={uname('nope')}", check=False)
    assert r.returncode != 0
    assert "Not found" in r.stderr


def test_a_payload_from_standard_input_is_published(admin, broker):
    q = uname("adminq")
    admin(broker, "declare", "queue", f"name={q}", "durable=false")
    out = admin(broker, "publish", f"routing_key={q}", stdin="from stdin\n").stdout
    assert out == "Message published\n"
    got = json.loads(admin(broker, "-f", "raw_json", "get", f"queue={q}").stdout)
    assert [(m["payload"], m["payload_encoding"]) for m in got] == [("from stdin\n", "string")]
    assert admin(broker, "publish", "exchange=amq.direct", "routing_key=nowhere",
                 "payload=x").stdout == "Message published but NOT routed\n"
    admin(broker, "delete", "queue", f"name={q}")


def test_usage_errors_exit_1_and_bad_options_exit_2(admin, broker):
    r = admin(broker, "frobnicate", check=False)
    assert r.returncode == 1 and "ERROR: Action frobnicate not understood" in r.stderr
    r = admin(broker, "declare", "queue", check=False)
    assert r.returncode == 1 and 'mandatory argument "name" is required' in r.stderr
    r = admin(broker, "-x", "list", "queues", check=False)
    assert r.returncode == 2 and "error: no such option: -x" in r.stderr


# -- the native tool against the Python script, byte for byte -------------------------

both = pytest.mark.skipif(
    not (URL and SCRIPT and NATIVE),
    reason="set RABBITMQADMIN and RABBITMQADMIN_NATIVE to compare them")


def same(broker, *args, stdin=None, connect=True, stderr=True):
    """Runs both tools with the same arguments; their exit codes and output must be equal."""
    py = run_admin(IMPLEMENTATIONS["python"], broker, *args, check=False, stdin=stdin,
                   connect=connect)
    rs = run_admin(IMPLEMENTATIONS["native"], broker, *args, check=False, stdin=stdin,
                   connect=connect)
    assert rs.returncode == py.returncode, (args, py.stderr, rs.stderr)
    assert rs.stdout == py.stdout, args
    if stderr:
        assert rs.stderr == py.stderr, args
    return py


def same_each(broker, make_args):
    """For commands that change state (delete): each tool acts on its own object, made
    by `make_args(name)` from a fresh name; exit codes and output must be equal."""
    results = []
    for impl in ["python", "native"]:
        results.append(run_admin(IMPLEMENTATIONS[impl], broker, *make_args(impl),
                                 check=False))
    py, rs = results
    assert (rs.returncode, rs.stdout, rs.stderr) == (py.returncode, py.stdout, py.stderr)
    return py


@both
def test_native_lists_print_what_the_script_prints(broker):
    qs = [uname("cmpq"), uname("cmpq-é-long-name")]
    x = uname("cmpx")
    s = run_admin(IMPLEMENTATIONS["native"], broker, "declare", "queue", f"name={qs[0]}",
                  "durable=false", 'arguments={"x-max-length": 10, "x-message-ttl": 60000}')
    assert s.stdout == "queue declared\n"
    same(broker, "declare", "queue", f"name={qs[1]}", "durable=true", "auto_delete=false")
    same(broker, "declare", "exchange", f"name={x}", "type=topic", "durable=false")
    same(broker, "declare", "binding", f"source={x}", f"destination={qs[0]}",
         "routing_key=a.#", 'arguments={"k": "v"}')
    same(broker, "publish", f"routing_key={qs[0]}", "payload=hello",
         'properties={"headers": {"h": 1}, "delivery_mode": 2}')
    # A first get requeues the message: from then on every get sees it redelivered.
    run_admin(IMPLEMENTATIONS["native"], broker, "get", f"queue={qs[0]}")
    for fmt in ["table", "tsv", "long", "kvp", "bash", "raw_json", "pretty_json"]:
        same(broker, "-f", fmt, "list", "queues", "name", "durable", "auto_delete",
             "arguments.x-max-length", "arguments")
        same(broker, "-f", fmt, "list", "exchanges", "name", "type", "durable", "internal")
        same(broker, "-f", fmt, "list", "bindings", "source", "destination",
             "routing_key", "arguments")
        same(broker, "-f", fmt, "list", "vhosts", "name")
        same(broker, "-f", fmt, "list", "permissions", "user", "vhost", "configure")
        same(broker, "-f", fmt, "-q", "list", "queues", "name")
        same(broker, "-f", fmt, "get", f"queue={qs[0]}", "ackmode=ack_requeue_true")
    same(broker, "-f", "tsv", "-S", "name", "-R", "list", "queues", "name")
    same(broker, "list", "users", "name", "tags")
    same(broker, "-f", "tsv", "list", "queues", "name", uname("no-such-column"))
    # A list that matches nothing says so, unless -q.
    v = uname("cmpvhost")
    same(broker, "declare", "vhost", f"name={v}")
    same(broker, "declare", "permission", f"vhost={v}", f"user={broker.username}",
         "configure=.*", "write=.*", "read=.*")
    assert same(broker, "-V", v, "list", "queues").stdout == "No items\n"
    assert same(broker, "-q", "-V", v, "list", "queues").stdout == ""
    run_admin(IMPLEMENTATIONS["native"], broker, "delete", "vhost", f"name={v}")
    # Deleting: each tool deletes its own object.
    for kind, extra in [("queue", []), ("exchange", ["type=direct"])]:
        names = {"python": uname("cmpdel"), "native": uname("cmpdel")}
        for impl, n in names.items():
            run_admin(IMPLEMENTATIONS[impl], broker, "declare", kind, f"name={n}", *extra)
        same_each(broker, lambda impl: ["delete", kind, f"name={names[impl]}"])
    for q in qs:
        run_admin(IMPLEMENTATIONS["native"], broker, "delete", "queue", f"name={q}")
    run_admin(IMPLEMENTATIONS["native"], broker, "delete", "exchange", f"name={x}")


@both
def test_native_policies_and_json_columns_match_the_script(broker):
    name = uname("cmppol")
    same(broker, "declare", "policy", f"name={name}", "pattern=^cmp-none-",
         'definition={"max-length": 5, "message-ttl": 1000}', "priority=3",
         "apply-to=queues")
    for fmt in ["table", "tsv", "long", "kvp"]:
        same(broker, "-f", fmt, "list", "policies", "name", "pattern", "definition",
             "priority", "apply-to")
    run_admin(IMPLEMENTATIONS["native"], broker, "delete", "policy", f"name={name}")


@both
def test_native_errors_and_usage_match_the_script(broker):
    same(broker, "delete", "queue", f"name={uname('nope')}")
    same(broker, "purge", "queue", f"name={uname('nope')}")
    same(broker, "frobnicate")
    same(broker)
    same(broker, "declare", "queue")
    same(broker, "declare", "queue", "foo")
    same(broker, "declare", "queue", "name=q", "bogus=1")
    same(broker, "declare", "queue", "name=q", "arguments=not-json")
    same(broker, "declare", "user", "name=u", "tags=")
    same(broker, "declare", "thing", "name=q")
    same(broker, "list", "things")
    # (The script fails here with a Python traceback; the native tool says why.)
    same(broker, "-f", "weird", "list", "queues", stderr=False)
    same(broker, "-x", "list", "queues")
    same(broker, "-t", "abc", "list", "queues")
    same(broker, "--ss", "list", "queues")
    same(broker, "list", "queues", "-H")
    same(broker, "help", "subcommands", connect=False)
    same(broker, "help", "nothing", connect=False)
    same(broker, "get", "queue=q", "count=2", "payload_file=/dev/null")
    same(broker, "-P", "1", "list", "queues", stderr=True)
    r = same(broker, "-p", "wrong-password", "list", "queues", "name")
    assert r.returncode == 1 and "Access refused" in r.stderr
