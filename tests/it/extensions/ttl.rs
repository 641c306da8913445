//! Per-queue message TTL (`x-message-ttl`), per-message TTL (`expiration`) and queue
//! TTL (`x-expires`).

use lapin::options::{BasicCancelOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::BasicProperties;

use super::{confirm_channel, declare_args, drain, get, int, routable, table, wait_get};
use crate::util::{
    assert_reply, consume_with, eventually_async, next_delivery, publish, publish_with,
    ready_count, ready_delivery, ss, TestBroker, TIMEOUT,
};

fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    }
}

fn expiring(ms: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(ss(ms))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_message_ttl_expired_message_is_never_delivered() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_args(&ch, "ttl.q", table(&[("x-message-ttl", int(50))])).await;
    publish(&pub_ch, "", "ttl.q", b"expired").await;
    eventually_async(
        TIMEOUT,
        "the message with x-message-ttl=50 expires",
        || async { ready_count(&conn, "ttl.q").await == 0 },
    )
    .await;
    assert!(get(&ch, "ttl.q", true).await.is_none());

    // A consumer attached afterwards gets only a fresh message, never the expired one.
    let mut c = consume_with(&ch, "ttl.q", "late", no_ack()).await;
    publish(&pub_ch, "", "ttl.q", b"fresh").await;
    let d = next_delivery(&mut c).await;
    assert_eq!(d.data, b"fresh");
    // A queue TTL does not add an expiration property.
    assert_eq!(d.properties.expiration(), &None);
    assert!(ready_delivery(&mut c).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_expiration_drops_the_message() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_args(&ch, "exp.q", table(&[])).await;
    publish_with(&pub_ch, "", "exp.q", b"short", expiring("50")).await;
    publish_with(&pub_ch, "", "exp.q", b"long", expiring("600000")).await;
    eventually_async(
        TIMEOUT,
        "the message with expiration=50 expires",
        || async { ready_count(&conn, "exp.q").await == 1 },
    )
    .await;
    let m = get(&ch, "exp.q", true)
        .await
        .expect("the long-lived message");
    assert_eq!(m.delivery.data, b"long");
    // The property is delivered unchanged.
    assert_eq!(
        m.delivery
            .properties
            .expiration()
            .as_ref()
            .map(|s| s.as_str()),
        Some("600000")
    );
    assert!(get(&ch, "exp.q", true).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lower_of_queue_ttl_and_message_expiration_applies() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    // The message's TTL is the lower one.
    declare_args(&ch, "msg.lower", table(&[("x-message-ttl", int(600_000))])).await;
    // The queue's TTL is the lower one.
    declare_args(&ch, "queue.lower", table(&[("x-message-ttl", int(50))])).await;
    publish_with(&pub_ch, "", "msg.lower", b"m", expiring("50")).await;
    publish_with(&pub_ch, "", "queue.lower", b"q", expiring("600000")).await;
    for q in ["msg.lower", "queue.lower"] {
        eventually_async(
            TIMEOUT,
            &format!("the lower TTL applies in {q}"),
            || async { ready_count(&conn, q).await == 0 },
        )
        .await;
        assert!(get(&ch, q, true).await.is_none(), "{q} still delivers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ttl_zero_reaches_only_a_waiting_consumer() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    // A witness queue dead-letters what x-message-ttl=0 drops, to see the drop happen.
    declare_args(&ch, "zero.dead", table(&[])).await;
    declare_args(
        &ch,
        "zero.q",
        table(&[
            ("x-message-ttl", int(0)),
            ("x-dead-letter-exchange", super::text("")),
            ("x-dead-letter-routing-key", super::text("zero.dead")),
        ]),
    )
    .await;
    publish(&pub_ch, "", "zero.q", b"nobody-waiting").await;
    let dead = wait_get(&ch, "zero.dead").await;
    assert_eq!(dead.delivery.data, b"nobody-waiting");
    assert_eq!(ready_count(&conn, "zero.q").await, 0);

    let mut c = consume_with(&ch, "zero.q", "waiting", no_ack()).await;
    publish(&pub_ch, "", "zero.q", b"caught").await;
    assert_eq!(next_delivery(&mut c).await.data, b"caught");
    ch.basic_cancel(ss("waiting"), BasicCancelOptions::default())
        .await
        .unwrap();
    assert_eq!(drain(&ch, "zero.dead").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_queue_with_x_expires_is_deleted() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let probe = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_args(&ch, "expires.q", table(&[("x-expires", int(100))])).await;
    assert!(routable(&probe, "expires.q").await);
    // Polled with a mandatory publish: a passive declare would renew the lease.
    eventually_async(
        TIMEOUT,
        "the queue with x-expires=100 is deleted",
        || async { !routable(&probe, "expires.q").await },
    )
    .await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let err = ch
        .queue_declare(ss("expires.q"), passive, Default::default())
        .await
        .unwrap_err();
    assert_reply(&err, 404, "NOT_FOUND - no queue 'expires.q' in vhost '/'");
    assert!(conn.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_keeps_an_x_expires_queue_alive() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let probe = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_args(&ch, "expires.busy", table(&[("x-expires", int(100))])).await;
    let cons = conn.create_channel().await.unwrap();
    let _c = consume_with(&cons, "expires.busy", "keeper", no_ack()).await;
    // Declared later, without a consumer.
    declare_args(&ch, "expires.idle", table(&[("x-expires", int(100))])).await;
    eventually_async(TIMEOUT, "the idle queue is deleted", || async {
        !routable(&probe, "expires.idle").await
    })
    .await;
    // The older queue with a consumer is still there ...
    assert!(routable(&probe, "expires.busy").await);
    // ... until its consumer goes.
    cons.basic_cancel(ss("keeper"), BasicCancelOptions::default())
        .await
        .unwrap();
    eventually_async(
        TIMEOUT,
        "the queue expires once its consumer left",
        || async { !routable(&probe, "expires.busy").await },
    )
    .await;
}
