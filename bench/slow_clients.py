#!/usr/bin/env python3
"""Slow or stuck clients (issue 13): does each cost bounded memory, is it closed on
RabbitMQ's schedule, and do other clients keep their throughput?

    target/conformance-venv/bin/python bench/slow_clients.py            # starts Warren
    python3 bench/slow_clients.py --uri amqp://guest:guest@127.0.0.1:5672/%2f \
        --pid "$(rabbitmqctl eval 'os:getpid().' | tr -d '"')" [--tls-port 5671]

Without --uri the script starts target/release/warren itself on free 127.0.0.1 ports
(AMQP and AMQPS, management and Prometheus too) with a temporary data directory and a
config file it writes, and a self-signed CA and server certificate made with `openssl`.
With --uri it measures that broker (whose process is --pid); the TLS cases then need
--tls-port (`--make-certs DIR` writes ca.pem, server.pem and server.key for it).

Cases (--cases, comma-separated; each with several bad clients at once, raw sockets):
  stuck        consumer (no-ack, no prefetch) of its own auto-delete queue, filled
               beforehand with --stuck-messages of --stuck-size bytes; heartbeat
               --heartbeat; it never reads its socket (SO_RCVBUF --stuck-rcvbuf) and
               never sends anything after basic.consume
  stuck-hb     the same, but it sends a heartbeat frame every heartbeat/2 (alive, not
               reading): RabbitMQ closes it when a socket write has been blocked for 30 s
               (ranch's send_timeout); --heartbeat 0 makes `stuck` show that alone
  trickle      sends the protocol header, then connection.start-ok one byte a second
  tcp-silent   connects to the AMQP port and sends nothing
  no-hb        completes the handshake with heartbeat --heartbeat, reads everything,
               sends nothing more (never answers heartbeats)
  tls-silent   connects to the AMQPS port and sends nothing
  tls-partial  sends half of a TLS ClientHello to the AMQPS port and stalls

Per case: when the broker closes each bad connection (its side of the socket leaves
ESTABLISHED in /proc/net/tcp{,6}; measured from the client's last byte, or from the
TCP connect for handshake cases), median and max; broker RSS (/proc/PID/status) before,
peak and after; and the throughput of one well-behaved pika publisher + consumer pair
(a subprocess, --pair-messages of --pair-size bytes, auto-ack) run while the bad
clients are at it, against a baseline with none. For `stuck*` it also computes what the
broker took off the queues but holds in its own memory per stuck connection (delivered
bytes minus the bytes in the kernel's socket queues), and checks that the queues are
gone afterwards. Bad clients still open at the case's deadline (3 x heartbeat + 10 s,
at least 45 s for stuck*; 3 x --handshake-timeout for the handshake cases) are counted
as such and closed by the script. Prints a markdown table and (--json FILE) the raw
data; progress goes to stderr. All cases with the defaults take about 6 minutes.
Needs pika (`pip install pika`), Linux /proc, and openssl for the TLS cases.
"""

import argparse
import json
import os
import selectors
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import unquote, urlparse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_CASES = ["stuck", "stuck-hb", "trickle", "tcp-silent", "no-hb", "tls-silent", "tls-partial"]

# ------------------------------------------------------------------ AMQP on raw sockets

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
HEARTBEAT_FRAME = struct.pack(">BHI", 8, 0, 0) + b"\xce"


def shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    return bytes([len(b)]) + b


def longstr(b):
    return struct.pack(">I", len(b)) + b


def table(d):
    body = b"".join(shortstr(k) + b"S" + longstr(v.encode()) for k, v in d.items())
    return longstr(body)


def method(channel, cls, mth, args=b""):
    payload = struct.pack(">HH", cls, mth) + args
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


def start_ok(user, password):
    props = table({"product": "bench/slow_clients.py"})
    resp = b"\0" + user.encode() + b"\0" + password.encode()
    return method(0, 10, 11, props + shortstr("PLAIN") + longstr(resp) + shortstr("en_US"))


class Raw:
    """A client socket speaking just enough AMQP 0-9-1."""

    def __init__(self, host, port, rcvbuf=0, timeout=15.0):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = self.sock.getsockname()[1]
        self.buf = b""
        self.t_ref = time.monotonic()

    def send(self, data):
        self.sock.sendall(data)

    def frame(self):
        while True:
            if len(self.buf) >= 7:
                typ, ch, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) >= size + 8:
                    payload, self.buf = self.buf[7:7 + size], self.buf[size + 8:]
                    if typ != 8:
                        return typ, ch, payload
                    continue
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the broker closed the connection")
            self.buf += data

    def expect(self, cls, mth):
        typ, _, payload = self.frame()
        got = struct.unpack(">HH", payload[:4]) if typ == 1 else (typ, 0)
        if got != (cls, mth):
            raise RuntimeError(f"expected {cls}.{mth}, got {got}: {payload[4:120]!r}")
        return payload[4:]

    def open(self, user, password, vhost, heartbeat):
        self.send(PROTOCOL_HEADER)
        self.expect(10, 10)
        self.send(start_ok(user, password))
        channel_max, frame_max, _ = struct.unpack(">HIH", self.expect(10, 30)[:8])
        self.send(method(0, 10, 31, struct.pack(">HIH", channel_max, min(frame_max, 131072),
                                                heartbeat)))
        self.send(method(0, 10, 40, shortstr(vhost) + shortstr("") + b"\x00"))
        self.expect(10, 41)

    def consume(self, queue, no_ack=True):
        self.send(method(1, 20, 10, shortstr("")))
        self.expect(20, 11)
        self.send(method(1, 60, 20, struct.pack(">H", 0) + shortstr(queue) + shortstr("stuck")
                         + bytes([2 if no_ack else 0]) + struct.pack(">I", 0)))
        self.expect(60, 21)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def partial_client_hello():
    """The first half of a real TLS ClientHello (as Python's ssl module would send it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    return hello[:len(hello) // 2]


# ------------------------------------------------------------------ observing the broker

def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pid, every=0.1):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.stop = pid, every, [], threading.Event()
        self.lock = threading.Lock()

    def run(self):
        while not self.stop.is_set():
            with self.lock:
                self.samples.append((time.monotonic(), rss_kib(self.pid)))
            self.stop.wait(self.every)

    def peak(self, since, until=None):
        until = until or time.monotonic()
        with self.lock:
            vals = [r for t, r in self.samples if since <= t <= until]
        return max(vals) if vals else rss_kib(self.pid)


def tcp_table(ports):
    """{(local_port, remote_port): (state, tx_queue, rx_queue)} of sockets on `ports`."""
    res = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            # One large read: the kernel's table is walked in one go (reading it in small
            # chunks can skip sockets when others come and go in between).
            with open(path, "rb", buffering=0) as f:
                data = b""
                while True:
                    chunk = f.read(1 << 22)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            continue
        for line in data.decode().splitlines()[1:]:
            p = line.split()
            lp = int(p[1].rsplit(":", 1)[1], 16)
            rp = int(p[2].rsplit(":", 1)[1], 16)
            if lp in ports or rp in ports:
                tx, rx = p[4].split(":")
                res[(lp, rp)] = (int(p[3], 16), int(tx, 16), int(rx, 16))
    return res


ESTABLISHED = 1


class NetWatch(threading.Thread):
    """Watches the broker's side of tracked client sockets: closed = not ESTABLISHED."""

    def __init__(self, broker_ports, every=0.05):
        super().__init__(daemon=True)
        self.ports = set(broker_ports)
        self.every = every
        self.cond = threading.Condition()
        self.open = {}      # client port -> t_ref
        self.closed = {}    # client port -> seconds from t_ref to close
        self.missing = {}   # client port -> when first seen absent (confirmed on later polls)
        self.stop = threading.Event()

    def track(self, port, t_ref):
        with self.cond:
            self.open[port] = t_ref

    def untrack_all(self):
        with self.cond:
            left = len(self.open)
            self.open.clear()
            self.closed.clear()
            self.missing.clear()
            return left

    def broker_side(self, snap, client_port):
        for bp in self.ports:
            e = snap.get((bp, client_port))
            if e:
                return e
        return None

    def run(self):
        while not self.stop.is_set():
            snap = tcp_table(self.ports)
            now = time.monotonic()
            with self.cond:
                for port, t_ref in list(self.open.items()):
                    e = self.broker_side(snap, port)
                    if e is not None and e[0] == ESTABLISHED:
                        self.missing.pop(port, None)
                        continue
                    if e is None:
                        # Absent: gone (an RST or a close), unless the table walk missed
                        # it; believe it after three polls in a row.
                        first, n = self.missing.get(port, (now, 0))
                        self.missing[port] = (first, n + 1)
                        if n + 1 < 3:
                            continue
                        now_closed = first
                    else:
                        now_closed = self.missing.get(port, (now, 0))[0]
                    self.missing.pop(port, None)
                    self.closed[port] = now_closed - t_ref
                    del self.open[port]
                self.cond.notify_all()
            self.stop.wait(self.every)

    def wait_all_closed(self, deadline):
        with self.cond:
            while self.open and time.monotonic() < deadline:
                self.cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            return dict(self.closed), len(self.open)

    def established(self):
        snap = tcp_table(self.ports)
        return sum(1 for (lp, _), e in snap.items() if lp in self.ports and e[0] == ESTABLISHED)

    def kernel_bytes(self, client_ports):
        """Bytes in the kernel between broker and these clients: the broker side's send
        queue plus the client side's receive queue."""
        snap = tcp_table(self.ports)
        total = 0
        for cp in client_ports:
            e = self.broker_side(snap, cp)
            if e:
                total += e[1]
            for bp in self.ports:
                c = snap.get((cp, bp))
                if c:
                    total += c[2]
        return total


class Drainer(threading.Thread):
    """Reads and discards whatever the broker sends to these sockets (the bad clients of
    the handshake and heartbeat cases read; they just do not send)."""

    def __init__(self, socks):
        super().__init__(daemon=True)
        self.sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and self.sel.get_map():
            for key, _ in self.sel.select(0.2):
                try:
                    data = key.fileobj.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(key.fileobj)


# ------------------------------------------------------------------ well-behaved pair

def pair_main(args):
    import pika
    params = pika.URLParameters(args.uri)
    q = f"slow.pair.{os.getpid()}"
    n, size = args.pair_messages, args.pair_size
    body = b"x" * size
    pub = pika.BlockingConnection(params)
    pch = pub.channel()
    pch.queue_declare(q, auto_delete=False)
    ready, done = threading.Event(), {"n": 0, "t_last": None}
    deadline = time.monotonic() + args.pair_timeout

    def consumer():
        conn = pika.BlockingConnection(params)
        ch = conn.channel()

        def on_msg(_ch, _m, _p, _b):
            done["n"] += 1
            if done["n"] == n:
                done["t_last"] = time.monotonic()

        ch.basic_consume(q, on_msg, auto_ack=True)
        ready.set()
        while done["n"] < n and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.2)
        conn.close()

    t = threading.Thread(target=consumer, daemon=True)
    t.start()
    ready.wait(30)
    t0 = time.monotonic()
    for _ in range(n):
        pch.basic_publish("", q, body)
        if time.monotonic() > deadline:
            break
    t_pub = time.monotonic()
    t.join(max(0.0, deadline - time.monotonic()) + 5)
    t_end = done["t_last"] or time.monotonic()
    pch.queue_delete(q)
    pub.close()
    print(json.dumps({"consumed": done["n"], "messages": n, "secs": t_end - t0,
                      "publish_secs": t_pub - t0,
                      "rate": done["n"] / max(t_end - t0, 1e-9)}))


# ------------------------------------------------------------------ Warren and certificates

def make_certs(d):
    os.makedirs(d, exist_ok=True)

    def run(*a):
        subprocess.run(a, cwd=d, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.pem", "-days", "7", "-subj", "/CN=slow-clients test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=localhost")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "7", "-extfile", "server.ext")
    for name in ("ca.pem", "server.pem", "server.key"):
        os.chmod(os.path.join(d, name), 0o644)
    return d


def start_warren(binary, tmp, heartbeat_offer, handshake_timeout):
    certs = make_certs(os.path.join(tmp, "certs"))
    data = os.path.join(tmp, "data")
    cfg = os.path.join(tmp, "warren.toml")
    with open(cfg, "w") as f:
        f.write(f"""listen = "127.0.0.1:0"
data_dir = "{data}"
log_level = "info"

[limits]
heartbeat_secs = {heartbeat_offer}
handshake_timeout_secs = {handshake_timeout}

[tls]
listen = "127.0.0.1:0"
cert = "{certs}/server.pem"
key = "{certs}/server.key"

[management]
listen = "127.0.0.1:0"

[prometheus]
listen = "127.0.0.1:0"
""")
    log = open(os.path.join(tmp, "warren.log"), "w+")
    proc = subprocess.Popen([binary, "--config", cfg], stdout=log, stderr=subprocess.STDOUT,
                            cwd=tmp)
    deadline = time.monotonic() + 30
    amqp = tls = None
    while time.monotonic() < deadline and proc.poll() is None:
        log.seek(0)
        text = log.read()
        for line in text.splitlines():
            if "AMQP listener on " in line and not amqp:
                amqp = line.split("AMQP listener on ")[1].split()[0]
            if "TLS (SSL) listener on " in line and not tls:
                tls = line.split("TLS (SSL) listener on ")[1].split()[0]
        if amqp and tls:
            break
        time.sleep(0.02)
    if not (amqp and tls):
        log.seek(0)
        sys.exit(f"warren did not start:\n{log.read()}")
    return proc, int(amqp.rsplit(":", 1)[1]), int(tls.rsplit(":", 1)[1]), log


# ------------------------------------------------------------------ the bench

def fmt_mib(kib):
    return f"{kib / 1024:.0f}"


class Bench:
    def __init__(self, args, host, port, tls_port, pid):
        self.a = args
        self.host, self.port, self.tls_port, self.pid = host, port, tls_port, pid
        u = urlparse(args.uri)
        self.user = unquote(u.username or "guest")
        self.password = unquote(u.password or "guest")
        self.vhost = unquote(u.path[1:]) if len(u.path) > 1 else "/"
        self.rss = RssSampler(pid)
        self.rss.start()
        self.watch = NetWatch([p for p in (port, tls_port) if p])
        self.watch.start()
        self.base_established = self.watch.established()
        self.results = []

    def log(self, msg):
        print(f"[slow_clients {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def pair(self):
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--pair", "--uri", self.a.uri,
             "--pair-messages", str(self.a.pair_messages), "--pair-size", str(self.a.pair_size),
             "--pair-timeout", str(self.a.pair_timeout)],
            capture_output=True, text=True)
        try:
            return json.loads(out.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            self.log(f"pair failed: {out.stderr[-2000:]}")
            return {"rate": 0.0, "consumed": 0, "messages": self.a.pair_messages, "secs": 0}

    def settle(self, timeout=30.0):
        """Waits for the broker's established connections to fall back to the baseline,
        then for its RSS to stop changing (at most 20 s); returns that RSS."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.watch.established() > self.base_established:
            time.sleep(0.1)
        last, stable_since = rss_kib(self.pid), time.monotonic()
        end = time.monotonic() + 20
        while time.monotonic() < end and time.monotonic() - stable_since < 2:
            time.sleep(0.25)
            r = rss_kib(self.pid)
            if abs(r - last) > max(last // 100, 256):
                last, stable_since = r, time.monotonic()
        return rss_kib(self.pid)

    def queues_left(self, queues):
        """How many of these (auto-delete) queues still exist."""
        if not queues:
            return 0
        import pika
        conn = pika.BlockingConnection(pika.URLParameters(self.a.uri))
        left, ch = 0, None
        for q in queues:
            if ch is None or not ch.is_open:
                ch = conn.channel()
            try:
                ch.queue_declare(q, passive=True)
                left += 1
            except pika.exceptions.ChannelClosedByBroker:
                ch = None
        conn.close()
        return left

    def baseline(self):
        runs = [self.pair() for _ in range(self.a.baseline_runs)]
        for r in runs:
            self.log(f"baseline pair: {r['rate']:,.0f} msg/s ({r['consumed']}/{r['messages']})")
        return runs

    # --- cases: each returns (clients, deadline, extra dict, cleanup fn)

    def setup_stuck(self, keepalive):
        a = self.a
        import pika
        n, k, size = a.stuck_clients, a.stuck_messages, a.stuck_size
        tag = f"slow.stuck.{os.getpid()}.{int(time.time())}"
        queues = [f"{tag}.{i}" for i in range(n)]
        conn = pika.BlockingConnection(pika.URLParameters(a.uri))
        ch = conn.channel()
        for q in queues:
            ch.queue_declare(q, auto_delete=True)
        body = b"s" * size
        t0 = time.monotonic()
        for _ in range(k):
            for q in queues:
                ch.basic_publish("", q, body)
        depth = sum(ch.queue_declare(q, passive=True).method.message_count for q in queues)
        fill_secs = time.monotonic() - t0
        conn.close()
        self.log(f"filled {n} queues with {k} x {size} B ({n * k * size / 2**20:.0f} MiB) in "
                 f"{fill_secs:.1f} s; depth {depth}")
        rss_filled = rss_kib(self.pid)
        clients = []
        for q in queues:
            c = Raw(self.host, self.port, rcvbuf=a.stuck_rcvbuf)
            c.open(self.user, self.password, self.vhost, a.heartbeat)
            c.consume(q, no_ack=True)
            c.t_ref = time.monotonic()
            self.watch.track(c.port, c.t_ref)
            clients.append(c)
        stop = threading.Event()
        if keepalive:
            def beat():
                every = a.heartbeat / 2 if a.heartbeat else 5.0
                while not stop.wait(every):
                    for c in clients:
                        try:
                            c.sock.send(HEARTBEAT_FRAME)
                        except OSError:
                            pass
            threading.Thread(target=beat, daemon=True).start()
        # Steady state: the queues stop draining into the stuck sockets.
        mon = pika.BlockingConnection(pika.URLParameters(a.uri))
        mch = mon.channel()
        prev, left = None, None
        end = time.monotonic() + 15
        while time.monotonic() < end:
            try:
                left = sum(mch.queue_declare(q, passive=True).method.message_count
                           for q in queues)
            except pika.exceptions.ChannelClosedByBroker:
                left = None   # a queue is gone: the broker closed a stuck client already
                break
            if left == prev:
                break
            prev = left
            time.sleep(0.5)
        try:
            mon.close()
        except Exception:
            pass
        extra = {"fill_secs": fill_secs, "fill_mib": n * k * size / 2**20,
                 "rss_filled_kib": rss_filled, "queues": queues}
        if left is not None:
            delivered = n * k - left
            kernel = self.watch.kernel_bytes([c.port for c in clients])
            kernel += sum(len(c.buf) for c in clients)
            wire = size + 60 + len(queues[0]) + 30
            held = max(delivered * wire - kernel, 0)
            extra.update({"delivered_msgs": delivered, "kernel_bytes": kernel,
                          "held_per_conn_bytes": held / n,
                          "held_msgs_per_conn": held / wire / n})
            self.log(f"stuck steady state: {delivered} messages taken off the queues, "
                     f"{kernel / 2**20:.1f} MiB in kernel socket queues, ~"
                     f"{held / n / 2**20:.2f} MiB ({held / wire / n:.0f} messages) held in the "
                     f"broker per stuck connection")
        # RabbitMQ also closes a connection whose socket write has been blocked for 30 s
        # (ranch's send_timeout): wait past that too.
        deadline = clients[-1].t_ref + max(3 * a.heartbeat + 10, 45)
        return clients, deadline, extra, stop.set

    def setup_trickle(self):
        a = self.a
        payload = start_ok(self.user, self.password)
        clients = []
        for _ in range(a.clients):
            c = Raw(self.host, self.port)
            c.send(PROTOCOL_HEADER)
            self.watch.track(c.port, c.t_ref)
            clients.append(c)
        drain = Drainer([c.sock for c in clients])
        drain.start()
        stop = threading.Event()

        def trickle():
            i = 0
            while i < len(payload) and not stop.wait(1.0):
                for c in clients:
                    try:
                        c.sock.send(payload[i:i + 1])
                    except OSError:
                        pass
                i += 1
        threading.Thread(target=trickle, daemon=True).start()
        deadline = clients[-1].t_ref + 3 * a.handshake_timeout
        return clients, deadline, {"start_ok_bytes": len(payload)}, \
            lambda: (stop.set(), drain.stop.set())

    def setup_silent(self, port, first=b""):
        clients = []
        for _ in range(self.a.clients):
            c = Raw(self.host, port)
            if first:
                c.send(first)
            self.watch.track(c.port, c.t_ref)
            clients.append(c)
        drain = Drainer([c.sock for c in clients])
        drain.start()
        deadline = clients[-1].t_ref + 3 * self.a.handshake_timeout
        return clients, deadline, {}, drain.stop.set

    def setup_no_hb(self):
        clients = []
        for _ in range(self.a.clients):
            c = Raw(self.host, self.port)
            c.open(self.user, self.password, self.vhost, self.a.heartbeat)
            c.t_ref = time.monotonic()
            self.watch.track(c.port, c.t_ref)
            clients.append(c)
        drain = Drainer([c.sock for c in clients])
        drain.start()
        deadline = clients[-1].t_ref + 3 * self.a.heartbeat + 10
        return clients, deadline, {}, drain.stop.set

    def run_case(self, name, baseline_rate):
        a = self.a
        if name.startswith("tls") and not self.tls_port:
            self.log(f"{name}: skipped (no TLS port)")
            return
        self.log(f"case {name}: starting")
        rss_before = self.settle()
        t_start = time.monotonic()
        if name == "stuck":
            clients, deadline, extra, cleanup = self.setup_stuck(False)
        elif name == "stuck-hb":
            clients, deadline, extra, cleanup = self.setup_stuck(True)
        elif name == "trickle":
            clients, deadline, extra, cleanup = self.setup_trickle()
        elif name == "tcp-silent":
            clients, deadline, extra, cleanup = self.setup_silent(self.port)
        elif name == "no-hb":
            clients, deadline, extra, cleanup = self.setup_no_hb()
        elif name == "tls-silent":
            clients, deadline, extra, cleanup = self.setup_silent(self.tls_port)
        elif name == "tls-partial":
            clients, deadline, extra, cleanup = self.setup_silent(self.tls_port,
                                                                  partial_client_hello())
        else:
            raise SystemExit(f"unknown case {name}")
        t_bad = time.monotonic()
        open_at_pair_start = len(clients) - len(self.watch.closed)
        pair = self.pair()
        t_pair = time.monotonic()
        open_during_pair = len(clients) - len(self.watch.closed)
        closed, still_open = self.watch.wait_all_closed(deadline)
        t_end = time.monotonic()
        peak = self.rss.peak(t_start, t_end)
        cleanup()
        for c in clients:
            c.close()
        self.watch.untrack_all()
        rss_after = self.settle()
        queues_left = self.queues_left(extra.pop("queues", []))
        control = self.pair()
        times = sorted(closed.values())
        res = {
            "case": name, "clients": len(clients), "closed": len(times),
            "still_open_at_deadline": still_open, "deadline_s": deadline - t_bad,
            "close_median_s": statistics.median(times) if times else None,
            "close_min_s": times[0] if times else None,
            "close_max_s": times[-1] if times else None,
            "rss_before_kib": rss_before, "rss_peak_kib": peak, "rss_after_kib": rss_after,
            "pair": pair, "pair_vs_baseline": pair["rate"] / baseline_rate if baseline_rate else None,
            "control": control,
            "pair_vs_control": pair["rate"] / control["rate"] if control["rate"] else None,
            "queues_left": queues_left,
            "pair_secs": t_pair - t_bad, "open_during_pair": open_during_pair,
            "open_at_pair_start": open_at_pair_start,
            "setup_secs": t_bad - t_start,
        }
        res.update(extra)
        self.results.append(res)
        self.log(f"case {name}: closed {len(times)}/{len(clients)}"
                 + (f", median {res['close_median_s']:.1f} s, max {res['close_max_s']:.1f} s"
                    if times else "")
                 + f"; RSS {fmt_mib(rss_before)} / {fmt_mib(peak)} / {fmt_mib(rss_after)} MiB;"
                 f" pair {pair['rate']:,.0f} msg/s ({open_at_pair_start} bad clients open when it"
                 f" started, {open_during_pair} when it ended),"
                 f" {control['rate']:,.0f} msg/s after the case"
                 + (f"; {queues_left} stuck queues still exist" if queues_left else ""))


# What closes each bad client in RabbitMQ 3.10 with its defaults (measured with this
# script; see the docstring of each case): handshake_timeout 10 s and
# ssl_handshake_timeout 5 s from the TCP accept; the heartbeat receive monitor checks
# every hb seconds and closes after two checks with no new bytes (its first check always
# counts as a change, so a client silent since connection.open goes at 3 x hb); ranch's
# send_timeout 30 s (send_timeout_close) closes a socket whose write is blocked 30 s.
EXPECTED = {
    "stuck": "2-3 x hb (silent) or 30 s blocked write",
    "stuck-hb": "30 s blocked write (send_timeout)",
    "trickle": "handshake_timeout 10 s",
    "tcp-silent": "handshake_timeout 10 s",
    "no-hb": "2-3 x hb after last byte (3 x hb)",
    "tls-silent": "ssl_handshake_timeout 5 s",
    "tls-partial": "ssl_handshake_timeout 5 s",
}


def table_md(bench, baseline_rate, label):
    a = bench.a
    lines = [f"### {label}", "",
             f"Bad clients: {a.clients} per case ({a.stuck_clients} for stuck*), heartbeat "
             f"{a.heartbeat} s; stuck queues {a.stuck_messages} x {a.stuck_size} B each; pair "
             f"{a.pair_messages} x {a.pair_size} B; baseline pair {baseline_rate:,.0f} msg/s.", "",
             "| case | bad clients | closed by deadline | time to close median / max (s) | "
             "RabbitMQ's rule | broker RSS before / peak / after (MiB) | pair msg/s during "
             "(vs baseline) | pair msg/s right after | notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in bench.results:
        t = (f"{r['close_median_s']:.1f} / {r['close_max_s']:.1f}"
             if r["close_median_s"] is not None else "–")
        notes = []
        if r["still_open_at_deadline"]:
            notes.append(f"{r['still_open_at_deadline']} still open after {r['deadline_s']:.0f} s")
        if "held_per_conn_bytes" in r:
            notes.append(f"fill {r['fill_mib']:.0f} MiB (RSS {fmt_mib(r['rss_filled_kib'])} MiB "
                         f"filled); {r['delivered_msgs']} msgs off the queues, "
                         f"{r['kernel_bytes'] / 2**20:.1f} MiB in kernel; "
                         f"~{r['held_per_conn_bytes'] / 2**20:.2f} MiB "
                         f"(~{r['held_msgs_per_conn']:.0f} msgs) held per stuck conn")
        elif "fill_mib" in r:
            notes.append(f"fill {r['fill_mib']:.0f} MiB; a queue vanished before steady state")
        if r.get("queues_left"):
            notes.append(f"{r['queues_left']} stuck queues still exist after the case")
        if r["open_during_pair"] < r["clients"]:
            notes.append(f"bad clients open at the start / end of the pair run: "
                         f"{r['open_at_pair_start']} / {r['open_during_pair']} "
                         f"(pair run {r['pair_secs']:.1f} s)")
        ratio = f" ({r['pair_vs_baseline']:.2f}x)" if r["pair_vs_baseline"] else ""
        lines.append(
            f"| {r['case']} | {r['clients']} | {r['closed']}/{r['clients']} | {t} | "
            f"{EXPECTED.get(r['case'], '')} | {fmt_mib(r['rss_before_kib'])} / "
            f"{fmt_mib(r['rss_peak_kib'])} / {fmt_mib(r['rss_after_kib'])} | "
            f"{r['pair']['rate']:,.0f}{ratio} | {r['control']['rate']:,.0f} | "
            f"{'; '.join(notes)} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uri", help="broker to measure (default: start Warren)")
    ap.add_argument("--pid", type=int, help="broker process id (with --uri)")
    ap.add_argument("--tls-port", type=int, default=0, help="AMQPS port of --uri's broker")
    ap.add_argument("--warren", default=os.path.join(ROOT, "target/release/warren"))
    ap.add_argument("--label", default=None, help="heading of the table")
    ap.add_argument("--cases", default=",".join(ALL_CASES))
    ap.add_argument("--clients", type=int, default=100, help="bad clients per case")
    ap.add_argument("--stuck-clients", type=int, default=50)
    ap.add_argument("--stuck-messages", type=int, default=2500, help="backlog per stuck queue")
    ap.add_argument("--stuck-size", type=int, default=4096)
    ap.add_argument("--stuck-rcvbuf", type=int, default=16384,
                    help="SO_RCVBUF of a stuck client (bounds what the kernel absorbs)")
    ap.add_argument("--heartbeat", type=int, default=10, help="heartbeat the bad clients ask for")
    ap.add_argument("--handshake-timeout", type=int, default=10,
                    help="the broker's handshake timeout (deadlines; Warren is started with it)")
    ap.add_argument("--pair-messages", type=int, default=20000)
    ap.add_argument("--pair-size", type=int, default=1024)
    ap.add_argument("--pair-timeout", type=float, default=120)
    ap.add_argument("--baseline-runs", type=int, default=3)
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--make-certs", metavar="DIR", help="write ca.pem, server.pem, server.key; exit")
    ap.add_argument("--pair", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.make_certs:
        make_certs(a.make_certs)
        print(a.make_certs)
        return
    if a.pair:
        pair_main(a)
        return
    cases = [c for c in a.cases.split(",") if c]
    for c in cases:
        if c not in ALL_CASES:
            ap.error(f"unknown case {c}; cases: {', '.join(ALL_CASES)}")

    tmp = proc = log = None
    try:
        if a.uri:
            if not a.pid:
                ap.error("--uri needs --pid")
            u = urlparse(a.uri)
            host, port, pid, tls_port = u.hostname or "127.0.0.1", u.port or 5672, a.pid, a.tls_port
            label = a.label or f"broker at {host}:{port} (pid {pid})"
        else:
            tmp = tempfile.mkdtemp(prefix="slow_clients.")
            proc, port, tls_port, log = start_warren(a.warren, tmp, 60, a.handshake_timeout)
            host, pid = "127.0.0.1", proc.pid
            a.uri = f"amqp://guest:guest@127.0.0.1:{port}/%2f"
            label = a.label or f"Warren ({a.warren}), AMQP {port}, AMQPS {tls_port}"
        if tls_port:
            # A real TLS client gets through: the port is a TLS listener.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with socket.create_connection((host, tls_port), timeout=10) as s:
                with ctx.wrap_socket(s, server_hostname="localhost") as t:
                    t.sendall(PROTOCOL_HEADER)
                    if t.recv(7)[:1] != b"\x01":
                        sys.exit("the TLS port does not answer AMQP over TLS")
        bench = Bench(a, host, port, tls_port, pid)
        bench.log(f"measuring {label}; broker RSS {fmt_mib(rss_kib(pid))} MiB")
        runs = bench.baseline()
        baseline_rate = statistics.median(r["rate"] for r in runs)
        for c in cases:
            bench.run_case(c, baseline_rate)
        after = bench.pair()
        bench.log(f"baseline pair after the cases: {after['rate']:,.0f} msg/s")
        md = table_md(bench, baseline_rate, label)
        before = ", ".join(f"{r['rate']:,.0f}" for r in runs)
        md += (f"\n\nBaseline pair runs (no bad clients): {before} msg/s before the cases, "
               f"{after['rate']:,.0f} msg/s after them.")
        print(md)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"label": label, "args": vars(a), "baseline": runs,
                           "baseline_after": after, "results": bench.results}, f, indent=2)
    finally:
        if proc:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if log:
            log.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
