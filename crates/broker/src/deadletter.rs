//! Building a dead-lettered message as RabbitMQ does: the `x-death` header (most recent
//! first, one entry per {queue, reason} with a count), the `x-first-death-*` headers, the
//! `expiration` property moved to `original-expiration`, and cycle detection.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::AMQPProperties;
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

/// The routing keys a message was published with: its routing key plus `CC`.
fn original_keys(m: &Message) -> Vec<String> {
    let mut keys = vec![m.routing_key.clone()];
    if let Some(AMQPValue::FieldArray(cc)) = m.headers().and_then(|h| h.inner().get("CC")) {
        keys.extend(cc.as_slice().iter().filter_map(|v| text(Some(v))));
    }
    keys
}

/// One field of a table as it is on the wire: key, then type tag and value bytes.
type RawField = (String, Vec<u8>);

/// Splits a field table's content (after its 4-byte length) into raw fields, keeping
/// their order and bytes.
fn raw_fields(mut body: &[u8]) -> Option<Vec<RawField>> {
    use amq_protocol::types::parsing::parse_value;
    let mut out = Vec::new();
    while !body.is_empty() {
        let klen = usize::from(*body.first()?);
        let key = std::str::from_utf8(body.get(1..1 + klen)?)
            .ok()?
            .to_string();
        let rest = body.get(1 + klen..)?;
        let (after, _) = parse_value(rest).ok()?;
        let used = rest.len() - after.len();
        out.push((key, rest[..used].to_vec()));
        body = after;
    }
    Some(out)
}

/// The raw content of the headers table inside raw basic properties, if present.
fn raw_headers(props: &[u8]) -> Option<&[u8]> {
    let flags = u16::from_be_bytes([*props.first()?, *props.get(1)?]);
    if flags & (1 << 13) == 0 {
        return None;
    }
    let mut at = 2;
    for bit in [15u16, 14] {
        if flags & (1 << bit) != 0 {
            at += 1 + usize::from(*props.get(at)?);
        }
    }
    let len = u32::from_be_bytes(props.get(at..at + 4)?.try_into().ok()?) as usize;
    props.get(at + 4..at + 4 + len)
}

fn put_short(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(255);
    out.push(n as u8);
    out.extend_from_slice(&b[..n]);
}

fn put_long_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'S');
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes `(key, raw type+value)` pairs as a table, with its length.
fn put_table(out: &mut Vec<u8>, fields: &[RawField]) {
    let mut body = Vec::new();
    for (k, v) in fields {
        put_short(&mut body, k);
        body.extend_from_slice(v);
    }
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
}

/// Type tag + encoding of a value, as amq-protocol writes it.
fn encoded(v: &AMQPValue) -> Vec<u8> {
    use amq_protocol::types::generation::gen_value;
    gen_value(v)(WriteContext::from(Vec::new()))
        .map(|c| c.write)
        .unwrap_or_default()
}

fn death_matches(raw: &[u8], queue: &str, reason: &str) -> bool {
    let Some(fields) = raw.get(5..).and_then(raw_fields) else {
        return false;
    };
    let get = |k: &str| {
        fields.iter().find(|(key, _)| key == k).and_then(|(_, v)| {
            (v.first() == Some(&b'S'))
                .then(|| v.get(5..).map(|b| String::from_utf8_lossy(b).into_owned()))
                .flatten()
        })
    };
    get("queue").as_deref() == Some(queue) && get("reason").as_deref() == Some(reason)
}

/// The message to publish to the dead-letter exchange `dlx`, and the routing keys to
/// publish it with (`dlrk` if set, else the original keys, `BCC` included).
///
/// The headers are written the way RabbitMQ 3.10 writes them: the table sorted by key;
/// `x-death` with the newest entry first (a new entry's fields in the order count,
/// reason, queue, time, exchange, routing-keys, original-expiration; an updated entry's
/// fields sorted by name, with only its count changed) and, when it already held two or
/// more entries, the others in reverse of their previous order; `x-first-death-*` added
/// on the first death only. `expiration` is removed and kept as `original-expiration`.
pub fn dead_lettered(
    m: &Message,
    queue: &str,
    reason: DeathReason,
    dlx: &str,
    dlrk: Option<&str>,
    now_secs: u64,
) -> (Message, Vec<String>) {
    let keys = original_keys(m);
    let mut fields: Vec<RawField> = raw_headers(&m.raw_properties)
        .and_then(raw_fields)
        .unwrap_or_default();
    // Existing deaths, each as raw 'F' + table bytes.
    let mut deaths: Vec<Vec<u8>> = Vec::new();
    let mut had_deaths = false;
    if let Some(pos) = fields.iter().position(|(k, _)| k == "x-death") {
        let (_, v) = fields.remove(pos);
        had_deaths = true;
        if v.first() == Some(&b'A') {
            let mut body = v.get(5..).unwrap_or_default();
            while let Some(&tag) = body.first() {
                let Ok((after, _)) = amq_protocol::types::parsing::parse_value(body) else {
                    break;
                };
                let used = body.len() - after.len();
                if tag == b'F' {
                    deaths.push(body[..used].to_vec());
                }
                body = after;
            }
        }
    }
    let entry: Vec<u8> = match deaths
        .iter()
        .position(|d| death_matches(d, queue, reason.as_str()))
    {
        Some(i) => {
            // Same {queue, reason}: count + 1, fields re-sorted by name.
            let raw = deaths.remove(i);
            let mut t = match amq_protocol::types::parsing::parse_value(raw.as_slice()) {
                Ok((_, AMQPValue::FieldTable(t))) => t,
                _ => FieldTable::default(),
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
            encoded(&AMQPValue::FieldTable(t))
        }
        None => {
            let mut e: Vec<RawField> = vec![
                ("count".into(), encoded(&AMQPValue::LongLongInt(1))),
                ("reason".into(), {
                    let mut v = Vec::new();
                    put_long_str(&mut v, reason.as_str());
                    v
                }),
                ("queue".into(), {
                    let mut v = Vec::new();
                    put_long_str(&mut v, queue);
                    v
                }),
                ("time".into(), encoded(&AMQPValue::Timestamp(now_secs))),
                ("exchange".into(), {
                    let mut v = Vec::new();
                    put_long_str(&mut v, &m.exchange);
                    v
                }),
                (
                    "routing-keys".into(),
                    encoded(&AMQPValue::FieldArray(FieldArray::from(
                        keys.iter().map(|k| long(k)).collect::<Vec<_>>(),
                    ))),
                ),
            ];
            if let Some(exp) = m.properties.expiration.as_deref() {
                let mut v = Vec::new();
                put_long_str(&mut v, exp);
                e.push(("original-expiration".into(), v));
            }
            if had_deaths {
                // Added to an existing x-death: RabbitMQ writes it sorted by name.
                e.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            }
            let mut v = vec![b'F'];
            put_table(&mut v, &e);
            v
        }
    };
    // RabbitMQ 3.10 rebuilds the list so that the remaining entries come out reversed
    // (visible once there are two or more of them).
    deaths.reverse();
    let mut array = Vec::new();
    array.extend_from_slice(&entry);
    for d in &deaths {
        array.extend_from_slice(d);
    }
    let mut x_death = vec![b'A'];
    x_death.extend_from_slice(&(array.len() as u32).to_be_bytes());
    x_death.extend_from_slice(&array);
    let first_death = !had_deaths;
    fields.push(("x-death".into(), x_death));
    if first_death {
        for (k, v) in [
            ("x-first-death-exchange", m.exchange.as_str()),
            ("x-first-death-queue", queue),
            ("x-first-death-reason", reason.as_str()),
        ] {
            if !fields.iter().any(|(key, _)| key == k) {
                let mut raw = Vec::new();
                put_long_str(&mut raw, v);
                fields.push((k.into(), raw));
            }
        }
    }
    if dlrk.is_some() {
        fields.retain(|(k, _)| k != "CC");
    }
    fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let raw = encode_properties_with_headers(&m.full_properties(), &fields);
    let properties = crate::message::scan_properties(&raw)
        .map(|s| s.props)
        .unwrap_or_default();
    let mut out_keys = match dlrk {
        Some(k) => vec![k.to_string()],
        None => keys,
    };
    if dlrk.is_none() {
        out_keys.extend(m.bcc.iter().cloned());
    }
    let message = Message {
        exchange: dlx.to_string(),
        routing_key: out_keys.first().cloned().unwrap_or_default(),
        raw_properties: Bytes::from(raw),
        properties,
        body: m.body.clone(),
        bcc: Vec::new(),
    };
    (message, out_keys)
}

/// Encodes basic properties (without `expiration`) with a raw headers table.
fn encode_properties_with_headers(p: &AMQPProperties, headers: &[RawField]) -> Vec<u8> {
    let mut flags: u16 = 1 << 13;
    let mut out = vec![0u8, 0u8];
    let short_field = |out: &mut Vec<u8>, flags: &mut u16, bit: u16, v: &Option<ShortString>| {
        if let Some(s) = v {
            *flags |= 1 << bit;
            put_short(out, s.as_str());
        }
    };
    short_field(&mut out, &mut flags, 15, p.content_type());
    short_field(&mut out, &mut flags, 14, p.content_encoding());
    put_table(&mut out, headers);
    if let Some(v) = p.delivery_mode() {
        flags |= 1 << 12;
        out.push(*v);
    }
    if let Some(v) = p.priority() {
        flags |= 1 << 11;
        out.push(*v);
    }
    short_field(&mut out, &mut flags, 10, p.correlation_id());
    short_field(&mut out, &mut flags, 9, p.reply_to());
    // bit 8 (expiration) is dropped.
    short_field(&mut out, &mut flags, 7, p.message_id());
    if let Some(v) = p.timestamp() {
        flags |= 1 << 6;
        out.extend_from_slice(&v.to_be_bytes());
    }
    short_field(&mut out, &mut flags, 5, p.kind());
    short_field(&mut out, &mut flags, 4, p.user_id());
    short_field(&mut out, &mut flags, 3, p.app_id());
    short_field(&mut out, &mut flags, 2, p.cluster_id());
    out[..2].copy_from_slice(&flags.to_be_bytes());
    out
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

    use amq_protocol::protocol::basic::gen_properties;

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
        assert!(m.properties.expiration.is_none());
        assert!(m.full_properties().expiration().is_none());
        assert_eq!(
            m.full_properties()
                .content_type()
                .as_ref()
                .unwrap()
                .as_str(),
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
