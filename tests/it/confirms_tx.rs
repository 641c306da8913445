//! Publisher confirms and transactions.

use amq_protocol::types::FieldTable;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::{BasicProperties, Confirmation};

use crate::util::{
    assert_reply, declare_queue, eventually_async, publish, ready_count, ss, within, TestBroker,
    TIMEOUT,
};

async fn wait_ready(conn: &lapin::Connection, queue: &str, n: u32) {
    eventually_async(
        TIMEOUT,
        &format!("{n} ready messages in {queue}"),
        || async { ready_count(conn, queue).await == n },
    )
    .await;
}

/// Passive declare on `ch` itself: a synchronous round trip that also proves the broker
/// has handled every frame sent on `ch` before it.
async fn sync_count(ch: &lapin::Channel, queue: &str) -> u32 {
    ch.queue_declare(
        ss(queue),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_confirms_ack_every_publish() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "confirm.q").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    assert!(ch.status().confirm());
    let mut pending = Vec::new();
    for i in 0..50 {
        // Half routed, half unroutable: both are confirmed.
        let key = if i % 2 == 0 { "confirm.q" } else { "nowhere" };
        pending.push(
            ch.basic_publish(
                ss(""),
                ss(key),
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
    for (i, confirm) in pending.into_iter().enumerate() {
        let c = within("a publisher confirm", confirm).await.unwrap();
        assert_eq!(c, Confirmation::Ack(None), "confirm for publish {i}");
    }
    assert!(within("wait_for_confirms", ch.wait_for_confirms())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(ready_count(&conn, "confirm.q").await, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_makes_publishes_visible_and_rollback_discards_them() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "tx.q").await;
    ch.tx_select().await.unwrap();
    publish(&ch, "", "tx.q", b"rolled-back-1").await;
    publish(&ch, "", "tx.q", b"rolled-back-2").await;
    assert_eq!(sync_count(&ch, "tx.q").await, 0);
    assert_eq!(ready_count(&conn, "tx.q").await, 0);
    ch.tx_rollback().await.unwrap();
    assert_eq!(ready_count(&conn, "tx.q").await, 0);

    publish(&ch, "", "tx.q", b"committed-1").await;
    publish(&ch, "", "tx.q", b"committed-2").await;
    assert_eq!(sync_count(&ch, "tx.q").await, 0);
    ch.tx_commit().await.unwrap();
    wait_ready(&conn, "tx.q", 2).await;
    let getch = conn.create_channel().await.unwrap();
    for body in [&b"committed-1"[..], b"committed-2"] {
        let m = getch
            .basic_get(ss("tx.q"), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a committed message");
        assert_eq!(m.delivery.data, body);
    }
    // The channel stays transactional after a commit.
    publish(&ch, "", "tx.q", b"later").await;
    assert_eq!(sync_count(&ch, "tx.q").await, 0);
    ch.tx_rollback().await.unwrap();
    assert_eq!(ready_count(&conn, "tx.q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_rollback_leaves_acks_undone_and_commit_applies_them() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let setup = conn.create_channel().await.unwrap();
    declare_queue(&setup, "txack.q").await;
    publish(&setup, "", "txack.q", b"m1").await;
    publish(&setup, "", "txack.q", b"m2").await;

    let ch = conn.create_channel().await.unwrap();
    ch.tx_select().await.unwrap();
    let m1 = ch
        .basic_get(ss("txack.q"), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("m1");
    let m2 = ch
        .basic_get(ss("txack.q"), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("m2");
    assert_eq!(
        (m1.delivery.data.as_slice(), m2.delivery.data.as_slice()),
        (&b"m1"[..], &b"m2"[..])
    );
    let t1 = m1.delivery.delivery_tag;

    ch.basic_ack(t1, BasicAckOptions::default()).await.unwrap();
    ch.tx_rollback().await.unwrap();
    // A rolled-back ack leaves the message unacked, not requeued.
    assert_eq!(ready_count(&conn, "txack.q").await, 0);

    // It can be acked again; this time the ack is committed.
    ch.basic_ack(t1, BasicAckOptions::default()).await.unwrap();
    ch.tx_commit().await.unwrap();
    assert_eq!(ready_count(&conn, "txack.q").await, 0);

    // m2 was never acked: closing the channel requeues it, and only it.
    ch.close(200, ss("OK")).await.unwrap();
    wait_ready(&conn, "txack.q", 1).await;
    let m = setup
        .basic_get(ss("txack.q"), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("m2 again");
    assert_eq!(m.delivery.data, b"m2");
    assert!(m.delivery.redelivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_requeue_takes_effect_at_commit() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let setup = conn.create_channel().await.unwrap();
    declare_queue(&setup, "txnack.q").await;
    publish(&setup, "", "txnack.q", b"n").await;

    let ch = conn.create_channel().await.unwrap();
    ch.tx_select().await.unwrap();
    let m = ch
        .basic_get(ss("txnack.q"), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("n");
    ch.basic_nack(
        m.delivery.delivery_tag,
        BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(sync_count(&ch, "txnack.q").await, 0);
    assert_eq!(ready_count(&conn, "txnack.q").await, 0);
    ch.tx_commit().await.unwrap();
    wait_ready(&conn, "txnack.q", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_mandatory_return_is_sent_at_commit() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "txret.q").await;
    ch.tx_select().await.unwrap();
    ch.basic_publish(
        ss(""),
        ss("txret.nowhere"),
        BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        },
        b"bounce",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert_eq!(sync_count(&ch, "txret.q").await, 0);
    assert!(ch.wait_for_confirms().await.unwrap().is_empty());
    ch.tx_commit().await.unwrap();
    // basic.return precedes commit-ok on the wire.
    let returned = ch.wait_for_confirms().await.unwrap();
    assert_eq!(returned.len(), 1, "{returned:?}");
    assert_eq!(returned[0].reply_code, 312);
    assert_eq!(returned[0].reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned[0].delivery.data, b"bounce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_or_rollback_without_select_is_406() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let err = ch.tx_commit().await.unwrap_err();
    assert_reply(
        &err,
        406,
        "PRECONDITION_FAILED - channel is not transactional",
    );
    let ch = conn.create_channel().await.unwrap();
    let err = ch.tx_rollback().await.unwrap_err();
    assert_reply(
        &err,
        406,
        "PRECONDITION_FAILED - channel is not transactional",
    );
    assert!(conn.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_between_tx_and_confirm_mode_is_406() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let err = ch.tx_select().await.unwrap_err();
    assert_reply(
        &err,
        406,
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode",
    );
    let ch = conn.create_channel().await.unwrap();
    ch.tx_select().await.unwrap();
    let err = ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap_err();
    assert_reply(
        &err,
        406,
        "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
    );
    assert!(conn.status().connected());
}
