//! Replies that must be identical to RabbitMQ 3.10.8's, found by comparing raw frames
//! and by other people's client test suites (issue #9). The same cases run against
//! RabbitMQ in `conformance/test_rabbitmq_parity.py`.

use amq_protocol::protocol::{basic, confirm, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use lapin::options::ExchangeUnbindOptions;
use tokio::net::TcpStream;

use crate::util::{
    assert_close, assert_close_prefix, declare_queue, frame, header_frame, header_frame_with,
    method_frame, publish_method, ss, within, Ending, Login, RawClient, TestBroker,
    PROTOCOL_HEADER,
};

/// The server properties of connection.start.
async fn server_properties(addr: std::net::SocketAddr) -> FieldTable {
    let mut c = RawClient::tcp(addr).await;
    c.send(PROTOCOL_HEADER).await;
    match c.next_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => s.server_properties,
        other => panic!("expected connection.start, got {other:?}"),
    }
}

fn confirm_select() -> AMQPClass {
    AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
        nowait: false,
    }))
}

/// The frames of a publish of `body` with no properties.
fn publish_frames(ch: u16, exchange: &str, routing_key: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = method_frame(ch, &publish_method(exchange, routing_key));
    bytes.extend(header_frame(ch, body.len() as u64));
    bytes.extend(frame(3, ch, body));
    bytes
}

/// Reads until channel.close on `ch`; returns it and every basic.ack seen before it.
async fn acks_then_channel_close(
    c: &mut RawClient,
    ch: u16,
) -> (Vec<basic::Ack>, amq_protocol::protocol::channel::Close) {
    let mut acks = Vec::new();
    loop {
        match c.next_method().await {
            (n, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) if n == ch => acks.push(a),
            (n, AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Close(close)))
                if n == ch =>
            {
                return (acks, close)
            }
            other => panic!("expected basic.ack or channel.close, got {other:?}"),
        }
    }
}

// See #9: rabbitpy's integration test waits for the confirm of a publish to a missing
// exchange; RabbitMQ sends only channel.close 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_publish_to_a_missing_exchange_is_never_confirmed() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        &AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: ss("parity.confirmed"),
            ..Default::default()
        })),
    )
    .await;
    assert!(matches!(
        c.next_method().await,
        (1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)))
    ));
    c.send_method(1, &confirm_select()).await;
    assert!(matches!(
        c.next_method().await,
        (1, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)))
    ));
    // Seq 1 is routed to a queue; seq 2 names a missing exchange. Both in one write, so
    // the broker sees them in one batch.
    let mut bytes = publish_frames(1, "", "parity.confirmed", b"one");
    bytes.extend(publish_frames(1, "parity.no-such-exchange", "k", b"two"));
    c.send(&bytes).await;
    let (acks, close) = acks_then_channel_close(&mut c, 1).await;
    assert_eq!(close.reply_code, 404);
    assert_eq!(
        close.reply_text.as_str(),
        "NOT_FOUND - no exchange 'parity.no-such-exchange' in vhost '/'"
    );
    assert_eq!((close.class_id, close.method_id), (60, 40));
    for a in &acks {
        assert!(
            a.delivery_tag < 2,
            "the refused publish (seq 2) was confirmed: {a:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_publish_with_invalid_properties_is_never_confirmed() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(1, &confirm_select()).await;
    c.next_method().await;
    // delivery-mode (flag bit 12) = 7.
    let mut bytes = method_frame(1, &publish_method("amq.direct", "k"));
    bytes.extend(header_frame_with(1, 1, &[0x10, 0x00, 7]));
    bytes.extend(frame(3, 1, b"x"));
    c.send(&bytes).await;
    let (acks, close) = acks_then_channel_close(&mut c, 1).await;
    assert!(
        acks.is_empty(),
        "an invalid message was confirmed: {acks:?}"
    );
    assert_eq!(close.reply_code, 406);
    assert_eq!(
        close.reply_text.as_str(),
        "PRECONDITION_FAILED - invalid message: {delivery_mode_unknown,7}"
    );
}

/// Publishes to amq.direct on a fresh channel of `c` with raw `properties` and returns
/// the broker's answer: `None` if a sync probe after it succeeds, else the close.
async fn publish_with_properties(
    c: &mut RawClient,
    ch: u16,
    properties: &[u8],
) -> Option<amq_protocol::protocol::channel::Close> {
    c.open_channel(ch).await;
    let mut bytes = method_frame(ch, &publish_method("amq.direct", "k"));
    bytes.extend(header_frame_with(ch, 1, properties));
    bytes.extend(frame(3, ch, b"x"));
    // A passive declare of amq.direct: its declare-ok proves the publish was taken.
    bytes.extend(method_frame(
        ch,
        &AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
            exchange: ss("amq.direct"),
            kind: ss("direct"),
            passive: true,
            ..Default::default()
        })),
    ));
    c.send(&bytes).await;
    match c.next_method().await {
        (n, AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_))) if n == ch => None,
        (n, AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Close(close)))
            if n == ch =>
        {
            c.send_method(
                ch,
                &AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::CloseOk(
                    amq_protocol::protocol::channel::CloseOk {},
                )),
            )
            .await;
            Some(close)
        }
        other => panic!("expected declare-ok or channel.close, got {other:?}"),
    }
}

/// A property list with only a headers table holding `key` = `value` (raw field).
fn headers_property(key: &str, value: &[u8]) -> Vec<u8> {
    let mut table = vec![key.len() as u8];
    table.extend_from_slice(key.as_bytes());
    table.extend_from_slice(value);
    let mut p = vec![0x20, 0x00];
    p.extend_from_slice(&(table.len() as u32).to_be_bytes());
    p.extend(table);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_delivery_mode_must_be_absent_1_or_2() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    let mut ch = 1;
    for mode in [0u8, 3, 255] {
        let close = publish_with_properties(&mut c, ch, &[0x10, 0x00, mode])
            .await
            .expect("an unknown delivery mode is refused");
        assert_eq!(close.reply_code, 406);
        assert_eq!(
            close.reply_text.as_str(),
            format!("PRECONDITION_FAILED - invalid message: {{delivery_mode_unknown,{mode}}}")
        );
        assert_eq!((close.class_id, close.method_id), (60, 40));
        ch += 1;
    }
    for props in [vec![0x00, 0x00], vec![0x10, 0x00, 1], vec![0x10, 0x00, 2]] {
        assert_eq!(publish_with_properties(&mut c, ch, &props).await, None);
        ch += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_cc_and_bcc_headers_must_be_arrays() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    let longstr = b"S\x00\x00\x00\x01q".to_vec();
    let mut long = b"l".to_vec();
    long.extend_from_slice(&1i64.to_be_bytes());
    let cases = [
        ("CC", longstr.clone(), "longstr"),
        ("BCC", longstr, "longstr"),
        ("CC", long, "long"),
    ];
    let mut ch = 1;
    for (name, value, type_name) in cases {
        let close = publish_with_properties(&mut c, ch, &headers_property(name, &value))
            .await
            .expect("a CC/BCC header that is not an array is refused");
        assert_eq!(close.reply_code, 406);
        assert_eq!(
            close.reply_text.as_str(),
            format!(
                "PRECONDITION_FAILED - invalid message: {{unacceptable_type_in_header,\"{name}\",{type_name}}}"
            )
        );
        ch += 1;
    }
    // An array of longstr is what RabbitMQ expects.
    let array = b"A\x00\x00\x00\x06S\x00\x00\x00\x01a".to_vec();
    assert_eq!(
        publish_with_properties(&mut c, ch, &headers_property("CC", &array)).await,
        None
    );
}

// See #9: pika's and aiormq's suites call update-secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_update_secret_is_answered_and_the_connection_stays_usable() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.send_method(
        0,
        &AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(
            connection::UpdateSecret {
                new_secret: LongString::from("guest"),
                reason: ss("token refresh"),
            },
        )),
    )
    .await;
    match c.next_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(_))) => {}
        other => panic!("expected update-secret-ok, got {other:?}"),
    }
    c.open_channel(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_server_advertises_rabbitmq_3_10_capabilities() {
    let broker = TestBroker::start().await;
    let props = server_properties(broker.addr()).await;
    let Some(AMQPValue::FieldTable(caps)) = props.inner().get("capabilities") else {
        panic!("no capabilities table: {props:?}");
    };
    let mut names: Vec<&str> = caps
        .inner()
        .iter()
        .filter(|(_, v)| matches!(v, AMQPValue::Boolean(true)))
        .map(|(k, _)| k.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "authentication_failure_close",
            "basic.nack",
            "connection.blocked",
            "consumer_cancel_notify",
            "consumer_priorities",
            "direct_reply_to",
            "exchange_exchange_bindings",
            "per_consumer_qos",
            "publisher_confirms",
        ]
    );
    let product = props.inner().get("product");
    assert_eq!(
        product,
        Some(&AMQPValue::LongString(LongString::from("Warren")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_identity_rabbitmq_reports_rabbitmq_product_and_version() {
    let broker = TestBroker::start_with(|c| {
        c.identity.report_as = warren_server::config::Product::Rabbitmq;
    })
    .await;
    let props = server_properties(broker.addr()).await;
    let text = |k: &str| match props.inner().get(k) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("product"), "RabbitMQ");
    assert_eq!(text("version"), warren_server::config::RABBITMQ_VERSION);
    assert!(text("platform").starts_with("Erlang/OTP"));
    assert!(text("information").contains("MPL 2.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_unbind_of_missing_things_is_idempotent() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "parity.unbind").await;
    let unbind_q = |q: &'static str, x: &'static str| {
        let ch = ch.clone();
        async move {
            ch.queue_unbind(ss(q), ss(x), ss("k"), FieldTable::default())
                .await
        }
    };
    unbind_q("parity.no-such-queue", "amq.direct")
        .await
        .unwrap();
    unbind_q("parity.unbind", "parity.no-such-exchange")
        .await
        .unwrap();
    unbind_q("parity.unbind", "amq.direct").await.unwrap();
    for (dest, src) in [
        ("parity.no-such-exchange", "amq.direct"),
        ("amq.fanout", "parity.no-such-exchange"),
        ("amq.fanout", "amq.direct"),
    ] {
        ch.exchange_unbind(
            ss(dest),
            ss(src),
            ss("k"),
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    assert!(ch.status().connected(), "the channel must stay open");
}

/// A connection to `addr` that runs the whole handshake, then sends `bytes`.
async fn after_open(addr: std::net::SocketAddr, bytes: &[u8]) -> RawClient {
    let mut c = RawClient::open(addr).await;
    c.send(bytes).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_non_connection_method_on_channel_0_is_504() {
    let broker = TestBroker::start().await;
    let declare = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: ss("x"),
        ..Default::default()
    }));
    let mut c = after_open(broker.addr(), &method_frame(0, &declare)).await;
    let close = c.expect_close().await;
    assert_close(
        &close,
        504,
        "CHANNEL_ERROR - unexpected method in connection state running",
    );
    assert_eq!((close.class_id, close.method_id), (50, 10));
    let bind = AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
        destination: ss("a"),
        source: ss("b"),
        routing_key: ss(""),
        nowait: false,
        arguments: FieldTable::default(),
    }));
    let mut c = after_open(broker.addr(), &method_frame(0, &bind)).await;
    let close = c.expect_close().await;
    assert_eq!(
        (close.reply_code, close.class_id, close.method_id),
        (504, 40, 30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_content_frames_on_channel_0_are_505_with_the_octets() {
    let broker = TestBroker::start().await;
    let mut c = after_open(broker.addr(), &frame(3, 0, b"abc")).await;
    let close = c.expect_close().await;
    assert_close(
        &close,
        505,
        "UNEXPECTED_FRAME - type 3, all octets = <<\"abc\">>",
    );
    assert_eq!((close.class_id, close.method_id), (0, 0));
    let mut c = after_open(broker.addr(), &header_frame(0, 0)).await;
    let close = c.expect_close().await;
    assert_close(
        &close,
        505,
        "UNEXPECTED_FRAME - type 2, all octets = <<0,60,0,0,0,0,0,0,0,0,0,0,0,0>>",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_heartbeat_with_a_payload_is_501() {
    let broker = TestBroker::start().await;
    let mut c = after_open(broker.addr(), &frame(8, 0, b"xx")).await;
    let close = c.expect_close().await;
    assert_close(
        &close,
        501,
        "FRAME_ERROR - type 8, all octets = <<\"xx\">>: unknown_frame",
    );
    assert_eq!((close.class_id, close.method_id), (0, 0));
    let mut c = after_open(broker.addr(), &frame(8, 1, b"")).await;
    let close = c.expect_close().await;
    assert_close(&close, 505, "UNEXPECTED_FRAME - type 8, all octets = <<>>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_channel_method_before_connection_open_is_505() {
    let broker = TestBroker::start().await;
    let login = Login::default();
    let mut c = RawClient::begin(broker.addr(), &login).await;
    let tune = match c.next_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
        other => panic!("expected tune, got {other:?}"),
    };
    c.send_method(
        0,
        &AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        })),
    )
    .await;
    c.send(&method_frame(1, &crate::util::channel_open())).await;
    let close = c.expect_close().await;
    assert_close(
        &close,
        505,
        "UNEXPECTED_FRAME - type 1, all octets = <<0,20,0,10,0>>",
    );
    assert_eq!((close.class_id, close.method_id), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_login_refusal_and_channel_max_closes_carry_class_0_method_0() {
    let broker = TestBroker::start().await;
    let login = Login {
        password: "wrong".into(),
        ..Login::default()
    };
    let mut c = RawClient::begin(broker.addr(), &login).await;
    let close = c.expect_close().await;
    assert_close_prefix(&close, 403, "ACCESS_REFUSED - Login was refused");
    assert_eq!((close.class_id, close.method_id), (0, 0));

    let login = Login::default();
    let mut c = RawClient::begin(broker.addr(), &login).await;
    let tune = match c.next_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
        other => panic!("expected tune, got {other:?}"),
    };
    c.send_method(
        0,
        &AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 2,
            frame_max: tune.frame_max,
            heartbeat: 0,
        })),
    )
    .await;
    c.send_method(
        0,
        &AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: ss("/"),
        })),
    )
    .await;
    c.expect_open_ok().await;
    c.open_channel(1).await;
    c.open_channel(2).await;
    c.send(&method_frame(3, &crate::util::channel_open())).await;
    let close = c.expect_close().await;
    assert_close(
        &close,
        530,
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)",
    );
    assert_eq!((close.class_id, close.method_id), (0, 0));
}

/// Sends start-ok with `mechanism` and returns the client.
async fn start_ok_with(addr: std::net::SocketAddr, mechanism: &str) -> RawClient {
    let mut c = RawClient::tcp(addr).await;
    c.send(PROTOCOL_HEADER).await;
    c.next_method().await;
    c.send_method(
        0,
        &AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: ss(mechanism),
            response: LongString::from("\0guest\0guest"),
            locale: ss("en_US"),
        })),
    )
    .await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_rabbitmq_closes_the_socket_without_a_close_frame_here() {
    let broker = TestBroker::start().await;
    // An unknown SASL mechanism.
    let mut c = start_ok_with(broker.addr(), "FOO").await;
    assert!(matches!(c.ending().await, Ending::Eof), "unknown mechanism");
    // tune-ok frame_max below 4096 or above the server's.
    for frame_max in [1000u32, 200_000] {
        let mut c = start_ok_with(broker.addr(), "PLAIN").await;
        let tune = match c.next_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
            other => panic!("expected tune, got {other:?}"),
        };
        c.send_method(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max,
                heartbeat: 0,
            })),
        )
        .await;
        assert!(
            matches!(c.ending().await, Ending::Eof),
            "tune-ok frame_max {frame_max}"
        );
    }
    // Unknown class or method ids.
    for (class, method) in [(60u16, 999u16), (77, 10)] {
        let mut c = RawClient::open(broker.addr()).await;
        c.open_channel(1).await;
        let mut payload = class.to_be_bytes().to_vec();
        payload.extend_from_slice(&method.to_be_bytes());
        c.send(&frame(1, 1, &payload)).await;
        assert!(
            matches!(c.ending().await, Ending::Eof),
            "unknown method {class}.{method}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_an_ipv6_any_listener_serves_ipv4_and_ipv6_clients() {
    let broker = TestBroker::start_with(|c| {
        c.listen = "[::]:0".parse().unwrap();
    })
    .await;
    let port = broker.addr().port();
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = RawClient::open(v4).await;
    c.open_channel(1).await;
    // IPv6 loopback may be missing in some containers: only then is it skipped.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        within("IPv6 connect", TcpStream::connect(v6))
            .await
            .expect("IPv6 client accepted");
        let mut c = RawClient::open(v6).await;
        c.open_channel(1).await;
    }
}
