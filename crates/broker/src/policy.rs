//! Policies: operator-defined settings applied to queues and exchanges whose names match
//! a regular expression, as RabbitMQ's `rabbitmqctl set_policy` does. One policy applies
//! per entity (the highest priority). Client arguments beat policy values, except for
//! the numeric limits (TTL, expiry, length), where the lower of the two applies.

use regex::Regex;
use serde::Deserialize;

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
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PolicyDefinition {
    /// Per-queue message TTL, ms.
    pub message_ttl: Option<u64>,
    /// Queue expiry, ms (must be positive).
    pub expires: Option<u64>,
    /// Dead-letter exchange.
    pub dead_letter_exchange: Option<String>,
    /// Dead-letter routing key.
    pub dead_letter_routing_key: Option<String>,
    /// Maximum ready messages.
    pub max_length: Option<u64>,
    /// Maximum ready body bytes.
    pub max_length_bytes: Option<u64>,
    /// `drop-head`, `reject-publish` or `reject-publish-dlx`.
    pub overflow: Option<String>,
    /// Alternate exchange (exchanges).
    pub alternate_exchange: Option<String>,
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
    /// The settings.
    pub definition: PolicyDefinition,
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
        Ok(Policy {
            name: c.name.clone(),
            pattern,
            apply_to: c.apply_to,
            priority: c.priority,
            definition: c.definition.clone(),
        })
    }
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
