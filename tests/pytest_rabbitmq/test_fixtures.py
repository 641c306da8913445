"""pytest-rabbitmq (a widely used fixture library) driving Warren through RabbitMQ's tool
names (issue #12): it starts `rabbitmq-server` with RABBITMQ_NODE_PORT,
RABBITMQ_NODENAME, RABBITMQ_MNESIA_BASE, RABBITMQ_LOG_BASE,
RABBITMQ_ENABLED_PLUGINS_FILE and RABBITMQ_DIST_PORT, waits for the port, and lists and
clears queues and exchanges with `rabbitmqctl list_queues name` / `list_exchanges name`
between tests. Run by ./test.sh with
`--rabbitmq-server=LINKS/rabbitmq-server --rabbitmq-ctl=LINKS/rabbitmqctl`, where LINKS
comes from `warren install-links`."""

from pytest_rabbitmq import factories
from pytest_rabbitmq.factories.client import clear_rabbitmq

# Two nodes on free ports, with their own node names and data directories.
node_a_proc = factories.rabbitmq_proc(port=None, node="warren-fixture-a")
node_a = factories.rabbitmq("node_a_proc")
node_b_proc = factories.rabbitmq_proc(port=None, node="warren-fixture-b")
node_b = factories.rabbitmq("node_b_proc")


def test_two_nodes_are_independent(node_a, node_b, node_a_proc, node_b_proc):
    node_a.channel().queue_declare("only-on-a")
    assert "only-on-a" in node_a_proc.list_queues()
    assert "only-on-a" not in node_b_proc.list_queues()


def test_exchanges_are_listed_and_cleared(node_a, node_a_proc):
    before = node_a_proc.list_exchanges()
    node_a.channel().exchange_declare("fixture-x", "topic")
    assert "fixture-x" in node_a_proc.list_exchanges()
    clear_rabbitmq(node_a_proc, node_a)
    assert "fixture-x" not in node_a_proc.list_exchanges()
    assert set(node_a_proc.list_exchanges()) <= set(before)


def test_queues_are_cleared_between_tests(node_a, node_a_proc):
    # The previous tests' queues were deleted by the fixture's teardown. (As with
    # RabbitMQ, list_queues() also returns rabbitmqctl's column header, "name", when
    # there are queues, and nothing at all when there are none.)
    assert node_a_proc.list_queues() == []
    ch = node_a.channel()
    ch.queue_declare("work")
    ch.basic_publish("", "work", b"job")
    assert node_a_proc.list_queues() == ["name", "work"]
    clear_rabbitmq(node_a_proc, node_a)
    assert node_a_proc.list_queues() == []
