//! Policies from the configuration: a matching queue gets the policy's max-length, TTL
//! and dead-letter exchange, a non-matching one does not; client arguments win for the
//! dead-letter exchange while the lower length limit applies; an exchange policy's
//! alternate-exchange routes unroutable messages.

use amq_protocol::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, ExchangeKind};
use warren_broker::policy::{ApplyTo, PolicyConfig, PolicyDefinition};

use super::{
    bind, confirm_channel, death_summary, declare_args, declare_exchange, drain, get, int,
    publish_all, publish_confirm, table, text, wait_get, x_death,
};
use crate::util::{declare_queue, publish, ready_count, TestBroker};

fn policy(
    name: &str,
    pattern: &str,
    apply_to: ApplyTo,
    definition: PolicyDefinition,
) -> PolicyConfig {
    PolicyConfig {
        name: name.into(),
        vhost: "/".into(),
        pattern: pattern.into(),
        apply_to,
        priority: 0,
        definition,
    }
}

/// A fanout dead-letter exchange `x` with one queue `q`.
async fn dead_letter_target(ch: &lapin::Channel, x: &str, q: &str) {
    declare_exchange(ch, x, ExchangeKind::Fanout, FieldTable::default()).await;
    declare_queue(ch, q).await;
    bind(ch, q, x, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_policy_max_length_and_dlx_apply_to_matching_queues_only() {
    let broker = TestBroker::start_with(|c| {
        c.policies = vec![policy(
            "len",
            "^pol\\.",
            ApplyTo::Queues,
            PolicyDefinition {
                max_length: Some(2),
                dead_letter_exchange: Some("pol.dlx".into()),
                ..Default::default()
            },
        )]
    })
    .await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    dead_letter_target(&ch, "pol.dlx", "dead").await;
    declare_queue(&ch, "pol.q").await;
    declare_queue(&ch, "other.q").await;

    publish_all(&pub_ch, "other.q", &["o0", "o1", "o2"]).await;
    publish_all(&pub_ch, "pol.q", &["m0", "m1", "m2"]).await;
    // The policy's drop-head limit dead-letters the oldest into its DLX.
    let d = wait_get(&ch, "dead").await.delivery;
    assert_eq!(d.data, b"m0");
    assert_eq!(
        death_summary(&x_death(&d.properties)[0]),
        ("pol.q".into(), "maxlen".into(), AMQPValue::LongLongInt(1))
    );
    assert_eq!(drain(&ch, "pol.q").await, ["m1", "m2"]);
    // The non-matching queue has no limit.
    assert_eq!(drain(&ch, "other.q").await, ["o0", "o1", "o2"]);
    assert!(get(&ch, "dead", true).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_policy_message_ttl_applies_to_matching_queues_only() {
    let broker = TestBroker::start_with(|c| {
        c.policies = vec![policy(
            "ttl",
            "^ttl\\.",
            ApplyTo::Queues,
            PolicyDefinition {
                message_ttl: Some(100),
                dead_letter_exchange: Some("ttl.dlx".into()),
                ..Default::default()
            },
        )]
    })
    .await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    dead_letter_target(&ch, "ttl.dlx", "ttl.dead").await;
    declare_queue(&ch, "ttl.q").await;
    declare_queue(&ch, "keep.q").await;
    // keep.q's message is older than ttl.q's.
    publish(&pub_ch, "", "keep.q", b"kept").await;
    publish(&pub_ch, "", "ttl.q", b"expires").await;
    let d = wait_get(&ch, "ttl.dead").await.delivery;
    assert_eq!(d.data, b"expires");
    assert_eq!(
        death_summary(&x_death(&d.properties)[0]),
        ("ttl.q".into(), "expired".into(), AMQPValue::LongLongInt(1))
    );
    assert_eq!(ready_count(&conn, "ttl.q").await, 0);
    // At least 100 ms have passed: the non-matching queue still has its message.
    assert_eq!(drain(&ch, "keep.q").await, ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_dlx_wins_over_the_policy_but_the_lower_max_length_applies() {
    let broker = TestBroker::start_with(|c| {
        c.policies = vec![policy(
            "mix",
            "^mix\\.",
            ApplyTo::Queues,
            PolicyDefinition {
                max_length: Some(2),
                dead_letter_exchange: Some("policy.dlx".into()),
                ..Default::default()
            },
        )]
    })
    .await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    dead_letter_target(&ch, "policy.dlx", "policy.dead").await;
    dead_letter_target(&ch, "client.dlx", "client.dead").await;

    // The client's x-max-length (5) is higher: the policy's 2 applies. The client's
    // dead-letter exchange beats the policy's.
    declare_args(
        &ch,
        "mix.a",
        table(&[
            ("x-max-length", int(5)),
            ("x-dead-letter-exchange", text("client.dlx")),
        ]),
    )
    .await;
    publish_all(&pub_ch, "mix.a", &["a0", "a1", "a2"]).await;
    let d = wait_get(&ch, "client.dead").await.delivery;
    assert_eq!(d.data, b"a0");
    assert_eq!(drain(&ch, "mix.a").await, ["a1", "a2"]);
    assert_eq!(ready_count(&conn, "policy.dead").await, 0);

    // The client's x-max-length (1) is lower: it applies; the policy's DLX is used.
    declare_args(&ch, "mix.b", table(&[("x-max-length", int(1))])).await;
    publish_all(&pub_ch, "mix.b", &["b0", "b1", "b2"]).await;
    for expected in ["b0", "b1"] {
        let d = wait_get(&ch, "policy.dead").await.delivery;
        assert_eq!(d.data, expected.as_bytes());
        assert_eq!(
            death_summary(&x_death(&d.properties)[0]),
            ("mix.b".into(), "maxlen".into(), AMQPValue::LongLongInt(1))
        );
    }
    assert_eq!(drain(&ch, "mix.b").await, ["b2"]);
    assert!(get(&ch, "client.dead", true).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_policy_alternate_exchange_catches_unroutable_messages() {
    let broker = TestBroker::start_with(|c| {
        c.policies = vec![policy(
            "ae",
            "^with-ae\\.",
            ApplyTo::Exchanges,
            PolicyDefinition {
                alternate_exchange: Some("fallback".into()),
                ..Default::default()
            },
        )]
    })
    .await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    dead_letter_target(&ch, "fallback", "caught").await;
    declare_exchange(
        &ch,
        "with-ae.x",
        ExchangeKind::Direct,
        FieldTable::default(),
    )
    .await;
    declare_exchange(&ch, "plain.x", ExchangeKind::Direct, FieldTable::default()).await;

    let c = publish_confirm(
        &pub_ch,
        "with-ae.x",
        "nowhere",
        b"caught",
        BasicProperties::default(),
        true,
    )
    .await;
    assert_eq!(
        c,
        Confirmation::Ack(None),
        "the policy's AE counts as routed"
    );
    let m = get(&ch, "caught", true)
        .await
        .expect("message in the AE's queue");
    assert_eq!(m.delivery.data, b"caught");
    assert_eq!(m.delivery.exchange.as_str(), "with-ae.x");

    // A non-matching exchange has no alternate: the mandatory publish is returned.
    let c = publish_confirm(
        &pub_ch,
        "plain.x",
        "nowhere",
        b"returned",
        BasicProperties::default(),
        true,
    )
    .await;
    match c {
        Confirmation::Ack(Some(ret)) => assert_eq!(ret.reply_code, 312),
        other => panic!("expected a basic.return, got {other:?}"),
    }
    assert!(get(&ch, "caught", true).await.is_none());
}
