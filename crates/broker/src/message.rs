//! Messages as the engine sees them: routing information, the publisher's raw
//! properties (forwarded verbatim) and the body, shared by every queue it lands in.

use std::sync::Arc;

use amq_protocol::protocol::basic::{parse_properties, AMQPProperties};
use amq_protocol::types::FieldTable;
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
        }
    }

    /// The headers table, if any.
    pub fn headers(&self) -> Option<&FieldTable> {
        self.properties.headers().as_ref()
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
}
