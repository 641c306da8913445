//! Priority queues (`x-max-priority`), consumer priorities (the `x-priority` consume
//! argument) and single active consumer (`x-single-active-consumer`).

use amq_protocol::types::{AMQPValue, FieldTable};
use futures_lite::{future, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions,
    ExchangeDeclareOptions,
};
use lapin::{BasicProperties, Channel, Consumer, ExchangeKind};

use super::{confirm_channel, declare_args, drain, int, table};
use crate::util::{
    assert_reply, next_delivery, publish, publish_with, queue_state, ready_delivery, ss, within,
    TestBroker,
};

async fn consume_args(
    ch: &Channel,
    queue: &str,
    tag: &str,
    no_ack: bool,
    args: FieldTable,
) -> lapin::Result<Consumer> {
    within(
        "basic.consume",
        ch.basic_consume(
            ss(queue),
            ss(tag),
            BasicConsumeOptions {
                no_ack,
                ..BasicConsumeOptions::default()
            },
            args,
        ),
    )
    .await
}

fn body(d: &Delivery) -> String {
    String::from_utf8(d.data.clone()).unwrap()
}

/// A round trip on `ch` that changes nothing: the broker has processed every method sent
/// on `ch` before it (acks included) when it returns.
async fn sync(ch: &Channel) {
    within(
        "passive exchange.declare",
        ch.exchange_declare(
            ss("amq.direct"),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("passive declare of amq.direct");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_queue_delivers_highest_priority_first_fifo_within_a_priority() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_args(&ch, "prio.q", table(&[("x-max-priority", int(10))])).await;
    let seq: [(Option<u8>, &str); 10] = [
        (None, "n0"),
        (Some(5), "a5"),
        (Some(1), "b1"),
        (Some(10), "c10"),
        (Some(5), "d5"),
        (Some(200), "e200"),
        (Some(0), "f0"),
        (None, "g0"),
        (Some(11), "h11"),
        (Some(10), "i10"),
    ];
    for (prio, b) in seq {
        let mut props = BasicProperties::default();
        if let Some(p) = prio {
            props = props.with_priority(p);
        }
        publish_with(&pub_ch, "", "prio.q", b.as_bytes(), props).await;
    }
    // Above the maximum counts as the maximum; no priority counts as 0.
    assert_eq!(
        drain(&ch, "prio.q").await,
        ["c10", "e200", "h11", "i10", "a5", "d5", "b1", "n0", "f0", "g0"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_queue_consumer_gets_priority_order() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_args(&ch, "prioc.q", table(&[("x-max-priority", int(5))])).await;
    for (prio, b) in [
        (Some(1), "low"),
        (None, "none"),
        (Some(5), "high"),
        (Some(3), "mid"),
    ] {
        let mut props = BasicProperties::default();
        if let Some(p) = prio {
            props = props.with_priority(p);
        }
        publish_with(&pub_ch, "", "prioc.q", b.as_bytes(), props).await;
    }
    let mut c = consume_args(&ch, "prioc.q", "c", true, FieldTable::default())
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(body(&next_delivery(&mut c).await));
    }
    assert_eq!(got, ["high", "mid", "low", "none"]);
}

/// Collects deliveries of two consumers until they got `n` in all.
async fn collect(
    lo: &mut Consumer,
    hi: &mut Consumer,
    lo_got: &mut Vec<Delivery>,
    hi_got: &mut Vec<Delivery>,
    n: usize,
) {
    while lo_got.len() + hi_got.len() < n {
        let (which, item) = within(
            "a delivery to either consumer",
            future::or(async { (0, lo.next().await) }, async {
                (1, hi.next().await)
            }),
        )
        .await;
        let d = item.expect("consumer ended").expect("delivery");
        if which == 0 {
            lo_got.push(d);
        } else {
            hi_got.push(d);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_consumer_gets_messages_while_it_has_credit() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let setup = conn.create_channel().await.unwrap();
    declare_args(&setup, "cp.q", table(&[])).await;
    let lo_ch = conn.create_channel().await.unwrap();
    let hi_ch = conn.create_channel().await.unwrap();
    lo_ch
        .basic_qos(10, BasicQosOptions::default())
        .await
        .unwrap();
    hi_ch
        .basic_qos(2, BasicQosOptions::default())
        .await
        .unwrap();
    // The low-priority consumer subscribes first, so plain round-robin would favour it.
    let mut lo = consume_args(
        &lo_ch,
        "cp.q",
        "lo",
        false,
        table(&[("x-priority", int(1))]),
    )
    .await
    .unwrap();
    let mut hi = consume_args(
        &hi_ch,
        "cp.q",
        "hi",
        false,
        table(&[("x-priority", int(5))]),
    )
    .await
    .unwrap();
    for i in 0..5 {
        publish(&pub_ch, "", "cp.q", format!("m{i}").as_bytes()).await;
    }
    let mut lo_got: Vec<Delivery> = Vec::new();
    let mut hi_got: Vec<Delivery> = Vec::new();
    collect(&mut lo, &mut hi, &mut lo_got, &mut hi_got, 5).await;
    let names = |v: &Vec<Delivery>| v.iter().map(body).collect::<Vec<_>>();
    // hi takes what its prefetch allows; lo only gets the rest.
    assert_eq!(names(&hi_got), ["m0", "m1"]);
    assert_eq!(names(&lo_got), ["m2", "m3", "m4"]);

    // Once hi has credit again it is preferred again.
    hi_got[0].ack(BasicAckOptions::default()).await.unwrap();
    sync(&hi_ch).await;
    for i in 5..7 {
        publish(&pub_ch, "", "cp.q", format!("m{i}").as_bytes()).await;
    }
    collect(&mut lo, &mut hi, &mut lo_got, &mut hi_got, 7).await;
    assert_eq!(names(&hi_got), ["m0", "m1", "m5"]);
    assert_eq!(names(&lo_got), ["m2", "m3", "m4", "m6"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_priority_of_the_wrong_type_is_a_channel_error() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_args(&ch, "cpt.q", table(&[])).await;
    let err = consume_args(
        &ch,
        "cpt.q",
        "c",
        false,
        table(&[("x-priority", AMQPValue::LongString("a".into()))]),
    )
    .await
    .map(|_| ())
    .unwrap_err();
    assert_reply(
        &err,
        406,
        "PRECONDITION_FAILED - invalid arg 'x-priority' for queue 'cpt.q' in vhost '/': \"expected integer, got longstr\"",
    );
    assert!(conn.status().connected());
    assert_eq!(queue_state(&conn, "cpt.q").await.unwrap(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_only_the_first_receives_until_it_cancels() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let setup = conn.create_channel().await.unwrap();
    declare_args(
        &setup,
        "sac.q",
        table(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await;
    let a_ch = conn.create_channel().await.unwrap();
    a_ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let b_ch = conn.create_channel().await.unwrap();
    let c_ch = conn.create_channel().await.unwrap();
    let mut a = consume_args(&a_ch, "sac.q", "a", false, FieldTable::default())
        .await
        .unwrap();
    let mut b = consume_args(&b_ch, "sac.q", "b", false, FieldTable::default())
        .await
        .unwrap();
    let mut c = consume_args(&c_ch, "sac.q", "c", false, FieldTable::default())
        .await
        .unwrap();
    publish(&pub_ch, "", "sac.q", b"m0").await;
    publish(&pub_ch, "", "sac.q", b"m1").await;
    let d0 = next_delivery(&mut a).await;
    assert_eq!(d0.data, b"m0");
    // a has no credit left, and b and c are not active: m1 waits.
    // declare-ok counts every consumer, active or not.
    assert_eq!(queue_state(&conn, "sac.q").await.unwrap(), (1, 3));
    d0.ack(BasicAckOptions::default()).await.unwrap();
    let d1 = next_delivery(&mut a).await;
    assert_eq!(d1.data, b"m1");
    d1.ack(BasicAckOptions::default()).await.unwrap();
    a_ch.basic_cancel(ss("a"), BasicCancelOptions::default())
        .await
        .unwrap();

    // b, the next in subscription order, takes over; c stays idle.
    for i in 2..5 {
        publish(&pub_ch, "", "sac.q", format!("m{i}").as_bytes()).await;
    }
    let mut got = Vec::new();
    for _ in 2..5 {
        let d = next_delivery(&mut b).await;
        got.push(body(&d));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(got, ["m2", "m3", "m4"]);
    assert!(ready_delivery(&mut c).await.is_none());
    assert_eq!(queue_state(&conn, "sac.q").await.unwrap(), (0, 2));
    assert!(ready_delivery(&mut c).await.is_none());
}
