#!/usr/bin/env python3
"""Writes hand-made seed inputs for the `connection` fuzz target into
fuzz/corpus/connection/: first byte 2 (the harness opens channel 1 as guest), then AMQP
frames of a few everyday conversations. Run once; libFuzzer grows the corpus from them."""
import os
import struct

def frame(kind, ch, payload):
    return struct.pack(">BHI", kind, ch, len(payload)) + payload + b"\xce"

def ss(s):
    b = s.encode()
    return struct.pack(">B", len(b)) + b

EMPTY = struct.pack(">I", 0)

def m(ch, cls, mid, args=b""):
    return frame(1, ch, struct.pack(">HH", cls, mid) + args)

def publish(ch, ex, rk, body, props=b"\x00\x00", mandatory=False):
    return (m(ch, 60, 40, b"\x00\x00" + ss(ex) + ss(rk) + bytes([1 if mandatory else 0]))
            + frame(2, ch, struct.pack(">HHQ", 60, 0, len(body)) + props)
            + frame(3, ch, body))

def declare(ch, q, bits=0):
    return m(ch, 50, 10, b"\x00\x00" + ss(q) + bytes([bits]) + EMPTY)

def consume(ch, q, tag, no_ack=False):
    return m(ch, 60, 20, b"\x00\x00" + ss(q) + ss(tag) + bytes([2 if no_ack else 0]) + EMPTY)

def ack(ch, tag, multiple=False):
    return m(ch, 60, 80, struct.pack(">QB", tag, 1 if multiple else 0))

CLOSE = m(0, 10, 50, struct.pack(">H", 200) + ss("bye") + struct.pack(">HH", 0, 0))
# delivery mode 2, priority 5, headers {"a": long 1}
PROPS = struct.pack(">H", 0x2000 | 0x1000 | 0x0800) + struct.pack(">I", 7) + ss("a") + b"I" + struct.pack(">i", 1) + b"\x02\x05"

seeds = {
    "publish_get": declare(1, "q") + publish(1, "", "q", b"hello") + m(1, 60, 70, b"\x00\x00" + ss("q") + b"\x00") + ack(1, 1) + CLOSE,
    "confirms": m(1, 85, 10, b"\x00") + declare(1, "c", 2) + publish(1, "", "c", b"x" * 300, PROPS) + publish(1, "", "nope", b"y", mandatory=True) + CLOSE,
    "consume_ack": declare(1, "w") + m(1, 60, 10, struct.pack(">IHB", 0, 10, 0)) + consume(1, "w", "t") + publish(1, "", "w", b"a") + publish(1, "", "w", b"b") + ack(1, 2, True) + m(1, 60, 30, ss("t") + b"\x00") + CLOSE,
    "tx": m(1, 90, 10) + declare(1, "t") + publish(1, "", "t", b"in tx") + m(1, 90, 20) + publish(1, "", "t", b"rolled") + m(1, 90, 30) + CLOSE,
    "topology": m(1, 40, 10, b"\x00\x00" + ss("x") + ss("topic") + b"\x00" + EMPTY) + declare(1, "b") + m(1, 50, 20, b"\x00\x00" + ss("b") + ss("x") + ss("a.#") + b"\x00" + EMPTY) + publish(1, "x", "a.b", b"routed") + m(1, 50, 50, b"\x00\x00" + ss("b") + ss("x") + ss("a.#") + EMPTY) + m(1, 40, 20, b"\x00\x00" + ss("x") + b"\x00") + CLOSE,
    "errors": m(1, 50, 10, b"\x00\x00" + ss("missing") + b"\x01" + EMPTY) + m(2, 20, 10, ss("")) + declare(2, "amq.bad") + m(3, 20, 10, ss("")) + m(3, 20, 40, struct.pack(">H", 200) + ss("") + struct.pack(">HH", 0, 0)) + CLOSE,
    "big_body": declare(1, "big") + m(1, 60, 40, b"\x00\x00" + ss("") + ss("big") + b"\x00") + frame(2, 1, struct.pack(">HHQ", 60, 0, 200000) + b"\x00\x00") + frame(3, 1, b"z" * 131064) + frame(3, 1, b"z" * (200000 - 131064)) + CLOSE,
}
out = os.path.join(os.path.dirname(__file__), "..", "corpus", "connection")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, "seed-" + name), "wb") as f:
        f.write(b"\x02" + data)
# A raw start and a header-only start.
with open(os.path.join(out, "seed-raw-header"), "wb") as f:
    f.write(b"\x00AMQP\x00\x00\x09\x01")
with open(os.path.join(out, "seed-bad-header"), "wb") as f:
    f.write(b"\x00AMQP\x01\x01\x00\x09")
print(f"{len(seeds) + 2} seeds in {out}")
