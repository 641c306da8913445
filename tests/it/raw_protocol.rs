//! The wire, byte by byte: malformed and hostile input, handshake failures, heartbeats
//! and timeouts. The broker must answer each with RabbitMQ's close (or socket close) and
//! keep serving everyone else.

use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, channel, queue, AMQPClass};
use amq_protocol::types::FieldTable;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::util::{
    assert_close, assert_close_prefix, body_frame, channel_open, consume, declare_queue, frame,
    header_frame, header_frame_with, method_frame, method_payload, next_delivery, publish,
    publish_method, ready_count, ss, within, Ending, Frame, Login, RawClient, TestBroker,
    PROTOCOL_HEADER,
};

/// A broker plus one lapin connection opened before any hostile client shows up.
struct Fixture {
    broker: TestBroker,
    bystander: lapin::Connection,
}

impl Fixture {
    async fn new() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(tweak: impl FnOnce(&mut warren_server::Config)) -> Self {
        let broker = TestBroker::start_with(tweak).await;
        let bystander = broker.connect().await;
        Fixture { broker, bystander }
    }

    /// The bystander still publishes and consumes, and a fresh connection works too.
    async fn assert_healthy(&self, tag: &str) {
        round_trip(&self.bystander, &format!("health.old.{tag}")).await;
        let fresh = self.broker.connect().await;
        round_trip(&fresh, &format!("health.new.{tag}")).await;
        fresh.close(200, ss("OK")).await.unwrap();
    }

    async fn raw(&self) -> RawClient {
        let mut c = RawClient::open(self.broker.addr()).await;
        c.open_channel(1).await;
        c
    }
}

async fn round_trip(conn: &lapin::Connection, queue: &str) {
    assert!(conn.status().connected(), "connection was closed");
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, queue).await;
    let mut c = consume(&ch, queue).await;
    publish(&ch, "", queue, queue.as_bytes()).await;
    assert_eq!(next_delivery(&mut c).await.data, queue.as_bytes());
    ch.close(200, ss("OK")).await.unwrap();
}

fn queue_declare(name: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: ss(name),
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

/// Deterministic pseudo-random bytes.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_header_gets_the_0_9_1_header_and_a_close() {
    let f = Fixture::new().await;
    for header in [
        &b"AMQP\x00\x00\x0a\x00"[..],
        b"AMQP\x00\x00\x08\x00",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut c = RawClient::tcp(f.broker.addr()).await;
        c.send(header).await;
        let reply = c.read_to_eof().await;
        assert_eq!(reply, PROTOCOL_HEADER, "reply to header {header:?}");
    }
    f.assert_healthy("header").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_refused_with_501_before_its_payload_arrives() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    // A method frame on channel 1 claiming 4 GiB - 1 of payload: only the 7 header bytes
    // are ever sent, so a broker that waited for the payload would never answer.
    c.send(&[1, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF]).await;
    let close = c.expect_close().await;
    assert_close_prefix(&close, 501, "FRAME_ERROR - ");
    // RabbitMQ allows a payload of up to frame_max bytes (frame_max - 8 plus an 8-byte
    // fudge); one byte more is refused the same way.
    let mut c = f.raw().await;
    let over = c.frame_max + 1;
    let mut header = vec![3u8, 0, 1];
    header.extend_from_slice(&over.to_be_bytes());
    c.send(&header).await;
    let close = c.expect_close().await;
    assert_close_prefix(&close, 501, "FRAME_ERROR - ");
    f.assert_healthy("oversize").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_allowed_frame_is_accepted() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    c.send_method(1, &queue_declare("maxframe.q")).await;
    c.next_method().await;
    // A publish whose single body frame is exactly frame_max bytes long on the wire.
    let body = vec![7u8; c.frame_max as usize - 8];
    let mut bytes = method_frame(1, &publish_method("", "maxframe.q"));
    bytes.extend(header_frame(1, body.len() as u64));
    bytes.extend(body_frame(1, &body));
    c.send(&bytes).await;
    // A synchronous method afterwards proves the connection is still fine.
    c.send_method(1, &queue_declare("maxframe.q")).await;
    match c.next_method().await {
        (1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))) => assert_eq!(ok.message_count, 1),
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_bytes_reach_the_consumer_byte_for_byte() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    c.send_method(1, &queue_declare("bytes.q")).await;
    c.next_method().await;
    // content-type and headers; the table's keys are deliberately not sorted and use
    // types a re-encoding client library would normalise ('U' short-int, 'L' u64).
    let mut table = Vec::new();
    for (key, tag, value) in [
        ("zz", b'I', &5i32.to_be_bytes()[..]),
        ("aa", b'U', &(-3i16).to_be_bytes()[..]),
        ("mm", b'L', &7u64.to_be_bytes()[..]),
        ("bb", b'x', &[0, 0, 0, 2, 1, 2][..]),
    ] {
        table.push(key.len() as u8);
        table.extend_from_slice(key.as_bytes());
        table.push(tag);
        table.extend_from_slice(value);
    }
    let mut props = (0x8000u16 | 0x2000).to_be_bytes().to_vec();
    props.push(6);
    props.extend_from_slice(b"text/x");
    props.extend_from_slice(&(table.len() as u32).to_be_bytes());
    props.extend_from_slice(&table);
    let mut bytes = method_frame(1, &publish_method("", "bytes.q"));
    bytes.extend(header_frame_with(1, 3, &props));
    bytes.extend(body_frame(1, b"abc"));
    c.send(&bytes).await;
    c.send_method(
        1,
        &AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: ss("bytes.q"),
            consumer_tag: ss("raw"),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await;
    let received = loop {
        match c.next_frame().await {
            Some(Frame::Header {
                channel: 1,
                body_size,
                properties,
            }) => {
                assert_eq!(body_size, 3);
                break properties;
            }
            Some(_) => continue,
            None => panic!("server closed the connection"),
        }
    };
    assert_eq!(received, props);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frame_end_octet_is_501() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    let mut bytes = method_frame(2, &channel_open());
    *bytes.last_mut().unwrap() = 0x00;
    c.send(&bytes).await;
    let close = c.expect_close().await;
    assert_close_prefix(&close, 501, "FRAME_ERROR - ");
    f.assert_healthy("frame-end").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_frame_type_is_501() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    c.send(&frame(9, 0, b"")).await;
    let close = c.expect_close().await;
    assert_close_prefix(&close, 501, "FRAME_ERROR - ");
    f.assert_healthy("frame-type").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_gets_a_socket_close_without_connection_close() {
    let f = Fixture::new().await;
    for (class, method) in [(60u16, 99u16), (99, 10)] {
        let mut c = f.raw().await;
        let mut payload = class.to_be_bytes().to_vec();
        payload.extend_from_slice(&method.to_be_bytes());
        c.send(&frame(1, 1, &payload)).await;
        // RabbitMQ 3.10 just closes the socket (#9).
        match c.ending().await {
            Ending::Eof => {}
            Ending::Close(close) => panic!("expected a socket close, got {close:?}"),
        }
    }
    f.assert_healthy("unknown-method").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_header_without_a_method_is_505() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    c.send(&header_frame(1, 5)).await;
    let close = c.expect_close().await;
    assert_close_prefix(&close, 505, "UNEXPECTED_FRAME - ");
    f.assert_healthy("lone-header").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_after_publish_without_a_header_is_505() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    let mut bytes = method_frame(1, &publish_method("", "q"));
    bytes.extend(body_frame(1, b"hello"));
    c.send(&bytes).await;
    let close = c.expect_close().await;
    assert_close_prefix(&close, 505, "UNEXPECTED_FRAME - ");
    f.assert_healthy("lone-body").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_while_a_content_header_is_expected_is_505() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    let mut bytes = method_frame(1, &publish_method("", "q"));
    bytes.extend(method_frame(1, &queue_declare("q")));
    c.send(&bytes).await;
    let close = c.expect_close().await;
    assert_close_prefix(&close, 505, "UNEXPECTED_FRAME - ");
    f.assert_healthy("method-for-header").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_header_of_another_class_is_505() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    let mut bytes = method_frame(1, &publish_method("", "q"));
    let mut header = header_frame(1, 0);
    header[7..9].copy_from_slice(&50u16.to_be_bytes()); // class id: queue
    bytes.extend(header);
    c.send(&bytes).await;
    let close = c.expect_close().await;
    assert_close_prefix(&close, 505, "UNEXPECTED_FRAME - ");
    f.assert_healthy("header-class").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_body_frame_after_an_empty_message_is_505() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    // An empty body is complete with its header; a body frame after it is unexpected.
    let mut bytes = method_frame(1, &publish_method("", "q"));
    bytes.extend(header_frame(1, 0));
    bytes.extend(body_frame(1, b""));
    c.send(&bytes).await;
    let close = c.expect_close().await;
    assert_close_prefix(&close, 505, "UNEXPECTED_FRAME - ");
    f.assert_healthy("empty-body-frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_longer_than_its_header_announced_is_501() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    let mut bytes = method_frame(1, &publish_method("", "q"));
    bytes.extend(header_frame(1, 5));
    bytes.extend(body_frame(1, b"0123456789"));
    c.send(&bytes).await;
    let close = c.expect_close().await;
    assert_close_prefix(&close, 501, "FRAME_ERROR - ");
    f.assert_healthy("long-body").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_on_a_channel_never_opened_is_504() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    c.send_method(3, &queue_declare("q")).await;
    let close = c.expect_close().await;
    assert_close(&close, 504, "CHANNEL_ERROR - expected 'channel.open'");
    assert_eq!((close.class_id, close.method_id), (50, 10));
    f.assert_healthy("unopened").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_channel_open_on_an_open_channel_is_504() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    c.send_method(1, &channel_open()).await;
    let close = c.expect_close().await;
    assert_close(&close, 504, "CHANNEL_ERROR - second 'channel.open' seen");
    f.assert_healthy("reopen").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_on_a_nonzero_channel_is_505() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    c.send(&frame(8, 1, b"")).await;
    let close = c.expect_close().await;
    assert_close_prefix(&close, 505, "UNEXPECTED_FRAME - ");
    f.assert_healthy("heartbeat-ch1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_with_a_prefetch_size_is_540() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    // basic.qos: prefetch_size=1 (u32), prefetch_count=0 (u16), global=false.
    let mut payload = vec![0, 60, 0, 10];
    payload.extend_from_slice(&1u32.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes());
    payload.push(0);
    c.send(&frame(1, 1, &payload)).await;
    let close = c.expect_close().await;
    assert_close(&close, 540, "NOT_IMPLEMENTED - prefetch_size!=0 (1)");
    assert_eq!((close.class_id, close.method_id), (60, 10));
    f.assert_healthy("qos").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_close_ok_and_reuse_of_the_channel_number_work() {
    let f = Fixture::new().await;
    let mut c = f.raw().await;
    c.send_method(
        1,
        &AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: ss("bye"),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await;
    match c.next_method().await {
        (1, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {}
        other => panic!("expected channel.close-ok, got {other:?}"),
    }
    c.open_channel(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_hurts_the_broker() {
    let f = Fixture::new().await;
    for seed in 1..=12u64 {
        let len = [1usize, 7, 8, 100, 4096, 70_000][seed as usize % 6];
        let noise = garbage(seed, len);
        // Garbage instead of the protocol header.
        let mut c = RawClient::tcp(f.broker.addr()).await;
        c.send_lossy(&noise).await;
        c.shutdown_write().await;
        c.read_to_eof().await;
        // Garbage after the protocol header (instead of start-ok).
        let mut c = RawClient::tcp(f.broker.addr()).await;
        c.send(PROTOCOL_HEADER).await;
        c.send_lossy(&noise).await;
        c.shutdown_write().await;
        c.read_to_eof().await;
        // Garbage after a complete handshake, on a connection with an open channel.
        let mut c = f.raw().await;
        c.send_lossy(&noise).await;
        c.shutdown_write().await;
        c.read_to_eof().await;
        // Garbage after a valid frame prefix: a real method frame header and random payload.
        let mut c = f.raw().await;
        let mut bytes = vec![1u8, 0, 1];
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend_from_slice(&noise);
        bytes.push(0xCE);
        c.send_lossy(&bytes).await;
        c.shutdown_write().await;
        c.read_to_eof().await;
    }
    f.assert_healthy("garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frames_followed_by_eof_never_hurt_the_broker() {
    let f = Fixture::new().await;
    let ch = f.bystander.create_channel().await.unwrap();
    declare_queue(&ch, "trunc.q").await;
    let publish = {
        let mut b = method_frame(1, &publish_method("", "trunc.q"));
        b.extend(header_frame(1, 10));
        b.extend(body_frame(1, b"0123456789"));
        b
    };
    let declare = method_frame(1, &queue_declare("trunc.q"));
    let mut cuts = vec![1, 3, 6, 7, 8, declare.len() - 1];
    cuts.extend([publish.len() - 12, publish.len() - 3, publish.len() - 1]);
    for cut in cuts {
        let mut c = f.raw().await;
        let stream = if cut < declare.len() {
            &declare[..cut]
        } else {
            &publish[..cut]
        };
        c.send(stream).await;
        c.shutdown_write().await;
        c.read_to_eof().await;
    }
    // Truncated handshakes.
    for prefix in [&b"AM"[..], b"AMQP\x00\x00\x09"] {
        let mut c = RawClient::tcp(f.broker.addr()).await;
        c.send(prefix).await;
        c.shutdown_write().await;
        c.read_to_eof().await;
    }
    {
        let mut c = RawClient::tcp(f.broker.addr()).await;
        c.send(PROTOCOL_HEADER).await;
        c.next_method().await;
        // A method frame header promising 100 bytes where start-ok belongs, then 10 of them.
        let mut b = vec![1u8, 0, 0, 0, 0, 0, 100];
        b.extend_from_slice(&method_payload(&queue_declare("x"))[..10]);
        c.send(&b).await;
        c.shutdown_write().await;
        c.read_to_eof().await;
    }
    f.assert_healthy("truncated").await;
    // Nothing half-published reached the queue.
    assert_eq!(ready_count(&f.bystander, "trunc.q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_disconnected_after_the_handshake_timeout() {
    let f = Fixture::with(|c| c.limits.handshake_timeout_secs = 1).await;
    // Sends nothing at all.
    let mut silent = RawClient::tcp(f.broker.addr()).await;
    // Sends the protocol header, then nothing.
    let mut stalled = RawClient::tcp(f.broker.addr()).await;
    stalled.send(PROTOCOL_HEADER).await;
    assert!(silent.read_to_eof().await.is_empty());
    match stalled.next_frame().await {
        Some(Frame::Method {
            channel: 0,
            method: AMQPClass::Connection(amq_protocol::protocol::connection::AMQPMethod::Start(_)),
        }) => {}
        other => panic!("expected connection.start, got {other:?}"),
    }
    stalled.expect_eof().await;
    f.assert_healthy("handshake-timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_missing_heartbeats_is_disconnected_and_server_sends_heartbeats() {
    let f = Fixture::new().await;
    let login = Login {
        heartbeat: 1,
        ..Login::default()
    };
    let mut c = RawClient::open_with(f.broker.addr(), &login).await;
    assert_eq!(c.server_heartbeat, 60);
    let heartbeats = within("the server to drop a silent client", async {
        let mut n = 0;
        loop {
            match c.next_frame().await {
                Some(Frame::Heartbeat { channel: 0 }) => n += 1,
                None => break n,
                Some(other) => panic!("expected heartbeats then a socket close, got {other:?}"),
            }
        }
    })
    .await;
    assert!(
        heartbeats >= 1,
        "the server sent no heartbeat before closing"
    );
    f.assert_healthy("heartbeat-timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_answering_heartbeats_stays_connected() {
    let f = Fixture::new().await;
    let login = Login {
        heartbeat: 1,
        ..Login::default()
    };
    let mut c = RawClient::open_with(f.broker.addr(), &login).await;
    let started = Instant::now();
    let mut heartbeats = 0;
    // Wait well past two heartbeat intervals (when a silent client is dropped), answering
    // every server heartbeat.
    let answering = async {
        while heartbeats < 4 || started.elapsed() < Duration::from_secs(3) {
            match c.next_frame().await {
                Some(Frame::Heartbeat { channel: 0 }) => {
                    heartbeats += 1;
                    c.send(&frame(8, 0, b"")).await;
                }
                other => panic!("expected a heartbeat, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), answering)
        .await
        .expect("four server heartbeats and three seconds within 30 s");
    c.open_channel(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_403_when_the_client_asks_for_authentication_failure_close() {
    let f = Fixture::new().await;
    for (user, password) in [("guest", "wrong"), ("nobody", "guest")] {
        let login = Login {
            user: user.into(),
            password: password.into(),
            ..Login::default()
        };
        let mut c = RawClient::begin(f.broker.addr(), &login).await;
        let close = c.expect_close().await;
        assert_close(
            &close,
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
        );
    }
    f.assert_healthy("auth").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_without_authentication_failure_close_just_closes_the_socket() {
    let f = Fixture::new().await;
    let login = Login {
        password: "wrong".into(),
        failure_close: false,
        ..Login::default()
    };
    let mut c = RawClient::begin(f.broker.addr(), &login).await;
    c.expect_eof().await;
    f.assert_healthy("auth-no-cap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_vhost_is_530() {
    let f = Fixture::new().await;
    let login = Login {
        vhost: "nope".into(),
        ..Login::default()
    };
    let mut c = RawClient::begin(f.broker.addr(), &login).await;
    c.tune_and_open(&login).await;
    let close = c.expect_close().await;
    assert_close(&close, 530, "NOT_ALLOWED - vhost nope not found");
    assert_eq!((close.class_id, close.method_id), (10, 40));
    f.assert_healthy("vhost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_connections_do_not_stop_a_normal_client() {
    let f = Fixture::new().await;
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut s = within("TCP connect", TcpStream::connect(f.broker.addr()))
            .await
            .expect("TCP connect");
        // Half say nothing at all, half stop after the protocol header.
        if i % 2 == 1 {
            s.write_all(PROTOCOL_HEADER).await.unwrap();
        }
        idle.push(s);
    }
    f.assert_healthy("idle-crowd").await;
    let mut raw = RawClient::open(f.broker.addr()).await;
    raw.open_channel(1).await;
    drop(idle);
}

/// A field table `{x: [[...[1]...]]}` (arrays, `tag` `A`) or `{x: {k: {k: ...}}}`
/// (tables, `F`), `depth` levels deep, with its 4-byte length.
fn nested_table(depth: usize, tag: u8) -> Vec<u8> {
    let per_level = if tag == b'F' { 7 } else { 5 };
    let value_len = depth * per_level + 5;
    let mut out = ((value_len + 2) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&[1, b'x']);
    for level in 0..depth {
        out.push(tag);
        let inner = (depth - level - 1) * per_level + 5 + usize::from(tag == b'F') * 2;
        out.extend_from_slice(&(inner as u32).to_be_bytes());
        if tag == b'F' {
            out.extend_from_slice(&[1, b'k']);
        }
    }
    out.extend_from_slice(&[b'I', 0, 0, 0, 1]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_field_tables_are_refused_without_hurting_the_broker() {
    let f = Fixture::new().await;
    // queue.declare whose arguments nest 20,000 arrays (100 KB, within frame_max): a
    // recursive parser overflows the stack of the whole process on this.
    let mut c = f.raw().await;
    let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    payload.extend_from_slice(&nested_table(20_000, b'A'));
    c.send(&frame(1, 1, &payload)).await;
    let close = c.expect_close().await;
    assert_close_prefix(
        &close,
        501,
        "FRAME_ERROR - field table nested deeper than 64 levels in method queue.declare",
    );
    // A published message whose headers nest 15,000 tables.
    let mut c = f.raw().await;
    c.send(&method_frame(1, &publish_method("", "q"))).await;
    let mut props = 0x2000u16.to_be_bytes().to_vec();
    props.extend_from_slice(&nested_table(15_000, b'F'));
    c.send(&header_frame_with(1, 0, &props)).await;
    let close = c.expect_close().await;
    assert_close_prefix(&close, 501, "FRAME_ERROR - ");
    // Before authentication: client properties in connection.start-ok.
    let mut c = RawClient::tcp(f.broker.addr()).await;
    c.send(PROTOCOL_HEADER).await;
    let _start = c.next_method().await;
    let mut payload = vec![0, 10, 0, 11];
    payload.extend_from_slice(&nested_table(20_000, b'A'));
    payload.extend_from_slice(&[5, b'P', b'L', b'A', b'I', b'N']);
    payload.extend_from_slice(&[0, 0, 0, 12]);
    payload.extend_from_slice(b"\0guest\0guest");
    payload.extend_from_slice(&[5, b'e', b'n', b'_', b'U', b'S']);
    c.send_lossy(&frame(1, 0, &payload)).await;
    c.read_to_eof().await;
    // Nesting a client may really use is accepted.
    let mut c = f.raw().await;
    let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    payload.extend_from_slice(&nested_table(10, b'A'));
    c.send(&frame(1, 1, &payload)).await;
    match c.next_method().await {
        (1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))) => {}
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
    f.assert_healthy("nesting").await;
}
