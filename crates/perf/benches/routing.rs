//! Topic routing with 10,000 bindings: `VHost::route` on a topic exchange.
//!
//! 1,000 queues, each bound with 10 patterns: 7 exact keys, 2 with `*` and 1 with `#`,
//! in the shape `region.service.event` that topic exchanges are used for. The routed
//! keys match a handful of bindings each, plus one key that matches nothing.

use std::hint::black_box;
use std::sync::Arc;

use amq_protocol::types::FieldTable;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use warren_broker::{ExchangeOptions, Message, QueueOptions, VHost};

const QUEUES: usize = 1_000;
const PATTERNS_PER_QUEUE: usize = 10;
const EXCHANGE: &str = "bench.topic";

fn setup() -> Arc<VHost> {
    let vhost = VHost::new("/");
    let x = ExchangeOptions {
        name: EXCHANGE.into(),
        kind: "topic".into(),
        ..ExchangeOptions::default()
    };
    vhost.declare_exchange(&x).expect("declare topic exchange");
    let args = FieldTable::default();
    for q in 0..QUEUES {
        let name = format!("q{q}");
        vhost
            .declare_queue(
                QueueOptions {
                    name: name.clone(),
                    ..QueueOptions::default()
                },
                1,
            )
            .expect("declare queue");
        for p in 0..PATTERNS_PER_QUEUE {
            let region = (q * PATTERNS_PER_QUEUE + p) % 50;
            let service = q;
            let pattern = match p {
                0..=6 => format!("r{region}.s{service}.e{p}"),
                7 => format!("r{region}.*.e{p}"),
                8 => format!("*.s{service}.e{p}"),
                _ => format!("r{region}.s{service}.#"),
            };
            vhost
                .bind_queue(&name, EXCHANGE, &pattern, &args, 1)
                .expect("bind");
        }
    }
    vhost
}

fn routing(c: &mut Criterion) {
    let vhost = setup();
    let keys: Vec<String> = (0..64)
        .map(|i| match i % 4 {
            0 => format!("r{}.s{}.e{}", (i * 7) % 50, i * 13 % QUEUES, i % 7),
            1 => format!("r{}.s{}.e7", i % 50, i * 31 % QUEUES),
            2 => format!("r{}.s{}.deep.nested.event", i % 50, i * 17 % QUEUES),
            _ => "nowhere.nobody.nothing".to_string(),
        })
        .collect();
    let msg = Arc::new(Message::new(
        EXCHANGE,
        "k",
        Bytes::new(),
        Bytes::from_static(b"0123456789abcdef"),
    ));
    let mut g = c.benchmark_group("topic_10k_bindings");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("vhost_route", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let queues = vhost
                .route(EXCHANGE, black_box(&keys[i]), &msg)
                .expect("route");
            black_box(queues.len())
        });
    });
    g.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
