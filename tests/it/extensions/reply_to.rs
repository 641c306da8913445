//! Direct reply-to: the pseudo-queue `amq.rabbitmq.reply-to`.

use amq_protocol::types::FieldTable;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::BasicProperties;

use super::{confirm_channel, declare_args, table, wait_get};
use crate::util::{
    assert_reply, consume_with, next_delivery, publish_with, ss, ErrorEvents, TestBroker,
};

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_round_trip() {
    let broker = TestBroker::start().await;
    let requester = broker.connect().await;
    let server = broker.connect().await;
    let server_ch = confirm_channel(&server).await;
    declare_args(&server_ch, "rpc.q", table(&[])).await;

    let req_ch = requester.create_channel().await.unwrap();
    let mut replies = consume_with(&req_ch, REPLY_TO, "replies", no_ack()).await;
    let props = BasicProperties::default()
        .with_reply_to(ss(REPLY_TO))
        .with_correlation_id(ss("c1"));
    publish_with(&req_ch, "", "rpc.q", b"req", props).await;

    // The server sees a rewritten, channel-specific reply_to.
    let request = wait_get(&server_ch, "rpc.q").await.delivery;
    assert_eq!(request.data, b"req");
    assert_eq!(
        request
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("c1")
    );
    let reply_to = request
        .properties
        .reply_to()
        .as_ref()
        .expect("reply_to is set")
        .as_str()
        .to_string();
    assert!(
        reply_to.starts_with("amq.rabbitmq.reply-to.") && reply_to.len() > REPLY_TO.len() + 1,
        "reply_to was not rewritten: {reply_to:?}"
    );

    let reply_props = BasicProperties::default().with_correlation_id(ss("c1"));
    publish_with(&server_ch, "", &reply_to, b"resp", reply_props).await;
    let d = next_delivery(&mut replies).await;
    assert_eq!(d.data, b"resp");
    assert_eq!(
        d.properties.correlation_id().as_ref().map(|s| s.as_str()),
        Some("c1")
    );
    assert_eq!(d.exchange.as_str(), "");
    assert_eq!(d.routing_key.as_str(), reply_to);
    assert!(!d.redelivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_consumer_with_acks_is_refused() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .basic_consume(
            ss(REPLY_TO),
            ss("acking"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map(|_| ())
        .unwrap_err();
    assert_reply(
        &err,
        406,
        "PRECONDITION_FAILED - reply consumer cannot acknowledge",
    );
    // A channel error: the connection stays usable.
    assert!(conn.status().connected());
    let ch2 = conn.create_channel().await.unwrap();
    let _ok = consume_with(&ch2, REPLY_TO, "ok", no_ack()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_with_reply_to_without_a_reply_consumer_is_refused() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_args(&ch, "rpc.none", table(&[])).await;
    let mut errors = ErrorEvents::listen(&conn);
    let pub_ch = conn.create_channel().await.unwrap();
    let _ = pub_ch
        .basic_publish(
            ss(""),
            ss("rpc.none"),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_reply_to(ss(REPLY_TO)),
        )
        .await;
    let err = errors.next().await;
    assert_reply(
        &err,
        406,
        "PRECONDITION_FAILED - fast reply consumer does not exist",
    );
    assert!(conn.status().connected());
}
