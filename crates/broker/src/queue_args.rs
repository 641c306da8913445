//! Queue arguments RabbitMQ interprets (`x-message-ttl`, `x-dead-letter-exchange`, …):
//! validated at declare with RabbitMQ's error terms, merged with policies, and read by
//! the queue.

use amq_protocol::types::{AMQPValue, FieldTable};

/// What happens when a queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (and dead-letter) the oldest message.
    #[default]
    DropHead,
    /// Refuse the new message (publisher gets basic.nack).
    RejectPublish,
    /// Refuse and dead-letter the new message.
    RejectPublishDlx,
}

/// The interpreted arguments of a queue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueArgs {
    /// `x-message-ttl`, ms.
    pub message_ttl: Option<u64>,
    /// `x-expires`, ms.
    pub expires: Option<u64>,
    /// `x-dead-letter-exchange`.
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<String>,
    /// `x-max-length`.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-max-priority`.
    pub max_priority: Option<u8>,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// A stream (`x-queue-type=stream`) and its own settings.
    pub stream: Option<StreamArgs>,
}

/// The arguments only streams have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamArgs {
    /// `x-max-age`, ms.
    pub max_age_ms: Option<u64>,
    /// `x-stream-max-segment-size-bytes`.
    pub max_segment_bytes: u64,
    /// `x-stream-filter-size-bytes`.
    pub filter_bytes: usize,
}

impl Default for StreamArgs {
    fn default() -> Self {
        StreamArgs {
            max_age_ms: None,
            max_segment_bytes: crate::stream::DEFAULT_SEGMENT_BYTES,
            filter_bytes: crate::stream::DEFAULT_FILTER_BYTES,
        }
    }
}

/// An invalid argument: its name and RabbitMQ's error term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidArg {
    /// Argument name.
    pub arg: String,
    /// RabbitMQ's reason, e.g. `{value_negative,-1}`.
    pub reason: String,
    /// How the message is worded.
    pub kind: InvalidKind,
}

/// Integer argument types only (a timestamp is not an integer argument).
fn int_of(v: &AMQPValue) -> Option<i128> {
    match v {
        AMQPValue::Timestamp(_) => None,
        other => crate::args::int_value(other),
    }
}

fn str_of(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn bad(arg: &str, reason: String) -> InvalidArg {
    InvalidArg {
        arg: arg.to_string(),
        reason,
        kind: InvalidKind::Arg,
    }
}

fn unacceptable(arg: &str, v: &AMQPValue) -> InvalidArg {
    bad(
        arg,
        format!("{{unacceptable_type,{}}}", crate::args::type_name(v)),
    )
}

/// RabbitMQ's `check_int_arg`: any integer type, else "expected integer, got T".
fn int_arg(arg: &str, v: &AMQPValue) -> Result<i128, InvalidArg> {
    int_of(v).ok_or_else(|| {
        bad(
            arg,
            format!("\"expected integer, got {}\"", crate::args::type_name(v)),
        )
    })
}

fn non_neg(arg: &str, v: &AMQPValue) -> Result<u64, InvalidArg> {
    let n = int_arg(arg, v)?;
    if n < 0 {
        return Err(bad(arg, format!("{{value_negative,{n}}}")));
    }
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}

/// RabbitMQ's largest TTL or expiry: ten years in milliseconds.
const MAX_EXPIRY_MS: i128 = 315_360_000_000;

/// Arguments RabbitMQ knows that belong to other queue types: declaring a classic queue
/// with one of them is refused.
const OTHER_TYPE_ARGS: &[&str] = &[
    "x-delivery-limit",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-dead-letter-strategy",
    "x-quorum-initial-group-size",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
];

/// Arguments RabbitMQ knows that streams refuse, in its checking order.
const STREAM_REFUSED_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-single-active-consumer",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-dead-letter-strategy",
];

/// How the error is worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    /// `invalid arg 'A' for queue 'Q' in vhost 'V': REASON`
    Arg,
    /// `invalid type 'T' for arg 'A' in queue 'Q' in vhost 'V'` (REASON holds T)
    Type,
    /// `invalid arg 'A' for queue 'Q' in vhost 'V' of queue type rabbit_classic_queue`
    OtherQueueType,
    /// `invalid property 'P' for queue 'Q' in vhost 'V'` (REASON holds P)
    Property,
    /// `invalid arg 'A' for queue 'Q' in vhost 'V' of queue type rabbit_stream_queue`
    StreamQueueType,
    /// REASON is the whole text (RabbitMQ's stream checks word their own).
    Text,
}

impl InvalidArg {
    /// RabbitMQ's wording for queue `queue` in `vhost`.
    pub fn message(&self, queue: &str, vhost: &str) -> String {
        match self.kind {
            InvalidKind::Arg => format!(
                "invalid arg '{}' for queue '{queue}' in vhost '{vhost}': {}",
                self.arg, self.reason
            ),
            InvalidKind::Type => format!(
                "invalid type '{}' for arg '{}' in queue '{queue}' in vhost '{vhost}'",
                self.reason, self.arg
            ),
            InvalidKind::OtherQueueType => format!(
                "invalid arg '{}' for queue '{queue}' in vhost '{vhost}' of queue type rabbit_classic_queue",
                self.arg
            ),
            InvalidKind::Property => format!(
                "invalid property '{}' for queue '{queue}' in vhost '{vhost}'",
                self.reason
            ),
            InvalidKind::StreamQueueType => format!(
                "invalid arg '{}' for queue '{queue}' in vhost '{vhost}' of queue type rabbit_stream_queue",
                self.arg
            ),
            InvalidKind::Text => self.reason.clone(),
        }
    }
}

impl QueueArgs {
    /// Validates and interprets `args` in RabbitMQ's order (queue type, dead-letter
    /// exchange type, then each argument), ignoring unknown keys as RabbitMQ does.
    /// `durable` is needed for quorum queues, which must be durable.
    ///
    /// # Errors
    /// The first invalid argument, with RabbitMQ's reason.
    pub fn parse_for_declare(args: &FieldTable, durable: bool) -> Result<Self, InvalidArg> {
        let t = args.inner();
        let mut quorum = false;
        if let Some(v) = t.get("x-queue-type") {
            let s = str_of(v).ok_or_else(|| unacceptable("x-queue-type", v))?;
            match s.as_str() {
                "classic" => {}
                // Quorum queues are served by a durable classic queue: same client-visible
                // behaviour on a single node.
                "quorum" => quorum = true,
                "stream" => return Self::parse_stream(args),
                other => {
                    return Err(bad(
                        "x-queue-type",
                        format!("\"unsupported queue type '{other}'\""),
                    ))
                }
            }
        }
        if quorum && !durable {
            return Err(InvalidArg {
                arg: String::new(),
                reason: "non-durable".into(),
                kind: InvalidKind::Property,
            });
        }
        if let Some(v) = t.get("x-dead-letter-exchange") {
            if str_of(v).is_none() {
                return Err(InvalidArg {
                    arg: "x-dead-letter-exchange".into(),
                    reason: crate::args::type_name(v).into(),
                    kind: InvalidKind::Type,
                });
            }
        }
        let mut a = Self::parse(args)?;
        if !quorum {
            if let Some(k) = OTHER_TYPE_ARGS.iter().find(|k| t.contains_key(**k)) {
                return Err(InvalidArg {
                    arg: (*k).to_string(),
                    reason: String::new(),
                    kind: InvalidKind::OtherQueueType,
                });
            }
        }
        if quorum {
            a.max_priority = None;
        }
        Ok(a)
    }

    /// A stream's arguments, validated as RabbitMQ validates them (after the queue's
    /// durable, exclusive and auto-delete properties, which the caller checks).
    ///
    /// # Errors
    /// The first invalid argument, with RabbitMQ's text.
    pub fn parse_stream(args: &FieldTable) -> Result<Self, InvalidArg> {
        let t = args.inner();
        if let Some(k) = STREAM_REFUSED_ARGS.iter().find(|k| t.contains_key(**k)) {
            return Err(InvalidArg {
                arg: (*k).to_string(),
                reason: String::new(),
                kind: InvalidKind::StreamQueueType,
            });
        }
        let text = |reason: &str| InvalidArg {
            arg: String::new(),
            reason: reason.to_string(),
            kind: InvalidKind::Text,
        };
        let mut stream = StreamArgs::default();
        if let Some(v) = t.get("x-max-age") {
            let s = str_of(v).ok_or_else(|| unacceptable("x-max-age", v))?;
            let ms = crate::stream::parse_age(&s)
                .ok_or_else(|| bad("x-max-age", "invalid_max_age".into()))?;
            stream.max_age_ms = Some(ms);
        }
        if let Some(v) = t.get("x-stream-max-segment-size-bytes") {
            // RabbitMQ compares with Erlang's term order, where any text is larger than
            // any number: a text is "too large" too.
            match int_of(v) {
                Some(n) if n <= i128::from(crate::stream::MAX_SEGMENT_BYTES) => {
                    stream.max_segment_bytes = u64::try_from(n).unwrap_or(0).max(1);
                }
                _ => {
                    return Err(text(
                        "Exceeded max value for x-stream-max-segment-size-bytes",
                    ))
                }
            }
        }
        if let Some(v) = t.get("x-stream-filter-size-bytes") {
            let n = int_of(v).ok_or_else(|| text("Invalid type for x-stream-filter-size-bytes"))?;
            if !(16..=255).contains(&n) {
                return Err(text("Invalid value for x-stream-filter-size-bytes"));
            }
            stream.filter_bytes = n as usize;
        }
        let mut a = QueueArgs::default();
        if let Some(v) = t.get("x-max-length-bytes") {
            a.max_length_bytes = Some(non_neg("x-max-length-bytes", v)?);
        }
        a.stream = Some(stream);
        Ok(a)
    }

    /// The stream settings these arguments give (`None` for other queues).
    pub fn stream_settings(&self) -> Option<crate::stream::StreamSettings> {
        self.stream.map(|s| crate::stream::StreamSettings {
            max_length_bytes: self.max_length_bytes,
            max_age_ms: s.max_age_ms,
            max_segment_bytes: s.max_segment_bytes,
            filter_bytes: s.filter_bytes,
        })
    }

    /// The interpreted arguments of a queue that exists (validated when it was
    /// declared): a stream's or a classic queue's.
    pub fn declared(args: &FieldTable) -> Self {
        if Self::is_stream(args) {
            Self::parse_stream(args).unwrap_or_else(|_| QueueArgs {
                stream: Some(StreamArgs::default()),
                ..QueueArgs::default()
            })
        } else {
            Self::parse(args).unwrap_or_default()
        }
    }

    /// Whether `args` declare a stream.
    pub fn is_stream(args: &FieldTable) -> bool {
        args.inner()
            .get("x-queue-type")
            .and_then(str_of)
            .is_some_and(|t| t == "stream")
    }

    /// Validates and interprets the classic-queue arguments (unknown keys ignored).
    ///
    /// # Errors
    /// The first invalid argument, with RabbitMQ's reason.
    pub fn parse(args: &FieldTable) -> Result<Self, InvalidArg> {
        let mut a = QueueArgs::default();
        let t = args.inner();
        if let Some(v) = t.get("x-expires") {
            let n = int_arg("x-expires", v)?;
            if n == 0 {
                return Err(bad("x-expires", "{value_zero,0}".into()));
            }
            if n < 0 {
                return Err(bad("x-expires", format!("{{value_negative,{n}}}")));
            }
            if n > MAX_EXPIRY_MS {
                return Err(bad("x-expires", format!("{{value_too_large,{n}}}")));
            }
            a.expires = Some(n as u64);
        }
        if let Some(v) = t.get("x-message-ttl") {
            let n = non_neg("x-message-ttl", v)?;
            if i128::from(n) > MAX_EXPIRY_MS {
                return Err(bad("x-message-ttl", format!("{{value_too_large,{n}}}")));
            }
            a.message_ttl = Some(n);
        }
        if let Some(v) = t.get("x-dead-letter-exchange") {
            a.dead_letter_exchange = str_of(v);
        }
        if let Some(v) = t.get("x-dead-letter-routing-key") {
            let rk = str_of(v).ok_or_else(|| unacceptable("x-dead-letter-routing-key", v))?;
            if a.dead_letter_exchange.is_none() {
                return Err(bad(
                    "x-dead-letter-routing-key",
                    "routing_key_but_no_dlx_defined".into(),
                ));
            }
            a.dead_letter_routing_key = Some(rk);
        }
        if let Some(v) = t.get("x-max-length") {
            a.max_length = Some(non_neg("x-max-length", v)?);
        }
        if let Some(v) = t.get("x-max-length-bytes") {
            a.max_length_bytes = Some(non_neg("x-max-length-bytes", v)?);
        }
        if let Some(v) = t.get("x-max-priority") {
            let n = non_neg("x-max-priority", v)?;
            if n > 255 {
                return Err(bad("x-max-priority", format!("{{max_value_exceeded,{n}}}")));
            }
            a.max_priority = Some(n as u8);
        }
        if let Some(v) = t.get("x-overflow") {
            let s = str_of(v).ok_or_else(|| unacceptable("x-overflow", v))?;
            a.overflow = match s.as_str() {
                "drop-head" => Overflow::DropHead,
                "reject-publish" => Overflow::RejectPublish,
                "reject-publish-dlx" => Overflow::RejectPublishDlx,
                _ => return Err(bad("x-overflow", "invalid_overflow".into())),
            };
        }
        if let Some(v) = t.get("x-queue-mode") {
            let s = str_of(v).ok_or_else(|| unacceptable("x-queue-mode", v))?;
            if s != "default" && s != "lazy" {
                return Err(bad(
                    "x-queue-mode",
                    format!("\"unsupported queue mode '{s}'\""),
                ));
            }
        }
        if let Some(v) = t.get("x-queue-version") {
            let n = int_arg("x-queue-version", v)?;
            if n != 1 && n != 2 {
                return Err(bad(
                    "x-queue-version",
                    format!("\"unsupported queue version '{n}'\""),
                ));
            }
        }
        if let Some(v) = t.get("x-single-active-consumer") {
            match v {
                AMQPValue::Boolean(b) => a.single_active_consumer = *b,
                other => return Err(unacceptable("x-single-active-consumer", other)),
            }
        }
        Ok(a)
    }

    /// Number of priority levels the queue's store needs.
    pub fn levels(&self) -> usize {
        self.max_priority.map_or(1, |p| usize::from(p) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::LongString;

    fn t(kv: &[(&str, AMQPValue)]) -> FieldTable {
        let mut f = FieldTable::default();
        for (k, v) in kv {
            f.insert((*k).into(), v.clone());
        }
        f
    }
    fn s(x: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(x.as_bytes().to_vec()))
    }

    #[test]
    fn valid_arguments() {
        let a = QueueArgs::parse(&t(&[
            ("x-message-ttl", AMQPValue::LongInt(100)),
            ("x-expires", AMQPValue::LongLongInt(5000)),
            ("x-dead-letter-exchange", s("dlx")),
            ("x-dead-letter-routing-key", s("rk")),
            ("x-max-length", AMQPValue::ShortInt(3)),
            ("x-overflow", s("reject-publish")),
            ("x-max-priority", AMQPValue::ShortShortUInt(10)),
            ("x-single-active-consumer", AMQPValue::Boolean(true)),
            ("x-unknown", s("ignored")),
        ]))
        .unwrap();
        assert_eq!(a.message_ttl, Some(100));
        assert_eq!(a.overflow, Overflow::RejectPublish);
        assert_eq!(a.levels(), 11);
        assert!(a.single_active_consumer);
    }

    #[test]
    fn invalid_arguments_have_rabbitmq_reasons() {
        let cases = [
            (
                t(&[("x-message-ttl", AMQPValue::LongInt(-1))]),
                "{value_negative,-1}",
            ),
            (
                t(&[("x-message-ttl", s("10"))]),
                "\"expected integer, got longstr\"",
            ),
            (t(&[("x-expires", AMQPValue::LongInt(0))]), "{value_zero,0}"),
            (t(&[("x-overflow", s("drop-tail"))]), "invalid_overflow"),
            (
                t(&[("x-max-priority", AMQPValue::LongInt(256))]),
                "{max_value_exceeded,256}",
            ),
            (
                t(&[("x-dead-letter-routing-key", s("k"))]),
                "routing_key_but_no_dlx_defined",
            ),
        ];
        for (args, reason) in cases {
            assert_eq!(QueueArgs::parse(&args).unwrap_err().reason, reason);
        }
    }
}
