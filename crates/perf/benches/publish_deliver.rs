//! The publish → deliver path in process, without sockets: `Queue::publish` into an
//! in-memory queue with one consumer whose `DeliverySink` only counts.
//!
//! - `queue_publish_noack`: publish straight to the queue; the consumer is no-ack, so
//!   each message is delivered and settled at once.
//! - `route_publish_noack`: the same through `VHost::route` on the default exchange, as
//!   the server does for each basic.publish.
//! - `publish_ack_prefetch100`: a manual-ack consumer with prefetch 100; every 100
//!   messages the bench acks what was delivered (settle + credit back + dispatch).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use amq_protocol::types::FieldTable;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use warren_broker::{
    Consumer, Credit, Delivery, DeliverySink, Message, Queue, QueueOptions, QueuedMessage, VHost,
};

/// Counts deliveries; keeps them only when asked to (for acking later).
#[derive(Debug, Default)]
struct CountingSink {
    delivered: AtomicU64,
    keep: bool,
    kept: Mutex<Vec<Delivery>>,
}

impl DeliverySink for CountingSink {
    fn ready(&self) -> bool {
        true
    }
    fn deliver(&self, delivery: Delivery) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if self.keep {
            self.kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(delivery);
        }
    }
    fn cancelled(&self, _channel: u16, _tag: Arc<str>) {}
}

fn consumer(sink: Arc<CountingSink>, no_ack: bool, prefetch: u32) -> Consumer {
    Consumer {
        tag: "bench".into(),
        connection: 1,
        channel: 1,
        no_ack,
        exclusive: false,
        priority: 0,
        credit: Arc::new(Credit::new(prefetch)),
        channel_credit: Arc::new(Credit::new(0)),
        sink,
        arguments: Default::default(),
    }
}

fn message(size: usize) -> Arc<Message> {
    Arc::new(Message::new(
        "",
        "bench",
        Bytes::new(),
        Bytes::from(vec![0u8; size]),
    ))
}

fn publish_deliver(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish_deliver");
    g.throughput(Throughput::Elements(1));

    let q = Arc::new(Queue::new(
        "/",
        "bench",
        false,
        None,
        false,
        FieldTable::default(),
    ));
    let sink = Arc::new(CountingSink::default());
    q.add_consumer(consumer(sink.clone(), true, 0))
        .expect("add consumer");
    let msg = message(16);
    g.bench_function("queue_publish_noack", |b| {
        b.iter(|| q.publish(black_box(msg.clone())).expect("publish"));
    });
    assert!(sink.delivered.load(Ordering::Relaxed) > 0);
    assert_eq!(q.message_count(), 0);

    let vhost = VHost::new("/");
    let (rq, _, _) = vhost
        .declare_queue(
            QueueOptions {
                name: "bench".into(),
                ..QueueOptions::default()
            },
            1,
        )
        .expect("declare");
    let rsink = Arc::new(CountingSink::default());
    rq.add_consumer(consumer(rsink.clone(), true, 0))
        .expect("add consumer");
    g.bench_function("route_publish_noack", |b| {
        b.iter(|| {
            for target in vhost.route("", "bench", &msg).expect("route") {
                target.publish(msg.clone()).expect("publish");
            }
        });
    });
    assert!(rsink.delivered.load(Ordering::Relaxed) > 0);

    let aq = Arc::new(Queue::new(
        "/",
        "acked",
        false,
        None,
        false,
        FieldTable::default(),
    ));
    let asink = Arc::new(CountingSink {
        keep: true,
        ..CountingSink::default()
    });
    let ac = consumer(asink.clone(), false, 100);
    let credit = ac.credit.clone();
    aq.add_consumer(ac).expect("add consumer");
    let mut n = 0u32;
    g.bench_function("publish_ack_prefetch100", |b| {
        b.iter(|| {
            aq.publish(msg.clone()).expect("publish");
            n += 1;
            if n == 100 {
                n = 0;
                let batch: Vec<Delivery> =
                    std::mem::take(&mut *asink.kept.lock().unwrap_or_else(|e| e.into_inner()));
                let settled: Vec<QueuedMessage> = batch.into_iter().map(|d| d.message).collect();
                aq.settle(&settled);
                credit.give(settled.len() as u32);
                aq.dispatch();
            }
        });
    });
    g.finish();
}

criterion_group!(benches, publish_deliver);
criterion_main!(benches);
