//! RabbitMQ's firehose (`rabbitmqctl trace_on`): while a vhost traces, a copy of every
//! message published in it goes to `amq.rabbitmq.trace` with routing key
//! `publish.EXCHANGE`, and a copy of every delivery (consumer or basic.get) with
//! `deliver.QUEUE`. The copy's headers describe the original: `exchange_name`,
//! `routing_keys`, `properties`, `node`, and for deliveries `redelivered`. The body is
//! the original body.

use std::sync::Arc;

use bytes::Bytes;
use warren_broker::message::decode_properties;
use warren_broker::vhost::TRACE_EXCHANGE;
use warren_broker::{Message, VHost};
use warren_codec::protocol::basic::AMQPProperties;
use warren_codec::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn short_text(s: &Option<ShortString>) -> Option<AMQPValue> {
    s.as_ref().map(|v| long(v.as_str()))
}

/// The original message's properties as the `properties` header table.
fn properties_table(p: &AMQPProperties) -> FieldTable {
    let mut t = FieldTable::default();
    let mut put = |k: &str, v: Option<AMQPValue>| {
        if let Some(v) = v {
            t.insert(ShortString::from(k.to_string()), v);
        }
    };
    put("content_type", short_text(p.content_type()));
    put("content_encoding", short_text(p.content_encoding()));
    put("headers", p.headers().clone().map(AMQPValue::FieldTable));
    put(
        "delivery_mode",
        p.delivery_mode().map(AMQPValue::ShortShortUInt),
    );
    put("priority", p.priority().map(AMQPValue::ShortShortUInt));
    put("correlation_id", short_text(p.correlation_id()));
    put("reply_to", short_text(p.reply_to()));
    put("expiration", short_text(p.expiration()));
    put("message_id", short_text(p.message_id()));
    put("timestamp", p.timestamp().map(AMQPValue::Timestamp));
    put("type", short_text(p.kind()));
    put("user_id", short_text(p.user_id()));
    put("app_id", short_text(p.app_id()));
    put("cluster_id", short_text(p.cluster_id()));
    t
}

fn emit(vhost: &VHost, node: &str, key: String, m: &Message, redelivered: Option<bool>) {
    let mut headers = FieldTable::default();
    headers.insert("exchange_name".into(), long(&m.exchange));
    let keys: Vec<AMQPValue> = m
        .routing_keys(&m.routing_key)
        .iter()
        .map(|k| long(k))
        .collect();
    headers.insert(
        "routing_keys".into(),
        AMQPValue::FieldArray(FieldArray::from(keys)),
    );
    let props = decode_properties(&m.raw_properties).unwrap_or_default();
    headers.insert(
        "properties".into(),
        AMQPValue::FieldTable(properties_table(&props)),
    );
    headers.insert("node".into(), long(node));
    if let Some(r) = redelivered {
        headers.insert("redelivered".into(), AMQPValue::LongInt(i32::from(r)));
    }
    let raw = {
        use warren_codec::protocol::basic::gen_properties;
        let p = AMQPProperties::default().with_headers(headers);
        let encoded = gen_properties(&p)(amq_protocol::frame::WriteContext::from(Vec::new()));
        match encoded {
            Ok(c) => Bytes::from(c.write),
            Err(_) => return,
        }
    };
    let copy = Arc::new(Message::new(TRACE_EXCHANGE, &key, raw, m.body.clone()));
    // The trace exchange is internal: route past the check clients are subject to.
    if let Ok(queues) = vhost.route_keys(TRACE_EXCHANGE, &[key.as_str()], &copy, false) {
        for q in queues {
            let _ = q.publish(copy.clone());
        }
    }
}

/// A message published in a tracing vhost.
pub(crate) fn published(vhost: &VHost, node: &str, m: &Message) {
    emit(vhost, node, format!("publish.{}", m.exchange), m, None);
}

/// A message delivered from `queue` in a tracing vhost.
pub(crate) fn delivered(vhost: &VHost, node: &str, queue: &str, m: &Message, redelivered: bool) {
    emit(
        vhost,
        node,
        format!("deliver.{queue}"),
        m,
        Some(redelivered),
    );
}
