//! Bounded memory for backlogs (#13): beyond a queue's cache and the global budget,
//! message bodies are paged out to the data directory and read back in order when
//! delivered; transient pages never outlive the broker.

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use crate::util::{publish_with, ss, within, TestBroker};

fn body(i: u32) -> Vec<u8> {
    let mut b = format!("message {i:06} ").into_bytes();
    b.resize(1024, b'a' + (i % 26) as u8);
    b
}

fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                files_under(&p)
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_backlog_is_paged_out_and_delivered_in_order() {
    // 64 KiB per queue and 128 KiB in all: 5,000 messages of 1 KiB cannot stay in memory.
    let broker = TestBroker::start_with(|c| {
        c.storage.queue_cache_bytes = 64 * 1024;
        c.storage.ram_budget_bytes = 128 * 1024;
    })
    .await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    for q in ["paged.a", "paged.b"] {
        ch.queue_declare(ss(q), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .unwrap();
    }
    ch.confirm_select(Default::default()).await.unwrap();
    let n = 5_000u32;
    for i in 0..n {
        // Half persistent: in a non-durable queue they are transient all the same.
        let props = lapin::BasicProperties::default().with_delivery_mode(1 + (i % 2) as u8);
        for q in ["paged.a", "paged.b"] {
            publish_with(&ch, "", q, &body(i), props.clone()).await;
        }
    }
    ch.wait_for_confirms().await.unwrap();
    let transient = broker.data_dir().join("transient");
    assert!(
        files_under(&transient) >= 2,
        "both queues paged out to {transient:?}"
    );
    let budget = broker
        .running()
        .broker()
        .storage()
        .expect("a data directory")
        .page_budget()
        .clone();
    assert!(
        budget.used() <= 128 * 1024,
        "{} bytes in memory",
        budget.used()
    );
    let counts = crate::util::queue_state(&conn, "paged.a").await.unwrap();
    assert_eq!(counts.0, n);

    // Drain both with manual acks: every body comes back, in publish order.
    ch.basic_qos(200, BasicQosOptions::default()).await.unwrap();
    for q in ["paged.a", "paged.b"] {
        let mut consumer = ch
            .basic_consume(
                ss(q),
                ss(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for i in 0..n {
            let d = within("delivery", consumer.next()).await.unwrap().unwrap();
            assert_eq!(d.data, body(i), "{q} message {i}");
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
    }
    assert_eq!(budget.used(), 0, "no body left in memory");
    // Deleting the queues removes their pages.
    for q in ["paged.a", "paged.b"] {
        ch.queue_delete(ss(q), Default::default()).await.unwrap();
    }
    assert_eq!(files_under(&transient), 0);
    conn.close(200, ss("bye")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_messages_keep_ttl_max_length_and_dead_lettering() {
    let broker = TestBroker::start_with(|c| {
        c.storage.queue_cache_bytes = 4 * 1024;
        c.storage.ram_budget_bytes = 8 * 1024;
    })
    .await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        ss("dlq"),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut args = FieldTable::default();
    args.insert(ss("x-max-length"), lapin::types::AMQPValue::LongInt(100));
    args.insert(
        ss("x-dead-letter-exchange"),
        lapin::types::AMQPValue::LongString("".into()),
    );
    args.insert(
        ss("x-dead-letter-routing-key"),
        lapin::types::AMQPValue::LongString("dlq".into()),
    );
    ch.queue_declare(ss("bounded"), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    for i in 0..300u32 {
        publish_with(
            &ch,
            "",
            "bounded",
            &body(i),
            lapin::BasicProperties::default(),
        )
        .await;
    }
    ch.wait_for_confirms().await.unwrap();
    // The 200 oldest were dropped from the head (read back from disk) and dead-lettered
    // in order; the newest 100 stay.
    assert_eq!(
        crate::util::queue_state(&conn, "bounded").await.unwrap().0,
        100
    );
    assert_eq!(crate::util::queue_state(&conn, "dlq").await.unwrap().0, 200);
    for (q, first, count) in [("dlq", 0u32, 200u32), ("bounded", 200, 100)] {
        for i in first..first + count {
            let m = ch
                .basic_get(ss(q), lapin::options::BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .expect("a message");
            assert_eq!(m.delivery.data, body(i), "{q} message {i}");
        }
    }
    conn.close(200, ss("bye")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_beyond_the_index_costs_no_memory_per_message_and_drains_in_order() {
    // 100 index entries: of 20,000 messages, 19,900 are on disk only.
    let broker = TestBroker::start_with(|c| {
        c.storage.queue_cache_bytes = 16 * 1024;
        c.storage.ram_budget_bytes = 32 * 1024;
        c.storage.queue_index_entries = 100;
    })
    .await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        ss("deep"),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let n = 20_000u32;
    let small = |i: u32| format!("deep {i:06}").into_bytes();
    for i in 0..n {
        let confirm = ch
            .basic_publish(
                ss(""),
                ss("deep"),
                Default::default(),
                &small(i),
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap();
        drop(confirm);
    }
    ch.wait_for_confirms().await.unwrap();
    assert_eq!(crate::util::queue_state(&conn, "deep").await.unwrap().0, n);
    // Consume with a prefetch window, acking, and check the order and the bodies.
    ch.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            ss("deep"),
            ss(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..n {
        let d = within("delivery", consumer.next()).await.unwrap().unwrap();
        assert_eq!(d.data, small(i), "message {i}");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    conn.close(200, ss("bye")).await.unwrap();
}
