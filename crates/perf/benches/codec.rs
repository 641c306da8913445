//! Codec throughput: frames parsed and written per second.
//!
//! - `decode/*`: `FrameDecoder::decode` over a buffer of publish triples (basic.publish
//!   method + content header + body), as a publisher sends them.
//! - `encode/method`: `encode::method` for basic.publish (serialised by amq-protocol).
//! - `encode/deliver+content`: the hand-written delivery path, `encode::deliver` then
//!   `encode::content` (header + body), as the server writes each delivery.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use warren_codec::protocol::{basic, AMQPClass};
use warren_codec::{encode, FrameDecoder};

const FRAME_MAX: u32 = 131_072;
/// Publish triples per decoded buffer.
const TRIPLES: usize = 1_000;

fn publish_method() -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: "amq.direct".into(),
        routing_key: "warren-perf-q0".into(),
        mandatory: false,
        immediate: false,
    }))
}

/// `TRIPLES` publishes with bodies of `size` bytes, as one wire buffer.
fn publish_stream(size: usize) -> BytesMut {
    let method = publish_method();
    let body = vec![0xAB; size];
    let mut out = BytesMut::new();
    for _ in 0..TRIPLES {
        encode::method(&mut out, 1, &method);
        encode::content(&mut out, 1, &encode::EMPTY_PROPERTIES, &body, FRAME_MAX);
    }
    out
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for size in [16usize, 1024] {
        let wire = publish_stream(size);
        // Three frames per publish (method, header, one body frame).
        g.throughput(Throughput::Elements((TRIPLES * 3) as u64));
        g.bench_function(format!("publish_triples_{size}B"), |b| {
            let decoder = FrameDecoder::new(FRAME_MAX);
            b.iter_batched_ref(
                || wire.clone(),
                |buf| {
                    let mut n = 0usize;
                    while let Ok(Some(frame)) = decoder.decode(buf) {
                        black_box(&frame);
                        n += 1;
                    }
                    assert_eq!(n, TRIPLES * 3);
                },
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

fn encode_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    let method = publish_method();
    g.throughput(Throughput::Elements(1));
    g.bench_function("method_basic_publish", |b| {
        let mut out = BytesMut::with_capacity(1 << 20);
        b.iter(|| {
            if out.len() > (1 << 19) {
                out.clear();
            }
            encode::method(&mut out, 1, black_box(&method));
        });
    });
    for size in [16usize, 1024] {
        let body = vec![0xCD; size];
        // Three frames per delivery: basic.deliver, content header, one body frame.
        g.throughput(Throughput::Elements(3));
        g.bench_function(format!("deliver_content_{size}B"), |b| {
            let mut out = BytesMut::with_capacity(1 << 20);
            let mut tag = 0u64;
            b.iter(|| {
                if out.len() > (1 << 19) {
                    out.clear();
                }
                tag += 1;
                encode::deliver(&mut out, 1, "ctag-1", tag, false, "", "warren-perf-q0");
                encode::content(
                    &mut out,
                    1,
                    &encode::EMPTY_PROPERTIES,
                    black_box(&body),
                    FRAME_MAX,
                );
            });
        });
    }
    g.finish();
}

criterion_group!(benches, decode, encode_frames);
criterion_main!(benches);
