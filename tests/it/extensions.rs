//! RabbitMQ's AMQP extensions, as RabbitMQ 3.10 behaves (see `conformance/README.md`):
//! message and queue TTLs, dead-lettering, length limits, priority queues, consumer
//! priorities, single active consumer, direct reply-to, argument validation, alternate
//! exchanges, CC/BCC, policies and resource alarms.
//!
//! TTLs are short (50–300 ms) and every wait is on an observable effect.

mod alarms;
mod consumers;
mod dead_letter;
mod max_length;
mod policies;
mod reply_to;
mod routing;
mod ttl;

use std::time::{Duration, Instant};

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};

use crate::util::{ss, within, TIMEOUT};

/// A field table from `(key, value)` pairs.
pub fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ss(k), v.clone());
    }
    t
}

/// A signed 32-bit integer field (`I`), the type pika sends for small ints.
pub fn int(n: i32) -> AMQPValue {
    AMQPValue::LongInt(n)
}

/// A long string field (`S`).
pub fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// An array of long strings (`A` of `S`).
pub fn texts(items: &[&str]) -> AMQPValue {
    AMQPValue::FieldArray(FieldArray::from(
        items.iter().map(|s| text(s)).collect::<Vec<_>>(),
    ))
}

/// Declares a (non-durable) queue with arguments, returning the channel error if any.
pub async fn try_declare(
    ch: &Channel,
    name: &str,
    args: FieldTable,
) -> lapin::Result<lapin::Queue> {
    within(
        "queue.declare",
        ch.queue_declare(ss(name), QueueDeclareOptions::default(), args),
    )
    .await
}

/// Declares a (non-durable) queue with arguments; panics on error.
pub async fn declare_args(ch: &Channel, name: &str, args: FieldTable) -> lapin::Queue {
    try_declare(ch, name, args)
        .await
        .unwrap_or_else(|e| panic!("declare queue {name}: {e}"))
}

/// Declares a (non-durable) exchange.
pub async fn declare_exchange(ch: &Channel, name: &str, kind: ExchangeKind, args: FieldTable) {
    within(
        "exchange.declare",
        ch.exchange_declare(ss(name), kind, ExchangeDeclareOptions::default(), args),
    )
    .await
    .unwrap_or_else(|e| panic!("declare exchange {name}: {e}"));
}

/// Binds `queue` to `exchange` with `key`.
pub async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    within(
        "queue.bind",
        ch.queue_bind(
            ss(queue),
            ss(exchange),
            ss(key),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("bind {queue} to {exchange} with {key}: {e}"));
}

/// A new channel of `conn` in confirm mode.
pub async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = within("channel.open", conn.create_channel())
        .await
        .expect("channel.open");
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    ch
}

/// Publishes and returns the broker's confirmation (the channel must be in confirm mode).
pub async fn publish_confirm(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    mandatory: bool,
) -> Confirmation {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            ss(exchange),
            ss(routing_key),
            BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        ),
    )
    .await
    .expect("basic.publish");
    within("publisher confirm", confirm)
        .await
        .expect("publisher confirm")
}

/// Publishes each body to the default exchange with routing key `queue` on a confirm
/// channel; `"ack"` or `"nack"` per message.
pub async fn publish_all(ch: &Channel, queue: &str, bodies: &[&str]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for b in bodies {
        let c = publish_confirm(
            ch,
            "",
            queue,
            b.as_bytes(),
            BasicProperties::default(),
            false,
        )
        .await;
        out.push(match c {
            Confirmation::Ack(None) => "ack",
            Confirmation::Nack(_) => "nack",
            other => panic!("unexpected confirmation for {b}: {other:?}"),
        });
    }
    out
}

/// Whether a mandatory publish to the default exchange with routing key `queue` is
/// routed (`false`: it came back with 312 NO_ROUTE). Unlike a passive declare, this does
/// not renew an `x-expires` lease. `ch` must be in confirm mode.
pub async fn routable(ch: &Channel, queue: &str) -> bool {
    match publish_confirm(ch, "", queue, b"probe", BasicProperties::default(), true).await {
        Confirmation::Ack(None) => true,
        Confirmation::Ack(Some(ret)) => {
            assert_eq!((ret.reply_code, ret.reply_text.as_str()), (312, "NO_ROUTE"));
            false
        }
        other => panic!("unexpected confirmation of a probe: {other:?}"),
    }
}

/// One basic.get (`no_ack` as given).
pub async fn get(ch: &Channel, queue: &str, no_ack: bool) -> Option<BasicGetMessage> {
    within(
        "basic.get",
        ch.basic_get(ss(queue), BasicGetOptions { no_ack }),
    )
    .await
    .unwrap_or_else(|e| panic!("basic.get from {queue}: {e}"))
}

/// Polls basic.get (auto-ack) until a message arrives, failing after [`TIMEOUT`].
pub async fn wait_get(ch: &Channel, queue: &str) -> BasicGetMessage {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(m) = get(ch, queue, true).await {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no message arrived in {queue} within {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every ready message's body, fetched with auto-ack basic.get until the queue is empty.
pub async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = get(ch, queue, true).await {
        out.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    out
}

/// A header of a message.
pub fn header<'a>(props: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    props.headers().as_ref().and_then(|h| h.inner().get(key))
}

/// A field of a table; panics if missing.
pub fn field<'a>(t: &'a FieldTable, key: &str) -> &'a AMQPValue {
    t.inner()
        .get(key)
        .unwrap_or_else(|| panic!("no field {key} in {t:?}"))
}

/// The entries of the `x-death` header, which must be an array of tables.
pub fn x_death(props: &BasicProperties) -> Vec<FieldTable> {
    match header(props, "x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("x-death entry is not a table: {other:?}"),
            })
            .collect(),
        other => panic!(
            "x-death is not an array: {other:?} (headers {:?})",
            props.headers()
        ),
    }
}

/// `(queue, reason, count)` of an x-death entry.
pub fn death_summary(entry: &FieldTable) -> (String, String, AMQPValue) {
    let s = |k: &str| match field(entry, k) {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("x-death {k} is not a longstr: {other:?}"),
    };
    (s("queue"), s("reason"), field(entry, "count").clone())
}
