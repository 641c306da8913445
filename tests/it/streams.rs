//! Streams over AMQP 0-9-1 (#14): what the pika conformance cases cannot show on a
//! broker they do not start: a stream survives a restart with its offsets, retention
//! removes old segments, and a stream larger than the chunk cache reads back whole.

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};

use crate::util::{ss, within, TestBroker};

fn stream_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    for (k, v) in extra {
        t.insert((*k).into(), v.clone());
    }
    t
}

async fn declare(ch: &lapin::Channel, name: &str, extra: &[(&str, AMQPValue)]) {
    ch.queue_declare(
        ss(name),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        stream_args(extra),
    )
    .await
    .unwrap_or_else(|e| panic!("declare stream {name}: {e}"));
}

async fn publish_all(ch: &lapin::Channel, name: &str, bodies: impl Iterator<Item = Vec<u8>>) {
    let mut confirms = Vec::new();
    for b in bodies {
        confirms.push(
            ch.basic_publish(
                ss(""),
                ss(name),
                Default::default(),
                &b,
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert_eq!(within("confirm", c).await.unwrap(), Confirmation::Ack(None));
    }
}

/// Reads `n` messages from `offset` on a new channel: (x-stream-offset, body) each.
async fn read(
    conn: &lapin::Connection,
    name: &str,
    offset: AMQPValue,
    n: usize,
) -> Vec<(i64, Vec<u8>)> {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), offset);
    let mut consumer = ch
        .basic_consume(ss(name), ss(""), BasicConsumeOptions::default(), args)
        .await
        .unwrap();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let d = match within("a stream delivery", consumer.next()).await {
            Some(Ok(d)) => d,
            other => panic!("consumer ended: {other:?}"),
        };
        let off = match d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned())
        {
            Some(AMQPValue::LongLongInt(o)) => o,
            other => panic!("x-stream-offset header: {other:?}"),
        };
        out.push((off, d.data.clone()));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    ch.close(200, ss("done")).await.unwrap();
    out
}

fn body(i: usize, len: usize) -> Vec<u8> {
    let mut b = format!("message {i:07} ").into_bytes();
    b.resize(len, b'a' + (i % 26) as u8);
    b
}

async fn start(data: &std::path::Path) -> TestBroker {
    let data = data.to_path_buf();
    TestBroker::start_with(move |c| c.data_dir = data).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_survives_a_restart_with_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    declare(&ch, "st.restart", &[]).await;
    publish_all(&ch, "st.restart", (0..3000).map(|i| body(i, 200))).await;
    let before = read(
        &conn,
        "st.restart",
        AMQPValue::LongString("first".into()),
        3000,
    )
    .await;
    drop(ch);
    drop(conn);
    broker.shutdown().await;

    let broker = start(dir.path()).await;
    let conn = broker.connect().await;
    let after = read(
        &conn,
        "st.restart",
        AMQPValue::LongString("first".into()),
        3000,
    )
    .await;
    assert_eq!(after, before, "every message, with its offset");
    assert_eq!(after[2999].0, 2999);
    // Offsets continue where they stopped.
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    publish_all(&ch, "st.restart", std::iter::once(b"after".to_vec())).await;
    let got = read(&conn, "st.restart", AMQPValue::LongLongInt(3000), 1).await;
    assert_eq!(got, vec![(3000, b"after".to_vec())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_size_removes_old_segments_and_readers_move_to_the_first_offset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    declare(
        &ch,
        "st.retention",
        &[
            ("x-max-length-bytes", AMQPValue::LongLongInt(200_000)),
            (
                "x-stream-max-segment-size-bytes",
                AMQPValue::LongLongInt(50_000),
            ),
        ],
    )
    .await;
    // 1 MB into a stream capped at 200 kB.
    publish_all(&ch, "st.retention", (0..1000).map(|i| body(i, 1000))).await;
    let (ready, _) = crate::util::queue_state(&conn, "st.retention")
        .await
        .unwrap();
    assert!(ready < 300, "{ready} messages kept");
    assert!(ready >= 150, "{ready} messages kept");
    // A reader asking for offset 0 starts at the first one kept; the last is 999.
    let all = read(
        &conn,
        "st.retention",
        AMQPValue::LongLongInt(0),
        ready as usize,
    )
    .await;
    assert_eq!(all.last().unwrap().0, 999);
    assert_eq!(all[0].0, 1000 - i64::from(ready));
    let files = std::fs::read_dir(dir.path().join("vhosts"))
        .unwrap()
        .flat_map(|v| std::fs::read_dir(v.unwrap().path().join("streams")).unwrap())
        .flat_map(|s| std::fs::read_dir(s.unwrap().path()).unwrap())
        .count();
    assert!(
        files <= 6,
        "{files} segment files for 200 kB in 50 kB segments"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_larger_than_its_chunk_cache_reads_back_in_order() {
    // 40 MB in chunks of at most 1 MiB, 8 of which stay decoded: most reads go to disk.
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    declare(&ch, "st.large", &[]).await;
    publish_all(&ch, "st.large", (0..10_000).map(|i| body(i, 4000))).await;
    // Two readers at different places, concurrently.
    let (a, b) = tokio::join!(
        read(
            &conn,
            "st.large",
            AMQPValue::LongString("first".into()),
            10_000
        ),
        read(&conn, "st.large", AMQPValue::LongLongInt(5000), 5000),
    );
    for (i, (off, data)) in a.iter().enumerate() {
        assert_eq!(
            (*off, data.as_slice()),
            (i as i64, body(i, 4000).as_slice())
        );
    }
    assert_eq!(b[0].0, 5000);
    assert_eq!(b[4999].0, 9999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_and_segment_size_from_a_policy_apply_to_an_existing_stream() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    declare(&ch, "st.policy", &[]).await;
    // Small segments from the policy: 20 records of 1 KB make several segment files.
    let mut definition = serde_json::Map::new();
    definition.insert("stream-max-segment-size-bytes".into(), 5_000.into());
    let record = warren_broker::policy::PolicyRecord {
        vhost: "/".into(),
        name: "short".into(),
        pattern: "^st\\.policy$".into(),
        apply_to: "queues".into(),
        priority: 0,
        definition: definition.clone(),
    };
    broker
        .running()
        .broker()
        .put_policy(warren_broker::policy::PolicyKind::Regular, record.clone())
        .unwrap();
    publish_all(&ch, "st.policy", (0..20).map(|i| body(i, 1000))).await;
    let q = broker
        .running()
        .broker()
        .vhost("/")
        .unwrap()
        .queue("st.policy", 0)
        .unwrap();
    let segments = q.with_stream_log(|l| l.segment_count()).unwrap();
    assert!(segments >= 3, "{segments} segments of 5 kB for 20 kB");
    // Then a max-age of one second: once the messages are older, every segment but
    // the one being written goes (at the latest at the next tick).
    definition.insert("max-age".into(), "1s".into());
    broker
        .running()
        .broker()
        .put_policy(
            warren_broker::policy::PolicyKind::Regular,
            warren_broker::policy::PolicyRecord {
                definition,
                ..record
            },
        )
        .unwrap();
    crate::util::eventually(
        std::time::Duration::from_secs(10),
        "old segments to go",
        || q.with_stream_log(|l| l.segment_count()).unwrap() == 1,
    )
    .await;
    assert!(q.message_count() < 20);
    // A bad max-age is refused with RabbitMQ's text.
    let mut bad = serde_json::Map::new();
    bad.insert("max-age".into(), "10X".into());
    let err = broker
        .running()
        .broker()
        .put_policy(
            warren_broker::policy::PolicyKind::Regular,
            warren_broker::policy::PolicyRecord {
                vhost: "/".into(),
                name: "bad".into(),
                pattern: ".*".into(),
                apply_to: "queues".into(),
                priority: 0,
                definition: bad,
            },
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("<<\"10X\">> is not a valid max age"),
        "{err}"
    );
}
