//! Back-pressure from consumers that stop reading their socket.
//!
//! A connection stops taking deliveries from its inbox once its unwritten output passes a
//! high-water mark, and queues stop dispatching to a connection whose inbox holds too many
//! deliveries; the messages then stay in their queue. Without that, a stalled consumer
//! would pull every message it is offered into the broker's memory. The stalled clients
//! here are raw sockets that simply stop reading after basic.consume-ok.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::ops::Range;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::FieldTable;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::BasicProperties;

use crate::util::{
    consume, consume_with, declare_queue, next_delivery, publish, queue_state, ss, test_body,
    within, Frame, Login, RawClient, TestBroker, TIMEOUT,
};

/// Size of every message body; the first 8 bytes carry the message's sequence number.
const BODY_LEN: usize = 10 * 1024;

/// Publishes allowed in flight (unconfirmed) at once.
const CONFIRM_WINDOW: usize = 1024;

/// How long an unrelated connection may take for a whole round trip while another
/// connection is stalled.
const PROMPTLY: Duration = Duration::from_secs(5);

/// A broker without the memory alarm: these tests are about consumer back-pressure, and
/// without it the alarm (rather than a failed assertion) would be what stops publishers.
async fn broker() -> TestBroker {
    TestBroker::start_with(|c| {
        c.resources.memory_high_watermark = 0.0;
        c.resources.memory_high_watermark_bytes = 0;
    })
    .await
}

/// Fails the test if `fut` takes longer than [`PROMPTLY`].
async fn promptly<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PROMPTLY, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} took longer than {PROMPTLY:?} while a consumer was stalled"),
    }
}

/// The body of message `seq`.
fn body(template: &[u8], seq: u64) -> Vec<u8> {
    let mut b = template.to_vec();
    b[..8].copy_from_slice(&seq.to_be_bytes());
    b
}

/// The sequence number of a body made by [`body`].
fn seq_of(body: &[u8]) -> u64 {
    assert_eq!(body.len(), BODY_LEN, "body size");
    u64::from_be_bytes(body[..8].try_into().unwrap())
}

/// A raw connection with a consumer on `queue` (channel 1, tag `stalled`) that reads
/// nothing after consume-ok until the test reads it again. `prefetch` 0 means no
/// basic.qos.
async fn stalled_consumer(
    broker: &TestBroker,
    queue: &str,
    no_ack: bool,
    prefetch: u16,
) -> RawClient {
    stalled_consumer_with(broker, queue, no_ack, prefetch, &Login::default()).await
}

/// [`stalled_consumer`] with a handshake of its own (a heartbeat, say).
async fn stalled_consumer_with(
    broker: &TestBroker,
    queue: &str,
    no_ack: bool,
    prefetch: u16,
    login: &Login,
) -> RawClient {
    let mut raw = RawClient::open_with(broker.addr(), login).await;
    raw.open_channel(1).await;
    if prefetch > 0 {
        raw.send_method(
            1,
            &AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: prefetch,
                global: false,
            })),
        )
        .await;
        match raw.next_method().await {
            (1, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))) => {}
            other => panic!("expected basic.qos-ok, got {other:?}"),
        }
    }
    raw.send_method(
        1,
        &AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: ss(queue),
            consumer_tag: ss("stalled"),
            no_local: false,
            no_ack,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await;
    match raw.next_method().await {
        (1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok))) => {
            assert_eq!(ok.consumer_tag.as_str(), "stalled");
        }
        other => panic!("expected basic.consume-ok, got {other:?}"),
    }
    raw
}

/// Reads the next delivery from `raw`: `(delivery tag, sequence number)`.
async fn raw_delivery(raw: &mut RawClient) -> (u64, u64) {
    let tag = loop {
        match raw.next_frame().await {
            Some(Frame::Heartbeat { .. }) => continue,
            Some(Frame::Method {
                channel: 1,
                method: AMQPClass::Basic(basic::AMQPMethod::Deliver(d)),
            }) => break d.delivery_tag,
            other => panic!("expected basic.deliver, got {other:?}"),
        }
    };
    match raw.next_frame().await {
        Some(Frame::Header {
            channel: 1,
            body_size,
            ..
        }) => assert_eq!(body_size, BODY_LEN as u64),
        other => panic!("expected a content header, got {other:?}"),
    }
    let mut data = Vec::with_capacity(BODY_LEN);
    while data.len() < BODY_LEN {
        match raw.next_frame().await {
            Some(Frame::Body {
                channel: 1,
                payload,
            }) => data.extend_from_slice(&payload),
            other => panic!("expected a content body, got {other:?}"),
        }
    }
    (tag, seq_of(&data))
}

/// Publishes messages `seqs` to `queue` on `ch` (in confirm mode) with at most
/// [`CONFIRM_WINDOW`] unconfirmed, and waits until every one is confirmed.
async fn publish_confirmed(ch: &lapin::Channel, queue: &str, seqs: Range<u64>) {
    let template = test_body(BODY_LEN);
    let mut pending = VecDeque::with_capacity(CONFIRM_WINDOW);
    for seq in seqs {
        let confirm = within(
            "basic.publish",
            ch.basic_publish(
                ss(""),
                ss(queue),
                BasicPublishOptions::default(),
                &body(&template, seq),
                BasicProperties::default(),
            ),
        )
        .await
        .expect("basic.publish");
        pending.push_back((seq, confirm));
        if pending.len() >= CONFIRM_WINDOW {
            let (seq, confirm) = pending.pop_front().unwrap();
            let c = within("a publisher confirm", confirm)
                .await
                .expect("confirm");
            assert!(!c.is_nack(), "publish {seq} was nacked");
        }
    }
    for (seq, confirm) in pending {
        let c = within("a publisher confirm", confirm)
            .await
            .expect("confirm");
        assert!(!c.is_nack(), "publish {seq} was nacked");
    }
}

/// A channel of `conn` in confirm mode.
async fn confirm_channel(conn: &lapin::Connection) -> lapin::Channel {
    let ch = within("channel.open", conn.create_channel())
        .await
        .expect("channel.open");
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    ch
}

/// `(ready, consumers)` of `queue` once two passive declares in a row agree, i.e. once
/// the queue no longer hands messages to its (stalled) consumers.
async fn settled_state(conn: &lapin::Connection, queue: &str) -> (u32, u32) {
    let deadline = Instant::now() + TIMEOUT;
    let mut last = queue_state(conn, queue).await.expect("passive declare");
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = queue_state(conn, queue).await.expect("passive declare");
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "queue {queue} did not settle within {TIMEOUT:?} (last {last:?}, now {now:?})"
        );
        last = now;
    }
}

/// Waits until all `n` messages are ready in `queue` again and it has no consumer.
async fn all_back(conn: &lapin::Connection, queue: &str, n: u64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let state = queue_state(conn, queue).await.unwrap();
        if state == (n as u32, 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected all {n} messages back in {queue}, have {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_leaves_messages_in_the_queue() {
    const Q: &str = "bp.noack.q";
    const N: u64 = 12_000;
    let broker = broker().await;
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    declare_queue(&ch, Q).await;
    let mut raw = stalled_consumer(&broker, Q, true, 0).await;

    // 120 MB for a consumer that reads nothing: every publish is still confirmed...
    publish_confirmed(&ch, Q, 0..N).await;
    // ...and most of it waits in the queue instead of in the stalled connection.
    let (ready, consumers) = settled_state(&conn, Q).await;
    assert_eq!(consumers, 1, "the stalled consumer is still subscribed");
    assert!(
        u64::from(ready) >= N / 2,
        "only {ready} of {N} messages stayed in the queue: the stalled consumer's \
         connection took the rest"
    );
    assert!(
        u64::from(ready) < N,
        "the stalled consumer was offered nothing"
    );

    // Once the consumer reads again it gets every message exactly once, in order: the
    // ones its connection held back and the ones that stayed in the queue.
    for seq in 0..N {
        let (tag, got) = raw_delivery(&mut raw).await;
        assert_eq!((tag, got), (seq + 1, seq), "delivery {seq}");
    }
    assert_eq!(queue_state(&conn, Q).await.unwrap(), (0, 1));
    conn.close(200, ss("OK")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_keeps_working_while_another_connection_is_stalled() {
    const STALLED: &str = "bp.stalled.q";
    const OTHER: &str = "bp.other.q";
    const N: u64 = 6_000;
    const MORE: u64 = 100;
    let broker = broker().await;
    let publisher = broker.connect().await;
    let ch = confirm_channel(&publisher).await;
    declare_queue(&ch, STALLED).await;
    let raw = stalled_consumer(&broker, STALLED, true, 0).await;
    publish_confirmed(&ch, STALLED, 0..N).await;
    let (ready, consumers) = settled_state(&publisher, STALLED).await;
    assert_eq!(consumers, 1);
    assert!(
        ready > 0,
        "the stalled consumer's connection took all {N} messages"
    );

    // A fresh connection declares, publishes (with confirms) and consumes promptly.
    promptly("a round trip on another connection", async {
        let conn = broker.connect().await;
        let ch = confirm_channel(&conn).await;
        declare_queue(&ch, OTHER).await;
        let mut consumer = consume(&ch, OTHER).await;
        for i in 0..MORE {
            publish(&ch, "", OTHER, format!("m{i}").as_bytes()).await;
        }
        for i in 0..MORE {
            let d = next_delivery(&mut consumer).await;
            assert_eq!(d.data, format!("m{i}").as_bytes());
            within("basic.ack", d.ack(Default::default()))
                .await
                .unwrap();
        }
        conn.close(200, ss("OK")).await.unwrap();
    })
    .await;

    // The stalled queue's own publisher is not held up either: its messages queue up.
    promptly(
        "publishing to the stalled queue",
        publish_confirmed(&ch, STALLED, N..N + MORE),
    )
    .await;
    let (after, _) = settled_state(&publisher, STALLED).await;
    assert_eq!(
        after,
        ready + MORE as u32,
        "ready messages after {MORE} more"
    );

    // When the stalled connection goes away, what it had not taken from its inbox goes
    // back to the queue; a new consumer gets exactly what the queue reports, each message
    // once. (Frames already in socket buffers are gone: no-ack.)
    drop(raw);
    let deadline = Instant::now() + TIMEOUT;
    let left = loop {
        // The consumer leaves before the inbox is returned: wait for both.
        let (left, consumers) = settled_state(&publisher, STALLED).await;
        if consumers == 0 {
            break left;
        }
        assert!(Instant::now() < deadline, "the stalled consumer never left");
    };
    assert!(
        left >= after,
        "{left} ready after the close, {after} before"
    );
    let ch2 = within("channel.open", publisher.create_channel())
        .await
        .unwrap();
    let mut consumer = consume_with(
        &ch2,
        STALLED,
        "drain",
        BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        },
    )
    .await;
    let mut seen = HashSet::new();
    for _ in 0..left {
        let seq = seq_of(&next_delivery(&mut consumer).await.data);
        assert!(seq < N + MORE, "unknown message {seq}");
        assert!(seen.insert(seq), "message {seq} delivered twice");
    }
    // The last MORE never reached the stalled connection.
    assert!((N..N + MORE).all(|s| seen.contains(&s)));
    assert_eq!(queue_state(&publisher, STALLED).await.unwrap(), (0, 1));
    publisher.close(200, ss("OK")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_ack_consumer_that_stops_reading_holds_only_its_prefetch() {
    const Q: &str = "bp.ack.q";
    const N: u64 = 3_000;
    const PREFETCH: u16 = 100;
    let broker = broker().await;
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    declare_queue(&ch, Q).await;
    let mut raw = stalled_consumer(&broker, Q, false, PREFETCH).await;
    publish_confirmed(&ch, Q, 0..N).await;
    let (ready, consumers) = settled_state(&conn, Q).await;
    assert_eq!((ready, consumers), ((N - u64::from(PREFETCH)) as u32, 1));

    // Reading again, the consumer gets exactly its prefetch, in order, and nothing more
    // (it never acks).
    for seq in 0..u64::from(PREFETCH) {
        let (tag, got) = raw_delivery(&mut raw).await;
        assert_eq!((tag, got), (seq + 1, seq), "delivery {seq}");
    }
    assert_eq!(
        queue_state(&conn, Q).await.unwrap(),
        ((N - u64::from(PREFETCH)) as u32, 1)
    );

    // Closing the connection returns its unacknowledged messages: none is lost.
    drop(raw);
    all_back(&conn, Q, N).await;
    conn.close(200, ss("OK")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_prefetch_does_not_let_a_stalled_consumer_take_everything() {
    const Q: &str = "bp.bigprefetch.q";
    const N: u64 = 6_000;
    const PREFETCH: u16 = 5_000;
    let broker = broker().await;
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    declare_queue(&ch, Q).await;
    let raw = stalled_consumer(&broker, Q, false, PREFETCH).await;
    publish_confirmed(&ch, Q, 0..N).await;
    // The prefetch alone would let the consumer take 5,000 (50 MB); its socket holds it
    // back well before that.
    let (ready, consumers) = settled_state(&conn, Q).await;
    assert_eq!(consumers, 1);
    assert!(
        u64::from(ready) > N - u64::from(PREFETCH),
        "{ready} of {N} messages ready: the stalled consumer took up to its prefetch"
    );

    // Unacknowledged messages, written or not, all come back when it goes away.
    drop(raw);
    all_back(&conn, Q, N).await;
    conn.close(200, ss("OK")).await.unwrap();
}

/// Passive-declares `queue` until its consumer count is `consumers`.
async fn wait_consumers(conn: &lapin::Connection, queue: &str, consumers: u32) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, n) = queue_state(conn, queue).await.unwrap();
        if n == consumers {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} still has {n} consumers after {TIMEOUT:?}, expected {consumers}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_neither_reads_nor_sends_is_closed_on_its_heartbeat_timeout() {
    // RabbitMQ closes a connection that sent nothing for two heartbeat intervals, even
    // while deliveries to it are stuck in its socket. Its unacked messages go back.
    const Q: &str = "bp.silent.q";
    const N: u64 = 3_000;
    let broker = broker().await;
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    declare_queue(&ch, Q).await;
    let login = Login {
        heartbeat: 1,
        ..Login::default()
    };
    let raw = stalled_consumer_with(&broker, Q, false, 5_000, &login).await;
    // 30 MB: more than the socket buffers and the connection's output buffer hold.
    publish_confirmed(&ch, Q, 0..N).await;
    wait_consumers(&conn, Q, 0).await;
    let (ready, _) = settled_state(&conn, Q).await;
    assert_eq!(
        u64::from(ready),
        N,
        "every unacked message is back in the queue"
    );
    drop(raw);
    conn.close(200, ss("OK")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_behind_on_reading_that_still_sends_heartbeats_stays_and_is_answered() {
    const Q: &str = "bp.alive.q";
    const N: u64 = 3_000;
    let broker = broker().await;
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    declare_queue(&ch, Q).await;
    let login = Login {
        heartbeat: 1,
        ..Login::default()
    };
    let mut raw = stalled_consumer_with(&broker, Q, true, 0, &login).await;
    publish_confirmed(&ch, Q, 0..N).await;
    // Well past two heartbeat intervals without reading, sending a heartbeat every
    // 300 ms, then a method whose reply waits behind the deliveries.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        raw.send(&crate::util::frame(8, 0, b"")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(queue_state(&conn, Q).await.unwrap().1, 1, "still consuming");
    raw.send_method(
        1,
        &AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 0,
            global: false,
        })),
    )
    .await;
    // Every message in order, and the qos-ok once the output drained.
    let mut next = 0u64;
    let mut qos_ok = false;
    while next < N || !qos_ok {
        match within("a frame", raw.next_frame()).await {
            Some(Frame::Heartbeat { .. }) => {}
            Some(Frame::Method {
                channel: 1,
                method: AMQPClass::Basic(basic::AMQPMethod::QosOk(_)),
            }) => {
                assert!(!qos_ok, "one qos-ok");
                qos_ok = true;
            }
            Some(Frame::Method {
                channel: 1,
                method: AMQPClass::Basic(basic::AMQPMethod::Deliver(d)),
            }) => {
                assert_eq!(d.delivery_tag, next + 1);
                match raw.next_frame().await {
                    Some(Frame::Header { .. }) => {}
                    other => panic!("expected a content header, got {other:?}"),
                }
                match raw.next_frame().await {
                    Some(Frame::Body { payload, .. }) => assert_eq!(seq_of(&payload), next),
                    other => panic!("expected a body, got {other:?}"),
                }
                next += 1;
            }
            other => panic!("expected deliveries and a qos-ok, got {other:?}"),
        }
    }
    conn.close(200, ss("OK")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_requests_but_never_reads_replies_is_held_to_bounded_buffers() {
    // 100 MB of queue.declare (each answered by a declare-ok of about the same size),
    // whose replies are never read: the broker stops taking input once 1 MiB of replies
    // wait unwritten (plus 128 KiB of held input), and TCP then pushes back on the client
    // instead of the broker buffering everything.
    let broker = broker().await;
    let mut raw = RawClient::open(broker.addr()).await;
    raw.open_channel(1).await;
    let name = "q".repeat(255);
    let declare = crate::util::method_frame(
        1,
        &AMQPClass::Queue(amq_protocol::protocol::queue::AMQPMethod::Declare(
            amq_protocol::protocol::queue::Declare {
                queue: ss(&name),
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            },
        )),
    );
    let mut flood = Vec::with_capacity(100 << 20);
    while flood.len() < 100 << 20 {
        flood.extend_from_slice(&declare);
    }
    let sent = tokio::time::timeout(Duration::from_secs(3), raw.send(&flood)).await;
    assert!(
        sent.is_err(),
        "100 MB of requests went through without a reply being read"
    );
    let (received, sent) = broker
        .running()
        .admin()
        .connections()
        .iter()
        .map(|c| {
            let s = &c.stats;
            (
                s.recv_oct.load(std::sync::atomic::Ordering::Relaxed),
                s.send_oct.load(std::sync::atomic::Ordering::Relaxed),
            )
        })
        .max()
        .unwrap();
    // Replies made for what the broker read, less what reached the socket: what waits
    // in the broker: at most 1 MiB, one read (64 KiB) more, and the held input, which
    // this counts as answered (an over-estimate).
    let reply = crate::util::method_frame(
        1,
        &AMQPClass::Queue(amq_protocol::protocol::queue::AMQPMethod::DeclareOk(
            amq_protocol::protocol::queue::DeclareOk {
                queue: ss(&name),
                message_count: 0,
                consumer_count: 0,
            },
        )),
    )
    .len() as u64;
    let made = received / declare.len() as u64 * reply;
    let waiting = made.saturating_sub(sent);
    assert!(
        waiting < (1 << 20) + (512 << 10),
        "{waiting} bytes of replies wait in the broker for a client that reads nothing \
         ({received} bytes read, {sent} written)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_but_sends_heartbeats_is_closed_by_the_send_timeout() {
    // RabbitMQ's socket send_timeout: output that does not move for 30 s (2 s here)
    // closes the connection, heartbeats or not. Its unacked messages go back.
    const Q: &str = "bp.sendtimeout.q";
    const N: u64 = 3_000;
    let broker = TestBroker::start_with(|c| {
        c.resources.memory_high_watermark = 0.0;
        c.resources.memory_high_watermark_bytes = 0;
        c.limits.send_timeout_secs = 2;
    })
    .await;
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    declare_queue(&ch, Q).await;
    let login = Login {
        heartbeat: 1,
        ..Login::default()
    };
    let mut raw = stalled_consumer_with(&broker, Q, false, 5_000, &login).await;
    publish_confirmed(&ch, Q, 0..N).await;
    // Heartbeats keep it alive as far as the heartbeat monitor goes, until the send
    // timeout closes it (the writes fail once the broker has closed the socket).
    let closed = async {
        loop {
            if queue_state(&conn, Q).await.unwrap().1 == 0 {
                break;
            }
            raw.send(&crate::util::frame(8, 0, b"")).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    within("the send timeout to close the stalled consumer", closed).await;
    let (ready, _) = settled_state(&conn, Q).await;
    assert_eq!(
        u64::from(ready),
        N,
        "every unacked message is back in the queue"
    );
    conn.close(200, ss("OK")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_of_large_messages_holds_a_bounded_number_of_bytes() {
    // 64 KiB messages: the connection's inbox is capped in bytes (1 MiB), not only in
    // deliveries (1024, which would be 64 MiB here).
    const Q: &str = "bp.large.q";
    const LEN: usize = 64 * 1024;
    const N: u64 = 1_500;
    let broker = broker().await;
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    declare_queue(&ch, Q).await;
    let _raw = stalled_consumer(&broker, Q, true, 0).await;
    let body = test_body(LEN);
    let mut confirms = Vec::new();
    for _ in 0..N {
        confirms.push(
            ch.basic_publish(
                ss(""),
                ss(Q),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        within("confirm", c).await.unwrap();
    }
    let (ready, _) = settled_state(&conn, Q).await;
    let taken = N - u64::from(ready);
    // 1 MiB in the inbox, 1 MiB of output and the sockets' buffers: a few hundred at most.
    assert!(
        taken < 300,
        "the stalled consumer's connection took {taken} messages of 64 KiB"
    );
    conn.close(200, ss("OK")).await.unwrap();
}
