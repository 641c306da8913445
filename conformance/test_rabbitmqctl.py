"""rabbitmqctl's output format and exit codes, as fixtures and CI scripts parse them:
the info lines, the tab-separated header and rows, -q / -s, nothing at all for an empty
list, Erlang-term cells, and the exit codes of common errors. Runs when RABBITMQCTL is
set to the command (with its options) that reaches the broker under test: for RabbitMQ
`RABBITMQCTL=rabbitmqctl`; ./test.sh sets it to Warren's rabbitmqctl link with the node
it started."""

import os
import shlex
import subprocess

import pytest

from amqp_support import uname

CTL = os.environ.get("RABBITMQCTL")

pytestmark = pytest.mark.skipif(not CTL, reason="set RABBITMQCTL to run")


def ctl(*args, code=0):
    r = subprocess.run([*shlex.split(CTL or ""), *args], capture_output=True, text=True,
                       timeout=120)
    if code is not None:
        assert r.returncode == code, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def rows(out):
    return out.splitlines()


def test_list_queues_info_lines_header_and_rows(broker, ch, pub):
    q = uname("ctlq")
    ch.queue_declare(q)
    for _ in range(2):
        pub.basic_publish("", q, b"x")  # confirmed: enqueued when this returns
    vh = broker.vhost
    out = ctl("-p", vh, "list_queues", "name", "messages").stdout
    assert out.startswith(f"Timeout: 60.0 seconds ...\nListing queues for vhost {vh} ...\n"
                          "name\tmessages\n"), out
    assert f"{q}\t2" in rows(out)
    quiet = ctl("-q", "-p", vh, "list_queues", "name", "messages").stdout
    assert quiet.startswith("name\tmessages\n") and f"{q}\t2" in rows(quiet)
    silent = ctl("-s", "-p", vh, "list_queues", "name", "messages").stdout
    assert "name\tmessages" not in rows(silent) and f"{q}\t2" in rows(silent)
    ch.queue_delete(q)


def test_an_empty_list_prints_no_header(broker):
    vh = uname("ctlvhost")
    ctl("add_vhost", vh)
    try:
        assert ctl("-q", "-p", vh, "list_queues", "name").stdout == ""
        assert ctl("-p", vh, "list_queues", "name").stdout == (
            f"Timeout: 60.0 seconds ...\nListing queues for vhost {vh} ...\n")
    finally:
        ctl("delete_vhost", vh)


def test_list_queues_renders_arguments_as_erlang_terms(broker, ch):
    q = uname("ctlargs")
    ch.queue_declare(q, arguments={"x-max-length": 10})
    out = ctl("-q", "-p", broker.vhost, "list_queues", "name", "arguments", "durable").stdout
    assert f'{q}\t[{{"x-max-length",10}}]\tfalse' in rows(out), out
    ch.queue_delete(q)


def test_list_users_and_tags(broker):
    u = uname("ctluser")
    ctl("add_user", u, "s3cret-pw")
    try:
        ctl("set_user_tags", u, "administrator", "monitoring")
        out = ctl("-q", "list_users").stdout
        assert out.startswith("user\ttags\n"), out
        assert f"{u}\t[administrator, monitoring]" in rows(out)
        ctl("set_user_tags", u)
        assert f"{u}\t[]" in rows(ctl("-q", "list_users").stdout)
        ctl("authenticate_user", u, "s3cret-pw")
    finally:
        ctl("delete_user", u)
    assert u not in ctl("-q", "list_users").stdout


def test_list_exchanges_bindings_and_permissions(broker, ch):
    vh = broker.vhost
    out = ctl("-q", "-p", vh, "list_exchanges", "name", "type").stdout
    assert out.startswith("name\ttype\n")
    assert "amq.direct\tdirect" in rows(out) and "amq.topic\ttopic" in rows(out)
    assert "\tdirect" in rows(out), "the default exchange has an empty name"
    q = uname("ctlbind")
    ch.queue_declare(q)
    out = ctl("-q", "-p", vh, "list_bindings").stdout
    assert out.startswith("source_name\tsource_kind\tdestination_name\tdestination_kind"
                          "\trouting_key\targuments\n"), out
    assert f"\texchange\t{q}\tqueue\t{q}\t[]" in rows(out)
    ch.queue_delete(q)
    out = ctl("-q", "-p", vh, "list_permissions").stdout
    assert out.startswith("user\tconfigure\twrite\tread\n")
    assert f"{broker.username}\t.*\t.*\t.*" in rows(out)


def test_list_vhosts(broker):
    out = ctl("-q", "list_vhosts", "name").stdout
    assert out.startswith("name\n") and broker.vhost in rows(out)


def test_error_exit_codes():
    # An unknown command is a usage error.
    assert ctl("no_such_command", code=None).returncode == 64
    # Authentication failure of a user is a data error.
    u = uname("ctlauth")
    ctl("add_user", u, "right")
    try:
        r = ctl("authenticate_user", u, "wrong", code=None)
        assert r.returncode == 65, (r.stdout, r.stderr)
    finally:
        ctl("delete_user", u)
    # Missing objects.
    r = ctl("delete_user", uname("nobody"), code=None)
    assert r.returncode != 0
    r = ctl("delete_vhost", uname("novhost"), code=None)
    assert r.returncode != 0


def test_a_missing_vhost_lists_nothing_but_refuses_changes():
    vh = uname("ctlnovhost")
    for cmd in ["list_queues", "list_exchanges", "list_bindings", "list_consumers"]:
        r = ctl("-q", "-p", vh, cmd)
        assert r.stdout == "", (cmd, r.stdout)
    r = ctl("-p", vh, "list_permissions", code=65)
    assert f"Virtual host '{vh}' does not exist" in r.stderr
    r = ctl("-p", vh, "set_permissions", "guest", ".*", ".*", ".*", code=69)
    assert f"Virtual host {vh} does not exist" in r.stderr
    r = ctl("set_permissions", uname("nobody"), ".*", ".*", ".*", code=67)
    assert "does not exist" in r.stderr
    r = ctl("-p", vh, "purge_queue", "q", code=69)


def test_idempotence_and_missing_objects():
    # Adding an existing vhost succeeds; deleting a missing queue does not.
    ctl("add_vhost", "/")
    r = ctl("delete_queue", uname("noq"), code=64)
    assert "Queue not found" in r.stderr
    ctl("list_user_permissions", uname("nobody"), code=69)
    r = ctl("clear_policy", uname("nopolicy"), code=69)
    assert "Parameter does not exist" in r.stderr
    # A pid that names no connection closes nothing.
    ctl("close_connection", "<rabbit@nohost.1.2.3>", "bye")


def test_argument_errors_print_no_banner():
    r = ctl("add_user", code=64)
    assert r.stdout == ""
    assert r.stderr.startswith("Error (argument validation): not enough arguments.\n"
                               "Arguments given:\n\tadd_user\n")
    # reset only between stop_app and start_app (the broker under test keeps running).
    r = ctl("reset", code=64)
    assert r.stdout == ""
    assert r.stderr.startswith("Error: this command requires the 'rabbit' app to be "
                               "stopped on the target node. Stop it with 'rabbitmqctl "
                               "stop_app'.\nArguments given:\n\treset\n")
    r = ctl("list_queues", "name", "no_such_column", code=64)
    assert r.stdout == ""
    assert r.stderr.startswith("Error (argument validation): Info key(s) no_such_column "
                               "are not supported\n")


def test_json_formatter_prints_json_alone(broker):
    import json
    users = json.loads(ctl("list_users", "--formatter", "json").stdout)
    assert {"user": broker.username, "tags": ["administrator"]} in users
    status = json.loads(ctl("status", "--formatter", "json").stdout)
    for key in ["alarms", "listeners", "rabbitmq_version", "disk_free", "disk_free_limit",
                "file_descriptors", "memory", "totals", "uptime", "pid",
                "vm_memory_high_watermark_limit", "vm_memory_high_watermark_setting",
                "data_directory", "active_plugins", "log_files"]:
        assert key in status, key
    assert status["alarms"] == []
    amqp = [l for l in status["listeners"] if l["protocol"] == "amqp"]
    assert amqp and all(isinstance(l["port"], int) and l["purpose"] for l in amqp)
    assert isinstance(status["memory"]["total"]["rss"], int)
    assert status["totals"]["virtual_host_count"] >= 1
    text = ctl("status").stdout
    for section in ["Runtime", "Plugins", "Data directory", "Alarms", "Memory",
                    "File Descriptors", "Free Disk Space", "Totals", "Listeners"]:
        assert f"\x1b[1m{section}\x1b[0m\n" in text, section
    assert "\n(none)\n" in text
