//! The stream protocol with the Rust `rabbitmq-stream-client` (#14): create a stream,
//! publish with confirms, consume from an offset, server-side offset tracking across
//! connections, deduplication by producer name, and the same messages over AMQP 0-9-1.

use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use rabbitmq_stream_client::types::{ByteCapacity, Message, OffsetSpecification};
use rabbitmq_stream_client::Environment;

use crate::util::{ss, within, TestBroker};

/// A broker with a stream listener on 127.0.0.1:0, and a client environment for it.
async fn setup() -> (TestBroker, warren_stream::Running, Environment) {
    let broker = TestBroker::start().await;
    let listener = warren_stream::start(broker.running().admin(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("stream listener");
    let env = Environment::builder()
        .host("127.0.0.1")
        .port(listener.local_addr().port())
        .build()
        .await
        .expect("the client connects");
    (broker, listener, env)
}

/// The next `n` deliveries of a new consumer at `offset`: (offset, body).
async fn read(
    env: &Environment,
    stream: &str,
    offset: OffsetSpecification,
    n: usize,
) -> Vec<(u64, Vec<u8>)> {
    let mut consumer = env.consumer().offset(offset).build(stream).await.unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let d = within("a stream delivery", consumer.next())
            .await
            .expect("consumer open")
            .expect("delivery");
        out.push((d.offset(), d.message().data().unwrap_or_default().to_vec()));
    }
    consumer.handle().close().await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_confirms_and_consume_from_offsets() {
    let (_broker, _listener, env) = setup().await;
    env.stream_creator()
        .max_length(ByteCapacity::MB(100))
        .create("sp.rust")
        .await
        .unwrap();
    let producer = env.producer().build("sp.rust").await.unwrap();
    for i in 0..20u32 {
        let status = producer
            .send_with_confirm(Message::builder().body(format!("m{i}")).build())
            .await
            .unwrap();
        assert!(status.confirmed(), "message {i} confirmed");
    }
    producer.close().await.unwrap();
    let all = read(&env, "sp.rust", OffsetSpecification::First, 20).await;
    assert_eq!(
        all.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(all[7].1, b"m7");
    let from = read(&env, "sp.rust", OffsetSpecification::Offset(15), 5).await;
    assert_eq!(from[0], (15, b"m15".to_vec()));
    assert_eq!(from[4].0, 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_offsets_and_deduplication_survive_new_connections() {
    let (broker, listener, env) = setup().await;
    env.stream_creator().create("sp.track").await.unwrap();
    let mut producer = env
        .producer()
        .name("writer-1")
        .build("sp.track")
        .await
        .unwrap();
    for i in 0..3u32 {
        producer
            .send_with_confirm(
                Message::builder()
                    .body(format!("a{i}"))
                    .publishing_id(u64::from(i) + 1)
                    .build(),
            )
            .await
            .unwrap();
    }
    producer.close().await.unwrap();
    // The same producer name again: ids 2 and 3 are duplicates, 4 is new.
    let mut producer = env
        .producer()
        .name("writer-1")
        .build("sp.track")
        .await
        .unwrap();
    for i in 2..5u64 {
        producer
            .send_with_confirm(
                Message::builder()
                    .body(format!("b{i}"))
                    .publishing_id(i)
                    .build(),
            )
            .await
            .unwrap();
    }
    producer.close().await.unwrap();
    let got = read(&env, "sp.track", OffsetSpecification::First, 4).await;
    let bodies: Vec<&[u8]> = got.iter().map(|(_, b)| b.as_slice()).collect();
    assert_eq!(bodies, vec![&b"a0"[..], b"a1", b"a2", b"b4"]);

    let consumer = env
        .consumer()
        .name("reader-1")
        .offset(OffsetSpecification::First)
        .build("sp.track")
        .await
        .unwrap();
    consumer.store_offset(2).await.unwrap();
    consumer.handle().close().await.unwrap();
    let again = Environment::builder()
        .host("127.0.0.1")
        .port(listener.local_addr().port())
        .build()
        .await
        .unwrap();
    let consumer = again
        .consumer()
        .name("reader-1")
        .offset(OffsetSpecification::Next)
        .build("sp.track")
        .await
        .unwrap();
    assert_eq!(consumer.query_offset().await.unwrap(), 2);
    consumer.handle().close().await.unwrap();

    // The same stream over AMQP 0-9-1: the bodies, with their offsets as a header.
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let mut c = ch
        .basic_consume(ss("sp.track"), ss(""), BasicConsumeOptions::default(), args)
        .await
        .unwrap();
    let d = within("an AMQP delivery", c.next()).await.unwrap().unwrap();
    assert_eq!(d.data, b"a0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_and_deliveries_keep_the_frames_in_step() {
    // 4 producers send 100 KiB batches while a consumer reads: confirms and deliveries
    // interleave with frames that arrive in several reads. (A frame reader that was not
    // cancel-safe lost bytes here and then read message bodies as frame sizes.)
    let (_broker, _listener, env) = setup().await;
    env.stream_creator().create("sp.busy").await.unwrap();
    let reader = {
        let env = env.clone();
        tokio::spawn(async move { read(&env, "sp.busy", OffsetSpecification::First, 8000).await })
    };
    let mut producers = Vec::new();
    for p in 0..4u8 {
        let env = env.clone();
        producers.push(tokio::spawn(async move {
            let producer = env.producer().build("sp.busy").await.unwrap();
            for _ in 0..20 {
                let batch: Vec<Message> = (0..100)
                    .map(|_| Message::builder().body(vec![b'a' + p; 1024]).build())
                    .collect();
                let statuses = producer.batch_send_with_confirm(batch).await.unwrap();
                assert!(statuses.iter().all(|s| s.confirmed()));
            }
            producer.close().await.unwrap();
        }));
    }
    for p in producers {
        within("a producer", p).await.unwrap();
    }
    let got = within("the reader", reader).await.unwrap();
    assert_eq!(got.len(), 8000);
    assert!(got.iter().all(|(_, b)| b.len() == 1024));
    assert_eq!(got.last().unwrap().0, 7999);
}
