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
}

/// An invalid argument: its name and RabbitMQ's error term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidArg {
    /// Argument name.
    pub arg: String,
    /// RabbitMQ's reason, e.g. `{value_negative,-1}`.
    pub reason: String,
}

fn int_of(v: &AMQPValue) -> Option<i128> {
    Some(match v {
        AMQPValue::ShortShortInt(x) => i128::from(*x),
        AMQPValue::ShortShortUInt(x) => i128::from(*x),
        AMQPValue::ShortInt(x) => i128::from(*x),
        AMQPValue::ShortUInt(x) => i128::from(*x),
        AMQPValue::LongInt(x) => i128::from(*x),
        AMQPValue::LongUInt(x) => i128::from(*x),
        AMQPValue::LongLongInt(x) => i128::from(*x),
        _ => return None,
    })
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
    }
}

fn unacceptable(arg: &str, v: &AMQPValue) -> InvalidArg {
    bad(
        arg,
        format!("{{unacceptable_type,{}}}", crate::args::type_name(v)),
    )
}

fn non_neg(arg: &str, v: &AMQPValue) -> Result<u64, InvalidArg> {
    let n = int_of(v).ok_or_else(|| unacceptable(arg, v))?;
    if n < 0 {
        return Err(bad(arg, format!("{{value_negative,{n}}}")));
    }
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}

impl QueueArgs {
    /// Validates and interprets `args` (unknown keys are ignored, as RabbitMQ does).
    ///
    /// # Errors
    /// The first invalid argument, with RabbitMQ's reason.
    pub fn parse(args: &FieldTable) -> Result<Self, InvalidArg> {
        let mut a = QueueArgs::default();
        let t = args.inner();
        if let Some(v) = t.get("x-message-ttl") {
            a.message_ttl = Some(non_neg("x-message-ttl", v)?);
        }
        if let Some(v) = t.get("x-expires") {
            let n = int_of(v).ok_or_else(|| unacceptable("x-expires", v))?;
            if n == 0 {
                return Err(bad("x-expires", "{value_zero,0}".into()));
            }
            if n < 0 {
                return Err(bad("x-expires", format!("{{value_negative,{n}}}")));
            }
            a.expires = Some(u64::try_from(n).unwrap_or(u64::MAX));
        }
        if let Some(v) = t.get("x-dead-letter-exchange") {
            a.dead_letter_exchange =
                Some(str_of(v).ok_or_else(|| unacceptable("x-dead-letter-exchange", v))?);
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
        if let Some(v) = t.get("x-overflow") {
            let s = str_of(v).ok_or_else(|| unacceptable("x-overflow", v))?;
            a.overflow = match s.as_str() {
                "drop-head" => Overflow::DropHead,
                "reject-publish" => Overflow::RejectPublish,
                "reject-publish-dlx" => Overflow::RejectPublishDlx,
                _ => return Err(bad("x-overflow", "invalid_overflow".into())),
            };
        }
        if let Some(v) = t.get("x-max-priority") {
            let n = non_neg("x-max-priority", v)?;
            if n > 255 {
                return Err(bad("x-max-priority", format!("{{max_value_exceeded,{n}}}")));
            }
            a.max_priority = Some(n as u8);
        }
        if let Some(v) = t.get("x-single-active-consumer") {
            match v {
                AMQPValue::Boolean(b) => a.single_active_consumer = *b,
                other => return Err(unacceptable("x-single-active-consumer", other)),
            }
        }
        if let Some(v) = t.get("x-queue-type") {
            let s = str_of(v).ok_or_else(|| unacceptable("x-queue-type", v))?;
            if s != "classic" {
                return Err(bad(
                    "x-queue-type",
                    format!("{{unsupported_queue_type,<<\"{s}\">>}}"),
                ));
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
                "{unacceptable_type,longstr}",
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
