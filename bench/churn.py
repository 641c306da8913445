#!/usr/bin/env python3
"""Churn (issue 13): do connections, channels, exclusive queues and consumers, or queue
declare/bind/delete cycles, leak memory or file descriptors in the broker?

    python3 bench/churn.py --uri amqp://guest:guest@127.0.0.1:5672/%2f --pid PID \
        [--connections 100000] [--queues 100000]

Phase 1: CONNECTIONS cycles of connect / open channel / declare an exclusive server-named
queue / consume from it / close. Phase 2: QUEUES cycles of declare / bind to amq.direct /
delete on one connection. The broker's RSS and open file descriptors (/proc/PID) are read
before, every 10% and after each phase (after waiting, up to 10 s, for the fd count to
settle). Needs pika (`pip install pika`); run it against Warren (bench/ scripts start it
with --data-dir) or any other broker.
"""

import argparse
import os
import time

import pika


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settle(pid, baseline_fds, timeout=10.0):
    """Waits until the fd count is back near its baseline (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and fds(pid) > baseline_fds + 2:
        time.sleep(0.1)
    return rss_kib(pid), fds(pid)


def connection_churn(params, pid, n):
    base_rss, base_fds = rss_kib(pid), fds(pid)
    marks = []
    start = time.monotonic()
    for i in range(n):
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_consume(q, lambda *a: None, auto_ack=True)
        conn.close()
        if (i + 1) % max(n // 10, 1) == 0:
            marks.append((i + 1, rss_kib(pid), fds(pid)))
    secs = time.monotonic() - start
    end_rss, end_fds = settle(pid, base_fds)
    return base_rss, base_fds, marks, end_rss, end_fds, secs


def queue_churn(params, pid, n):
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    base_rss, base_fds = rss_kib(pid), fds(pid)
    marks = []
    start = time.monotonic()
    for i in range(n):
        name = f"churn.q.{i}"
        ch.queue_declare(name)
        ch.queue_bind(name, "amq.direct", routing_key=name)
        ch.queue_delete(name)
        if (i + 1) % max(n // 10, 1) == 0:
            marks.append((i + 1, rss_kib(pid), fds(pid)))
    secs = time.monotonic() - start
    end_rss, end_fds = settle(pid, base_fds)
    conn.close()
    return base_rss, base_fds, marks, end_rss, end_fds, secs


def report(title, result, n):
    base_rss, base_fds, marks, end_rss, end_fds, secs = result
    print(f"{title}: {n:,} cycles in {secs:.1f} s ({n / secs:,.0f} cycles/s)")
    print(f"  before: RSS {base_rss / 1024:.1f} MiB, {base_fds} fds")
    for done, rss, fd in marks:
        print(f"  after {done:>7,}: RSS {rss / 1024:.1f} MiB, {fd} fds")
    print(f"  settled: RSS {end_rss / 1024:.1f} MiB ({(end_rss - base_rss) / 1024:+.1f} MiB), "
          f"{end_fds} fds ({end_fds - base_fds:+d})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uri", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--connections", type=int, default=100_000)
    ap.add_argument("--queues", type=int, default=100_000)
    args = ap.parse_args()
    params = pika.URLParameters(args.uri)
    if args.connections:
        report("connection churn", connection_churn(params, args.pid, args.connections),
               args.connections)
    if args.queues:
        report("queue churn", queue_churn(params, args.pid, args.queues), args.queues)


if __name__ == "__main__":
    main()
