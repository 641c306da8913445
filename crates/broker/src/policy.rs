//! Policies: operator-defined settings applied to queues and exchanges whose names match
//! a regular expression, as RabbitMQ's `rabbitmqctl set_policy` does. One policy applies
//! per entity (the highest priority). Client arguments beat policy values, except for
//! the numeric limits (TTL, expiry, length), where the lower of the two applies.

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::queue_args::{Overflow, QueueArgs};

/// What a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ApplyTo {
    /// Queues only.
    #[default]
    Queues,
    /// Exchanges only.
    Exchanges,
    /// Both.
    All,
}

/// The keys a policy may set (RabbitMQ's names, without `x-`).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PolicyDefinition {
    /// Per-queue message TTL, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_ttl: Option<u64>,
    /// Queue expiry, ms (must be positive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Dead-letter exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_exchange: Option<String>,
    /// Dead-letter routing key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_routing_key: Option<String>,
    /// Maximum ready messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// Maximum ready body bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length_bytes: Option<u64>,
    /// `drop-head`, `reject-publish` or `reject-publish-dlx`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow: Option<String>,
    /// Alternate exchange (exchanges).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alternate_exchange: Option<String>,
    /// A stream's maximum age (`7D`, `12h`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// A stream's segment size, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_max_segment_size_bytes: Option<u64>,
}

/// A policy as written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name (for logs).
    pub name: String,
    /// Vhost it belongs to.
    #[serde(default = "default_vhost")]
    pub vhost: String,
    /// Regular expression matched against entity names.
    pub pattern: String,
    /// Queues, exchanges or all.
    #[serde(default)]
    pub apply_to: ApplyTo,
    /// Higher wins when several match.
    #[serde(default)]
    pub priority: i64,
    /// The settings.
    pub definition: PolicyDefinition,
}

fn default_vhost() -> String {
    "/".to_string()
}

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Name.
    pub name: String,
    pattern: Regex,
    apply_to: ApplyTo,
    priority: i64,
    /// The settings Warren applies.
    pub definition: PolicyDefinition,
    /// The definition as given (with keys Warren accepts but does not apply).
    pub raw: Map<String, Value>,
}

impl Policy {
    /// Compiles and checks a configured policy.
    ///
    /// # Errors
    /// An invalid regular expression or setting.
    pub fn compile(c: &PolicyConfig) -> Result<Self, String> {
        let pattern = Regex::new(&c.pattern)
            .map_err(|e| format!("policy '{}': invalid pattern: {e}", c.name))?;
        if let Some(o) = &c.definition.overflow {
            if !matches!(
                o.as_str(),
                "drop-head" | "reject-publish" | "reject-publish-dlx"
            ) {
                return Err(format!("policy '{}': invalid overflow '{o}'", c.name));
            }
        }
        if c.definition.expires == Some(0) {
            return Err(format!("policy '{}': expires must be positive", c.name));
        }
        let raw = match serde_json::to_value(&c.definition) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Ok(Policy {
            name: c.name.clone(),
            pattern,
            apply_to: c.apply_to,
            priority: c.priority,
            definition: c.definition.clone(),
            raw,
        })
    }

    /// Compiles a stored or submitted policy (RabbitMQ's `set_policy` /
    /// `set_operator_policy`), with RabbitMQ's validation messages.
    ///
    /// # Errors
    /// The validation message, without RabbitMQ's "Validation failed" header.
    pub fn from_record(r: &PolicyRecord, kind: PolicyKind) -> Result<Self, String> {
        let pattern = Regex::new(&r.pattern)
            .map_err(|e| format!("pattern should be regular expression but is invalid: {e}"))?;
        let apply_to = match r.apply_to.as_str() {
            "queues" | "classic_queues" | "quorum_queues" => ApplyTo::Queues,
            "exchanges" => ApplyTo::Exchanges,
            "all" | "" => ApplyTo::All,
            other => {
                return Err(format!(
                    "apply-to '{other}' unrecognised; should be 'queues', 'exchanges' or 'all'"
                ))
            }
        };
        let definition = validate_definition(&r.definition, kind)?;
        Ok(Policy {
            name: r.name.clone(),
            pattern,
            apply_to,
            priority: r.priority,
            definition,
            raw: r.definition.clone(),
        })
    }
}

/// Regular policies, or operator policies (limits an operator imposes; the lower of the
/// two values applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// `set_policy`.
    Regular,
    /// `set_operator_policy`.
    Operator,
}

/// A policy as the management API and definitions files carry it, and as it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// Vhost.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Regular expression matched against queue and exchange names.
    pub pattern: String,
    /// `queues`, `exchanges` or `all`.
    #[serde(rename = "apply-to", default = "default_apply_to")]
    pub apply_to: String,
    /// Higher wins.
    #[serde(default)]
    pub priority: i64,
    /// The settings, as RabbitMQ's JSON (kept as JSON text in the data directory).
    #[serde(with = "json_text")]
    pub definition: Map<String, Value>,
}

fn default_apply_to() -> String {
    "all".to_string()
}

/// The definition map as JSON text, so any JSON value survives the TOML file.
mod json_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::{Map, Value};

    pub fn serialize<S: Serializer>(m: &Map<String, Value>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Value::Object(m.clone()).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// Keys RabbitMQ 3.x accepts in a policy that Warren stores and lists but does not act
/// on (mirroring, queue modes and versions, stream and quorum settings, federation):
/// a single node has nothing to mirror, and the others concern features Warren does
/// not have.
pub const ACCEPTED_NOT_APPLIED: &[&str] = &[
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-sync-batch-size",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "queue-mode",
    "queue-version",
    "queue-master-locator",
    "queue-leader-locator",
    "delivery-limit",
    "initial-cluster-size",
    "federation-upstream",
    "federation-upstream-set",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "dead-letter-strategy",
];

/// The keys an operator policy may set (RabbitMQ 3.10).
const OPERATOR_KEYS: &[&str] = &[
    "expires",
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "delivery-limit",
];

/// A JSON value as RabbitMQ's messages print the Erlang term it decodes to.
pub fn erlang_term(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{s}\">>"),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(erlang_term).collect::<Vec<_>>().join(",")
        ),
        Value::Object(m) => format!(
            "[{}]",
            m.iter()
                .map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", erlang_term(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn validate_definition(
    m: &Map<String, Value>,
    kind: PolicyKind,
) -> Result<PolicyDefinition, String> {
    if m.is_empty() {
        return Err("no policy provided".into());
    }
    let unknown: Vec<String> = m
        .iter()
        .filter(|(k, _)| match kind {
            PolicyKind::Operator => !OPERATOR_KEYS.contains(&k.as_str()),
            PolicyKind::Regular => {
                !ACCEPTED_NOT_APPLIED.contains(&k.as_str())
                    && !matches!(
                        k.as_str(),
                        "message-ttl"
                            | "expires"
                            | "dead-letter-exchange"
                            | "dead-letter-routing-key"
                            | "max-length"
                            | "max-length-bytes"
                            | "overflow"
                            | "alternate-exchange"
                            | "max-age"
                            | "stream-max-segment-size-bytes"
                    )
            }
        })
        .map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", erlang_term(v)))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "[{}] are not recognised policy settings",
            unknown.join(",")
        ));
    }
    let number = |key: &str, min: u64, what: &str| -> Result<Option<u64>, String> {
        match m.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n >= min => Ok(Some(n)),
                _ => Err(format!("{} is not a valid {what}", erlang_term(v))),
            },
        }
    };
    let text = |key: &str, what: &str| -> Result<Option<String>, String> {
        match m.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(format!("{} is not a valid {what}", erlang_term(v))),
        }
    };
    let overflow = text("overflow", "overflow value")?;
    if let Some(o) = &overflow {
        if !matches!(
            o.as_str(),
            "drop-head" | "reject-publish" | "reject-publish-dlx"
        ) {
            return Err(format!("<<\"{o}\">> is not a valid overflow value"));
        }
    }
    Ok(PolicyDefinition {
        message_ttl: number("message-ttl", 0, "message TTL")?,
        expires: number("expires", 1, "queue expiry")?,
        dead_letter_exchange: text("dead-letter-exchange", "dead letter exchange name")?,
        dead_letter_routing_key: text("dead-letter-routing-key", "dead letter routing key")?,
        max_length: number("max-length", 0, "maximum length")?,
        max_length_bytes: number("max-length-bytes", 0, "maximum length in bytes")?,
        overflow,
        alternate_exchange: text("alternate-exchange", "alternate exchange name")?,
        max_age: match m.get("max-age") {
            None => None,
            Some(Value::String(a)) if crate::stream::parse_age(a).is_some() => Some(a.clone()),
            Some(v) => return Err(format!("{} is not a valid max age", erlang_term(v))),
        },
        stream_max_segment_size_bytes: number("stream-max-segment-size-bytes", 1, "segment size")?,
    })
}

impl PolicyConfig {
    /// The record form of a policy from the configuration file.
    pub fn record(&self) -> PolicyRecord {
        PolicyRecord {
            vhost: self.vhost.clone(),
            name: self.name.clone(),
            pattern: self.pattern.clone(),
            apply_to: match self.apply_to {
                ApplyTo::Queues => "queues",
                ApplyTo::Exchanges => "exchanges",
                ApplyTo::All => "all",
            }
            .to_string(),
            priority: self.priority,
            definition: match serde_json::to_value(&self.definition) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            },
        }
    }
}

/// The definition that applies to a queue after merging its policy and its operator
/// policy (RabbitMQ's `effective_policy_definition`): the policy's keys, with the
/// operator policy's numeric limits where they are lower or the policy has none.
pub fn effective_definition(
    policy: Option<&Policy>,
    operator: Option<&Policy>,
) -> Map<String, Value> {
    let mut out = policy.map(|p| p.raw.clone()).unwrap_or_default();
    if let Some(op) = operator {
        for (k, v) in &op.raw {
            let lower = match (out.get(k).and_then(Value::as_u64), v.as_u64()) {
                (Some(mine), Some(theirs)) => theirs < mine,
                _ => true,
            };
            if lower {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// The policy that applies to an entity: the highest-priority match (first on ties).
pub fn matching<'a>(policies: &'a [Policy], name: &str, queue: bool) -> Option<&'a Policy> {
    let mut best: Option<&Policy> = None;
    for p in policies {
        let kind_ok = match p.apply_to {
            ApplyTo::All => true,
            ApplyTo::Queues => queue,
            ApplyTo::Exchanges => !queue,
        };
        if kind_ok && p.pattern.is_match(name) && best.is_none_or(|b| p.priority > b.priority) {
            best = Some(p);
        }
    }
    best
}

fn min_of(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Merges a policy into a queue's declared arguments.
pub fn apply_to_queue(
    mut args: QueueArgs,
    declared_overflow: bool,
    p: &PolicyDefinition,
) -> QueueArgs {
    args.message_ttl = min_of(args.message_ttl, p.message_ttl);
    args.expires = min_of(args.expires, p.expires);
    args.max_length = min_of(args.max_length, p.max_length);
    args.max_length_bytes = min_of(args.max_length_bytes, p.max_length_bytes);
    if let Some(stream) = args.stream.as_mut() {
        // A stream's own arguments win over the policy's.
        if stream.max_age_ms.is_none() {
            stream.max_age_ms = p.max_age.as_deref().and_then(crate::stream::parse_age);
        }
        if stream.max_segment_bytes == crate::stream::DEFAULT_SEGMENT_BYTES {
            if let Some(n) = p.stream_max_segment_size_bytes {
                stream.max_segment_bytes = n.min(crate::stream::MAX_SEGMENT_BYTES);
            }
        }
    }
    if args.dead_letter_exchange.is_none() {
        args.dead_letter_exchange = p.dead_letter_exchange.clone();
        if args.dead_letter_routing_key.is_none() {
            args.dead_letter_routing_key = p.dead_letter_routing_key.clone();
        }
    }
    if !declared_overflow {
        if let Some(o) = &p.overflow {
            args.overflow = match o.as_str() {
                "reject-publish" => Overflow::RejectPublish,
                "reject-publish-dlx" => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            };
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, pattern: &str, priority: i64, def: PolicyDefinition) -> Policy {
        Policy::compile(&PolicyConfig {
            name: name.into(),
            vhost: "/".into(),
            pattern: pattern.into(),
            apply_to: ApplyTo::Queues,
            priority,
            definition: def,
        })
        .unwrap()
    }

    #[test]
    fn highest_priority_match_and_precedence() {
        let ps = vec![
            policy(
                "low",
                ".*",
                0,
                PolicyDefinition {
                    max_length: Some(5),
                    ..Default::default()
                },
            ),
            policy(
                "high",
                "^tmp\\.",
                10,
                PolicyDefinition {
                    message_ttl: Some(1000),
                    dead_letter_exchange: Some("dlx".into()),
                    ..Default::default()
                },
            ),
        ];
        assert_eq!(matching(&ps, "tmp.a", true).unwrap().name, "high");
        assert_eq!(matching(&ps, "other", true).unwrap().name, "low");
        assert!(matching(&ps, "tmp.a", false).is_none());
        let declared = QueueArgs {
            message_ttl: Some(5000),
            dead_letter_exchange: Some("mine".into()),
            ..Default::default()
        };
        let eff = apply_to_queue(declared, false, &ps[1].definition);
        assert_eq!(eff.message_ttl, Some(1000), "lower TTL wins");
        assert_eq!(
            eff.dead_letter_exchange.as_deref(),
            Some("mine"),
            "argument wins"
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        let c = PolicyConfig {
            name: "x".into(),
            vhost: "/".into(),
            pattern: "(".into(),
            apply_to: ApplyTo::All,
            priority: 0,
            definition: PolicyDefinition::default(),
        };
        assert!(Policy::compile(&c).is_err());
    }
}
