//! Queue length limits: `x-max-length` with `x-overflow` drop-head (the default),
//! reject-publish and reject-publish-dlx.

use amq_protocol::types::AMQPValue;

use super::{
    confirm_channel, death_summary, declare_args, drain, header, int, publish_all, table, text,
    wait_get, x_death,
};
use crate::util::{queue_state, ready_count, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_head_keeps_the_newest_messages() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_args(&ch, "dh.q", table(&[("x-max-length", int(2))])).await;
    assert_eq!(
        publish_all(&pub_ch, "dh.q", &["m0", "m1", "m2", "m3"]).await,
        ["ack"; 4]
    );
    assert_eq!(queue_state(&conn, "dh.q").await.unwrap(), (2, 0));
    assert_eq!(drain(&ch, "dh.q").await, ["m2", "m3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_head_dead_letters_the_dropped_messages_as_maxlen() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_args(&ch, "dhd.dead", table(&[])).await;
    declare_args(
        &ch,
        "dhd.q",
        table(&[
            ("x-max-length", int(2)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("dhd.dead")),
        ]),
    )
    .await;
    publish_all(&pub_ch, "dhd.q", &["m0", "m1", "m2", "m3"]).await;
    for expected in ["m0", "m1"] {
        let d = wait_get(&ch, "dhd.dead").await.delivery;
        assert_eq!(d.data, expected.as_bytes());
        assert_eq!(
            (d.exchange.as_str(), d.routing_key.as_str()),
            ("", "dhd.dead")
        );
        let deaths = x_death(&d.properties);
        assert_eq!(deaths.len(), 1);
        assert_eq!(
            death_summary(&deaths[0]),
            ("dhd.q".into(), "maxlen".into(), AMQPValue::LongLongInt(1))
        );
        assert_eq!(
            header(&d.properties, "x-first-death-reason"),
            Some(&text("maxlen"))
        );
    }
    assert_eq!(drain(&ch, "dhd.q").await, ["m2", "m3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_publish_nacks_the_publisher_and_keeps_the_old_messages() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_args(&ch, "rp.dead", table(&[])).await;
    declare_args(
        &ch,
        "rp.q",
        table(&[
            ("x-max-length", int(2)),
            ("x-overflow", text("reject-publish")),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("rp.dead")),
        ]),
    )
    .await;
    assert_eq!(
        publish_all(&pub_ch, "rp.q", &["m0", "m1", "m2", "m3"]).await,
        ["ack", "ack", "nack", "nack"]
    );
    // A nack is not an error: the channel stays usable.
    assert!(pub_ch.status().connected());
    assert_eq!(queue_state(&conn, "rp.q").await.unwrap(), (2, 0));
    // reject-publish does not dead-letter.
    assert_eq!(ready_count(&conn, "rp.dead").await, 0);
    assert_eq!(drain(&ch, "rp.q").await, ["m0", "m1"]);
    // With room again, publishes are accepted.
    assert_eq!(publish_all(&pub_ch, "rp.q", &["m4"]).await, ["ack"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_publish_dlx_nacks_and_dead_letters_the_refused_message() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_args(&ch, "rpd.dead", table(&[])).await;
    declare_args(
        &ch,
        "rpd.q",
        table(&[
            ("x-max-length", int(2)),
            ("x-overflow", text("reject-publish-dlx")),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("rpd.dead")),
        ]),
    )
    .await;
    assert_eq!(
        publish_all(&pub_ch, "rpd.q", &["m0", "m1", "m2", "m3"]).await,
        ["ack", "ack", "nack", "nack"]
    );
    for expected in ["m2", "m3"] {
        let d = wait_get(&ch, "rpd.dead").await.delivery;
        assert_eq!(d.data, expected.as_bytes());
        let deaths = x_death(&d.properties);
        assert_eq!(
            death_summary(&deaths[0]),
            ("rpd.q".into(), "maxlen".into(), AMQPValue::LongLongInt(1))
        );
    }
    assert_eq!(drain(&ch, "rpd.q").await, ["m0", "m1"]);
}
