//! Queue argument validation, alternate exchanges and sender-selected distribution
//! (CC / BCC headers).

use amq_protocol::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, ExchangeKind};

use super::{
    bind, confirm_channel, declare_args, declare_exchange, get, header, int, publish_confirm,
    table, text, texts, try_declare,
};
use crate::util::{assert_reply, declare_queue, publish, publish_with, TestBroker};

/// RabbitMQ's text for an invalid argument of queue `q` in vhost `/`.
fn invalid_arg(arg: &str, q: &str, detail: &str) -> String {
    format!("PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in vhost '/': {detail}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_priority_above_255_is_a_channel_error() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let err = try_declare(&ch, "q", table(&[("x-max-priority", int(256))]))
        .await
        .unwrap_err();
    assert_reply(
        &err,
        406,
        "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'q' in vhost '/': {max_value_exceeded,256}",
    );
    // Only the channel closed; the queue was not created.
    assert!(!ch.status().connected());
    assert!(conn.status().connected());
    let ch2 = conn.create_channel().await.unwrap();
    let q = declare_queue(&ch2, "q").await;
    assert_eq!(q.message_count(), 0);
    // The valid maximum is accepted.
    declare_args(&ch2, "q255", table(&[("x-max-priority", int(255))])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_queue_arguments_give_rabbitmq_406_texts() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let cases: Vec<(Vec<(&str, AMQPValue)>, String)> = vec![
        (
            vec![("x-overflow", text("bogus"))],
            invalid_arg("x-overflow", "bad", "invalid_overflow"),
        ),
        (
            vec![("x-overflow", int(1))],
            invalid_arg("x-overflow", "bad", "{unacceptable_type,signedint}"),
        ),
        (
            vec![("x-message-ttl", int(-1))],
            invalid_arg("x-message-ttl", "bad", "{value_negative,-1}"),
        ),
        (
            vec![("x-expires", int(0))],
            invalid_arg("x-expires", "bad", "{value_zero,0}"),
        ),
        (
            vec![("x-max-length", text("abc"))],
            invalid_arg("x-max-length", "bad", "\"expected integer, got longstr\""),
        ),
        (
            vec![("x-dead-letter-routing-key", text("k"))],
            invalid_arg(
                "x-dead-letter-routing-key",
                "bad",
                "routing_key_but_no_dlx_defined",
            ),
        ),
        (
            vec![("x-dead-letter-exchange", int(5))],
            "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'bad' in vhost '/'".to_string(),
        ),
        (
            vec![("x-single-active-consumer", text("yes"))],
            invalid_arg("x-single-active-consumer", "bad", "{unacceptable_type,longstr}"),
        ),
    ];
    for (args, expected) in cases {
        let ch = conn.create_channel().await.unwrap();
        let err = try_declare(&ch, "bad", table(&args)).await.unwrap_err();
        assert_reply(&err, 406, &expected);
        assert!(conn.status().connected(), "{expected}: connection closed");
    }
    // None of them created the queue.
    let ch = conn.create_channel().await.unwrap();
    declare_args(&ch, "bad", table(&[("x-overflow", text("reject-publish"))])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_message_goes_to_the_alternate_exchange() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_exchange(&ch, "ae", ExchangeKind::Fanout, FieldTable::default()).await;
    declare_queue(&ch, "ae.caught").await;
    bind(&ch, "ae.caught", "ae", "").await;
    declare_exchange(
        &ch,
        "with.ae",
        ExchangeKind::Direct,
        table(&[("alternate-exchange", text("ae"))]),
    )
    .await;
    declare_queue(&ch, "routed").await;
    bind(&ch, "routed", "with.ae", "known").await;

    // An alternate exchange counts as routed: a mandatory publish is not returned.
    let c = publish_confirm(
        &pub_ch,
        "with.ae",
        "unknown",
        b"lost",
        BasicProperties::default(),
        true,
    )
    .await;
    assert_eq!(c, Confirmation::Ack(None));
    let m = get(&ch, "ae.caught", true)
        .await
        .expect("message in the AE's queue");
    assert_eq!(m.delivery.data, b"lost");
    // The delivery names the exchange the message was published to.
    assert_eq!(
        (
            m.delivery.exchange.as_str(),
            m.delivery.routing_key.as_str()
        ),
        ("with.ae", "unknown")
    );
    // A routable message does not go to the AE.
    publish(&pub_ch, "with.ae", "known", b"found").await;
    assert_eq!(
        get(&ch, "routed", true).await.unwrap().delivery.data,
        b"found"
    );
    assert!(get(&ch, "ae.caught", true).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_and_bcc_headers_add_routing_keys_and_bcc_is_stripped() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_exchange(&ch, "ccx", ExchangeKind::Direct, FieldTable::default()).await;
    for (q, k) in [("cc.main", "main"), ("cc.cc", "cc"), ("cc.bcc", "bcc")] {
        declare_queue(&ch, q).await;
        bind(&ch, q, "ccx", k).await;
    }
    let props = BasicProperties::default().with_headers(table(&[
        ("CC", texts(&["cc"])),
        ("BCC", texts(&["bcc"])),
        ("keep", text("me")),
    ]));
    publish_with(&pub_ch, "ccx", "main", b"x", props).await;
    for q in ["cc.main", "cc.cc", "cc.bcc"] {
        let m = get(&ch, q, true)
            .await
            .unwrap_or_else(|| panic!("no copy in {q}"));
        let p = &m.delivery.properties;
        assert_eq!(m.delivery.routing_key.as_str(), "main", "{q}");
        assert_eq!(header(p, "CC"), Some(&texts(&["cc"])), "{q}: CC is kept");
        assert_eq!(header(p, "BCC"), None, "{q}: BCC is removed");
        assert_eq!(header(p, "keep"), Some(&text("me")), "{q}");
        // One copy per queue.
        assert!(get(&ch, q, true).await.is_none(), "{q} got two copies");
    }
}
