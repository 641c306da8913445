//! Channel errors (soft: only the channel closes) versus connection errors (hard: the
//! whole connection closes), as lapin sees them, with RabbitMQ's reply codes and texts.

use amq_protocol::types::FieldTable;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicRecoverOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::{BasicProperties, ExchangeKind};

use crate::util::{
    assert_reply, connect_uri, consume, consume_with, declare_queue, eventually, next_delivery,
    publish, queue_state, ready_count, ss, test_body, wait_queue_gone, ErrorEvents, TestBroker,
    TIMEOUT,
};

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    }
}

const LOCKED: &str = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'excl.q' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.";

/// Declares, publishes and consumes on a new channel of `conn`.
async fn assert_connection_usable(conn: &lapin::Connection, queue: &str) {
    assert!(conn.status().connected(), "connection should still be open");
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, queue).await;
    publish(&ch, "", queue, b"still alive").await;
    let mut c = consume(&ch, queue).await;
    assert_eq!(next_delivery(&mut c).await.data, b"still alive");
}

async fn wait_disconnected(conn: &lapin::Connection) {
    eventually(TIMEOUT, "lapin sees the connection closed", || {
        !conn.status().connected()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_queue_closes_channel_not_connection() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .queue_declare(ss("missing"), passive(), FieldTable::default())
        .await
        .unwrap_err();
    assert_reply(&err, 404, "NOT_FOUND - no queue 'missing' in vhost '/'");
    assert!(conn.status().connected());
    assert!(!ch.status().connected());
    assert!(ch
        .queue_declare(
            ss("x"),
            QueueDeclareOptions::default(),
            FieldTable::default()
        )
        .await
        .is_err());
    assert_connection_usable(&conn, "after.404").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_error_leaves_other_channels_of_the_connection_working() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let good = conn.create_channel().await.unwrap();
    declare_queue(&good, "good.q").await;
    let mut consumer = consume(&good, "good.q").await;
    let bad = conn.create_channel().await.unwrap();
    let err = bad
        .queue_declare(ss("missing"), passive(), FieldTable::default())
        .await
        .unwrap_err();
    assert_reply(&err, 404, "NOT_FOUND - no queue 'missing' in vhost '/'");
    // The consumer on the other channel keeps working.
    publish(&good, "", "good.q", b"after").await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"after");
    assert!(good.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_missing_exchange_closes_channel_with_404() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let mut errors = ErrorEvents::listen(&conn);
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .basic_publish(
            ss("missing.x"),
            ss("k"),
            BasicPublishOptions::default(),
            b"nowhere",
            BasicProperties::default(),
        )
        .await;
    let err = errors.next().await;
    assert_reply(
        &err,
        404,
        "NOT_FOUND - no exchange 'missing.x' in vhost '/'",
    );
    assert_connection_usable(&conn, "after.missing.x").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inequivalent_redeclare_is_406() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "ineq.q").await;
    let err = ch
        .queue_declare(
            ss("ineq.q"),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_reply(
        &err,
        406,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'ineq.q' in vhost '/': received 'true' but current is 'false'",
    );
    assert_connection_usable(&conn, "after.ineq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_of_empty_queue_name_without_a_declared_queue_is_404() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .queue_bind(
            ss(""),
            ss("amq.direct"),
            ss("k"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_reply(&err, 404, "NOT_FOUND - no previously declared queue");
    assert!(conn.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_message_bytes_closes_channel_with_406() {
    const MAX: u64 = 1024 * 1024;
    let broker = TestBroker::start_with(|c| c.limits.max_message_bytes = MAX).await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "big.q").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // Exactly the maximum is accepted.
    publish(&ch, "", "big.q", &test_body(MAX as usize)).await;
    assert_eq!(ready_count(&conn, "big.q").await, 1);

    let mut errors = ErrorEvents::listen(&conn);
    let body = test_body(MAX as usize + 1);
    // The channel may already be closing while lapin still sends the body frames, so the
    // publish itself may fail; the channel.close is what matters.
    if let Ok(confirm) = ch
        .basic_publish(
            ss(""),
            ss("big.q"),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
        .await
    {
        let _ = confirm.await;
    }
    let err = errors.next().await;
    assert_reply(
        &err,
        406,
        "PRECONDITION_FAILED - message size 1048577 is larger than configured max size 1048576",
    );
    assert_eq!(ready_count(&conn, "big.q").await, 1);
    assert_connection_usable(&conn, "after.big").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_locked_to_its_connection_and_deleted_when_it_closes() {
    let broker = TestBroker::start().await;
    let owner = broker.connect().await;
    let och = owner.create_channel().await.unwrap();
    och.queue_declare(
        ss("excl.q"),
        QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();

    let other = broker.connect().await;
    let err = queue_state(&other, "excl.q").await.unwrap_err();
    assert_reply(&err, 405, LOCKED);
    let ch = other.create_channel().await.unwrap();
    let err = ch
        .basic_consume(
            ss("excl.q"),
            ss(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_reply(&err, 405, LOCKED);
    assert!(other.status().connected());
    // Publishing to another connection's exclusive queue is allowed.
    let ch = other.create_channel().await.unwrap();
    publish(&ch, "", "excl.q", b"for the owner").await;
    let mut c = consume(&och, "excl.q").await;
    assert_eq!(next_delivery(&mut c).await.data, b"for the owner");

    owner.close(200, ss("OK")).await.unwrap();
    wait_queue_gone(&other, "excl.q").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_exchange_type_is_a_503_connection_error() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .exchange_declare(
            ss("weird.x"),
            ExchangeKind::Custom("x-nope".into()),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_reply(
        &err,
        503,
        "COMMAND_INVALID - unknown exchange type 'x-nope'",
    );
    wait_disconnected(&conn).await;
    assert_connection_usable(&broker.connect().await, "after.503").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_consumer_tag_on_a_channel_is_a_530_connection_error() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "tag.q").await;
    // The same tag on another channel is fine.
    let other = conn.create_channel().await.unwrap();
    let _c0 = consume_with(&other, "tag.q", "dup", BasicConsumeOptions::default()).await;
    let _c1 = consume_with(&ch, "tag.q", "dup", BasicConsumeOptions::default()).await;
    let err = ch
        .basic_consume(
            ss("tag.q"),
            ss("dup"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_reply(
        &err,
        530,
        "NOT_ALLOWED - attempt to reuse consumer tag 'dup'",
    );
    wait_disconnected(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_without_requeue_is_a_540_connection_error() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .basic_recover(BasicRecoverOptions { requeue: false })
        .await
        .unwrap_err();
    assert_reply(&err, 540, "NOT_IMPLEMENTED - requeue=false");
    wait_disconnected(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_the_lapin_connect_with_403() {
    let broker = TestBroker::start().await;
    let uri = format!("amqp://guest:wrong@{}/%2f", broker.addr());
    let err = connect_uri(&uri).await.unwrap_err();
    assert_reply(
        &err,
        403,
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
    );
    let uri = format!("amqp://nobody:guest@{}/%2f", broker.addr());
    let err = connect_uri(&uri).await.unwrap_err();
    assert_reply(
        &err,
        403,
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
    );
    assert_connection_usable(&broker.connect().await, "after.403").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_vhost_fails_the_lapin_connect_with_530() {
    let broker = TestBroker::start().await;
    let uri = format!("amqp://guest:guest@{}/nope", broker.addr());
    let err = connect_uri(&uri).await.unwrap_err();
    assert_reply(&err, 530, "NOT_ALLOWED - vhost nope not found");
}
