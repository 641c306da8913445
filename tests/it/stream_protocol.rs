//! The stream protocol with the Rust `rabbitmq-stream-client` (#14): create a stream,
//! publish with confirms, consume from an offset, server-side offset tracking across
//! connections, deduplication by producer name, the same messages over AMQP 0-9-1, super
//! streams (create, route by key, consume every partition, delete) and single active
//! consumer.

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

fn region(m: &Message) -> String {
    m.application_properties()
        .and_then(|p| p.get("region"))
        .and_then(|v| String::try_from(v.clone()).ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn super_stream_created_routed_by_key_consumed_and_deleted() {
    use rabbitmq_stream_client::types::{RoutingKeyRoutingStrategy, RoutingStrategy};
    let (broker, _listener, env) = setup().await;
    let keys = vec!["emea".to_string(), "apac".to_string(), "amer".to_string()];
    env.stream_creator()
        .create_super_stream("ss.rust", 3, Some(keys.clone()))
        .await
        .unwrap();
    // The partitions are streams bound to the exchange in order.
    let vhost = broker.running().admin().broker().vhost("/").unwrap();
    assert_eq!(
        vhost.super_stream_partitions("ss.rust").unwrap(),
        vec!["ss.rust-emea", "ss.rust-apac", "ss.rust-amer"]
    );
    let mut producer = env
        .super_stream_producer(RoutingStrategy::RoutingKeyStrategy(
            RoutingKeyRoutingStrategy {
                routing_extractor: &region,
            },
        ))
        .build("ss.rust")
        .await
        .unwrap();
    let confirmed = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    for i in 0..30 {
        let msg = Message::builder()
            .body(format!("r{i}"))
            .application_properties()
            .insert("region", keys[i % 3].as_str())
            .message_builder()
            .build();
        let confirmed = confirmed.clone();
        producer
            .send(msg, move |_| {
                let confirmed = confirmed.clone();
                async move { confirmed.add_permits(1) }
            })
            .await
            .unwrap();
    }
    within("30 confirms", confirmed.acquire_many(30))
        .await
        .unwrap()
        .forget();
    producer.close().await.unwrap();
    let mut consumer = env
        .super_stream_consumer()
        .offset(OffsetSpecification::First)
        .build("ss.rust")
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 30 {
        let d = within("a super stream delivery", consumer.next())
            .await
            .expect("consumer open")
            .expect("delivery");
        let body = String::from_utf8(d.message().data().unwrap_or_default().to_vec()).unwrap();
        got.push((d.stream().clone(), body));
    }
    let _ = consumer.handle().close().await;
    for (stream, body) in &got {
        let i: usize = body[1..].parse().unwrap();
        assert_eq!(stream, &format!("ss.rust-{}", keys[i % 3]), "{body}");
    }
    env.delete_super_stream("ss.rust").await.unwrap();
    assert!(vhost.super_stream_partitions("ss.rust").is_none());
    assert!(vhost.queue("ss.rust-emea", 0).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_takes_over_when_the_active_one_leaves() {
    let (_broker, _listener, env) = setup().await;
    env.stream_creator().create("sp.sac").await.unwrap();
    let producer = env.producer().build("sp.sac").await.unwrap();
    let send = |body: String| {
        let producer = &producer;
        async move {
            let s = producer
                .send_with_confirm(Message::builder().body(body).build())
                .await
                .unwrap();
            assert!(s.confirmed());
        }
    };
    let consumer = |env: &Environment| {
        env.consumer()
            .offset(OffsetSpecification::First)
            .name("sac-app")
            .enable_single_active_consumer(true)
            .consumer_update(|active, _ctx| async move {
                // The next message after what the group has read: here, the client
                // starts where it subscribed when active, and "next" otherwise.
                if active == 1 {
                    OffsetSpecification::First
                } else {
                    OffsetSpecification::Next
                }
            })
            .build("sp.sac")
    };
    let mut first = consumer(&env).await.unwrap();
    let mut second = consumer(&env).await.unwrap();
    for i in 0..5 {
        send(format!("a{i}")).await;
    }
    for i in 0..5 {
        let d = within("the active consumer's delivery", first.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.offset(), i);
    }
    // The waiting one has received nothing while the first was active.
    assert!(
        futures_lite::future::poll_once(second.next())
            .await
            .is_none(),
        "the waiting member received a message"
    );
    first.handle().close().await.unwrap();
    // The second is made active and starts where its answer says (first).
    let d = within("the new active consumer's delivery", second.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.offset(), 0);
    let _ = second.handle().close().await;
}
