//! Stream benchmark over the stream protocol (port 5552), for Warren and RabbitMQ alike:
//!
//! 1. publish throughput with confirms: `--messages` messages of `--size` bytes from one
//!    producer, batches of 100 in flight-controlled sends, until every one is confirmed;
//! 2. consume throughput from `first` with `--readers` concurrent consumers, each
//!    reading every message;
//! 3. time to the first delivery when starting at an offset in the middle of a stream of
//!    `--big-gib` GiB (filled first, 64 KiB messages), and at `last`.
//!
//! cargo run --release --example stream_bench -- --host 127.0.0.1 --port 5552
//!
//! Prints one line per measure and a JSON line at the end.

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use rabbitmq_stream_client::types::{Message, OffsetSpecification};
use rabbitmq_stream_client::Environment;

struct Args {
    host: String,
    port: u16,
    messages: u64,
    size: usize,
    readers: usize,
    big_gib: f64,
}

fn args() -> Args {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 5552,
        messages: 1_000_000,
        size: 1024,
        readers: 4,
        big_gib: 1.0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() {
        let v = argv[i + 1].clone();
        match argv[i].as_str() {
            "--host" => a.host = v,
            "--port" => a.port = v.parse().expect("--port"),
            "--messages" => a.messages = v.parse().expect("--messages"),
            "--size" => a.size = v.parse().expect("--size"),
            "--readers" => a.readers = v.parse().expect("--readers"),
            "--big-gib" => a.big_gib = v.parse().expect("--big-gib"),
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    a
}

async fn env(a: &Args) -> Environment {
    Environment::builder()
        .host(&a.host)
        .port(a.port)
        .load_balancer_mode(true)
        .build()
        .await
        .expect("connect")
}

/// Publishes `n` messages of `size` bytes with confirms: 4 producers, each sending
/// batches of at most 512 KiB and waiting for their confirms.
async fn publish(env: &Environment, stream: &str, n: u64, size: usize) -> Duration {
    let per_batch = ((512 * 1024) / size.max(1)).clamp(1, 100) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..4u64 {
        let env = env.clone();
        let stream = stream.to_string();
        let mine = n / 4 + u64::from(p < n % 4);
        tasks.push(tokio::spawn(async move {
            let producer = env.producer().build(&stream).await.expect("producer");
            let body = vec![b'x'; size];
            let mut sent = 0u64;
            while sent < mine {
                let k = per_batch.min(mine - sent);
                let batch: Vec<Message> = (0..k)
                    .map(|_| Message::builder().body(body.clone()).build())
                    .collect();
                let statuses = producer
                    .batch_send_with_confirm(batch)
                    .await
                    .expect("batch send");
                assert!(statuses.iter().all(|s| s.confirmed()), "all confirmed");
                sent += k;
            }
            producer.close().await.expect("close");
        }));
    }
    for t in tasks {
        t.await.expect("producer task");
    }
    started.elapsed()
}

/// Reads `n` messages from `offset`; returns the time to the first and to the last.
async fn consume(
    env: &Environment,
    stream: &str,
    offset: OffsetSpecification,
    n: u64,
) -> (Duration, Duration) {
    let started = Instant::now();
    let mut consumer = env
        .consumer()
        .offset(offset)
        .build(stream)
        .await
        .expect("consumer");
    let mut first = None;
    let mut got = 0u64;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(60), consumer.next()).await {
            Ok(Some(Ok(_))) => {
                got += 1;
                first.get_or_insert_with(|| started.elapsed());
            }
            other => panic!(
                "consumer stopped after {got}: {other:?}",
                other = other.is_ok()
            ),
        }
    }
    let total = started.elapsed();
    let _ = consumer.handle().close().await;
    (first.unwrap_or(total), total)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let env = env(&a).await;
    let stream = format!("bench-{}", std::process::id());
    let _ = env.delete_stream(&stream).await;
    env.stream_creator().create(&stream).await.expect("create");

    let t = publish(&env, &stream, a.messages, a.size).await;
    let publish_rate = a.messages as f64 / t.as_secs_f64();
    println!(
        "publish with confirms: {} x {} B in {:.2} s = {:.0} msg/s",
        a.messages,
        a.size,
        t.as_secs_f64(),
        publish_rate
    );

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.readers {
        let env = env.clone();
        let stream = stream.clone();
        let n = a.messages;
        tasks.push(tokio::spawn(async move {
            consume(&env, &stream, OffsetSpecification::First, n).await
        }));
    }
    for t in tasks {
        t.await.expect("reader");
    }
    let t = started.elapsed();
    let consume_rate = (a.messages * a.readers as u64) as f64 / t.as_secs_f64();
    println!(
        "consume from first: {} readers x {} messages in {:.2} s = {:.0} msg/s in all",
        a.readers,
        a.messages,
        t.as_secs_f64(),
        consume_rate
    );
    let _ = env.delete_stream(&stream).await;

    // A big stream of 64 KiB messages, then a reader starting in its middle.
    let big = format!("bench-big-{}", std::process::id());
    let _ = env.delete_stream(&big).await;
    env.stream_creator().create(&big).await.expect("create big");
    let big_size = 64 * 1024;
    let big_n = ((a.big_gib * (1u64 << 30) as f64) / big_size as f64) as u64;
    let t = publish(&env, &big, big_n, big_size).await;
    println!(
        "filled {:.1} GiB ({} x 64 KiB) in {:.1} s",
        a.big_gib,
        big_n,
        t.as_secs_f64()
    );
    let fill_secs = t.as_secs_f64();
    let (mid_first, _) = consume(&env, &big, OffsetSpecification::Offset(big_n / 2), 1).await;
    let (last_first, _) = consume(&env, &big, OffsetSpecification::Last, 1).await;
    println!(
        "first delivery from offset {} (the middle): {:.1} ms; from last: {:.1} ms",
        big_n / 2,
        mid_first.as_secs_f64() * 1000.0,
        last_first.as_secs_f64() * 1000.0
    );
    let _ = env.delete_stream(&big).await;
    println!(
        "{{\"publish_msg_per_s\":{publish_rate:.0},\"consume_msg_per_s\":{consume_rate:.0},\"readers\":{},\"big_gib\":{},\"fill_secs\":{fill_secs:.1},\"first_from_middle_ms\":{:.1},\"first_from_last_ms\":{:.1}}}",
        a.readers,
        a.big_gib,
        mid_first.as_secs_f64() * 1000.0,
        last_first.as_secs_f64() * 1000.0
    );
}
