//! Dead-letter exchanges: the triggers (reject / nack without requeue, expiry), the
//! `x-death` and `x-first-death-*` headers, and `x-dead-letter-routing-key`.

use std::time::{SystemTime, UNIX_EPOCH};

use amq_protocol::types::{AMQPValue, FieldTable};
use lapin::options::{BasicNackOptions, BasicRejectOptions};
use lapin::{BasicProperties, ExchangeKind};

use super::{
    bind, confirm_channel, death_summary, declare_args, declare_exchange, field, get, header, int,
    table, text, texts, wait_get, x_death,
};
use crate::util::{consume, next_delivery, publish, publish_with, ready_count, ss, TestBroker};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A source queue that dead-letters through the default exchange into `dead`.
async fn dlx_pair(ch: &lapin::Channel, src: &str, dead: &str, extra: &[(&str, AMQPValue)]) {
    declare_args(ch, dead, table(&[])).await;
    let mut args = vec![
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text(dead)),
    ];
    args.extend(extra.iter().cloned());
    declare_args(ch, src, table(&args)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_message_is_dead_lettered_with_x_death() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_exchange(&ch, "dlx", ExchangeKind::Direct, FieldTable::default()).await;
    declare_args(&ch, "dead", table(&[])).await;
    bind(&ch, "dead", "dlx", "rk").await;
    declare_args(
        &ch,
        "src",
        table(&[("x-dead-letter-exchange", text("dlx"))]),
    )
    .await;
    declare_exchange(&ch, "x", ExchangeKind::Direct, FieldTable::default()).await;
    bind(&ch, "src", "x", "rk").await;

    let before = now_secs();
    let props = BasicProperties::default()
        .with_message_id(ss("mid"))
        .with_correlation_id(ss("cid"))
        .with_priority(3)
        .with_headers(table(&[("h", text("v"))]));
    publish_with(&pub_ch, "x", "rk", b"body", props).await;
    let m = get(&ch, "src", false).await.expect("message in src");
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();

    let d = wait_get(&ch, "dead").await.delivery;
    let after = now_secs();
    assert_eq!(d.data, b"body");
    assert_eq!((d.exchange.as_str(), d.routing_key.as_str()), ("dlx", "rk"));
    assert!(!d.redelivered);
    let p = &d.properties;
    assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("mid"));
    assert_eq!(p.correlation_id().as_ref().map(|s| s.as_str()), Some("cid"));
    assert_eq!(p.priority(), &Some(3));
    assert_eq!(header(p, "h"), Some(&text("v")));

    let deaths = x_death(p);
    assert_eq!(deaths.len(), 1, "{deaths:?}");
    let e = &deaths[0];
    let keys: Vec<&str> = e.inner().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "count",
            "exchange",
            "queue",
            "reason",
            "routing-keys",
            "time"
        ],
        "x-death fields (sorted by lapin)"
    );
    assert_eq!(field(e, "count"), &AMQPValue::LongLongInt(1));
    assert_eq!(field(e, "reason"), &text("rejected"));
    assert_eq!(field(e, "queue"), &text("src"));
    assert_eq!(field(e, "exchange"), &text("x"));
    assert_eq!(field(e, "routing-keys"), &texts(&["rk"]));
    match field(e, "time") {
        AMQPValue::Timestamp(t) => assert!(
            before - 1 <= *t && *t <= after + 1,
            "time {t} not within [{before}, {after}]"
        ),
        other => panic!("x-death time is not a timestamp: {other:?}"),
    }

    assert_eq!(header(p, "x-first-death-exchange"), Some(&text("x")));
    assert_eq!(header(p, "x-first-death-queue"), Some(&text("src")));
    assert_eq!(header(p, "x-first-death-reason"), Some(&text("rejected")));
    // 3.10 sets no x-last-death-* headers.
    let names: Vec<&str> = p
        .headers()
        .as_ref()
        .unwrap()
        .inner()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "h",
            "x-death",
            "x-first-death-exchange",
            "x-first-death-queue",
            "x-first-death-reason"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_without_requeue_from_a_consumer_dead_letters() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    dlx_pair(&ch, "nack.src", "nack.dead", &[]).await;
    let mut c = consume(&ch, "nack.src").await;
    publish(&pub_ch, "", "nack.src", b"bad").await;
    let d = next_delivery(&mut c).await;
    d.acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: false,
        })
        .await
        .unwrap();
    let dead = wait_get(&pub_ch, "nack.dead").await.delivery;
    assert_eq!(dead.data, b"bad");
    assert_eq!(
        (dead.exchange.as_str(), dead.routing_key.as_str()),
        ("", "nack.dead")
    );
    let deaths = x_death(&dead.properties);
    assert_eq!(deaths.len(), 1);
    assert_eq!(
        death_summary(&deaths[0]),
        (
            "nack.src".into(),
            "rejected".into(),
            AMQPValue::LongLongInt(1)
        )
    );
    // x-death records the key the message was published with.
    assert_eq!(field(&deaths[0], "routing-keys"), &texts(&["nack.src"]));
    assert_eq!(field(&deaths[0], "exchange"), &text(""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_message_is_not_dead_lettered() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    dlx_pair(&ch, "rq.src", "rq.dead", &[]).await;
    publish(&pub_ch, "", "rq.src", b"x").await;
    let m = get(&ch, "rq.src", false).await.unwrap();
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let again = wait_get(&ch, "rq.src").await;
    assert!(again.delivery.redelivered);
    assert_eq!(ready_count(&conn, "rq.dead").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_message_is_dead_lettered_with_reason_expired() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    dlx_pair(&ch, "exp.src", "exp.dead", &[("x-message-ttl", int(50))]).await;
    publish(&pub_ch, "", "exp.src", b"old").await;
    let d = wait_get(&ch, "exp.dead").await.delivery;
    assert_eq!(d.data, b"old");
    let deaths = x_death(&d.properties);
    assert_eq!(deaths.len(), 1);
    assert_eq!(
        death_summary(&deaths[0]),
        (
            "exp.src".into(),
            "expired".into(),
            AMQPValue::LongLongInt(1)
        )
    );
    // A queue TTL leaves no original-expiration.
    assert!(!deaths[0].contains_key("original-expiration"));
    assert_eq!(
        header(&d.properties, "x-first-death-reason"),
        Some(&text("expired"))
    );
    assert_eq!(d.properties.expiration(), &None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_ttl_dead_letter_moves_expiration_into_x_death() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    dlx_pair(&ch, "pm.src", "pm.dead", &[]).await;
    let props = BasicProperties::default().with_expiration(ss("50"));
    publish_with(&pub_ch, "", "pm.src", b"x", props).await;
    let d = wait_get(&ch, "pm.dead").await.delivery;
    assert_eq!(d.properties.expiration(), &None, "expiration is removed");
    let deaths = x_death(&d.properties);
    assert_eq!(field(&deaths[0], "original-expiration"), &text("50"));
    assert_eq!(
        death_summary(&deaths[0]),
        ("pm.src".into(), "expired".into(), AMQPValue::LongLongInt(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_routing_key_replaces_the_routing_key() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_exchange(&ch, "dlrk.x", ExchangeKind::Direct, FieldTable::default()).await;
    declare_args(&ch, "dlrk.dead", table(&[])).await;
    declare_args(&ch, "dlrk.orig", table(&[])).await;
    bind(&ch, "dlrk.dead", "dlrk.x", "dl-key").await;
    // Would catch the message if the original key were used.
    bind(&ch, "dlrk.orig", "dlrk.x", "dlrk.src").await;
    declare_args(
        &ch,
        "dlrk.src",
        table(&[
            ("x-dead-letter-exchange", text("dlrk.x")),
            ("x-dead-letter-routing-key", text("dl-key")),
        ]),
    )
    .await;
    publish(&pub_ch, "", "dlrk.src", b"x").await;
    let m = get(&ch, "dlrk.src", false).await.unwrap();
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let d = wait_get(&ch, "dlrk.dead").await.delivery;
    assert_eq!(
        (d.exchange.as_str(), d.routing_key.as_str()),
        ("dlrk.x", "dl-key")
    );
    // x-death keeps the keys the message was published with.
    assert_eq!(
        field(&x_death(&d.properties)[0], "routing-keys"),
        &texts(&["dlrk.src"])
    );
    assert_eq!(ready_count(&conn, "dlrk.orig").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dead_letter_routing_key_the_original_key_is_used() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    declare_exchange(&ch, "orig.dlx", ExchangeKind::Direct, FieldTable::default()).await;
    declare_exchange(&ch, "orig.x", ExchangeKind::Direct, FieldTable::default()).await;
    declare_args(
        &ch,
        "orig.src",
        table(&[("x-dead-letter-exchange", text("orig.dlx"))]),
    )
    .await;
    bind(&ch, "orig.src", "orig.x", "a").await;
    declare_args(&ch, "orig.dead", table(&[])).await;
    bind(&ch, "orig.dead", "orig.dlx", "a").await;
    publish(&pub_ch, "orig.x", "a", b"x").await;
    let m = get(&ch, "orig.src", false).await.unwrap();
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let d = wait_get(&ch, "orig.dead").await.delivery;
    assert_eq!(
        (d.exchange.as_str(), d.routing_key.as_str()),
        ("orig.dlx", "a")
    );
}

/// A header value with its AMQP type tag, decoded in wire order.
#[derive(Debug, Clone, PartialEq)]
enum Wire {
    Int(char, i128),
    Bytes(char, Vec<u8>),
    Array(Vec<Wire>),
    Table(Vec<(String, Wire)>),
    Other(char),
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn uint(&mut self, n: usize) -> u64 {
        self.take(n)
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    }
    fn int(&mut self, n: usize) -> i128 {
        let v = self.uint(n);
        let shift = 64 - 8 * n as u32;
        i128::from(((v << shift) as i64) >> shift)
    }
    fn short_str(&mut self) -> String {
        let n = self.uint(1) as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
    fn table(&mut self) -> Vec<(String, Wire)> {
        let n = self.uint(4) as usize;
        let mut inner = Reader(self.take(n));
        let mut out = Vec::new();
        while !inner.0.is_empty() {
            let k = inner.short_str();
            out.push((k, inner.value()));
        }
        out
    }
    fn value(&mut self) -> Wire {
        let tag = self.uint(1) as u8 as char;
        match tag {
            't' | 'b' => Wire::Int(tag, self.int(1)),
            'B' => Wire::Int(tag, i128::from(self.uint(1))),
            's' => Wire::Int(tag, self.int(2)),
            'u' => Wire::Int(tag, i128::from(self.uint(2))),
            'I' => Wire::Int(tag, self.int(4)),
            'i' => Wire::Int(tag, i128::from(self.uint(4))),
            'l' => Wire::Int(tag, self.int(8)),
            'T' => Wire::Int(tag, i128::from(self.uint(8))),
            'S' | 'x' => {
                let n = self.uint(4) as usize;
                Wire::Bytes(tag, self.take(n).to_vec())
            }
            'A' => {
                let n = self.uint(4) as usize;
                let mut inner = Reader(self.take(n));
                let mut out = Vec::new();
                while !inner.0.is_empty() {
                    out.push(inner.value());
                }
                Wire::Array(out)
            }
            'F' => Wire::Table(self.table()),
            'f' => {
                self.take(4);
                Wire::Other(tag)
            }
            'd' => {
                self.take(8);
                Wire::Other(tag)
            }
            'D' => {
                self.take(5);
                Wire::Other(tag)
            }
            'V' => Wire::Other(tag),
            other => panic!("unknown field type {other:?}"),
        }
    }
}

/// The headers table of raw basic properties (flags + list), in wire order.
fn wire_headers(properties: &[u8]) -> Vec<(String, Wire)> {
    let mut r = Reader(properties);
    let flags = r.uint(2);
    assert!(flags & (1 << 13) != 0, "no headers property");
    for bit in [15, 14] {
        if flags & (1 << bit) != 0 {
            r.short_str();
        }
    }
    r.table()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_death_fields_and_headers_are_in_rabbitmq_wire_order() {
    use amq_protocol::protocol::{basic, AMQPClass};

    use crate::util::{Frame, RawClient};

    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = conn.create_channel().await.unwrap();
    dlx_pair(&ch, "wire.src", "wire.dead", &[]).await;
    let props =
        BasicProperties::default().with_headers(table(&[("zeta", text("z")), ("a", text("a"))]));
    publish_with(&pub_ch, "", "wire.src", b"x", props).await;
    let m = get(&ch, "wire.src", false).await.unwrap();
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    // Wait until it arrived, without taking it.
    crate::util::eventually_async(crate::util::TIMEOUT, "dead-lettered", || async {
        ready_count(&conn, "wire.dead").await == 1
    })
    .await;

    let mut raw = RawClient::open(broker.addr()).await;
    raw.open_channel(1).await;
    raw.send_method(
        1,
        &AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: ss("wire.dead"),
            no_ack: true,
        })),
    )
    .await;
    match raw.next_method().await {
        (1, AMQPClass::Basic(basic::AMQPMethod::GetOk(_))) => {}
        other => panic!("expected basic.get-ok, got {other:?}"),
    }
    let properties = match raw.next_frame().await {
        Some(Frame::Header { properties, .. }) => properties,
        other => panic!("expected a content header, got {other:?}"),
    };
    let headers = wire_headers(&properties);
    let keys: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    // The whole table is sorted by key.
    assert_eq!(
        keys,
        [
            "a",
            "x-death",
            "x-first-death-exchange",
            "x-first-death-queue",
            "x-first-death-reason",
            "zeta"
        ]
    );
    let deaths = match &headers[1].1 {
        Wire::Array(a) => a.clone(),
        other => panic!("x-death is not an array: {other:?}"),
    };
    assert_eq!(deaths.len(), 1);
    let entry = match &deaths[0] {
        Wire::Table(t) => t.clone(),
        other => panic!("x-death entry is not a table: {other:?}"),
    };
    let names: Vec<&str> = entry.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "count",
            "reason",
            "queue",
            "time",
            "exchange",
            "routing-keys"
        ]
    );
    assert_eq!(entry[0].1, Wire::Int('l', 1));
    assert_eq!(entry[1].1, Wire::Bytes('S', b"rejected".to_vec()));
    assert_eq!(entry[2].1, Wire::Bytes('S', b"wire.src".to_vec()));
    assert!(matches!(entry[3].1, Wire::Int('T', _)), "{:?}", entry[3]);
    assert_eq!(entry[4].1, Wire::Bytes('S', Vec::new()));
    assert_eq!(
        entry[5].1,
        Wire::Array(vec![Wire::Bytes('S', b"wire.src".to_vec())])
    );
}
