//! Consumer acknowledgements: ack, nack and reject (with and without requeue, single and
//! multiple), and what happens to unacked messages when a channel or connection ends.

use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::FieldTable;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};

use crate::util::{
    assert_reply, consume, declare_queue, eventually_async, next_delivery, publish, ready_count,
    ss, within, ErrorEvents, Frame, RawClient, TestBroker, TIMEOUT,
};

async fn get_no_ack(ch: &lapin::Channel, queue: &str) -> Option<(Vec<u8>, bool, u32)> {
    ch.basic_get(ss(queue), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .map(|m| {
            (
                m.delivery.data.clone(),
                m.delivery.redelivered,
                m.message_count,
            )
        })
}

async fn wait_ready(conn: &lapin::Connection, queue: &str, n: u32) {
    eventually_async(
        TIMEOUT,
        &format!("{n} ready messages in {queue}"),
        || async { ready_count(conn, queue).await == n },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_message_with_requeue_is_redelivered_with_redelivered_set() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "rq.q").await;
    publish(&ch, "", "rq.q", b"again").await;
    let mut consumer = consume(&ch, "rq.q").await;
    let d = next_delivery(&mut consumer).await;
    assert!(!d.redelivered);
    d.reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let again = next_delivery(&mut consumer).await;
    assert_eq!(again.data, b"again");
    assert!(again.redelivered);
    assert_ne!(again.delivery_tag, d.delivery_tag);
    again
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();
    let third = next_delivery(&mut consumer).await;
    assert_eq!(third.data, b"again");
    assert!(third.redelivered);
    third.ack(BasicAckOptions::default()).await.unwrap();
    ch.close(200, ss("OK")).await.unwrap();
    assert_eq!(ready_count(&conn, "rq.q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_messages_go_back_to_their_original_position() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "order.q").await;
    for body in ["m1", "m2", "m3", "m4"] {
        publish(&ch, "", "order.q", body.as_bytes()).await;
    }
    // Prefetch 3 keeps m4 in the queue.
    ch.basic_qos(3, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume(&ch, "order.q").await;
    let mut ds = Vec::new();
    for _ in 0..3 {
        ds.push(next_delivery(&mut consumer).await);
    }
    // Stop further deliveries, then settle out of order: m2 first, then m1.
    ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
    let (d1, d2, d3) = (&ds[0], &ds[1], &ds[2]);
    assert_eq!(
        (d1.data.as_slice(), d2.data.as_slice(), d3.data.as_slice()),
        (&b"m1"[..], &b"m2"[..], &b"m3"[..])
    );
    d2.reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    d1.nack(BasicNackOptions {
        requeue: true,
        multiple: false,
    })
    .await
    .unwrap();
    d3.ack(BasicAckOptions::default()).await.unwrap();
    wait_ready(&conn, "order.q", 3).await;
    let getch = conn.create_channel().await.unwrap();
    assert_eq!(
        get_no_ack(&getch, "order.q").await,
        Some((b"m1".to_vec(), true, 2))
    );
    assert_eq!(
        get_no_ack(&getch, "order.q").await,
        Some((b"m2".to_vec(), true, 1))
    );
    assert_eq!(
        get_no_ack(&getch, "order.q").await,
        Some((b"m4".to_vec(), false, 0))
    );
    assert_eq!(get_no_ack(&getch, "order.q").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_and_nack_without_requeue_discard_the_message() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "drop.q").await;
    publish(&ch, "", "drop.q", b"a").await;
    publish(&ch, "", "drop.q", b"b").await;
    let mut consumer = consume(&ch, "drop.q").await;
    let a = next_delivery(&mut consumer).await;
    let b = next_delivery(&mut consumer).await;
    a.reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    b.nack(BasicNackOptions {
        requeue: false,
        multiple: false,
    })
    .await
    .unwrap();
    // Had either been left unacked, closing the channel would requeue it.
    ch.close(200, ss("OK")).await.unwrap();
    assert_eq!(ready_count(&conn, "drop.q").await, 0);
    let getch = conn.create_channel().await.unwrap();
    assert_eq!(get_no_ack(&getch, "drop.q").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_ack_and_nack_settle_every_delivery_up_to_the_tag() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "multi.q").await;
    for i in 1..=6 {
        publish(&ch, "", "multi.q", format!("m{i}").as_bytes()).await;
    }
    let mut consumer = consume(&ch, "multi.q").await;
    let mut tags = Vec::new();
    for i in 1..=6 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, format!("m{i}").as_bytes());
        tags.push(d.delivery_tag);
    }
    ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
    // ack m1..m3 at once; nack (requeue) m4..m5 at once; m6 stays unacked.
    ch.basic_ack(tags[2], BasicAckOptions { multiple: true })
        .await
        .unwrap();
    ch.basic_nack(
        tags[4],
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    )
    .await
    .unwrap();
    wait_ready(&conn, "multi.q", 2).await;
    let getch = conn.create_channel().await.unwrap();
    assert_eq!(
        get_no_ack(&getch, "multi.q").await,
        Some((b"m4".to_vec(), true, 1))
    );
    assert_eq!(
        get_no_ack(&getch, "multi.q").await,
        Some((b"m5".to_vec(), true, 0))
    );
    // Closing the channel returns only m6.
    ch.close(200, ss("OK")).await.unwrap();
    wait_ready(&conn, "multi.q", 1).await;
    assert_eq!(
        get_no_ack(&getch, "multi.q").await,
        Some((b"m6".to_vec(), true, 0))
    );
    assert_eq!(get_no_ack(&getch, "multi.q").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_to_the_queue_when_the_channel_closes() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "chclose.q").await;
    publish(&ch, "", "chclose.q", b"x1").await;
    publish(&ch, "", "chclose.q", b"x2").await;
    let cch = conn.create_channel().await.unwrap();
    let mut consumer = consume(&cch, "chclose.q").await;
    next_delivery(&mut consumer).await;
    next_delivery(&mut consumer).await;
    assert_eq!(ready_count(&conn, "chclose.q").await, 0);
    cch.close(200, ss("OK")).await.unwrap();
    wait_ready(&conn, "chclose.q", 2).await;
    assert_eq!(
        get_no_ack(&ch, "chclose.q").await,
        Some((b"x1".to_vec(), true, 1))
    );
    assert_eq!(
        get_no_ack(&ch, "chclose.q").await,
        Some((b"x2".to_vec(), true, 0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_to_the_queue_when_the_connection_closes() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "connclose.q").await;
    publish(&ch, "", "connclose.q", b"y1").await;
    publish(&ch, "", "connclose.q", b"y2").await;

    let other = broker.connect().await;
    let och = other.create_channel().await.unwrap();
    let mut consumer = consume(&och, "connclose.q").await;
    next_delivery(&mut consumer).await;
    let d2 = next_delivery(&mut consumer).await;
    assert_eq!(d2.data, b"y2");
    other.close(200, ss("OK")).await.unwrap();

    wait_ready(&conn, "connclose.q", 2).await;
    assert_eq!(
        get_no_ack(&ch, "connclose.q").await,
        Some((b"y1".to_vec(), true, 1))
    );
    assert_eq!(
        get_no_ack(&ch, "connclose.q").await,
        Some((b"y2".to_vec(), true, 0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_to_the_queue_when_the_socket_drops() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "sockdrop.q").await;
    publish(&ch, "", "sockdrop.q", b"z").await;

    let mut raw = RawClient::open(broker.addr()).await;
    raw.open_channel(1).await;
    raw.send_method(
        1,
        &AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: ss("sockdrop.q"),
            consumer_tag: ss("raw"),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await;
    let mut got_body = false;
    while !got_body {
        match within("the delivery", raw.next_frame()).await {
            Some(Frame::Body { payload, .. }) => {
                assert_eq!(payload, b"z");
                got_body = true;
            }
            Some(_) => {}
            None => panic!("server closed the raw connection"),
        }
    }
    assert_eq!(ready_count(&conn, "sockdrop.q").await, 0);
    // No connection.close: the socket just goes away.
    drop(raw);
    wait_ready(&conn, "sockdrop.q", 1).await;
    assert_eq!(
        get_no_ack(&ch, "sockdrop.q").await,
        Some((b"z".to_vec(), true, 0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_of_unknown_delivery_tag_closes_the_channel_with_406() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let mut errors = ErrorEvents::listen(&conn);
    let ch = conn.create_channel().await.unwrap();
    ch.basic_ack(42, BasicAckOptions::default()).await.unwrap();
    let err = errors.next().await;
    assert_reply(&err, 406, "PRECONDITION_FAILED - unknown delivery tag 42");
    assert!(conn.status().connected());
    let ch2 = conn.create_channel().await.unwrap();
    declare_queue(&ch2, "still.works").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_ack_closes_the_channel_with_406() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "dbl.q").await;
    publish(&ch, "", "dbl.q", b"once").await;
    let m = ch
        .basic_get(ss("dbl.q"), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("a message");
    let tag = m.delivery.delivery_tag;
    let mut errors = ErrorEvents::listen(&conn);
    ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
    ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
    let err = errors.next().await;
    assert_reply(
        &err,
        406,
        &format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
    );
    assert!(conn.status().connected());
    // The first ack counted: nothing was requeued when the channel closed.
    assert_eq!(ready_count(&conn, "dbl.q").await, 0);
}
