//! Messages as the engine sees them: routing information, the publisher's raw
//! properties (forwarded verbatim) and the body, shared by every queue it lands in.

use std::sync::Arc;

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, parse_properties, AMQPProperties};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;

/// What the engine reads from a message's properties: the delivery mode, the priority,
/// the per-message TTL and the headers (for headers exchanges, `CC`/`BCC` and
/// dead-lettering). The full property list stays in [`Message::raw_properties`] and goes
/// to consumers verbatim; [`Message::full_properties`] decodes it when a rare path
/// (dead-lettering, `BCC` removal) needs every field. Keeping only this instead of
/// amq-protocol's `AMQPProperties` (about 300 bytes) makes a queued message small.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Props {
    /// `delivery-mode` (2 = persistent).
    pub delivery_mode: Option<u8>,
    /// `priority`.
    pub priority: Option<u8>,
    /// `expiration` (per-message TTL in milliseconds, as text).
    pub expiration: Option<Box<str>>,
    /// `headers`.
    pub headers: Option<Box<FieldTable>>,
}

impl Props {
    /// RabbitMQ's checks of a published message (`rabbit_basic:message/3`): a known
    /// delivery mode, and `CC`/`BCC` headers that are arrays. The error is RabbitMQ's
    /// reason term, e.g. `{delivery_mode_unknown,0}` or
    /// `{unacceptable_type_in_header,"CC",longstr}`, which it quotes in a 406.
    ///
    /// # Errors
    /// The reason term of the first check that fails.
    pub fn check(&self) -> Result<(), String> {
        if let Some(mode) = self.delivery_mode {
            if mode != 1 && mode != 2 {
                return Err(format!("{{delivery_mode_unknown,{mode}}}"));
            }
        }
        if let Some(h) = &self.headers {
            for name in ["CC", "BCC"] {
                match h.inner().get(name) {
                    None | Some(AMQPValue::FieldArray(_)) => {}
                    Some(other) => {
                        return Err(format!(
                            "{{unacceptable_type_in_header,\"{name}\",{}}}",
                            crate::args::type_name(other)
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

/// A property list read once at publish time: what the engine keeps, plus the fields
/// the publishing channel checks (borrowed from the raw bytes).
#[derive(Debug, Default, PartialEq)]
pub struct ScannedProps<'a> {
    /// Kept with the message.
    pub props: Props,
    /// `user-id`, checked against the authenticated user.
    pub user_id: Option<&'a str>,
    /// `reply-to`, checked for direct reply-to.
    pub reply_to: Option<&'a str>,
}

/// Reads a raw property list (flags, then the fields they announce, AMQP 0-9-1 basic
/// class order). Accepts and rejects exactly what amq-protocol's `parse_properties`
/// does (a test compares them), without building its 14-field struct.
pub fn scan_properties(raw: &[u8]) -> Option<ScannedProps<'_>> {
    fn short<'a>(at: &mut &'a [u8]) -> Option<&'a str> {
        let (&len, rest) = at.split_first()?;
        let len = usize::from(len);
        if rest.len() < len {
            return None;
        }
        let (text, rest) = rest.split_at(len);
        *at = rest;
        std::str::from_utf8(text).ok()
    }
    fn octet(at: &mut &[u8]) -> Option<u8> {
        let (&b, rest) = at.split_first()?;
        *at = rest;
        Some(b)
    }
    let mut out = ScannedProps::default();
    if raw.is_empty() {
        return Some(out);
    }
    let flags = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]);
    let has = |bit: u16| flags & (1 << bit) != 0;
    let mut at = &raw[2..];
    if has(15) {
        short(&mut at)?; // content-type
    }
    if has(14) {
        short(&mut at)?; // content-encoding
    }
    if has(13) {
        // Bounded nesting: a deep table is refused instead of overflowing the stack.
        let (rest, table) = warren_codec::nesting::parse_field_table(at)?;
        at = rest;
        out.props.headers = Some(Box::new(table));
    }
    if has(12) {
        out.props.delivery_mode = Some(octet(&mut at)?);
    }
    if has(11) {
        out.props.priority = Some(octet(&mut at)?);
    }
    if has(10) {
        short(&mut at)?; // correlation-id
    }
    if has(9) {
        out.reply_to = Some(short(&mut at)?);
    }
    if has(8) {
        out.props.expiration = Some(short(&mut at)?.into());
    }
    if has(7) {
        short(&mut at)?; // message-id
    }
    if has(6) {
        at = at.get(8..)?; // timestamp
    }
    if has(5) {
        short(&mut at)?; // type
    }
    if has(4) {
        out.user_id = Some(short(&mut at)?);
    }
    if has(3) {
        short(&mut at)?; // app-id
    }
    if has(2) {
        short(&mut at)?; // cluster-id
    }
    Some(out)
}

/// A published message. Shared (`Arc`) between the queues it was routed to.
#[derive(Debug, Clone)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Raw property flags + list, exactly as published.
    pub raw_properties: Bytes,
    /// The properties the engine uses (the rest stay raw).
    pub properties: Props,
    /// The body.
    pub body: Bytes,
    /// Routing keys from a `BCC` header that was removed before delivery; they still
    /// count when the message is dead-lettered without a dead-letter routing key.
    pub bcc: Vec<String>,
}

impl Message {
    /// Builds a message, decoding `raw_properties`. Undecodable properties are treated
    /// as empty here; the server rejects them before building a message.
    pub fn new(exchange: &str, routing_key: &str, raw_properties: Bytes, body: Bytes) -> Self {
        let properties = scan_properties(&raw_properties)
            .map(|s| s.props)
            .unwrap_or_default();
        let raw_properties = if raw_properties.is_empty() {
            Bytes::from_static(&[0, 0])
        } else {
            raw_properties
        };
        Message {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            raw_properties,
            properties,
            body,
            bcc: Vec::new(),
        }
    }

    /// The headers table, if any.
    pub fn headers(&self) -> Option<&FieldTable> {
        self.properties.headers.as_deref()
    }

    /// Every property, decoded from the raw list (for the rare paths that re-encode it).
    pub fn full_properties(&self) -> AMQPProperties {
        decode_properties(&self.raw_properties).unwrap_or_default()
    }

    /// The routing keys: the published one, then the `CC` and `BCC` headers'
    /// (RabbitMQ's sender-selected distribution).
    pub fn routing_keys<'a>(&'a self, routing_key: &'a str) -> Vec<&'a str> {
        let mut keys = vec![routing_key];
        if let Some(h) = self.headers() {
            for name in ["CC", "BCC"] {
                if let Some(AMQPValue::FieldArray(a)) = h.inner().get(name) {
                    for v in a.as_slice() {
                        match v {
                            AMQPValue::LongString(s) => {
                                if let Ok(s) = std::str::from_utf8(s.as_bytes()) {
                                    keys.push(s);
                                }
                            }
                            AMQPValue::ShortString(s) => keys.push(s.as_str()),
                            _ => {}
                        }
                    }
                }
            }
        }
        keys
    }

    /// Whether the headers carry `BCC`, which must not reach consumers.
    pub fn has_bcc(&self) -> bool {
        self.headers().is_some_and(|h| h.contains_key("BCC"))
    }

    /// A copy with `properties` re-encoded as its raw properties (kept as they were if
    /// they cannot be), and `bcc` as its removed BCC keys.
    fn reencoded(&self, properties: AMQPProperties, bcc: Vec<String>) -> Message {
        let raw = gen_properties(&properties)(WriteContext::from(Vec::new()))
            .map(|c| Bytes::from(c.write))
            .unwrap_or_else(|_| self.raw_properties.clone());
        Message {
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            properties: scan_properties(&raw).map(|s| s.props).unwrap_or_default(),
            raw_properties: raw,
            body: self.body.clone(),
            bcc,
        }
    }

    /// A copy with the `BCC` header removed and the raw properties re-encoded.
    pub fn without_bcc(&self) -> Message {
        let mut properties = self.full_properties();
        let mut bcc = Vec::new();
        if let Some(h) = self.headers() {
            let mut inner = h.inner().clone();
            if let Some(AMQPValue::FieldArray(a)) = inner.remove("BCC") {
                for v in a.as_slice() {
                    match v {
                        AMQPValue::LongString(s) => {
                            bcc.push(String::from_utf8_lossy(s.as_bytes()).into_owned())
                        }
                        AMQPValue::ShortString(s) => bcc.push(s.as_str().to_string()),
                        _ => {}
                    }
                }
            }
            properties = properties.with_headers(FieldTable::from(inner));
        }
        self.reencoded(properties, bcc)
    }

    /// A copy with header `name` set to `value` (the raw properties re-encoded).
    pub fn with_header(&self, name: &str, value: AMQPValue) -> Message {
        let mut inner = self
            .headers()
            .map(|h| h.inner().clone())
            .unwrap_or_default();
        inner.insert(name.into(), value);
        let properties = self.full_properties().with_headers(FieldTable::from(inner));
        self.reencoded(properties, self.bcc.clone())
    }

    /// A copy without header `name` (the raw properties re-encoded), or `None` when it
    /// has no such header.
    pub fn without_header(&self, name: &str) -> Option<Message> {
        let mut inner = self.headers()?.inner().clone();
        inner.remove(name)?;
        let properties = self.full_properties().with_headers(FieldTable::from(inner));
        Some(self.reencoded(properties, self.bcc.clone()))
    }

    /// A text header's value.
    pub fn text_header(&self, name: &str) -> Option<String> {
        match self.headers()?.inner().get(name)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
            _ => None,
        }
    }

    /// delivery_mode 2.
    pub fn is_persistent(&self) -> bool {
        self.properties.delivery_mode == Some(2)
    }
}

/// Decodes a raw property list.
pub fn decode_properties(raw: &[u8]) -> Option<AMQPProperties> {
    if raw.is_empty() {
        return Some(AMQPProperties::default());
    }
    parse_properties(raw).ok().map(|(_, p)| p)
}

/// A message in a queue: its position (`seq`, increasing in publish order) and whether it
/// was delivered before.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// Position in the queue; requeued messages go back to their position.
    pub seq: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Whether it has been delivered before.
    pub redelivered: bool,
    /// Its record on disk, if persisted.
    pub loc: Option<crate::store::DiskLoc>,
    /// Priority level in its queue (0 unless the queue has `x-max-priority`).
    pub priority: u8,
    /// When it expires, epoch milliseconds; 0 = never.
    pub expires_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{FieldArray, LongString, ShortString};

    fn encode(p: &AMQPProperties) -> Vec<u8> {
        gen_properties(p)(WriteContext::from(Vec::new()))
            .map(|c| c.write)
            .unwrap()
    }

    fn samples() -> Vec<Vec<u8>> {
        let mut headers = FieldTable::default();
        headers.insert(
            "CC".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                LongString::from("k2"),
            )])),
        );
        headers.insert("n".into(), AMQPValue::LongLongInt(-5));
        let all = AMQPProperties::default()
            .with_content_type("text/plain".into())
            .with_content_encoding("gzip".into())
            .with_headers(headers.clone())
            .with_delivery_mode(2)
            .with_priority(7)
            .with_correlation_id("c-1".into())
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_expiration("1500".into())
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_000)
            .with_type("t".into())
            .with_user_id("guest".into())
            .with_app_id("app".into())
            .with_cluster_id("cl".into());
        let mut out = vec![
            encode(&AMQPProperties::default()),
            encode(&AMQPProperties::default().with_delivery_mode(1)),
            encode(&AMQPProperties::default().with_headers(headers)),
            encode(&AMQPProperties::default().with_expiration("0".into())),
            encode(&all),
        ];
        // Truncations of the full list, a trailing byte, invalid UTF-8 in a short
        // string, and the continuation bits set.
        let full = encode(&all);
        for n in 0..full.len() {
            out.push(full[..n].to_vec());
        }
        let mut longer = full.clone();
        longer.push(1);
        out.push(longer);
        out.push(vec![0x80, 0x00, 2, 0xff, 0xfe]);
        out.push(vec![0x00, 0x03]);
        out
    }

    #[test]
    fn scan_agrees_with_amq_protocol() {
        for raw in samples() {
            let theirs = if raw.is_empty() {
                Some(AMQPProperties::default())
            } else {
                parse_properties(&raw[..]).ok().map(|(_, p)| p)
            };
            let ours = scan_properties(&raw);
            assert_eq!(ours.is_some(), theirs.is_some(), "raw {raw:?}");
            let (Some(ours), Some(theirs)) = (ours, theirs) else {
                continue;
            };
            assert_eq!(ours.props.delivery_mode, *theirs.delivery_mode());
            assert_eq!(ours.props.priority, *theirs.priority());
            assert_eq!(
                ours.props.expiration.as_deref(),
                theirs.expiration().as_ref().map(ShortString::as_str)
            );
            assert_eq!(ours.props.headers.as_deref(), theirs.headers().as_ref());
            assert_eq!(
                ours.user_id,
                theirs.user_id().as_ref().map(ShortString::as_str)
            );
            assert_eq!(
                ours.reply_to,
                theirs.reply_to().as_ref().map(ShortString::as_str)
            );
        }
    }

    #[test]
    fn a_queued_message_is_small() {
        // The per-message cost of a transient message in RAM (besides its body).
        assert!(
            std::mem::size_of::<Message>() <= 200,
            "{}",
            std::mem::size_of::<Message>()
        );
        assert!(std::mem::size_of::<Props>() <= 40);
    }
}
