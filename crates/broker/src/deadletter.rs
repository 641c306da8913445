//! Building a dead-lettered message as RabbitMQ does: the `x-death` header (most recent
//! first, one entry per {queue, reason} with a count), the `x-first-death-*` headers, the
//! `expiration` property moved to `original-expiration`, and cycle detection.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, AMQPProperties};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use bytes::Bytes;

use crate::message::Message;
use crate::queue::DeathReason;

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn text(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Copies every property except `expiration`, with `headers` replaced.
fn rebuild(p: &AMQPProperties, headers: FieldTable) -> AMQPProperties {
    let mut n = AMQPProperties::default().with_headers(headers);
    if let Some(v) = p.content_type() {
        n = n.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        n = n.with_content_encoding(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        n = n.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        n = n.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        n = n.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        n = n.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        n = n.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        n = n.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        n = n.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        n = n.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        n = n.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        n = n.with_cluster_id(v.clone());
    }
    n
}

/// The routing keys a message was published with: its routing key plus `CC`.
fn original_keys(m: &Message) -> Vec<String> {
    let mut keys = vec![m.routing_key.clone()];
    if let Some(AMQPValue::FieldArray(cc)) = m.headers().and_then(|h| h.inner().get("CC")) {
        keys.extend(cc.as_slice().iter().filter_map(|v| text(Some(v))));
    }
    keys
}

/// The message to publish to the dead-letter exchange `dlx`, and the routing keys to
/// publish it with (`dlrk` if set, else the original keys).
pub fn dead_lettered(
    m: &Message,
    queue: &str,
    reason: DeathReason,
    dlx: &str,
    dlrk: Option<&str>,
    now_secs: u64,
) -> (Message, Vec<String>) {
    let keys = original_keys(m);
    let mut headers = m.headers().cloned().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = |v: &AMQPValue| match v {
        AMQPValue::FieldTable(t) => {
            text(t.inner().get("queue")).as_deref() == Some(queue)
                && text(t.inner().get("reason")).as_deref() == Some(reason.as_str())
        }
        _ => false,
    };
    let entry = match deaths.iter().position(same) {
        Some(i) => {
            let AMQPValue::FieldTable(mut t) = deaths.remove(i) else {
                unreachable!("position matched a table")
            };
            let count = match t.inner().get("count") {
                Some(AMQPValue::LongLongInt(c)) => *c,
                Some(AMQPValue::LongInt(c)) => i64::from(*c),
                _ => 0,
            };
            t.insert(
                ShortString::from("count"),
                AMQPValue::LongLongInt(count + 1),
            );
            t
        }
        None => {
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert("reason".into(), long(reason.as_str()));
            t.insert("queue".into(), long(queue));
            t.insert("time".into(), AMQPValue::Timestamp(now_secs));
            t.insert("exchange".into(), long(&m.exchange));
            t.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(FieldArray::from(
                    keys.iter().map(|k| long(k)).collect::<Vec<_>>(),
                )),
            );
            if let Some(e) = m.properties.expiration() {
                t.insert("original-expiration".into(), long(e.as_str()));
            }
            t
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    for (k, v) in [
        ("x-first-death-reason", reason.as_str()),
        ("x-first-death-queue", queue),
        ("x-first-death-exchange", m.exchange.as_str()),
    ] {
        if !headers.contains_key(k) {
            headers.insert(k.into(), long(v));
        }
    }
    let properties = rebuild(&m.properties, headers);
    let raw = gen_properties(&properties)(WriteContext::from(Vec::new()))
        .map(|c| Bytes::from(c.write))
        .unwrap_or_else(|_| m.raw_properties.clone());
    let out_keys = match dlrk {
        Some(k) => vec![k.to_string()],
        None => keys,
    };
    let message = Message {
        exchange: dlx.to_string(),
        routing_key: out_keys.first().cloned().unwrap_or_default(),
        raw_properties: raw,
        properties,
        body: m.body.clone(),
    };
    (message, out_keys)
}

/// RabbitMQ's `is_cycle`: delivering `m` (already carrying its newest death) to `queue`
/// closes a cycle with no rejection in it, so the message must be dropped there.
pub fn is_cycle(m: &Message, queue: &str) -> bool {
    let Some(AMQPValue::FieldArray(deaths)) = m.headers().and_then(|h| h.inner().get("x-death"))
    else {
        return false;
    };
    let deaths = deaths.as_slice();
    let Some(pos) = deaths.iter().position(|d| match d {
        AMQPValue::FieldTable(t) => text(t.inner().get("queue")).as_deref() == Some(queue),
        _ => false,
    }) else {
        return false;
    };
    deaths[..=pos].iter().all(|d| match d {
        AMQPValue::FieldTable(t) => text(t.inner().get("reason")).as_deref() != Some("rejected"),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Message {
        let props = AMQPProperties::default()
            .with_expiration("5000".into())
            .with_content_type("text/plain".into());
        let raw = gen_properties(&props)(WriteContext::from(Vec::new()))
            .unwrap()
            .write;
        Message::new("ex", "rk", Bytes::from(raw), Bytes::from_static(b"body"))
    }

    fn deaths(m: &Message) -> Vec<FieldTable> {
        match m.headers().unwrap().inner().get("x-death") {
            Some(AMQPValue::FieldArray(a)) => a
                .as_slice()
                .iter()
                .map(|v| match v {
                    AMQPValue::FieldTable(t) => t.clone(),
                    _ => panic!(),
                })
                .collect(),
            _ => panic!("no x-death"),
        }
    }

    #[test]
    fn first_death_builds_headers_and_drops_expiration() {
        let (m, keys) = dead_lettered(&base(), "q1", DeathReason::Expired, "dlx", None, 42);
        assert_eq!(keys, vec!["rk".to_string()]);
        assert_eq!(m.exchange, "dlx");
        assert!(m.properties.expiration().is_none());
        assert_eq!(
            m.properties.content_type().as_ref().unwrap().as_str(),
            "text/plain"
        );
        let d = deaths(&m);
        assert_eq!(d.len(), 1);
        let e = d[0].inner();
        assert_eq!(e.get("count"), Some(&AMQPValue::LongLongInt(1)));
        assert_eq!(text(e.get("reason")).unwrap(), "expired");
        assert_eq!(text(e.get("queue")).unwrap(), "q1");
        assert_eq!(text(e.get("exchange")).unwrap(), "ex");
        assert_eq!(text(e.get("original-expiration")).unwrap(), "5000");
        assert_eq!(e.get("time"), Some(&AMQPValue::Timestamp(42)));
        let h = m.headers().unwrap().inner();
        assert_eq!(text(h.get("x-first-death-queue")).unwrap(), "q1");
    }

    #[test]
    fn repeated_death_counts_and_moves_to_front() {
        let (m1, _) = dead_lettered(&base(), "q1", DeathReason::Rejected, "dlx", Some("k"), 1);
        let (m2, keys) = dead_lettered(&m1, "q2", DeathReason::Expired, "dlx", None, 2);
        assert_eq!(keys, vec!["k".to_string()]);
        let (m3, _) = dead_lettered(&m2, "q1", DeathReason::Rejected, "dlx", None, 3);
        let d = deaths(&m3);
        assert_eq!(d.len(), 2);
        assert_eq!(text(d[0].inner().get("queue")).unwrap(), "q1");
        assert_eq!(d[0].inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(text(d[1].inner().get("queue")).unwrap(), "q2");
        assert_eq!(
            text(m3.headers().unwrap().inner().get("x-first-death-reason")).unwrap(),
            "rejected"
        );
    }

    #[test]
    fn cycles_without_rejection_are_detected() {
        let (m, _) = dead_lettered(&base(), "q1", DeathReason::Expired, "dlx", None, 1);
        assert!(is_cycle(&m, "q1"));
        assert!(!is_cycle(&m, "other"));
        let (r, _) = dead_lettered(&base(), "q1", DeathReason::Rejected, "dlx", None, 1);
        assert!(!is_cycle(&r, "q1"));
    }
}
