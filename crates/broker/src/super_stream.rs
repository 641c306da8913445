//! Super streams: one logical stream split into partitions, as RabbitMQ (3.11+) models
//! it. A super stream is a durable direct exchange (argument `x-super-stream: true`)
//! bound to N stream queues, each binding carrying its partition's position in
//! `x-stream-partition-order`. Nothing else is stored: a super stream declared through
//! AMQP 0-9-1 (exchange, streams, bindings) is the same object as one created through
//! the stream protocol, and the partitions are read from the bindings each time.
//!
//! These are the engine operations behind the stream protocol's `create super stream`,
//! `delete super stream`, `partitions` and `route` commands; callers check permissions.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::exchange::{Destination, ExchangeOptions};
use crate::vhost::{QueueOptions, VHost};
use crate::Message;

/// The exchange argument that marks a super stream.
pub const SUPER_STREAM_ARG: &str = "x-super-stream";
/// The binding argument giving a partition's position.
pub const PARTITION_ORDER_ARG: &str = "x-stream-partition-order";

/// Why a super stream cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum SuperStreamError {
    /// Bad names, a partition/binding-key count mismatch, duplicates (RabbitMQ's
    /// `validation_failed`: precondition failed).
    #[error("{0}")]
    Invalid(String),
    /// The exchange or a partition's queue already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// Declaring a part failed (the parts made so far are removed).
    #[error(transparent)]
    Engine(#[from] crate::Error),
}

/// RabbitMQ's check on a stream or super stream name: not empty, not `amq.`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with("amq.")
}

/// A binding's partition order, if it has one (any integer, or text holding one).
fn partition_order(args: &FieldTable) -> Option<i64> {
    match args.inner().get(PARTITION_ORDER_ARG)? {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    }
}

/// A super stream's exchange: durable, direct, `x-super-stream: true`.
fn exchange_options(name: &str) -> ExchangeOptions {
    let mut arguments = FieldTable::default();
    arguments.insert(SUPER_STREAM_ARG.into(), AMQPValue::Boolean(true));
    ExchangeOptions {
        name: name.to_string(),
        kind: "direct".into(),
        passive: false,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments,
    }
}

impl VHost {
    /// The stream queues bound to super stream `name`, bindings with a partition order
    /// first in that order, then the others; `None` if there is no such exchange.
    pub fn super_stream_partitions(&self, name: &str) -> Option<Vec<String>> {
        let mut bindings: Vec<(Option<i64>, String)> = self
            .bindings_from(name)?
            .into_iter()
            .filter_map(|b| match &b.destination {
                Destination::Queue(q) if self.is_stream_queue(q) => {
                    Some((partition_order(&b.arguments), q.clone()))
                }
                _ => None,
            })
            .collect();
        // Stable: bindings without an order keep their relative position.
        bindings.sort_by_key(|(order, _)| (order.is_none(), order.unwrap_or(0)));
        let mut out: Vec<String> = Vec::with_capacity(bindings.len());
        for (_, q) in bindings {
            if !out.contains(&q) {
                out.push(q);
            }
        }
        Some(out)
    }

    /// The partitions a message with `routing_key` goes to (empty when nothing
    /// matches); `None` if there is no such exchange.
    pub fn super_stream_route(&self, name: &str, routing_key: &str) -> Option<Vec<String>> {
        if name.is_empty() {
            return None;
        }
        let probe = Message::new(name, routing_key, bytes::Bytes::new(), bytes::Bytes::new());
        let queues = self.route_keys(name, &[routing_key], &probe, false).ok()?;
        Some(
            queues
                .into_iter()
                .filter(|q| q.is_stream())
                .map(|q| q.name.clone())
                .collect(),
        )
    }

    /// The index of partition `stream` in `super_stream`, for single active consumer:
    /// the binding's partition order, else the number after the name's last `-`, else
    /// -1; `None` if the super stream does not exist or `stream` is not bound to it.
    pub fn super_stream_partition_index(&self, super_stream: &str, stream: &str) -> Option<i64> {
        let binding = self
            .bindings_from(super_stream)?
            .into_iter()
            .filter(|b| matches!(&b.destination, Destination::Queue(q) if q == stream))
            .min_by_key(|b| {
                let o = partition_order(&b.arguments);
                (o.is_none(), o.unwrap_or(0))
            })?;
        Some(partition_order(&binding.arguments).unwrap_or_else(|| {
            stream
                .rsplit_once('-')
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(-1)
        }))
    }

    fn is_stream_queue(&self, name: &str) -> bool {
        self.queue(name, 0).is_ok_and(|q| q.is_stream())
    }

    /// Creates super stream `name`: the exchange, one stream per partition (declared
    /// with `arguments`, as `x-` queue arguments) and the bindings (`binding_keys[i]`
    /// to `partitions[i]`, order `i`). On failure what was made is removed.
    ///
    /// # Errors
    /// See [`SuperStreamError`].
    pub fn create_super_stream(
        &self,
        name: &str,
        partitions: &[String],
        binding_keys: &[String],
        arguments: &FieldTable,
    ) -> Result<(), SuperStreamError> {
        if partitions.len() != binding_keys.len() {
            return Err(SuperStreamError::Invalid(
                "There must be the same number of partitions and binding keys".into(),
            ));
        }
        if let Some(bad) = partitions.iter().find(|p| !valid_name(p)) {
            return Err(SuperStreamError::Invalid(format!(
                "{bad} is not a correct partition names"
            )));
        }
        let mut seen: Vec<&String> = partitions.iter().collect();
        seen.sort();
        seen.dedup();
        if seen.len() != partitions.len() {
            return Err(SuperStreamError::Invalid(format!(
                "Duplicate partition names found {}",
                partitions.join("")
            )));
        }
        if !valid_name(name) {
            return Err(SuperStreamError::Invalid(format!(
                "{name} is not a correct name for a super stream"
            )));
        }
        if self.has_exchange(name) {
            return Err(SuperStreamError::AlreadyExists(format!(
                "there is already an exchange named {name}"
            )));
        }
        if let Some(q) = partitions.iter().find(|p| self.queue(p, 0).is_ok()) {
            return Err(SuperStreamError::AlreadyExists(format!(
                "there is already a queue named {q}"
            )));
        }
        self.declare_exchange(&exchange_options(name))?;
        let mut q_args = arguments.clone();
        q_args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        if !q_args.inner().contains_key("x-queue-leader-locator") {
            q_args.insert(
                "x-queue-leader-locator".into(),
                AMQPValue::LongString("balanced".into()),
            );
        }
        let mut made: Vec<&String> = Vec::new();
        let result = (|| -> Result<(), crate::Error> {
            for p in partitions {
                self.declare_queue(
                    QueueOptions {
                        name: p.clone(),
                        passive: false,
                        durable: true,
                        exclusive: false,
                        auto_delete: false,
                        arguments: q_args.clone(),
                    },
                    0,
                )?;
                made.push(p);
            }
            for (order, (p, key)) in partitions.iter().zip(binding_keys).enumerate() {
                let mut b_args = FieldTable::default();
                b_args.insert(
                    PARTITION_ORDER_ARG.into(),
                    AMQPValue::LongLongInt(order as i64),
                );
                self.bind_queue(p, name, key, &b_args, 0)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            for p in made {
                let _ = self.delete_queue(p, false, false, 0);
            }
            let _ = self.delete_exchange(name, false);
            return Err(e.into());
        }
        tracing::info!(vhost = %self.name, super_stream = %name, partitions = partitions.len(), "super stream created");
        Ok(())
    }

    /// Deletes super stream `name`: its exchange and its partitions (as listed by
    /// [`VHost::super_stream_partitions`] before). Returns the partitions; `None` if
    /// there is no such exchange.
    pub fn delete_super_stream(&self, name: &str) -> Option<Vec<String>> {
        let partitions = self.super_stream_partitions(name)?;
        if let Err(e) = self.delete_exchange(name, false) {
            tracing::warn!(vhost = %self.name, super_stream = %name, error = %e, "cannot delete a super stream's exchange");
        }
        for p in &partitions {
            if let Err(e) = self.delete_queue(p, false, false, 0) {
                tracing::warn!(vhost = %self.name, super_stream = %name, partition = %p, error = %e, "cannot delete a super stream partition");
            }
        }
        tracing::info!(vhost = %self.name, super_stream = %name, "super stream deleted");
        Some(partitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn create_route_partitions_delete() {
        let v = VHost::new("/");
        v.create_super_stream(
            "invoices",
            &names(&["invoices-0", "invoices-1", "invoices-2"]),
            &names(&["0", "1", "2"]),
            &FieldTable::default(),
        )
        .unwrap();
        assert_eq!(
            v.super_stream_partitions("invoices").unwrap(),
            names(&["invoices-0", "invoices-1", "invoices-2"])
        );
        assert_eq!(
            v.super_stream_route("invoices", "1").unwrap(),
            names(&["invoices-1"])
        );
        assert!(v.super_stream_route("invoices", "9").unwrap().is_empty());
        assert_eq!(v.super_stream_route("nope", "1"), None);
        assert_eq!(
            v.super_stream_partition_index("invoices", "invoices-2"),
            Some(2)
        );
        assert!(v.queue("invoices-1", 0).unwrap().is_stream());
        // Again: the exchange exists.
        assert!(matches!(
            v.create_super_stream(
                "invoices",
                &names(&["x-0"]),
                &names(&["0"]),
                &FieldTable::default()
            ),
            Err(SuperStreamError::AlreadyExists(_))
        ));
        assert_eq!(
            v.delete_super_stream("invoices").unwrap().len(),
            3,
            "partitions deleted"
        );
        assert!(!v.has_exchange("invoices"));
        assert!(v.queue("invoices-0", 0).is_err());
        assert_eq!(v.delete_super_stream("invoices"), None);
    }

    #[test]
    fn validation_and_rollback() {
        let v = VHost::new("/");
        for (parts, keys) in [
            (names(&["a", "b"]), names(&["a"])),
            (names(&["a", "a"]), names(&["1", "2"])),
            (names(&["amq.a"]), names(&["1"])),
        ] {
            assert!(matches!(
                v.create_super_stream("s", &parts, &keys, &FieldTable::default()),
                Err(SuperStreamError::Invalid(_))
            ));
        }
        // A partition's queue exists already: nothing is made.
        v.declare_queue(
            QueueOptions {
                name: "s-1".into(),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments: FieldTable::default(),
            },
            0,
        )
        .unwrap();
        assert!(matches!(
            v.create_super_stream(
                "s",
                &names(&["s-0", "s-1"]),
                &names(&["0", "1"]),
                &FieldTable::default()
            ),
            Err(SuperStreamError::AlreadyExists(_))
        ));
        assert!(!v.has_exchange("s"));
        assert!(v.queue("s-0", 0).is_err());
        // Bad stream arguments: the exchange and the first partitions are removed.
        let mut bad = FieldTable::default();
        bad.insert("x-max-age".into(), AMQPValue::LongString("soon".into()));
        assert!(matches!(
            v.create_super_stream("t", &names(&["t-0"]), &names(&["0"]), &bad),
            Err(SuperStreamError::Engine(_))
        ));
        assert!(!v.has_exchange("t"));
        assert!(v.queue("t-0", 0).is_err());
    }

    #[test]
    fn declared_through_amqp_order_and_suffix() {
        let v = VHost::new("/");
        // What RabbitMQ's tools declare over AMQP 0-9-1.
        v.declare_exchange(&exchange_options("ss")).unwrap();
        let mut s_args = FieldTable::default();
        s_args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        for q in ["ss-a", "ss-b", "ss-7"] {
            v.declare_queue(
                QueueOptions {
                    name: q.into(),
                    passive: false,
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    arguments: s_args.clone(),
                },
                0,
            )
            .unwrap();
        }
        let order = |n: i64| {
            let mut t = FieldTable::default();
            t.insert(PARTITION_ORDER_ARG.into(), AMQPValue::LongInt(n as i32));
            t
        };
        v.bind_queue("ss-a", "ss", "a", &order(1), 0).unwrap();
        v.bind_queue("ss-b", "ss", "b", &order(0), 0).unwrap();
        v.bind_queue("ss-7", "ss", "c", &FieldTable::default(), 0)
            .unwrap();
        assert_eq!(
            v.super_stream_partitions("ss").unwrap(),
            names(&["ss-b", "ss-a", "ss-7"])
        );
        assert_eq!(v.super_stream_partition_index("ss", "ss-a"), Some(1));
        assert_eq!(v.super_stream_partition_index("ss", "ss-7"), Some(7));
        assert_eq!(v.super_stream_partition_index("ss", "other"), None);
    }
}
