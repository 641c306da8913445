"""rabbitmqctl's and rabbitmq-diagnostics' output and exit codes, as fixtures and CI
scripts parse them: the info lines (banners), the tab-separated header and rows, -q / -s,
nothing at all for an empty streamed list, Erlang-term cells, JSON, the words of each
command's success and of its typical errors. Runs when RABBITMQCTL is set to the command
(with its options) that reaches the broker under test: for RabbitMQ
`RABBITMQCTL=rabbitmqctl`; ./test.sh sets it to Warren's rabbitmqctl link with the node
it started. rabbitmq-diagnostics is the tool of that name next to RABBITMQCTL's (or
RABBITMQ_DIAGNOSTICS). Every test leaves the broker as it found it: commands that would
not (memory and disk limits, alarms, closing every connection, plugins) are checked in
tests/it/ctl_commands.rs against a Warren node, with the real tools' output."""

import json
import os
import re
import shlex
import stat
import subprocess
import tempfile
import time

import pika.exceptions as pex
import pytest

from amqp_support import eventually, uname

CTL = os.environ.get("RABBITMQCTL")

pytestmark = pytest.mark.skipif(not CTL, reason="set RABBITMQCTL to run")


def _sibling(tool):
    """RABBITMQCTL's command with rabbitmqctl replaced by `tool` from the same
    directory (rabbitmq-diagnostics), options kept."""
    parts = shlex.split(CTL or "")
    for i, p in enumerate(parts):
        if os.path.basename(p) == "rabbitmqctl":
            parts[i] = os.path.join(os.path.dirname(p), tool)
    return parts


def _run(cmd, args, code, input):
    r = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120,
                       input=input if input is not None else "")
    if code is not None:
        assert r.returncode == code, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def ctl(*args, code=0, input=None):
    return _run(shlex.split(CTL or ""), args, code, input)


def diag(*args, code=0):
    """rabbitmq-diagnostics (RABBITMQ_DIAGNOSTICS, else next to RABBITMQCTL's tool)."""
    cmd = shlex.split(os.environ.get("RABBITMQ_DIAGNOSTICS") or "") or \
        _sibling("rabbitmq-diagnostics")
    return _run(cmd, args, code, None)


@pytest.fixture(scope="module")
def node():
    """The node's name, as the tools print it (from ping's banner)."""
    m = re.match(r"Will ping (\S+)\. ", ctl("ping").stdout)
    assert m, "ping banner"
    return m.group(1)


@pytest.fixture
def own_vhost(broker):
    """A fresh vhost the broker's user may use; deleted (with its connections) after."""
    vh = uname("ctlvh")
    ctl("-q", "add_vhost", vh)
    ctl("-q", "set_permissions", "-p", vh, broker.username, ".*", ".*", ".*")
    yield vh
    ctl("-q", "delete_vhost", vh, code=None)


@pytest.fixture
def own_user():
    u = uname("ctlu")
    ctl("-q", "add_user", u, "pw-1")
    yield u
    ctl("-q", "delete_user", u, code=None)


def wait_closed(conn, timeout=10.0):
    """Pumps `conn` until the broker closes it; returns the close."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.process_data_events(time_limit=0.1)
        except (pex.ConnectionClosedByBroker, pex.AMQPConnectionError) as e:
            return e
        assert time.monotonic() < deadline, "connection not closed"


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


def test_list_queues_counts_ready_and_unacknowledged_bytes(broker, ch, pub):
    q = uname("ctlbytes")
    ch.queue_declare(q)
    for body in [b"0123456789", b"abcdefghij", b"ABCDEFGHIJKLMNOPQRST"]:
        pub.basic_publish("", q, body)
    # Two fetched and not acked: 20 bytes unacknowledged, the 20-byte one ready.
    tags = [ch.basic_get(q, auto_ack=False)[0].delivery_tag for _ in range(2)]
    cols = ["name", "messages_ready", "messages_unacknowledged", "message_bytes",
            "message_bytes_ready", "message_bytes_unacknowledged"]
    out = ctl("-q", "-p", broker.vhost, "list_queues", *cols).stdout
    assert f"{q}\t1\t2\t40\t20\t20" in rows(out), out
    ch.basic_nack(tags[-1], multiple=True, requeue=True)
    eventually(lambda: f"{q}\t3\t0\t40\t40\t0" in rows(
        ctl("-q", "-p", broker.vhost, "list_queues", *cols).stdout))
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


# ----- node commands: ping, await_startup, status, and rabbitmq-diagnostics -----

def test_ping_and_await_startup(node):
    banner = (f"Will ping {node}. This only checks if the OS process is running and "
              "registered with epmd. Timeout: 60000 ms.\n")
    assert ctl("ping").stdout == banner + "Ping succeeded\n"
    assert ctl("-q", "ping").stdout == "Ping succeeded\n"
    assert diag("ping").stdout == banner + "Ping succeeded\n"
    assert diag("-q", "ping").stdout == "Ping succeeded\n"
    # await_startup on a running node returns at once and prints nothing.
    assert ctl("await_startup").stdout == ""
    assert ctl("-q", "await_startup").stdout == ""


def test_commands_belong_to_their_tool():
    # await_startup is rabbitmqctl's; the health checks, listeners and server_version
    # are rabbitmq-diagnostics'. Elsewhere they are unknown (64), with no output.
    for tool, cmd in [(diag, "await_startup"), (ctl, "server_version"),
                      (ctl, "check_running"), (ctl, "listeners"),
                      (ctl, "check_port_connectivity")]:
        r = tool(cmd, code=64)
        assert r.stdout == ""
        assert r.stderr.startswith(f"\nCommand '{cmd}' not found. \n"), r.stderr


def test_diagnostics_status_has_rabbitmqctls_sections(node):
    out = diag("status").stdout
    assert out.startswith(f"Status of node {node} ...\n\x1b[1mRuntime\x1b[0m\n\n"), out
    for section in ["Runtime", "Plugins", "Data directory", "Config files", "Log file(s)",
                    "Alarms", "Memory", "File Descriptors", "Free Disk Space", "Totals",
                    "Listeners"]:
        assert f"\x1b[1m{section}\x1b[0m\n\n" in out, section
    assert f"\nNode name: {node}\n" in out
    assert "\x1b[1mAlarms\x1b[0m\n\n(none)\n" in out
    assert re.search(r"\nTotal memory used: \d+\.\d{1,4} gb\nCalculation strategy: rss\n"
                     r"Memory high watermark setting: ", out), out
    assert re.search(r"\nLow free disk space watermark: \d+\.\d{1,4} gb\n"
                     r"Free disk space: \d+\.\d{1,4} gb\n", out), out
    assert re.search(r"\nConnection count: \d+\nQueue count: \d+\n"
                     r"Virtual host count: \d+\n", out), out
    assert ctl("-q", "status").stdout.startswith("\x1b[1mRuntime\x1b[0m\n")


def test_diagnostics_health_checks(broker, node):
    assert diag("check_running").stdout == (
        f"Checking if RabbitMQ is running on node {node} ...\n"
        f"RabbitMQ on node {node} is fully booted and running\n")
    assert diag("-q", "check_running").stdout == \
        f"RabbitMQ on node {node} is fully booted and running\n"
    # (3.10's check_alarms has check_local_alarms' banner.)
    asking = f"Asking node {node} to report any local resource alarms ...\n"
    assert diag("check_local_alarms").stdout == \
        asking + f"Node {node} reported no local alarms\n"
    assert diag("check_alarms").stdout == \
        asking + f"Node {node} reported no alarms, local or clusterwide\n"
    assert diag("-q", "check_alarms").stdout == \
        f"Node {node} reported no alarms, local or clusterwide\n"
    out = diag("check_port_connectivity").stdout
    m = re.fullmatch(f"Testing TCP connections to all active listeners on node {re.escape(node)}"
                     r" \.\.\.\nSuccessfully connected to ports ((?:\d+, )*\d+) on node "
                     f"{re.escape(node)}\\.\n", out)
    assert m, out
    ports = [int(p) for p in m.group(1).split(", ")]
    assert ports == sorted(ports) and broker.port in ports
    for given in ["amqp", "AMQP091", "amqp0-9-1"]:
        assert diag("check_protocol_listener", given).stdout == (
            f"Asking node {node} if there's an active listener for protocol {given} ...\n"
            f"A listener for protocol amqp is running on node {node}.\n")
    r = diag("check_protocol_listener", "stomp", code=69)
    assert r.stdout == \
        f"Asking node {node} if there's an active listener for protocol stomp ...\n"
    m = re.fullmatch(f"Error:\nNo listener for protocol stomp is active on node "
                     f"{re.escape(node)}\\. Found listeners for the following protocols: "
                     r"(.+)\n", r.stderr)
    assert m, r.stderr
    found = m.group(1).split(", ")
    assert "amqp" in found and found == sorted(found)


def test_diagnostics_listeners_and_server_version(broker, node):
    out = diag("listeners").stdout
    lines = out.splitlines()
    assert lines[0] == f"Asking node {node} to report its protocol listeners ..."
    for line in lines[1:]:
        assert re.fullmatch(r"Interface: (\[[0-9a-f:]+\]|[0-9.]+), port: \d+, protocol: "
                            r"[a-z/-]+, purpose: .+", line), line
    assert any(re.fullmatch(rf"Interface: \S+, port: {broker.port}, protocol: amqp, "
                            r"purpose: AMQP 0-9-1 and AMQP 1\.0", l) for l in lines), out
    assert diag("-q", "listeners").stdout == "".join(l + "\n" for l in lines[1:])
    out = diag("server_version").stdout
    assert re.fullmatch(f"Asking node {re.escape(node)} for its RabbitMQ version\\.\\.\\.\n"
                        r"3\.\d+\.\d+\n", out), out
    assert re.fullmatch(r"3\.\d+\.\d+\n", diag("-q", "server_version").stdout)


def test_eval_of_clearing_an_absent_memory_alarm():
    # Clearing an alarm that is not set changes nothing (setting one is in
    # tests/it/ctl_commands.rs: it would block the broker's publishers).
    expr = "rabbit_alarm:clear_alarm({{resource_limit, memory, node()}, []})."
    assert ctl("eval", expr).stdout == "ok\n"
    assert ctl("-q", "eval", expr).stdout == "ok\n"


def test_watermark_and_disk_limit_argument_errors():
    # Refused before anything changes (setting them is in tests/it/ctl_commands.rs).
    for args, code, msg in [
        (["set_vm_memory_high_watermark"], 64, "not enough arguments."),
        (["set_vm_memory_high_watermark", "2"], 65,
         "Bad argument: The threshold should be a fraction between 0.0 and 1.0"),
        (["set_vm_memory_high_watermark", "-1"], 65,
         "Bad argument: The threshold should be a fraction between 0.0 and 1.0"),
        (["set_vm_memory_high_watermark", "abc"], 65, "Bad argument."),
        (["set_vm_memory_high_watermark", "absolute", "abc"], 65, "Bad argument."),
        (["set_vm_memory_high_watermark", "absolute", "10XB"], 65,
         "Bad argument: Invalid units."),
        (["set_vm_memory_high_watermark", "absolute", "1.5GB"], 65,
         "Bad argument: The threshold should be an integer."),
        (["set_vm_memory_high_watermark", "absolute"], 64, "not enough arguments."),
        (["set_vm_memory_high_watermark", "0.4", "extra"], 64, "too many arguments."),
        (["set_disk_free_limit", "mem_relative"], 64, "not enough arguments."),
        (["set_disk_free_limit", "10", "20"], 64, "too many arguments."),
        (["set_disk_free_limit"], 64, "not enough arguments."),
        (["set_disk_free_limit", "abc"], 65, "Bad argument."),
        (["set_disk_free_limit", "10XB"], 65, "Bad argument."),
        (["set_disk_free_limit", "mem_relative", "x"], 65, "Bad argument."),
    ]:
        r = ctl(*args, code=code)
        assert r.stdout == "", args
        assert r.stderr.startswith(f"Error (argument validation): {msg}\nArguments given:\n"
                                   f"\t{' '.join(args)}\n"), (args, r.stderr)


# ----- users -----

def test_user_lifecycle_output():
    u = uname("ctlu")
    r = ctl("add_user", u, "pw-1")
    assert r.stdout == (f'Adding user "{u}" ...\nDone. Don\'t forget to grant the user '
                        "permissions to some virtual hosts! See 'rabbitmqctl help "
                        "set_permissions' to learn more.\n")
    try:
        assert ctl("-q", "add_user", u, "x", code=70).stderr == \
            f'Error:\nUser "{u}" already exists\n'
        r = ctl("add_user", u, "x", code=70)
        assert r.stdout == f'Adding user "{u}" ...\n'
        assert ctl("change_password", u, "pw-2").stdout == \
            f'Changing password for user "{u}" ...\n'
        assert ctl("authenticate_user", u, "pw-2").stdout == \
            f'Authenticating user "{u}" ...\nSuccess\n'
        assert ctl("-q", "authenticate_user", u, "pw-2").stdout == "Success\n"
        r = ctl("authenticate_user", u, "pw-1", code=65)
        assert r.stdout == f'Authenticating user "{u}" ...\n'
        assert r.stderr == (f'Error:\nError: failed to authenticate user "{u}"\n'
                            f"user '{u}' - invalid credentials\n")
        assert ctl("set_user_tags", u, "monitoring", "policymaker").stdout == \
            f'Setting tags for user "{u}" to [monitoring, policymaker] ...\n'
        assert f"{u}\t[monitoring, policymaker]" in rows(ctl("-q", "list_users").stdout)
        assert ctl("clear_password", u).stdout == f'Clearing password for user "{u}" ...\n'
        ctl("authenticate_user", u, "pw-2", code=65)
        # Without a password argument, it is read from standard input.
        r = ctl("change_password", u, input="pw-3\n")
        assert r.stdout == f'Changing password for user "{u}" ...\nPassword: \n'
        ctl("authenticate_user", u, "pw-3")
    finally:
        assert ctl("delete_user", u).stdout == f'Deleting user "{u}" ...\n'
    assert ctl("-q", "delete_user", u, code=67).stderr == \
        f'Error:\nUser "{u}" does not exist\n'


def test_add_user_reads_the_password_from_stdin():
    u = uname("ctlu")
    r = ctl("add_user", u, input="from-stdin\n")
    try:
        assert r.stdout.startswith(f'Adding user "{u}" ...\nPassword: \nDone. '), r.stdout
        ctl("authenticate_user", u, "from-stdin")
    finally:
        ctl("-q", "delete_user", u)
    r = ctl("add_user", u, code=65)
    assert r.stdout == f'Adding user "{u}" ...\nPassword: \n'
    assert r.stderr == "Error:\nPassword is not provided via argument or stdin\n"
    assert u not in ctl("-q", "list_users").stdout


def test_user_errors_name_the_user():
    nobody = uname("nobody")
    for args, code, err in [
        (["change_password", nobody, "x"], 67, f'Error:\nUser "{nobody}" does not exist\n'),
        (["set_user_tags", nobody, "x"], 67, f'Error:\nUser "{nobody}" does not exist\n'),
        (["delete_user", nobody], 67, f'Error:\nUser "{nobody}" does not exist\n'),
        (["clear_password", nobody], 69, f'Error:\n{{:no_such_user, "{nobody}"}}\n'),
        (["authenticate_user", nobody, "x"], 65,
         f'Error:\nError: failed to authenticate user "{nobody}"\n'
         f"user '{nobody}' - invalid credentials\n"),
    ]:
        r = ctl(*args, code=code)
        assert r.stderr == err, (args, r.stderr)
        assert r.stdout.endswith(" ...\n") and r.stdout.count("\n") == 1, (args, r.stdout)


# ----- vhosts, permissions, topic permissions -----

def test_vhost_commands_output():
    vh = uname("ctlvh")
    assert ctl("add_vhost", vh).stdout == f'Adding vhost "{vh}" ...\n'
    try:
        # Adding it again succeeds and changes nothing.
        assert ctl("add_vhost", vh).stdout == f'Adding vhost "{vh}" ...\n'
        assert vh in rows(ctl("-q", "list_vhosts").stdout)
        assert ctl("list_vhosts").stdout.startswith("Listing vhosts ...\nname\n")
    finally:
        assert ctl("delete_vhost", vh).stdout == f'Deleting vhost "{vh}" ...\n'
    r = ctl("delete_vhost", vh, code=65)
    assert r.stdout == f'Deleting vhost "{vh}" ...\n'
    assert r.stderr == f"Virtual host '{vh}' does not exist\n"


def test_permissions_output(own_vhost, own_user):
    vh, u = own_vhost, own_user
    r = ctl("set_permissions", "-p", vh, u, "^c", "^w", "^r")
    assert r.stdout == f'Setting permissions for user "{u}" in vhost "{vh}" ...\n'
    out = ctl("list_permissions", "-p", vh).stdout
    assert out.startswith(f'Listing permissions for vhost "{vh}" ...\n'
                          "user\tconfigure\twrite\tread\n"), out
    assert f"{u}\t^c\t^w\t^r" in rows(out)
    assert ctl("list_user_permissions", u).stdout == (
        f'Listing permissions for user "{u}" ...\nvhost\tconfigure\twrite\tread\n'
        f"{vh}\t^c\t^w\t^r\n")
    assert ctl("--formatter", "json", "list_user_permissions", u).stdout == (
        f'[\n{{"vhost":"{vh}","configure":"^c","write":"^w","read":"^r"}}\n]\n')
    r = ctl("clear_permissions", "-p", vh, u)
    assert r.stdout == f'Clearing permissions for user "{u}" in vhost "{vh}" ...\n'
    # Lists RabbitMQ computes at once print an empty line (JSON: []) when empty.
    assert ctl("-q", "list_user_permissions", u).stdout == "\n"
    assert ctl("--formatter", "json", "list_user_permissions", u).stdout == "[]\n"
    nobody = uname("nobody")
    r = ctl("clear_permissions", "-p", vh, nobody, code=67)
    assert r.stderr == f"Error:\nUser {nobody} does not exist\n"
    r = ctl("-q", "list_user_permissions", nobody, code=69)
    assert r.stderr == f'Error:\n{{:no_such_user, "{nobody}"}}\n'


def test_topic_permissions_output(own_vhost, own_user):
    vh, u = own_vhost, own_user
    assert ctl("-q", "list_topic_permissions", "-p", vh).stdout == "\n"
    assert ctl("--formatter", "json", "list_topic_permissions", "-p", vh).stdout == "[]\n"
    r = ctl("set_topic_permissions", "-p", vh, u, "amq.topic", "^w", "^r")
    assert r.stdout == \
        f'Setting topic permissions on "amq.topic" for user "{u}" in vhost "{vh}" ...\n'
    assert ctl("list_topic_permissions", "-p", vh).stdout == (
        f'Listing topic permissions for vhost "{vh}" ...\nuser\texchange\twrite\tread\n'
        f"{u}\tamq.topic\t^w\t^r\n")
    r = ctl("clear_topic_permissions", "-p", vh, u, "amq.topic")
    assert r.stdout == \
        f'Clearing topic permissions on "amq.topic" for user "{u}" in vhost "{vh}" ...\n'
    assert ctl("-q", "list_topic_permissions", "-p", vh).stdout == "\n"
    ctl("-q", "set_topic_permissions", "-p", vh, u, "amq.topic", "^w", "^r")
    r = ctl("clear_topic_permissions", "-p", vh, u)
    assert r.stdout == f'Clearing topic permissions for user "{u}" in vhost "{vh}" ...\n'
    assert ctl("-q", "list_topic_permissions", "-p", vh).stdout == "\n"
    # Errors: as set_permissions words them.
    nobody, novh = uname("nobody"), uname("novhost")
    r = ctl("set_topic_permissions", "-p", vh, nobody, "amq.topic", ".*", ".*", code=67)
    assert r.stderr == f"Error:\nUser {nobody} does not exist\n"
    r = ctl("set_topic_permissions", "-p", novh, u, "amq.topic", ".*", ".*", code=69)
    assert r.stderr == f"Error:\nVirtual host {novh} does not exist\n"
    r = ctl("clear_topic_permissions", "-p", vh, nobody, code=67)
    assert r.stderr == f"Error:\nUser {nobody} does not exist\n"
    r = ctl("clear_topic_permissions", "-p", novh, u, code=69)
    assert r.stderr == f"Error:\nVirtual host {novh} does not exist\n"


# ----- limits -----

def test_vhost_limits_output(own_vhost):
    vh = own_vhost
    doc = '{"max-connections": 10, "max-queues": 5}'
    assert ctl("set_vhost_limits", "-p", vh, doc).stdout == \
        f'Setting vhost limits to "{doc}" for vhost "{vh}" ...\n'
    assert ctl("clear_vhost_limits", "-p", vh).stdout == \
        f'Clearing vhost "{vh}" limits ...\n'
    # Nothing left to clear.
    r = ctl("clear_vhost_limits", "-p", vh, code=69)
    assert r.stdout == f'Clearing vhost "{vh}" limits ...\n'
    assert r.stderr == "Error:\nParameter does not exist\n"
    for doc, err in [
        ("notjson", "JSON decoding error. Reason: badarg\n"),
        ('{"max-bogus": 1}',
         'Validation failed\n\nUnrecognised terms [{<<"max-bogus">>,1}] in limits\n\n'),
        ('{"max-queues": "x"}',
         'Validation failed\n\nmax-queues should be a number, actually was <<"x">>\n\n'),
    ]:
        r = ctl("set_vhost_limits", "-p", vh, doc, code=69)
        assert r.stderr == "Error:\n" + err, (doc, r.stderr)
    novh = uname("novhost")
    r = ctl("set_vhost_limits", "-p", novh, '{"max-queues": 1}', code=65)
    assert r.stderr == f"Virtual host '{novh}' does not exist\n"


def test_user_limits_output(own_user):
    u = own_user
    doc = '{"max-connections": 3, "max-channels": 2}'
    assert ctl("set_user_limits", u, doc).stdout == \
        f'Setting user limits to "{doc}" for user "{u}" ...\n'
    assert ctl("clear_user_limits", u, "max-connections").stdout == \
        f'Clearing "max-connections" limit for user "{u}" ...\n'
    assert ctl("clear_user_limits", u, "all").stdout == \
        f'Clearing all limits for user "{u}" ...\n'
    for doc, err in [
        ("bad", "JSON decoding error. Reason: badarg\n"),
        ('{"max-bogus": 1}', 'Unrecognised terms [{<<"max-bogus">>,1}] in user-limits\n'),
        ('{"max-channels": 1.5}', "max-channels should be a number, actually was 1.5\n"),
    ]:
        r = ctl("set_user_limits", u, doc, code=69)
        assert r.stderr == "Error:\n" + err, (doc, r.stderr)
    nobody = uname("nobody")
    r = ctl("set_user_limits", nobody, '{"max-connections": 1}', code=69)
    assert r.stderr == f'Error:\n{{:no_such_user, "{nobody}"}}\n'
    r = ctl("clear_user_limits", nobody, "all", code=69)
    assert r.stderr == f'Error:\n{{:no_such_user, "{nobody}"}}\n'
    r = ctl("clear_user_limits", u, code=64)
    assert r.stdout == ""
    assert r.stderr.startswith("Error (argument validation): not enough arguments.\n"
                               f"Arguments given:\n\tclear_user_limits {u}\n")


# ----- policies -----

def test_policy_commands_output(own_vhost):
    vh = own_vhost
    assert ctl("-q", "list_policies", "-p", vh).stdout == "\n"
    assert ctl("--formatter", "json", "list_policies", "-p", vh).stdout == "[]\n"
    doc = '{"max-length": 5}'
    r = ctl("set_policy", "-p", vh, "p1", "^a", doc, "--priority", "3", "--apply-to", "queues")
    assert r.stdout == (f'Setting policy "p1" for pattern "^a" to "{doc}" with priority "3" '
                        f'for vhost "{vh}" ...\n')
    assert ctl("list_policies", "-p", vh).stdout == (
        f'Listing policies for vhost "{vh}" ...\n'
        "vhost\tname\tpattern\tapply-to\tdefinition\tpriority\n"
        f'{vh}\tp1\t^a\tqueues\t{{"max-length":5}}\t3\n')
    for bad, err in [
        ("bad", "JSON decoding error. Reason: badarg\n"),
        ('{"bogus-key": 1}',
         'Validation failed\n\n[{<<"bogus-key">>,1}] are not recognised policy settings\n\n'),
    ]:
        r = ctl("set_policy", "-p", vh, "p2", "^a", bad, code=69)
        assert r.stderr == "Error:\n" + err, (bad, r.stderr)
    assert ctl("clear_policy", "-p", vh, "p1").stdout == \
        f'Clearing policy "p1" on vhost "{vh}" ...\n'
    r = ctl("clear_policy", "-p", vh, "p1", code=69)
    assert r.stderr == "Error:\nParameter does not exist\n"

    assert ctl("-q", "list_operator_policies", "-p", vh).stdout == "\n"
    doc = '{"max-length": 7}'
    r = ctl("set_operator_policy", "-p", vh, "op1", "^a", doc, "--apply-to", "queues")
    assert r.stdout == (f'Setting operator policy override "op1" for pattern "^a" to "{doc}" '
                        f'with priority "0" for vhost "{vh}" ...\n')
    assert ctl("list_operator_policies", "-p", vh).stdout == (
        f'Listing operator policy overrides for vhost "{vh}" ...\n'
        "vhost\tname\tpattern\tapply-to\tdefinition\tpriority\n"
        f'{vh}\top1\t^a\tqueues\t{{"max-length":7}}\t0\n')
    r = ctl("set_operator_policy", "-p", vh, "op2", "^a", '{"dead-letter-exchange": "x"}',
            code=69)
    assert r.stderr == ('Error:\nValidation failed\n\n[{<<"dead-letter-exchange">>,<<"x">>}] '
                        "are not recognised policy settings\n\n")
    assert ctl("clear_operator_policy", "-p", vh, "op1").stdout == \
        f'Clearing operator policy "op1" on vhost "{vh}" ...\n'
    r = ctl("clear_operator_policy", "-p", vh, "op1", code=69)
    assert r.stderr == "Error:\nParameter does not exist\n"


# ----- queues, connections, channels, consumers -----

def test_purge_and_delete_queue_output(broker, ch, pub, cleanup):
    vh = broker.vhost
    q = cleanup.queue(uname("ctlpurge"))
    ch.queue_declare(q)
    for _ in range(3):
        pub.basic_publish("", q, b"x")
    assert ctl("purge_queue", "-p", vh, q).stdout == f"Purging queue '{q}' in vhost '{vh}' ...\n"
    assert f"{q}\t0" in rows(ctl("-q", "-p", vh, "list_queues", "name", "messages").stdout)
    r = ctl("purge_queue", "-p", vh, uname("noq"), code=69)
    assert r.stderr == "Error:\nnot_found\n"
    pub.basic_publish("", q, b"x")
    r = ctl("delete_queue", "-p", vh, q, "--if-empty", code=64)
    assert r.stdout == f"Deleting queue '{q}' on vhost '{vh}' if queue is empty ...\n"
    assert r.stderr == "Error:\nQueue is not empty\n"
    r = ctl("delete_queue", "-p", vh, q, "--if-empty", "--if-unused", code=64)
    assert r.stdout == (f"Deleting queue '{q}' on vhost '{vh}' if queue is empty and if queue "
                        "is unused ...\n")
    used = cleanup.queue(uname("ctlused"))
    ch.queue_declare(used)
    ch.basic_consume(used, lambda *a: None)
    r = ctl("delete_queue", "-p", vh, used, "--if-unused", code=64)
    assert r.stdout == f"Deleting queue '{used}' on vhost '{vh}' if queue is unused ...\n"
    assert r.stderr == "Error:\nQueue is in use\n"
    assert ctl("delete_queue", "-p", vh, q).stdout == (
        f"Deleting queue '{q}' on vhost '{vh}' ...\n"
        "Queue was successfully deleted with 1 ready messages\n")
    r = ctl("delete_queue", "-p", vh, q, code=64)
    assert r.stderr == "Error:\nQueue not found\n"


def test_connections_channels_and_consumers_are_listed(broker, own_vhost):
    vh = own_vhost
    conn = broker.connect(virtual_host=vh)
    try:
        c1 = conn.channel()
        c2 = conn.channel()
        q = uname("ctlcons")
        c2.queue_declare(q)
        c2.basic_qos(prefetch_count=5)
        c2.basic_consume(q, lambda *a: None, consumer_tag="ctl-tag")
        c1.confirm_delivery()
        cols = ["name", "user", "vhost", "state", "channels", "ssl", "protocol",
                "auth_mechanism"]

        def our_connection():
            out = ctl("-q", "list_connections", *cols).stdout
            mine = [l for l in rows(out)[1:] if l.split("\t")[2] == vh]
            return (out, mine) if mine and mine[0].split("\t")[4] == "2" else None

        out, mine = eventually(our_connection, timeout=10, conns=conn)
        assert out.startswith("\t".join(cols) + "\n")
        m = re.fullmatch(rf"(127\.0\.0\.1:\d+ -> 127\.0\.0\.1:{broker.port})\t"
                         rf"{broker.username}\t{re.escape(vh)}\trunning\t2\tfalse\t"
                         r"\{0,9,1\}\tPLAIN", mine[0])
        assert m, mine
        name = m.group(1)
        out = ctl("list_connections").stdout
        assert out.startswith("Listing connections ...\nuser\tpeer_host\tpeer_port\tstate\n")
        assert any(re.fullmatch(rf"{broker.username}\t127\.0\.0\.1\t\d+\trunning", l)
                   for l in rows(out)), out

        ch_cols = ["name", "number", "user", "vhost", "consumer_count", "prefetch_count",
                   "confirm", "transactional"]
        out = ctl("list_channels", *ch_cols).stdout
        assert out.startswith("Listing channels ...\n" + "\t".join(ch_cols) + "\n"), out
        assert f"{name} (1)\t1\t{broker.username}\t{vh}\t0\t0\ttrue\tfalse" in rows(out), out
        assert f"{name} (2)\t2\t{broker.username}\t{vh}\t1\t5\tfalse\tfalse" in rows(out), out
        out = ctl("-q", "list_channels").stdout
        assert out.startswith("pid\tuser\tconsumer_count\tmessages_unacknowledged\n"), out

        out = ctl("list_consumers", "-p", vh).stdout
        assert out.startswith(
            f"Listing consumers in vhost {vh} ...\nqueue_name\tchannel_pid\tconsumer_tag\t"
            "ack_required\tprefetch_count\tactive\targuments\n"), out
        assert re.fullmatch(rf"{re.escape(q)}\t<[^>]+>\tctl-tag\ttrue\t5\ttrue\t\[\]",
                            rows(out)[2]), out
        assert len(rows(out)) == 3
    finally:
        if conn.is_open:
            conn.close()


def test_close_connection_by_pid(broker, own_vhost):
    vh = own_vhost
    conn = broker.connect(virtual_host=vh)
    conn.channel()

    def pid():
        for l in rows(ctl("-q", "list_connections", "pid", "vhost").stdout)[1:]:
            p, v = l.split("\t")
            if v == vh:
                return p
        return None

    p = eventually(pid, timeout=10, conns=conn)
    r = ctl("close_connection", p, "closed by test")
    assert r.stdout == f"Closing connection {p}, reason: closed by test...\n"
    e = wait_closed(conn)
    assert getattr(e, "reply_code", 320) == 320, e
    assert "closed by test" in str(e), e
    # A pid of no connection closes nothing; a string that is not a pid is an error.
    r = ctl("close_connection", "notapid", "bye", code=69)
    assert r.stdout == "Closing connection notapid, reason: bye...\n"
    assert r.stderr == 'Error:\nError:\n{:invalid_pid_syntax, "notapid"}\n'


def test_close_all_connections_of_a_vhost(broker, own_vhost):
    vh = own_vhost
    conns = [broker.connect(virtual_host=vh) for _ in range(2)]
    eventually(lambda: sum(l == vh for l in rows(ctl("-q", "list_connections", "vhost").stdout))
               == 2, timeout=10, conns=conns)
    r = ctl("close_all_connections", "-p", vh, "all gone")
    assert r.stdout == (f"Closing all connections in vhost {vh}, reason: all gone...\n"
                        "Closed 2 connections\n")
    for c in conns:
        wait_closed(c)
    assert ctl("-q", "close_all_connections", "-p", vh, "again").stdout == \
        "Closed 0 connections\n"


# ----- definitions -----

def test_export_definitions_output(own_vhost):
    vh = own_vhost
    # To standard output: the document alone, without a line end.
    out = ctl("export_definitions", "-").stdout
    doc = json.loads(out)
    assert not out.endswith("\n")
    assert vh in [v["name"] for v in doc["vhosts"]]
    assert ctl("-q", "export_definitions", "-").stdout.startswith("{")
    # To a file (RabbitMQ's node writes it: the directory is open to all).
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO)
        path = os.path.join(d, "defs.json")
        r = ctl("export_definitions", path)
        assert r.stdout == f'Exporting definitions in JSON to a file at "{path}" ...\n'
        with open(path, encoding="utf-8") as f:
            assert vh in [v["name"] for v in json.load(f)["vhosts"]]
        missing = os.path.join(d, "no", "defs.json")
        r = ctl("export_definitions", missing, code=65)
        assert r.stdout == ""
        assert r.stderr.startswith(
            f"Error (argument validation): Bad argument: Directory {os.path.dirname(missing)} "
            f"does not exist\nArguments given:\n\texport_definitions {missing}\n"), r.stderr


def test_import_definitions_output():
    vh = uname("ctlimport")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "defs.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"vhosts": [{"name": vh}]}, f)
        os.chmod(d, 0o755)
        os.chmod(path, 0o644)
        try:
            r = ctl("import_definitions", path)
            assert r.stdout == (f'Importing definitions in JSON from a file at "{path}" ...\n'
                                "Successfully started definition import. This process is "
                                "asynchronous and can take some time.\n")
            eventually(lambda: vh in rows(ctl("-q", "list_vhosts").stdout), timeout=30)
        finally:
            ctl("-q", "delete_vhost", vh, code=None)
        missing = os.path.join(d, "missing.json")
        r = ctl("import_definitions", missing, code=65)
        assert r.stdout == ""
        assert r.stderr.startswith(f"Error (argument validation): Bad argument: File {missing} "
                                   f"does not exist\nArguments given:\n\timport_definitions "
                                   f"{missing}\n"), r.stderr
        bad = os.path.join(d, "bad.json")
        with open(bad, "w", encoding="utf-8") as f:
            f.write("notjson")
        os.chmod(bad, 0o644)
        r = ctl("import_definitions", bad, code=65)
        assert r.stdout == f'Importing definitions in JSON from a file at "{bad}" ...\n'
        assert r.stderr.startswith("Error:\nFailed to deserialise input (format: JSON) "
                                   "(error: "), r.stderr


def test_json_lists_lead_rows_with_commas(own_user):
    out = ctl("--formatter", "json", "list_users").stdout
    lines = out.splitlines()
    assert lines[0] == "[" and lines[-1] == "]"
    assert not lines[1].startswith(",") and all(l.startswith(",{") for l in lines[2:-1]), out
    users = json.loads(out)
    assert {"user": own_user, "tags": []} in users


def streams(*args, code=0):
    """rabbitmq-streams (RABBITMQ_STREAMS, else next to RABBITMQCTL's tool)."""
    cmd = shlex.split(os.environ.get("RABBITMQ_STREAMS") or "") or _sibling("rabbitmq-streams")
    return _run(cmd, args, code, None)


def test_rabbitmq_streams_adds_and_deletes_super_streams():
    """add_super_stream makes the exchange, the partition streams and the ordered
    bindings (as RabbitMQ 3.10 does; RABBITMQ_STREAMS must reach the node as the
    rabbitmq user, e.g. `env HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-streams`)."""
    name = uname("ss-cli")
    r = streams("add_super_stream", name, "--routing-keys", "amer,emea", "--max-age", "PT1H")
    assert r.stdout.splitlines() == ["Adding a super stream (experimental feature)...",
                                     f"Super stream {name} has been created"]
    try:
        again = streams("add_super_stream", name, "--partitions", "2", code=70)
        assert again.stderr.strip().splitlines() == [
            "Error:", f"{{:reference_already_exists, 'there is already an exchange named {name}'}}"]
        bad = streams("add_super_stream", name + "x", "--partitions", "0", code=64)
        assert "The partition number must be greater than 0" in bad.stderr
        rows = ctl("list_bindings", "source_name", "destination_name", "routing_key", "arguments",
                   "-q").stdout.splitlines()
        assert f"{name}\t{name}-amer\tamer\t[{{\"x-stream-partition-order\",0}}]" in rows
        assert f"{name}\t{name}-emea\temea\t[{{\"x-stream-partition-order\",1}}]" in rows
        queues = ctl("list_queues", "name", "type", "-q").stdout.splitlines()
        assert f"{name}-amer\tstream" in queues and f"{name}-emea\tstream" in queues
    finally:
        r = streams("delete_super_stream", name, "-q")
        assert r.stdout.strip() == f"Super stream {name} has been deleted"
    gone = streams("delete_super_stream", name, code=70)
    assert gone.stderr.strip().splitlines() == ["Error:", "stream_not_found"]
    assert f"{name}-amer" not in ctl("list_queues", "name", "-q").stdout


def test_rabbitmq_streams_lists_stream_connections_publishers_and_consumers():
    """list_stream_connections / list_stream_publishers / list_stream_consumers show a
    stream client's connection, its publisher's counts and its subscription's position
    (RabbitMQ 3.10's columns and JSON; needs STREAM_URL too)."""
    url = os.environ.get("STREAM_URL")
    if not url:
        pytest.skip("STREAM_URL is not set")
    rstream = pytest.importorskip("rstream")
    import asyncio

    from amqp_support import stream_endpoint
    ep = stream_endpoint(url)
    vhost = ep["vhost"]
    name = uname("ls-stream")
    conn_name = uname("lister-conn")

    def listing(*args):
        return json.loads(streams("-q", *args, "--formatter", "json").stdout)

    async def scenario():
        out = {}
        async with rstream.Producer(**ep, connection_name=conn_name) as p:
            await p.create_stream(name)
            try:
                for _ in range(3):
                    await p.send_wait(name, b"m")
                got, done = [], asyncio.Event()

                async def on(msg, ctx):
                    got.append(ctx.offset)
                    if len(got) == 3:
                        done.set()

                async with rstream.Consumer(**ep) as c:
                    await c.subscribe(name, on, properties={"name": "lister"})
                    task = asyncio.create_task(c.run())
                    await asyncio.wait_for(done.wait(), 20)
                    out["conns"] = await asyncio.to_thread(
                        listing, "list_stream_connections", "conn_name", "user", "vhost",
                        "client_properties", "subscriptions", "connection_state")
                    out["pubs"] = await asyncio.to_thread(listing, "-p", vhost, "list_stream_publishers")
                    out["cons"] = await asyncio.to_thread(listing, "-p", vhost, "list_stream_consumers")
                    out["table"] = await asyncio.to_thread(
                        streams, "-q", "-p", vhost, "list_stream_consumers", "stream", "offset")
                    out["amqp"] = await asyncio.to_thread(
                        ctl, "-q", "list_connections", "name", "client_properties")
                    task.cancel()
            finally:
                await p.delete_stream(name)
        return out

    out = asyncio.run(asyncio.wait_for(scenario(), 60))
    mine = [c for c in out["conns"]
            if ["connection_name", "longstr", conn_name] in c["client_properties"]]
    assert len(mine) == 1, out["conns"]
    c = mine[0]
    assert (c["user"], c["vhost"], c["subscriptions"], c["connection_state"]) == \
        (ep["username"], vhost, 0, "running")
    # The consumer's connection has the one subscription.
    assert any(x["subscriptions"] == 1 for x in out["conns"])
    pubs = [p for p in out["pubs"] if p["stream"] == name]
    assert len(pubs) == 1, out["pubs"]
    assert list(pubs[0]) == ["connection_pid", "publisher_id", "stream", "reference",
                             "messages_published", "messages_confirmed", "messages_errored"]
    assert (pubs[0]["messages_published"], pubs[0]["messages_confirmed"],
            pubs[0]["messages_errored"]) == (3, 3, 0)
    assert pubs[0]["connection_pid"].startswith("#PID<")
    cons = [x for x in out["cons"] if x["stream"] == name]
    assert len(cons) == 1, out["cons"]
    assert list(cons[0]) == ["connection_pid", "subscription_id", "stream", "messages_consumed",
                             "offset", "offset_lag", "credits", "properties"]
    assert (cons[0]["messages_consumed"], cons[0]["offset"], cons[0]["offset_lag"]) == (3, 2, 0)
    assert cons[0]["properties"] == {"name": "lister"}
    # The default formatter draws a box (DEC line drawing) with a bold header.
    table = out["table"].stdout.splitlines()
    assert table[0].startswith("\x1b(0l") and table[-1].startswith("\x1b(0m"), table
    assert "\x1b[1mstream\x1b[0m" in table[1]
    assert any(f" {name} " in line and " 2 " in line for line in table), table
    # rabbitmqctl list_connections lists AMQP connections only.
    assert conn_name not in out["amqp"].stdout and c["conn_name"] not in out["amqp"].stdout
    # Once closed, nothing is listed for the stream.
    assert not [p for p in listing("-p", vhost, "list_stream_publishers") if p["stream"] == name]
