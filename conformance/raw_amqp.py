"""A minimal raw-socket AMQP 0-9-1 client for conformance cases that a client
library will not send (a heartbeat with a payload, a method on channel 0 that is
not connection-class, a channel method before connection.open, ...).

It speaks just enough of the protocol to get through the handshake and to read
back what the broker answers, frame by frame.
"""

import socket
import struct
import time

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = b"\xce"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">B", len(b)) + b


def longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def field_value(v):
    if isinstance(v, bool):
        return b"t" + (b"\x01" if v else b"\x00")
    if isinstance(v, int):
        return b"l" + struct.pack(">q", v)
    if isinstance(v, dict):
        return b"F" + table(v)
    if isinstance(v, (list, tuple)):
        body = b"".join(field_value(x) for x in v)
        return b"A" + struct.pack(">I", len(body)) + body
    return b"S" + longstr(v)


def table(d):
    body = b"".join(shortstr(k) + field_value(v) for k, v in d.items())
    return struct.pack(">I", len(body)) + body


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + FRAME_END


def method(channel, class_id, method_id, args=b""):
    return frame(FRAME_METHOD, channel, struct.pack(">HH", class_id, method_id) + args)


CLIENT_CAPS = {
    "authentication_failure_close": True,
    "connection.blocked": True,
    "consumer_cancel_notify": True,
    "publisher_confirms": True,
    "basic.nack": True,
}


def start_ok(user, password, mechanism="PLAIN", caps=None):
    props = {"product": "warren-conformance-raw", "capabilities": caps or CLIENT_CAPS}
    response = b"\x00" + user.encode() + b"\x00" + password.encode()
    args = table(props) + shortstr(mechanism) + longstr(response) + shortstr("en_US")
    return method(0, 10, 11, args)


def tune_ok(channel_max=2047, frame_max=131072, heartbeat=0):
    return method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, heartbeat))


def open_vhost(vhost):
    return method(0, 10, 40, shortstr(vhost) + shortstr("") + b"\x00")


class Closed(Exception):
    """The broker closed the socket."""


class RawConnection:
    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.server_properties_raw = None
        self.tune = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the broker in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError as e:
                raise Closed() from e
            if not chunk:
                raise Closed()
            self.buf += chunk

    def read_frame(self, timeout=None):
        """(type, channel, payload) of the next frame; raises Closed at EOF."""
        deadline = time.monotonic() + (timeout or self.timeout)
        self._fill(7, deadline)
        kind, channel, size = struct.unpack(">BHI", self.buf[:7])
        self._fill(7 + size + 1, deadline)
        payload = self.buf[7:7 + size]
        assert self.buf[7 + size:8 + size] == FRAME_END, "bad frame end from broker"
        self.buf = self.buf[8 + size:]
        return kind, channel, payload

    def read_method(self, timeout=None):
        """(channel, class_id, method_id, args) of the next method frame,
        skipping heartbeats."""
        while True:
            kind, channel, payload = self.read_frame(timeout)
            if kind == FRAME_HEARTBEAT:
                continue
            assert kind == FRAME_METHOD, f"expected a method frame, got type {kind}"
            class_id, method_id = struct.unpack(">HH", payload[:4])
            return channel, class_id, method_id, payload[4:]

    def handshake(self, user="guest", password="guest", vhost="/", stop_before=None,
                  caps=None, channel_max=2047, frame_max=131072):
        """Runs the handshake up to (not including) ``stop_before``, one of
        'start_ok', 'tune_ok', 'open', or to the end (connection.open-ok)."""
        self.send(PROTOCOL_HEADER)
        ch, c, m, args = self.read_method()
        assert (ch, c, m) == (0, 10, 10), (ch, c, m)
        self.server_properties_raw = args
        if stop_before == "start_ok":
            return
        self.send(start_ok(user, password, caps=caps))
        ch, c, m, args = self.read_method()
        assert (c, m) == (10, 30), f"expected connection.tune, got {c}.{m}"
        self.tune = struct.unpack(">HIH", args[:8])
        if stop_before == "tune_ok":
            return
        self.send(tune_ok(channel_max=channel_max, frame_max=frame_max))
        if stop_before == "open":
            return
        self.send(open_vhost(vhost))
        ch, c, m, args = self.read_method()
        assert (c, m) == (10, 41), f"expected connection.open-ok, got {c}.{m}"

    def expect_connection_close(self, timeout=None):
        """Reads until connection.close; returns (code, text, class_id, method_id)
        and answers close-ok. Returns None if the socket closed without one."""
        try:
            while True:
                ch, c, m, args = self.read_method(timeout)
                if (ch, c, m) == (0, 10, 50):
                    code = struct.unpack(">H", args[:2])[0]
                    n = args[2]
                    text = args[3:3 + n].decode()
                    cid, mid = struct.unpack(">HH", args[3 + n:7 + n])
                    try:
                        self.send(method(0, 10, 51))
                    except OSError:
                        pass
                    return code, text, cid, mid
        except Closed:
            return None

    def expect_socket_closed(self, timeout=None):
        """True when the broker closes the socket without sending any frame
        other than heartbeats; raises AssertionError on a method frame."""
        try:
            while True:
                kind, ch, payload = self.read_frame(timeout)
                if kind == FRAME_HEARTBEAT:
                    continue
                raise AssertionError(
                    f"expected the socket to close, got frame type {kind} "
                    f"on channel {ch}: {payload[:60]!r}")
        except Closed:
            return True
