//! RabbitMQ definitions files (JSON, as `rabbitmqctl export_definitions` and
//! `GET /api/definitions` write them): reading the users, vhosts, permissions, topic
//! permissions and limits they carry into [`crate::access`].
//!
//! The whole file is checked before anything changes: a malformed entry refuses the
//! import and names the entry (`users[2]: ...`). Fields RabbitMQ 3.13 and 4.x added
//! (`description`, `default_queue_type`, `metadata`, ...) are accepted; sections Warren
//! does not import are counted in the [`Summary`].
//!
//! ```
//! use warren_broker::Broker;
//!
//! let broker = Broker::new();
//! let json = r#"{"users": [{"name": "app", "password_hash": "", "tags": "monitoring"}],
//!               "vhosts": [{"name": "jobs"}],
//!               "permissions": [{"user": "app", "vhost": "jobs",
//!                                "configure": ".*", "write": ".*", "read": ".*"}]}"#;
//! let summary = warren_broker::definitions::import(&broker, json).unwrap();
//! assert_eq!((summary.users, summary.vhosts, summary.permissions), (1, 1, 1));
//! assert!(broker.vhost("jobs").is_some());
//! ```

use serde_json::{json, Value};

use crate::access::{
    self, AccessState, HashingAlgorithm, Permission, TopicPermission, User, UserLimits, VHostInfo,
    VHostLimits,
};
use crate::exchange::Destination;
use crate::policy::PolicyRecord;
use crate::{Broker, ExchangeOptions, QueueOptions};

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Users created or replaced.
    pub users: usize,
    /// Vhosts created or updated.
    pub vhosts: usize,
    /// Permissions set.
    pub permissions: usize,
    /// Topic permissions set.
    pub topic_permissions: usize,
    /// Queues, exchanges and bindings declared.
    pub topology: usize,
    /// Entries of sections this import leaves alone (parameters of components Warren
    /// does not have), by section name.
    pub skipped: Vec<(String, usize)>,
}

fn field<'a>(v: &'a Value, at: &str, key: &str) -> Result<&'a Value, String> {
    v.get(key)
        .ok_or_else(|| format!("{at}: missing field '{key}'"))
}

fn string(v: &Value, at: &str, key: &str) -> Result<String, String> {
    match field(v, at, key)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("{at}: '{key}' must be a string, not {other}")),
    }
}

fn opt_string(v: &Value, at: &str, key: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{at}: '{key}' must be a string, not {other}")),
    }
}

/// Tags as RabbitMQ writes them (definitions files, the HTTP API): a comma-separated
/// string (older exports, rabbitmqadmin) or a list. `at` names the entry in errors.
///
/// # Errors
/// Neither a string nor a list of strings.
pub fn tags(v: Option<&Value>, at: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| match t {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("{at}: a tag must be a string, not {other}")),
            })
            .collect(),
        Some(other) => Err(format!(
            "{at}: 'tags' must be a string or a list, not {other}"
        )),
    }
}

/// A limit: an integer (negative: no limit).
fn limit(v: &Value, at: &str, key: &str) -> Result<Option<u64>, String> {
    match v.as_i64() {
        Some(n) => Ok(access::limit_value(n)),
        None => Err(format!("{at}: limit '{key}' must be an integer, not {v}")),
    }
}

/// Limits as `{"max-connections": 1}` or, in 3.10's vhost export, `[["max-connections", 1]]`.
fn limit_pairs(v: Option<&Value>, at: &str) -> Result<Vec<(String, Value)>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(k), v]) => Ok((k.clone(), v.clone())),
                _ => Err(format!("{at}: a limit must be [name, value], not {pair}")),
            })
            .collect(),
        Some(other) => Err(format!("{at}: 'limits' must be an object, not {other}")),
    }
}

fn user_limits(v: Option<&Value>, at: &str) -> Result<UserLimits, String> {
    let mut out = UserLimits::default();
    for (k, value) in limit_pairs(v, at)? {
        match k.as_str() {
            "max-connections" => out.max_connections = limit(&value, at, &k)?,
            "max-channels" => out.max_channels = limit(&value, at, &k)?,
            other => return Err(format!("{at}: unknown user limit '{other}'")),
        }
    }
    Ok(out)
}

fn vhost_limits(v: Option<&Value>, at: &str) -> Result<VHostLimits, String> {
    let mut out = VHostLimits::default();
    for (k, value) in limit_pairs(v, at)? {
        match k.as_str() {
            "max-connections" => out.max_connections = limit(&value, at, &k)?,
            "max-queues" => out.max_queues = limit(&value, at, &k)?,
            other => return Err(format!("{at}: unknown vhost limit '{other}'")),
        }
    }
    Ok(out)
}

fn list<'a>(doc: &'a Value, key: &str) -> Result<&'a [Value], String> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(format!("'{key}' must be a list, not {other}")),
    }
}

/// A policy entry: `vhost` and `name` from `entry`, the rest from `body` (the entry
/// itself for `policies`, its `value` for an `operator_policy` parameter).
fn policy_record(entry: &Value, at: &str, body: &Value) -> Result<PolicyRecord, String> {
    let name = string(entry, at, "name")?;
    let at = format!("{at} ('{name}')");
    let definition = match body.get("definition") {
        Some(Value::Object(m)) => m.clone(),
        _ => return Err(format!("{at}: definition must be an object")),
    };
    let priority = match body.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| format!("{at}: priority must be an integer"))?,
    };
    Ok(PolicyRecord {
        vhost: string(entry, &at, "vhost")?,
        name,
        pattern: string(body, &at, "pattern")?,
        apply_to: opt_string(body, &at, "apply-to")?.unwrap_or_else(|| "all".into()),
        priority,
        definition,
    })
}

/// Reads the access part of a definitions document (no change is made).
///
/// # Errors
/// The first malformed entry, named.
pub fn parse_access(json: &str) -> Result<(AccessState, Vec<(String, usize)>), String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("not valid JSON: {e}"))?;
    if !doc.is_object() {
        return Err("a definitions file is a JSON object".into());
    }
    let mut state = AccessState::default();
    for (i, u) in list(&doc, "users")?.iter().enumerate() {
        let at = format!("users[{i}]");
        let name = string(u, &at, "name")?;
        let at = format!("users[{i}] ('{name}')");
        let algorithm = match opt_string(u, &at, "hashing_algorithm")? {
            None => HashingAlgorithm::Sha256,
            Some(a) => HashingAlgorithm::parse(&a)
                .ok_or_else(|| format!("{at}: unknown hashing_algorithm '{a}'"))?,
        };
        let password_hash = opt_string(u, &at, "password_hash")?.unwrap_or_default();
        access::validate_hash(algorithm, &password_hash).map_err(|why| format!("{at}: {why}"))?;
        state.users.push(User {
            name,
            password_hash,
            hashing_algorithm: algorithm,
            tags: tags(u.get("tags"), &at)?,
            limits: user_limits(u.get("limits"), &at)?,
        });
    }
    for (i, v) in list(&doc, "vhosts")?.iter().enumerate() {
        let at = format!("vhosts[{i}]");
        let name = string(v, &at, "name")?;
        let at = format!("vhosts[{i}] ('{name}')");
        // 3.10 keeps description and tags under `metadata`; 3.13 also at the top level.
        let meta = v.get("metadata").unwrap_or(&Value::Null);
        let description = opt_string(v, &at, "description")?
            .or(opt_string(meta, &at, "description")?)
            .unwrap_or_default();
        let vtags = match v.get("tags") {
            Some(t) if !t.is_null() => tags(Some(t), &at)?,
            _ => tags(meta.get("tags"), &at)?,
        };
        state.vhosts.push(VHostInfo {
            name,
            description,
            tags: vtags,
            limits: vhost_limits(v.get("limits"), &at)?,
            tracing: false,
        });
    }
    for (i, p) in list(&doc, "permissions")?.iter().enumerate() {
        let at = format!("permissions[{i}]");
        state.permissions.push(Permission {
            user: string(p, &at, "user")?,
            vhost: string(p, &at, "vhost")?,
            configure: string(p, &at, "configure")?,
            write: string(p, &at, "write")?,
            read: string(p, &at, "read")?,
        });
    }
    for (i, p) in list(&doc, "topic_permissions")?.iter().enumerate() {
        let at = format!("topic_permissions[{i}]");
        state.topic_permissions.push(TopicPermission {
            user: string(p, &at, "user")?,
            vhost: string(p, &at, "vhost")?,
            exchange: string(p, &at, "exchange")?,
            write: string(p, &at, "write")?,
            read: string(p, &at, "read")?,
        });
    }
    for (i, p) in list(&doc, "policies")?.iter().enumerate() {
        let at = format!("policies[{i}]");
        state.policies.push(policy_record(p, &at, p)?);
    }
    for (i, g) in list(&doc, "global_parameters")?.iter().enumerate() {
        let at = format!("global_parameters[{i}]");
        let name = string(g, &at, "name")?;
        // RabbitMQ's own bookkeeping, not a setting to carry over.
        if name == "internal_cluster_id" {
            continue;
        }
        state.global_parameters.push(access::GlobalParameter {
            name,
            value: g.get("value").cloned().unwrap_or(Value::Null).to_string(),
        });
    }
    let mut skipped_params = 0;
    for (i, p) in list(&doc, "parameters")?.iter().enumerate() {
        let at = format!("parameters[{i}]");
        let component = string(p, &at, "component")?;
        if component == "operator_policy" {
            let value = p.get("value").unwrap_or(&Value::Null);
            state.operator_policies.push(policy_record(p, &at, value)?);
            continue;
        }
        if component != "vhost-limits" {
            skipped_params += 1;
            continue;
        }
        let vhost = string(p, &at, "vhost")?;
        let limits = vhost_limits(p.get("value"), &at)?;
        match state.vhosts.iter_mut().find(|v| v.name == vhost) {
            Some(v) => v.limits = limits,
            None => {
                return Err(format!(
                    "{at}: vhost-limits for vhost '{vhost}', which the file does not define"
                ))
            }
        }
    }
    let mut skipped = Vec::new();
    if skipped_params > 0 {
        skipped.push(("parameters".to_string(), skipped_params));
    }
    Ok((state, skipped))
}

/// Imports a definitions document (RabbitMQ's format): users, vhosts, permissions,
/// topic permissions, limits, policies, operator policies, global parameters, then
/// queues, exchanges and bindings. Everything is checked before anything changes: an
/// invalid document changes nothing.
///
/// # Errors
/// What is wrong, naming the entry.
pub fn import(broker: &Broker, json: &str) -> Result<Summary, String> {
    let (state, skipped) = parse_access(json)?;
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("not valid JSON: {e}"))?;
    let entries = parse_topology(&doc, None)?;
    for e in &entries {
        let known = state.vhosts.iter().any(|v| v.name == e.vhost)
            || broker.access().vhost(&e.vhost).is_some();
        if !known {
            return Err(format!("vhost '{}' is not defined", e.vhost));
        }
    }
    // The whole document is refused if a declaration would fail (a conflict with an
    // existing queue or exchange, a binding to nothing): tried first on a copy.
    dry_run_topology(broker, &entries)?;
    broker
        .access()
        .apply(&state, true)
        .map_err(|e| e.to_string())?;
    for v in &state.vhosts {
        broker.add_vhost(&v.name);
    }
    let mut touched: Vec<&str> = state
        .policies
        .iter()
        .chain(&state.operator_policies)
        .map(|p| p.vhost.as_str())
        .collect();
    touched.sort_unstable();
    touched.dedup();
    for v in touched {
        broker.refresh_policies(v);
    }
    let topology = entries.len();
    apply_topology(broker, entries)?;
    Ok(Summary {
        users: state.users.len(),
        vhosts: state.vhosts.len(),
        permissions: state.permissions.len(),
        topic_permissions: state.topic_permissions.len(),
        topology,
        skipped,
    })
}

/// The version strings an export carries.
#[derive(Debug, Clone, Default)]
pub struct ExportMeta {
    /// `rabbit_version` / `rabbitmq_version`.
    pub rabbitmq_version: String,
    /// `product_name`.
    pub product_name: String,
    /// `product_version`.
    pub product_version: String,
}

/// A vhost's queues, exchanges and bindings as a definitions file lists them (exclusive
/// queues, the default exchange, `amq.*` exchanges and default-exchange bindings are
/// left out, as RabbitMQ leaves them out).
fn topology_json(
    broker: &Broker,
    vhost: &str,
    with_vhost: bool,
) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    use warren_codec::json::table_to_json;
    let Some(v) = broker.vhost(vhost) else {
        return (Vec::new(), Vec::new(), Vec::new());
    };
    let tag = |mut o: Value| {
        if with_vhost {
            o["vhost"] = json!(vhost);
        }
        o
    };
    let queues = v
        .queues()
        .iter()
        .filter(|q| q.exclusive_owner.is_none())
        .map(|q| {
            tag(
                json!({"name": q.name, "durable": q.durable, "auto_delete": q.auto_delete,
                       "type": "classic", "arguments": table_to_json(&q.arguments)}),
            )
        })
        .collect();
    let exchanges = v
        .exchanges()
        .iter()
        .filter(|x| !x.name.is_empty() && !x.name.starts_with("amq."))
        .map(|x| {
            tag(
                json!({"name": x.name, "type": x.kind.as_str(), "durable": x.durable,
                       "auto_delete": x.auto_delete, "internal": x.internal,
                       "arguments": table_to_json(&x.arguments)}),
            )
        })
        .collect();
    let bindings = v
        .bindings()
        .iter()
        .filter(|b| !b.source.is_empty())
        .map(|b| {
            let (dest, kind) = match &b.destination {
                Destination::Queue(q) => (q.as_str(), "queue"),
                Destination::Exchange(x) => (x.as_str(), "exchange"),
            };
            tag(
                json!({"source": b.source, "destination": dest, "destination_type": kind,
                       "routing_key": b.routing_key, "arguments": table_to_json(&b.arguments)}),
            )
        })
        .collect();
    (queues, exchanges, bindings)
}

fn policy_json(p: &PolicyRecord) -> Value {
    json!({"vhost": p.vhost, "name": p.name, "pattern": p.pattern, "apply-to": p.apply_to,
           "definition": p.definition, "priority": p.priority})
}

/// The whole node's definitions, as `rabbitmqctl export_definitions` and
/// `GET /api/definitions` give them: users with their hashes, vhosts, permissions, topic
/// permissions, limits, policies, operator policies, global parameters, queues,
/// exchanges and bindings.
pub fn export(broker: &Broker, meta: &ExportMeta) -> Value {
    let access = broker.access().snapshot();
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for v in &access.vhosts {
        let (q, x, b) = topology_json(broker, &v.name, true);
        queues.extend(q);
        exchanges.extend(x);
        bindings.extend(b);
    }
    let mut parameters: Vec<Value> = access
        .vhosts
        .iter()
        .filter(|v| v.limits != Default::default())
        .map(|v| {
            let mut value = serde_json::Map::new();
            if let Some(n) = v.limits.max_connections {
                value.insert("max-connections".into(), json!(n));
            }
            if let Some(n) = v.limits.max_queues {
                value.insert("max-queues".into(), json!(n));
            }
            json!({"component": "vhost-limits", "name": "limits", "vhost": v.name, "value": value})
        })
        .collect();
    parameters.extend(access.operator_policies.iter().map(|p| {
        json!({"component": "operator_policy", "name": p.name, "vhost": p.vhost,
               "value": {"pattern": p.pattern, "definition": p.definition,
                         "priority": p.priority, "apply-to": p.apply_to}})
    }));
    let global_parameters: Vec<Value> = broker
        .access()
        .global_parameters()
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    json!({
        "rabbit_version": meta.rabbitmq_version,
        "rabbitmq_version": meta.rabbitmq_version,
        "product_name": meta.product_name,
        "product_version": meta.product_version,
        "users": access.users.iter().map(|u| {
            let mut limits = serde_json::Map::new();
            if let Some(n) = u.limits.max_connections { limits.insert("max-connections".into(), json!(n)); }
            if let Some(n) = u.limits.max_channels { limits.insert("max-channels".into(), json!(n)); }
            json!({"name": u.name, "password_hash": u.password_hash,
                   "hashing_algorithm": u.hashing_algorithm.name(), "tags": u.tags, "limits": limits})
        }).collect::<Vec<_>>(),
        "vhosts": access.vhosts.iter().map(|v| json!({
            "name": v.name, "description": v.description, "tags": v.tags,
            "metadata": {"description": v.description, "tags": v.tags},
            "limits": []
        })).collect::<Vec<_>>(),
        "permissions": access.permissions.iter().map(|p| json!({
            "user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read
        })).collect::<Vec<_>>(),
        "topic_permissions": access.topic_permissions.iter().map(|p| json!({
            "user": p.user, "vhost": p.vhost, "exchange": p.exchange, "write": p.write, "read": p.read
        })).collect::<Vec<_>>(),
        "parameters": parameters,
        "global_parameters": global_parameters,
        "policies": access.policies.iter().map(policy_json).collect::<Vec<_>>(),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })
}

/// One vhost's definitions (no users, no vhost names: they import into any vhost), as
/// `GET /api/definitions/{vhost}` gives them; `None` for a missing vhost.
pub fn export_vhost(broker: &Broker, vhost: &str, meta: &ExportMeta) -> Option<Value> {
    broker.access().vhost(vhost)?;
    let (queues, exchanges, bindings) = topology_json(broker, vhost, false);
    let policies: Vec<Value> = broker
        .access()
        .policies(crate::policy::PolicyKind::Regular, Some(vhost))
        .iter()
        .map(|p| {
            json!({"name": p.name, "pattern": p.pattern, "apply-to": p.apply_to,
                   "definition": p.definition, "priority": p.priority})
        })
        .collect();
    Some(json!({
        "rabbit_version": meta.rabbitmq_version,
        "rabbitmq_version": meta.rabbitmq_version,
        "parameters": [],
        "policies": policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    }))
}

/// A definitions entry's topology part, validated before anything changes.
#[derive(Debug, Clone)]
pub struct TopologyEntry {
    /// Its vhost.
    pub vhost: String,
    kind: TopologyKind,
}

#[derive(Debug, Clone)]
enum TopologyKind {
    Exchange(ExchangeOptions),
    Queue(QueueOptions),
    Binding {
        source: String,
        destination: String,
        to_exchange: bool,
        routing_key: String,
        arguments: amq_protocol::types::FieldTable,
    },
}

/// The queues, exchanges and bindings of a definitions document, checked. With
/// `default_vhost` (a vhost's own definitions) entries name no vhost.
///
/// # Errors
/// The first malformed entry, named.
pub fn parse_topology(
    doc: &Value,
    default_vhost: Option<&str>,
) -> Result<Vec<TopologyEntry>, String> {
    use warren_codec::json::{boolean, json_to_table};
    let mut out = Vec::new();
    let vhost_of = |v: &Value, at: &str| -> Result<String, String> {
        match default_vhost {
            Some(d) => Ok(d.to_string()),
            None => string(v, at, "vhost"),
        }
    };
    let table = |v: &Value, at: &str| {
        json_to_table(v.get("arguments").unwrap_or(&Value::Null)).map_err(|e| format!("{at}: {e}"))
    };
    let flag = |v: &Value, at: &str, key: &str, default: bool| {
        boolean(v, key, default).map_err(|e| format!("{at}: {e}"))
    };
    for (i, x) in list(doc, "exchanges")?.iter().enumerate() {
        let at = format!("exchanges[{i}]");
        let kind = string(x, &at, "type")?;
        if crate::ExchangeKind::parse(&kind).is_none() {
            return Err(format!("{at}: unknown exchange type '{kind}'"));
        }
        out.push(TopologyEntry {
            vhost: vhost_of(x, &at)?,
            kind: TopologyKind::Exchange(ExchangeOptions {
                name: string(x, &at, "name")?,
                kind,
                passive: false,
                durable: flag(x, &at, "durable", true)?,
                auto_delete: flag(x, &at, "auto_delete", false)?,
                internal: flag(x, &at, "internal", false)?,
                arguments: table(x, &at)?,
            }),
        });
    }
    for (i, q) in list(doc, "queues")?.iter().enumerate() {
        let at = format!("queues[{i}]");
        let name = string(q, &at, "name")?;
        if name.is_empty() {
            // An empty name would declare a server-named queue, a new name on every
            // import, which the next import of the export then refuses (amq.*).
            return Err(format!("{at}: a queue needs a name"));
        }
        out.push(TopologyEntry {
            vhost: vhost_of(q, &at)?,
            kind: TopologyKind::Queue(QueueOptions {
                name,
                passive: false,
                durable: flag(q, &at, "durable", true)?,
                exclusive: false,
                auto_delete: flag(q, &at, "auto_delete", false)?,
                arguments: table(q, &at)?,
            }),
        });
    }
    for (i, b) in list(doc, "bindings")?.iter().enumerate() {
        let at = format!("bindings[{i}]");
        let dtype = string(b, &at, "destination_type")?;
        if dtype != "queue" && dtype != "exchange" {
            return Err(format!("{at}: destination_type must be queue or exchange"));
        }
        out.push(TopologyEntry {
            vhost: vhost_of(b, &at)?,
            kind: TopologyKind::Binding {
                source: string(b, &at, "source")?,
                destination: string(b, &at, "destination")?,
                to_exchange: dtype == "exchange",
                routing_key: string(b, &at, "routing_key").unwrap_or_default(),
                arguments: table(b, &at)?,
            },
        });
    }
    Ok(out)
}

/// Declares `entries` on a scratch in-memory broker holding a copy of the current
/// topology of the vhosts they touch, with the same engine operations the real import
/// uses: an entry that would fail there fails here first, before anything changed.
///
/// # Errors
/// The first entry that cannot be declared, named by the engine's error.
fn dry_run_topology(broker: &Broker, entries: &[TopologyEntry]) -> Result<(), String> {
    let scratch = Broker::new();
    let mut vhosts: Vec<&str> = entries.iter().map(|e| e.vhost.as_str()).collect();
    vhosts.sort_unstable();
    vhosts.dedup();
    for v in vhosts {
        let _ = scratch.access.add_vhost(v, "", &[]);
        scratch.add_vhost(v);
        if broker.vhost(v).is_none() {
            continue;
        }
        let (queues, exchanges, bindings) = topology_json(broker, v, false);
        let current = json!({"queues": queues, "exchanges": exchanges, "bindings": bindings});
        // The copy is best effort: what the broker holds always parses and declares.
        if let Ok(existing) = parse_topology(&current, Some(v)) {
            let _ = apply_topology(&scratch, existing);
        }
    }
    apply_topology(&scratch, entries.to_vec())
}

/// Declares checked topology entries (exchanges, then queues, then bindings, in the
/// document's order within each kind).
///
/// # Errors
/// A missing vhost, or what the engine refuses (an inequivalent redeclaration).
pub fn apply_topology(broker: &Broker, entries: Vec<TopologyEntry>) -> Result<(), String> {
    for e in entries {
        let v = broker
            .vhost(&e.vhost)
            .ok_or_else(|| format!("vhost '{}' is not defined", e.vhost))?;
        match e.kind {
            TopologyKind::Exchange(o) => v.declare_exchange(&o),
            TopologyKind::Queue(o) => v.declare_queue(o, 0).map(|_| ()),
            TopologyKind::Binding {
                source,
                destination,
                to_exchange,
                routing_key,
                arguments,
            } => {
                if to_exchange {
                    v.bind_exchange(&destination, &source, &routing_key, &arguments)
                } else {
                    v.bind_queue(&destination, &source, &routing_key, &arguments, 0)
                }
            }
        }
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rabbitmqctl export_definitions` of the Debian RabbitMQ 3.10.8 (trimmed).
    const RABBITMQ_3_10: &str = r#"{
      "rabbit_version": "3.10.8", "rabbitmq_version": "3.10.8",
      "users": [
        {"hashing_algorithm": "rabbit_password_hashing_sha256", "limits": {}, "name": "u1",
         "password_hash": "lzE5Yxb3zmj/myS3bmd6N11fV+aS1HolG2eCjLtohHZ7LV+6", "tags": []},
        {"hashing_algorithm": "rabbit_password_hashing_sha256",
         "limits": {"max-channels": 2, "max-connections": 1}, "name": "u2",
         "password_hash": "FdOUTQe1mn1Fmx17LLhtuHP0iiQ0ZYzGziKI3Ez9HbqV5qEz", "tags": ["impersonator"]}
      ],
      "vhosts": [
        {"limits": [["max-connections", 1], ["max-queues", 1]],
         "metadata": {"description": "", "tags": ""}, "name": "lim"},
        {"limits": [], "metadata": {"description": "Default virtual host", "tags": []}, "name": "/"}
      ],
      "permissions": [
        {"configure": "^u1\\.", "read": "^u1\\.", "user": "u1", "vhost": "/", "write": "^u1\\."}
      ],
      "topic_permissions": [
        {"exchange": "amq.topic", "read": "^r\\.{vhost}", "user": "u1", "vhost": "/", "write": "^{username}\\."}
      ],
      "parameters": [
        {"component": "vhost-limits", "name": "limits", "value": {"max-connections": 1, "max-queues": 1}, "vhost": "lim"}
      ],
      "global_parameters": [], "policies": [],
      "queues": [{"arguments": {}, "auto_delete": false, "durable": true, "name": "q", "type": "classic", "vhost": "/"}],
      "exchanges": [], "bindings": []
    }"#;

    #[test]
    fn a_rabbitmq_3_10_export_imports() {
        let broker = Broker::new();
        let s = import(&broker, RABBITMQ_3_10).unwrap();
        assert_eq!(
            (s.users, s.vhosts, s.permissions, s.topic_permissions),
            (2, 2, 1, 1)
        );
        assert!(s.skipped.is_empty(), "{:?}", s.skipped);
        // The durable queue of the export is declared too.
        assert_eq!(s.topology, 1);
        assert!(broker.vhost("/").unwrap().queue("q", 1).unwrap().durable);
        let a = broker.access();
        assert!(a.check_password("u1", "p1").is_ok());
        assert_eq!(a.user("u2").unwrap().limits.max_channels, Some(2));
        assert!(a.user("u2").unwrap().has_tag("impersonator"));
        assert_eq!(a.vhost("lim").unwrap().limits.max_queues, Some(1));
        assert_eq!(a.vhost("/").unwrap().description, "Default virtual host");
        assert!(broker.vhost("lim").is_some());
        let g = a.grant("u1", "/", None).unwrap();
        assert!(g.check_topic_write("amq.topic", "u1.x").is_ok());
    }

    #[test]
    fn rabbitmq_3_13_fields_are_accepted() {
        let json = r#"{"users": [{"name": "a", "password_hash": "", "tags": "administrator,monitoring",
                        "limits": {"max-connections": -1}}],
                       "vhosts": [{"name": "v", "description": "jobs", "tags": ["x"],
                        "default_queue_type": "classic", "metadata": {"description": "jobs", "tags": ["x"],
                        "default_queue_type": "classic"}}]}"#;
        let broker = Broker::new();
        import(&broker, json).unwrap();
        let u = broker.access().user("a").unwrap();
        assert_eq!(u.tags, vec!["administrator", "monitoring"]);
        assert_eq!(u.limits.max_connections, None);
        assert_eq!(broker.access().vhost("v").unwrap().tags, vec!["x"]);
    }

    #[test]
    fn a_topology_conflict_refuses_the_whole_document() {
        let broker = Broker::new();
        let v = broker.vhost("/").unwrap();
        v.declare_queue(
            crate::vhost::QueueOptions {
                name: "existing".into(),
                durable: true,
                ..Default::default()
            },
            0,
        )
        .unwrap();
        // A queue that conflicts with an existing one, a queue declared twice with
        // different flags, and a binding to a missing exchange: each refuses everything,
        // users included.
        for conflict in [
            r#"{"name": "existing", "vhost": "/", "durable": false}"#,
            r#"{"name": "twice", "vhost": "/", "durable": true}, {"name": "twice", "vhost": "/", "durable": false}"#,
        ] {
            let json = format!(
                r#"{{"users": [{{"name": "newuser", "password_hash": "", "tags": []}}],
                     "vhosts": [{{"name": "newvhost"}}], "queues": [{conflict}]}}"#
            );
            assert!(import(&broker, &json).is_err(), "{json}");
            assert!(broker.access().user("newuser").is_none(), "{json}");
            assert!(broker.access().vhost("newvhost").is_none(), "{json}");
            assert!(v.queue("twice", 1).is_err(), "{json}");
        }
        let json = r#"{"users": [{"name": "newuser", "password_hash": "", "tags": []}],
            "bindings": [{"source": "nope", "vhost": "/", "destination": "existing",
                          "destination_type": "queue", "routing_key": "", "arguments": {}}]}"#;
        assert!(import(&broker, json).is_err());
        assert!(broker.access().user("newuser").is_none());
        // The same document without the conflict imports.
        let ok = r#"{"users": [{"name": "newuser", "password_hash": "", "tags": []}],
            "queues": [{"name": "existing", "vhost": "/", "durable": true}]}"#;
        import(&broker, ok).unwrap();
        assert!(broker.access().user("newuser").is_some());
    }

    #[test]
    fn a_bad_file_is_refused_whole_with_the_entry_named() {
        let broker = Broker::new();
        for (json, expect) in [
            ("[]", "a definitions file is a JSON object"),
            ("{", "not valid JSON"),
            (
                r#"{"users": [{"name": "a"}, {"tags": []}]}"#,
                "users[1]: missing field 'name'",
            ),
            (
                r#"{"users": [{"name": "a", "password_hash": "!!"}]}"#,
                "users[0] ('a'): password_hash is not valid base64",
            ),
            (
                r#"{"users": [{"name": "a", "hashing_algorithm": "rot13"}]}"#,
                "unknown hashing_algorithm 'rot13'",
            ),
            (
                r#"{"vhosts": [{"name": "v", "limits": {"max-queues": "lots"}}]}"#,
                "limit 'max-queues' must be an integer",
            ),
            (
                r#"{"users": [{"name": "a"}], "permissions": [{"user": "a", "vhost": "nope", "configure": "", "write": "", "read": ""}]}"#,
                "virtual host 'nope' does not exist",
            ),
            (
                r#"{"users": [{"name": "a"}], "vhosts": [{"name": "v"}], "permissions": [{"user": "a", "vhost": "v", "configure": "(", "write": "", "read": ""}]}"#,
                "invalid regular expression '('",
            ),
        ] {
            let err = import(&broker, json).unwrap_err();
            assert!(err.contains(expect), "{json}: {err}");
        }
        assert!(broker.access().user("a").is_none(), "nothing was imported");
        assert!(broker.vhost("v").is_none());
    }
}
