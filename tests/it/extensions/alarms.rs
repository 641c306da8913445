//! Resource alarms (memory high watermark, disk free limit): a publishing connection
//! that advertises the `connection.blocked` capability is told it is blocked, its
//! publishes are no longer taken in, consumers keep receiving, and everything resumes
//! with `connection.unblocked` once the alarm clears.
//!
//! RabbitMQ 3.10's reasons (rabbit_reader): "low on memory", "low on disk".

use std::pin::Pin;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, confirm, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use futures_lite::{Stream, StreamExt};
use lapin::options::BasicAckOptions;
use lapin::{BasicProperties, Confirmation, Connection, Event};

use super::{confirm_channel, publish_confirm};
use crate::util::{
    body_frame, consume, declare_queue, header_frame, method_frame, next_delivery, publish,
    publish_method, ready_count, ready_delivery, ss, within, Frame, Login, RawClient, TestBroker,
    PROTOCOL_HEADER,
};

/// How long a blocked publish is watched to make sure it is not taken in.
const BLOCKED_WINDOW: Duration = Duration::from_millis(300);

/// The connection.blocked / connection.unblocked notifications lapin reports.
struct BlockEvents(Pin<Box<dyn Stream<Item = Event> + Send>>);

impl BlockEvents {
    fn listen(conn: &Connection) -> Self {
        BlockEvents(Box::pin(conn.events_listener()))
    }

    /// The next blocked (`Some(reason)`) or unblocked (`None`) notification.
    async fn next(&mut self) -> Option<String> {
        loop {
            match within("connection.blocked/unblocked", self.0.next()).await {
                Some(Event::ConnectionBlocked(reason)) => return Some(reason),
                Some(Event::ConnectionUnblocked) => return None,
                Some(Event::Error(e)) => panic!("connection error while waiting: {e}"),
                Some(_) => continue,
                None => panic!("event stream ended"),
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Alarm {
    Memory,
    Disk,
}

impl Alarm {
    fn set(self, broker: &TestBroker, on: bool) {
        let running = broker.running();
        match (self, on) {
            (Alarm::Memory, true) => running.set_memory_high_watermark_bytes(1),
            (Alarm::Memory, false) => running.set_memory_high_watermark_bytes(0),
            (Alarm::Disk, true) => running.set_disk_free_limit_bytes(u64::MAX),
            (Alarm::Disk, false) => running.set_disk_free_limit_bytes(0),
        }
        assert_eq!(running.alarm_active(), on, "alarm state after set({on})");
    }
}

/// The lapin scenario shared by the memory and the disk alarm. Returns the reason of the
/// connection.blocked notification (checked by the caller, after everything else).
async fn blocked_publisher_scenario(alarm: Alarm) -> String {
    let broker = TestBroker::start().await;
    let publisher = broker.connect().await;
    let consumer = broker.connect().await;
    let mut events = BlockEvents::listen(&publisher);
    let cons_ch = consumer.create_channel().await.unwrap();
    declare_queue(&cons_ch, "alarm.q").await;
    let pub_ch = confirm_channel(&publisher).await;
    publish(&pub_ch, "", "alarm.q", b"before").await;

    alarm.set(&broker, true);
    // RabbitMQ blocks a connection when it publishes during an alarm (that publish may
    // still be taken in), and tells it with connection.blocked.
    let ch = pub_ch.clone();
    let during = tokio::spawn(async move {
        publish_confirm(
            &ch,
            "",
            "alarm.q",
            b"during",
            BasicProperties::default(),
            false,
        )
        .await
    });
    let reason = events
        .next()
        .await
        .expect("connection.blocked, not unblocked");
    assert!(
        publisher.status().blocked(),
        "lapin sees the connection blocked"
    );

    // A publish sent while blocked is not confirmed while the alarm lasts.
    let ch = pub_ch.clone();
    let mut blocked = tokio::spawn(async move {
        publish_confirm(
            &ch,
            "",
            "alarm.q",
            b"blocked",
            BasicProperties::default(),
            false,
        )
        .await
    });

    // Consumers (on a connection that does not publish) keep receiving and acking.
    let mut c = consume(&cons_ch, "alarm.q").await;
    let d = next_delivery(&mut c).await;
    assert_eq!(d.data, b"before");
    d.ack(BasicAckOptions::default()).await.unwrap();
    let mut bodies = vec!["before".to_string()];

    assert!(
        tokio::time::timeout(BLOCKED_WINDOW, &mut blocked)
            .await
            .is_err(),
        "a publish was confirmed while the connection was blocked"
    );
    assert!(publisher.status().blocked());

    alarm.set(&broker, false);
    assert_eq!(events.next().await, None, "connection.unblocked");
    assert!(!publisher.status().blocked());
    assert_eq!(
        within("the publish during the alarm", during)
            .await
            .unwrap(),
        Confirmation::Ack(None)
    );
    assert_eq!(
        within("the blocked publish", blocked).await.unwrap(),
        Confirmation::Ack(None)
    );
    while bodies.len() < 3 {
        let d = next_delivery(&mut c).await;
        bodies.push(String::from_utf8(d.data.clone()).unwrap());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(bodies, ["before", "during", "blocked"]);
    assert!(ready_delivery(&mut c).await.is_none());
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_alarm_blocks_publishers_until_it_clears() {
    let reason = blocked_publisher_scenario(Alarm::Memory).await;
    assert_eq!(reason, "low on memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_alarm_blocks_publishers_until_it_clears() {
    let reason = blocked_publisher_scenario(Alarm::Disk).await;
    assert_eq!(reason, "low on disk");
}

/// A raw connection (guest, `/`) that advertises `connection.blocked` and
/// `publisher_confirms`.
async fn raw_with_blocked_capability(broker: &TestBroker) -> RawClient {
    let mut c = RawClient::tcp(broker.addr()).await;
    c.send(PROTOCOL_HEADER).await;
    match c.next_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::Start(_))) => {}
        other => panic!("expected connection.start, got {other:?}"),
    }
    let mut caps = FieldTable::default();
    caps.insert(ss("connection.blocked"), AMQPValue::Boolean(true));
    caps.insert(ss("publisher_confirms"), AMQPValue::Boolean(true));
    let mut props = FieldTable::default();
    props.insert(ss("product"), AMQPValue::LongString("warren-it".into()));
    props.insert(ss("capabilities"), AMQPValue::FieldTable(caps));
    c.send_method(
        0,
        &AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: props,
            mechanism: ss("PLAIN"),
            response: LongString::from("\0guest\0guest"),
            locale: ss("en_US"),
        })),
    )
    .await;
    let login = Login::default();
    c.tune_and_open(&login).await;
    c.expect_open_ok().await;
    c
}

async fn raw_publish(c: &mut RawClient, queue: &str, body: &[u8]) {
    let mut bytes = method_frame(1, &publish_method("", queue));
    bytes.extend(header_frame(1, body.len() as u64));
    bytes.extend(body_frame(1, body));
    c.send(&bytes).await;
}

/// The highest delivery tag a basic.ack confirms.
fn acked_tag(frame: &Frame) -> Option<u64> {
    match frame {
        Frame::Method {
            channel: 1,
            method: AMQPClass::Basic(basic::AMQPMethod::Ack(a)),
        } => Some(a.delivery_tag),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_alarm_stops_reading_a_publishing_connection() {
    let broker = TestBroker::start().await;
    let observer = broker.connect().await;
    let ch = observer.create_channel().await.unwrap();
    declare_queue(&ch, "raw.alarm.q").await;

    let mut raw = raw_with_blocked_capability(&broker).await;
    raw.open_channel(1).await;
    raw.send_method(
        1,
        &AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    )
    .await;
    match raw.next_method().await {
        (1, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))) => {}
        other => panic!("expected confirm.select-ok, got {other:?}"),
    }
    raw_publish(&mut raw, "raw.alarm.q", b"p1").await;
    let f = raw.next_frame().await.expect("basic.ack");
    assert_eq!(acked_tag(&f), Some(1), "{f:?}");

    Alarm::Memory.set(&broker, true);
    // Having published before the alarm does not block it: as RabbitMQ's reader, only a
    // publish during the alarm does. Other methods are still read and answered.
    raw.send_method(
        1,
        &AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 5,
            global: false,
        })),
    )
    .await;
    match raw.next_frame().await.expect("basic.qos-ok") {
        Frame::Method {
            channel: 1,
            method: AMQPClass::Basic(basic::AMQPMethod::QosOk(_)),
        } => {}
        f => panic!("expected basic.qos-ok before any connection.blocked, got {f:?}"),
    }
    // This publish makes RabbitMQ block the connection (it may still take it in).
    raw_publish(&mut raw, "raw.alarm.q", b"p2").await;
    let mut acked = 1;
    loop {
        match raw.next_frame().await.expect("connection.blocked") {
            Frame::Method {
                channel: 0,
                method: AMQPClass::Connection(connection::AMQPMethod::Blocked(b)),
            } => {
                assert_eq!(b.reason.as_str(), "low on memory");
                break;
            }
            f => {
                acked = acked_tag(&f).unwrap_or_else(|| panic!("unexpected {f:?}"));
                assert_eq!(acked, 2, "{f:?}");
            }
        }
    }

    // Sent while blocked: neither read nor confirmed while the alarm lasts.
    raw_publish(&mut raw, "raw.alarm.q", b"p3").await;
    let deadline = Instant::now() + BLOCKED_WINDOW;
    while let Ok(f) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        raw.next_frame(),
    )
    .await
    {
        let f = f.expect("the connection stays open");
        let tag = acked_tag(&f).unwrap_or_else(|| panic!("unexpected {f:?} while blocked"));
        assert_eq!(tag, 2, "only p2 may be confirmed while blocked: {f:?}");
        acked = tag;
    }
    assert!(
        ready_count(&observer, "raw.alarm.q").await < 3,
        "p3 was enqueued while the connection was blocked"
    );

    Alarm::Memory.set(&broker, false);
    let mut unblocked = false;
    while acked < 3 {
        let f = raw.next_frame().await.expect("frames after the alarm");
        match &f {
            Frame::Method {
                channel: 0,
                method: AMQPClass::Connection(connection::AMQPMethod::Unblocked(_)),
            } => {
                assert!(!unblocked, "two connection.unblocked");
                unblocked = true;
            }
            _ => {
                let tag = acked_tag(&f).unwrap_or_else(|| panic!("unexpected {f:?}"));
                assert!(
                    unblocked || tag <= 2,
                    "p3 confirmed before connection.unblocked"
                );
                acked = tag;
            }
        }
    }
    assert!(unblocked, "connection.unblocked was sent");
    assert_eq!(ready_count(&observer, "raw.alarm.q").await, 3);
}
