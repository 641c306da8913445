//! Messages as the engine sees them: routing information, the publisher's raw
//! properties (forwarded verbatim) and the body, shared by every queue it lands in.

use std::sync::Arc;

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, parse_properties, AMQPProperties};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;

/// A published message. Shared (`Arc`) between the queues it was routed to.
#[derive(Debug, Clone)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Raw property flags + list, exactly as published.
    pub raw_properties: Bytes,
    /// Decoded properties, for routing on headers and for the extensions.
    pub properties: AMQPProperties,
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
        let properties = decode_properties(&raw_properties).unwrap_or_default();
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
        self.properties.headers().as_ref()
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

    /// A copy with the `BCC` header removed and the raw properties re-encoded.
    pub fn without_bcc(&self) -> Message {
        let mut properties = self.properties.clone();
        let mut bcc = Vec::new();
        if let Some(h) = self.properties.headers() {
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
        let raw = gen_properties(&properties)(WriteContext::from(Vec::new()))
            .map(|c| Bytes::from(c.write))
            .unwrap_or_else(|_| self.raw_properties.clone());
        Message {
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            raw_properties: raw,
            properties,
            body: self.body.clone(),
            bcc,
        }
    }

    /// delivery_mode 2.
    pub fn is_persistent(&self) -> bool {
        *self.properties.delivery_mode() == Some(2)
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
