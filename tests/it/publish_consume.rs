//! Publishing, routing and consuming through lapin: round trips, distribution, prefetch,
//! basic.get, returns, properties, body sizes and queue lifetimes.

use amq_protocol::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable};
use futures_lite::{future, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::{BasicProperties, Confirmation, ExchangeKind};

use crate::util::{
    checksum, consume, consume_with, declare_queue, next_delivery, publish, publish_with,
    queue_state, ready_count, ready_delivery, ss, test_body, wait_queue_gone, within, TestBroker,
};

fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_bind_publish_consume_round_trip() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        ss("rt.x"),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = declare_queue(&ch, "rt.q").await;
    assert_eq!(q.name().as_str(), "rt.q");
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    ch.queue_bind(
        ss("rt.q"),
        ss("rt.x"),
        ss("rt.key"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, "rt.x", "rt.key", b"hello warren").await;
    // A key that matches no binding goes nowhere.
    publish(&ch, "rt.x", "other.key", b"dropped").await;

    let mut consumer = consume(&ch, "rt.q").await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"hello warren");
    assert_eq!(d.exchange.as_str(), "rt.x");
    assert_eq!(d.routing_key.as_str(), "rt.key");
    assert!(!d.redelivered);
    assert_eq!(d.delivery_tag, 1);
    d.ack(BasicAckOptions::default()).await.unwrap();

    // Default exchange: routing key = queue name.
    publish(&ch, "", "rt.q", b"via default").await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"via default");
    assert_eq!(d.exchange.as_str(), "");
    assert_eq!(d.routing_key.as_str(), "rt.q");
    d.ack(BasicAckOptions::default()).await.unwrap();

    ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
    assert_eq!(queue_state(&conn, "rt.q").await.unwrap(), (0, 0));
    conn.close(200, ss("OK")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_distributed_round_robin_across_two_consumers() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "rr.q").await;
    let ch1 = conn.create_channel().await.unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    let mut c1 = consume_with(&ch1, "rr.q", "c1", no_ack()).await;
    let mut c2 = consume_with(&ch2, "rr.q", "c2", no_ack()).await;
    for i in 0..10 {
        publish(&ch, "", "rr.q", format!("{i}").as_bytes()).await;
    }
    let mut got: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    while got[0].len() + got[1].len() < 10 {
        let (which, item) = within(
            "a delivery to either consumer",
            future::or(async { (0, c1.next().await) }, async {
                (1, c2.next().await)
            }),
        )
        .await;
        let d = item.expect("consumer ended").expect("delivery");
        got[which].push(String::from_utf8(d.data).unwrap().parse().unwrap());
    }
    assert_eq!(got[0].len(), 5, "consumer 1 got {:?}", got[0]);
    assert_eq!(got[1].len(), 5, "consumer 2 got {:?}", got[1]);
    // Strict alternation: each consumer sees every other message, in publish order.
    for g in &got {
        assert!(
            g.windows(2).all(|w| w[1] == w[0] + 2),
            "not alternating: {got:?}"
        );
    }
    assert_ne!(got[0][0] % 2, got[1][0] % 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_limits_unacked_deliveries_until_an_ack() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "qos.q").await;
    let pubch = conn.create_channel().await.unwrap();
    pubch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 1..=5 {
        publish(&pubch, "", "qos.q", format!("m{i}").as_bytes()).await;
    }
    ch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume(&ch, "qos.q").await;
    let d1 = next_delivery(&mut consumer).await;
    let d2 = next_delivery(&mut consumer).await;
    assert_eq!(
        (d1.data.as_slice(), d2.data.as_slice()),
        (&b"m1"[..], &b"m2"[..])
    );
    // The broker holds the other three back: they are still ready in the queue.
    assert_eq!(ready_count(&conn, "qos.q").await, 3);
    assert!(
        ready_delivery(&mut consumer).await.is_none(),
        "a third delivery arrived with prefetch 2 and nothing acked"
    );

    d1.ack(BasicAckOptions::default()).await.unwrap();
    let d3 = next_delivery(&mut consumer).await;
    assert_eq!(d3.data, b"m3");
    assert_eq!(ready_count(&conn, "qos.q").await, 2);
    assert!(ready_delivery(&mut consumer).await.is_none());

    d2.ack(BasicAckOptions::default()).await.unwrap();
    d3.ack(BasicAckOptions::default()).await.unwrap();
    let d4 = next_delivery(&mut consumer).await;
    let d5 = next_delivery(&mut consumer).await;
    assert_eq!(
        (d4.data.as_slice(), d5.data.as_slice()),
        (&b"m4"[..], &b"m5"[..])
    );
    assert_eq!(ready_count(&conn, "qos.q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_does_not_limit_auto_ack_consumers() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "qos.noack.q").await;
    for i in 0..5 {
        publish(&ch, "", "qos.noack.q", format!("m{i}").as_bytes()).await;
    }
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume_with(&ch, "qos.noack.q", "", no_ack()).await;
    for i in 0..5 {
        assert_eq!(
            next_delivery(&mut consumer).await.data,
            format!("m{i}").as_bytes()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_returns_messages_with_remaining_count_then_get_empty() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "get.q").await;
    assert!(ch
        .basic_get(ss("get.q"), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
    for body in ["a", "b", "c"] {
        publish(&ch, "", "get.q", body.as_bytes()).await;
    }
    let mut last_tag = 0;
    for (body, remaining) in [("a", 2), ("b", 1), ("c", 0)] {
        let m = ch
            .basic_get(ss("get.q"), BasicGetOptions::default())
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(m.delivery.data, body.as_bytes());
        assert_eq!(m.message_count, remaining);
        assert_eq!(m.delivery.routing_key.as_str(), "get.q");
        assert!(!m.delivery.redelivered);
        last_tag = m.delivery.delivery_tag;
    }
    assert!(ch
        .basic_get(ss("get.q"), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
    ch.basic_ack(last_tag, BasicAckOptions { multiple: true })
        .await
        .unwrap();
    ch.close(200, ss("OK")).await.unwrap();
    // Acked: nothing comes back when the channel closes.
    assert_eq!(ready_count(&conn, "get.q").await, 0);

    // no_ack get removes the message at once.
    let ch = conn.create_channel().await.unwrap();
    publish(&ch, "", "get.q", b"d").await;
    let m = ch
        .basic_get(ss("get.q"), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(
        (m.delivery.data.as_slice(), m.message_count),
        (&b"d"[..], 0)
    );
    ch.close(200, ss("OK")).await.unwrap();
    assert_eq!(ready_count(&conn, "get.q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_publish_is_returned_with_312_no_route() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let props = BasicProperties::default().with_content_type(ss("text/plain"));
    let confirm = ch
        .basic_publish(
            ss("amq.direct"),
            ss("nowhere"),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"lost",
            props.clone(),
        )
        .await
        .unwrap();
    match within("confirm", confirm).await.unwrap() {
        Confirmation::Ack(Some(ret)) => {
            assert_eq!(ret.reply_code, 312);
            assert_eq!(ret.reply_text.as_str(), "NO_ROUTE");
            assert_eq!(ret.delivery.exchange.as_str(), "amq.direct");
            assert_eq!(ret.delivery.routing_key.as_str(), "nowhere");
            assert_eq!(ret.delivery.data, b"lost");
            assert_eq!(ret.delivery.properties, props);
        }
        other => panic!("expected an ack carrying a basic.return, got {other:?}"),
    }

    // Without mandatory an unroutable message is dropped silently.
    let confirm = ch
        .basic_publish(
            ss("amq.direct"),
            ss("nowhere"),
            BasicPublishOptions::default(),
            b"dropped",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        within("confirm", confirm).await.unwrap(),
        Confirmation::Ack(None)
    );

    // A routable mandatory message is not returned.
    declare_queue(&ch, "mand.q").await;
    let confirm = ch
        .basic_publish(
            ss(""),
            ss("mand.q"),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"kept",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        within("confirm", confirm).await.unwrap(),
        Confirmation::Ack(None)
    );
    assert_eq!(ready_count(&conn, "mand.q").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_return_arrives_without_confirm_mode() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        ss(""),
        ss("no.such.queue"),
        BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        },
        b"bounce",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    // Outside confirm mode lapin keeps returns until wait_for_confirms drains them.
    let returned = within("basic.return to arrive", async {
        loop {
            let r = ch.wait_for_confirms().await.unwrap();
            if !r.is_empty() {
                break r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0].reply_code, 312);
    assert_eq!(returned[0].reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned[0].delivery.routing_key.as_str(), "no.such.queue");
    assert_eq!(returned[0].delivery.data, b"bounce");
}

fn every_header_type() -> FieldTable {
    let mut inner = FieldTable::default();
    inner.insert(ss("nested"), AMQPValue::LongString("deep".into()));
    inner.insert(ss("n"), AMQPValue::LongInt(-7));
    let mut h = FieldTable::default();
    h.insert(ss("t-bool"), AMQPValue::Boolean(true));
    h.insert(ss("b-i8"), AMQPValue::ShortShortInt(-8));
    h.insert(ss("B-u8"), AMQPValue::ShortShortUInt(200));
    h.insert(ss("s-i16"), AMQPValue::ShortInt(-1600));
    h.insert(ss("u-u16"), AMQPValue::ShortUInt(60_000));
    h.insert(ss("I-i32"), AMQPValue::LongInt(-320_000));
    h.insert(ss("i-u32"), AMQPValue::LongUInt(4_000_000_000));
    h.insert(ss("l-i64"), AMQPValue::LongLongInt(-6_400_000_000));
    h.insert(ss("f-f32"), AMQPValue::Float(1.5));
    h.insert(ss("d-f64"), AMQPValue::Double(-2.25e100));
    h.insert(
        ss("D-decimal"),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12_345,
        }),
    );
    h.insert(ss("S-longstr"), AMQPValue::LongString("héllo wörld".into()));
    h.insert(
        ss("A-array"),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::LongString("two".into()),
            AMQPValue::Boolean(false),
            AMQPValue::Void,
        ])),
    );
    h.insert(ss("T-timestamp"), AMQPValue::Timestamp(1_700_000_000));
    h.insert(ss("F-table"), AMQPValue::FieldTable(inner));
    h.insert(
        ss("x-bytes"),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 2, 0xCE, 255])),
    );
    h.insert(ss("V-void"), AMQPValue::Void);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_basic_property_and_header_type_round_trips() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "props.q").await;
    let full = BasicProperties::default()
        .with_content_type(ss("application/json"))
        .with_content_encoding(ss("gzip"))
        .with_headers(every_header_type())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id(ss("corr-1"))
        .with_reply_to(ss("reply.q"))
        .with_expiration(ss("60000"))
        .with_message_id(ss("msg-1"))
        .with_timestamp(1_700_000_123)
        .with_type(ss("order.created"))
        .with_user_id(ss("guest"))
        .with_app_id(ss("warren-it"))
        .with_cluster_id(ss("cluster-a"));
    let cases = [
        BasicProperties::default(),
        full.clone(),
        BasicProperties::default().with_headers(every_header_type()),
        BasicProperties::default()
            .with_priority(0)
            .with_app_id(ss("")),
    ];
    for props in &cases {
        publish_with(&ch, "", "props.q", b"p", props.clone()).await;
    }
    let mut consumer = consume(&ch, "props.q").await;
    for props in &cases {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(&d.properties, props);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    // The same through basic.get.
    publish_with(&ch, "", "props.q", b"p", full.clone()).await;
    let getch = conn.create_channel().await.unwrap();
    let m = getch
        .basic_get(ss("props.q"), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    // The consumer may have taken it first; either path must preserve the properties.
    let props = match m {
        Some(m) => m.delivery.properties.clone(),
        None => next_delivery(&mut consumer).await.properties.clone(),
    };
    assert_eq!(props, full);
}

async fn round_trip_body(ch: &lapin::Channel, consumer: &mut lapin::Consumer, len: usize) {
    let body = test_body(len);
    let sum = checksum(&body);
    publish(ch, "", "size.q", &body).await;
    drop(body);
    let d = next_delivery(consumer).await;
    assert_eq!(d.data.len(), len, "body length for a {len}-byte message");
    assert_eq!(
        checksum(&d.data),
        sum,
        "body content for a {len}-byte message"
    );
    d.ack(BasicAckOptions::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_edge_sizes_round_trip_intact() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let frame_max = conn.configuration().frame_max() as usize;
    assert_eq!(frame_max, 131_072);
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare_queue(&ch, "size.q").await;
    let cch = conn.create_channel().await.unwrap();
    let mut consumer = consume(&cch, "size.q").await;
    let per_frame = frame_max - 8;
    for len in [
        0,
        1,
        per_frame - 1,
        per_frame,
        per_frame + 1,
        2 * per_frame,
        1024 * 1024,
    ] {
        round_trip_body(&ch, &mut consumer, len).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_of_128_mib_the_default_max_round_trips_intact() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare_queue(&ch, "size.q").await;
    let cch = conn.create_channel().await.unwrap();
    let mut consumer = consume(&cch, "size.q").await;
    round_trip_body(&ch, &mut consumer, 128 * 1024 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_is_deleted_after_its_last_consumer_cancels() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        ss("ad.q"),
        QueueDeclareOptions {
            auto_delete: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    // Never consumed from: it stays.
    assert_eq!(queue_state(&conn, "ad.q").await.unwrap(), (0, 0));
    let c1 = consume_with(&ch, "ad.q", "ad.c1", BasicConsumeOptions::default()).await;
    let c2 = consume_with(&ch, "ad.q", "ad.c2", BasicConsumeOptions::default()).await;
    assert_eq!(queue_state(&conn, "ad.q").await.unwrap(), (0, 2));
    ch.basic_cancel(c1.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
    assert_eq!(queue_state(&conn, "ad.q").await.unwrap(), (0, 1));
    ch.basic_cancel(c2.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
    wait_queue_gone(&conn, "ad.q").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_sends_basic_cancel_to_its_consumers() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "cancel.q").await;
    let mut consumer = consume(&ch, "cancel.q").await;

    let other = broker.connect().await;
    let och = other.create_channel().await.unwrap();
    let deleted = och
        .queue_delete(ss("cancel.q"), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    // lapin advertises consumer_cancel_notify: the server's basic.cancel ends the stream.
    match within("consumer cancellation", consumer.next()).await {
        None => {}
        Some(other) => panic!("expected the consumer to be cancelled, got {other:?}"),
    }
    // The channel itself is fine.
    assert!(ch.status().connected());
    declare_queue(&ch, "cancel.q2").await;
}
