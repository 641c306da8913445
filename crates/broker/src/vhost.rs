//! A virtual host: its exchanges and queues, and the operations on them that AMQP's
//! `exchange.*`, `queue.*` and `basic.publish` need.
//!
//! Topology sits behind one `RwLock`: routing takes the read lock briefly and never
//! awaits; declarations and deletions take the write lock. Queue state has its own lock
//! (see [`Queue`]) and is never locked while the topology lock is held for writing,
//! except to read counts.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use amq_protocol::types::FieldTable;

use crate::args::{first_difference, EXCHANGE_EQUIVALENCE_KEYS, QUEUE_EQUIVALENCE_KEYS};
use crate::error::Inequivalent;
use crate::exchange::{Destination, Exchange, ExchangeKind, ExchangeOptions};
use crate::message::Message;
use crate::queue::{DeadLetter, Queue, QueueSpec, Removed};
use crate::queue_args::QueueArgs;
use crate::storage::{
    table_from_hex, table_to_hex, BindingDef, Definitions, ExchangeDef, QueueDef, Storage,
    StorageError,
};
use crate::store::{MemoryStore, QueueStore};
use crate::{headers, names, topic, ConnectionId, Error};

/// What `queue.declare` asks for.
#[derive(Debug, Clone, Default)]
pub struct QueueOptions {
    /// Name; empty for a server-named queue.
    pub name: String,
    /// Only check that it exists.
    pub passive: bool,
    /// Survives restarts.
    pub durable: bool,
    /// Owned by the declaring connection and deleted with it.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

#[derive(Debug, Default)]
struct Topology {
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, Arc<Queue>>,
    /// Direct reply-to pseudo-queues (`amq.rabbitmq.reply-to.*`), reachable only through
    /// the default exchange.
    reply_queues: HashMap<String, Arc<Queue>>,
}

/// A set of names for routing: a short vector for the usual small fan-out (no hashing,
/// no allocation until the second element), a hash set past 16 entries.
#[derive(Default)]
struct Seen<'a> {
    small: Vec<&'a str>,
    large: Option<HashSet<&'a str>>,
}

impl<'a> Seen<'a> {
    /// Adds `name`; returns whether it was new.
    fn insert(&mut self, name: &'a str) -> bool {
        if let Some(set) = &mut self.large {
            return set.insert(name);
        }
        if self.small.contains(&name) {
            return false;
        }
        if self.small.len() >= 16 {
            let mut set: HashSet<&str> = self.small.drain(..).collect();
            set.insert(name);
            self.large = Some(set);
        } else {
            self.small.push(name);
        }
        true
    }
}

/// The pseudo-queue of RabbitMQ's direct reply-to.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// An exchange as the management views list it.
#[derive(Debug, Clone)]
pub struct ExchangeInfo {
    /// Name ("" for the default exchange).
    pub name: String,
    /// Type.
    pub kind: ExchangeKind,
    /// Durable.
    pub durable: bool,
    /// Auto-delete.
    pub auto_delete: bool,
    /// Internal.
    pub internal: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// A binding as the management views list it.
#[derive(Debug, Clone)]
pub struct BindingInfo {
    /// Source exchange ("" for the default exchange).
    pub source: String,
    /// Destination queue or exchange.
    pub destination: Destination,
    /// Routing (binding) key.
    pub routing_key: String,
    /// Arguments.
    pub arguments: FieldTable,
}

/// Whether a topology change touched the durable definitions (see [`VHost::change`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Only transient objects changed: nothing to write.
    Transient,
    /// A durable exchange, queue or binding changed: rewrite the definitions.
    Durable,
}

impl Durability {
    fn of(durable: bool) -> Self {
        if durable {
            Durability::Durable
        } else {
            Durability::Transient
        }
    }
}

/// A virtual host.
#[derive(Debug)]
pub struct VHost {
    /// Its name.
    pub name: String,
    topology: RwLock<Topology>,
    /// The data directory, for durable entities.
    storage: Option<Arc<Storage>>,
    /// Serialises definition writes so a newer snapshot is never overwritten by an
    /// older one.
    save_lock: Mutex<()>,
    /// Itself, for the queues it creates (they route dead letters through it).
    me: Weak<VHost>,
    /// Policies of the vhost (`set_policy`).
    policies: RwLock<Vec<crate::policy::Policy>>,
    /// Operator policies of the vhost (`set_operator_policy`).
    operator_policies: RwLock<Vec<crate::policy::Policy>>,
    /// Users, permissions and limits (for `max-queues`); `None` in a bare vhost.
    access: Option<Arc<crate::access::Access>>,
    /// Set when the vhost is deleted: no further topology change is accepted.
    deleted: std::sync::atomic::AtomicBool,
    /// The node's queue churn counters.
    churn: Arc<crate::QueueChurn>,
    /// The firehose is on (`rabbitmqctl trace_on`).
    tracing: std::sync::atomic::AtomicBool,
}

/// The exchanges every vhost starts with.
pub const PREDECLARED: &[(&str, ExchangeKind)] = &[
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
    (TRACE_EXCHANGE, ExchangeKind::Topic),
];

/// RabbitMQ's firehose exchange (internal): copies of published and delivered messages
/// while tracing is on (`rabbitmqctl trace_on`).
pub const TRACE_EXCHANGE: &str = "amq.rabbitmq.trace";

impl VHost {
    /// An in-memory vhost with the predeclared exchanges.
    pub fn new(name: &str) -> Arc<Self> {
        Self::with_storage(name, None, None, Arc::default())
    }

    /// A vhost whose durable entities are kept in `storage`, with its limits in `access`.
    pub fn with_storage(
        name: &str,
        storage: Option<Arc<Storage>>,
        access: Option<Arc<crate::access::Access>>,
        churn: Arc<crate::QueueChurn>,
    ) -> Arc<Self> {
        let mut t = Topology::default();
        for (x, kind) in PREDECLARED {
            t.exchanges.insert(
                (*x).to_string(),
                Exchange::new(
                    x,
                    *kind,
                    true,
                    false,
                    *x == TRACE_EXCHANGE,
                    FieldTable::default(),
                ),
            );
        }
        Arc::new_cyclic(|me| VHost {
            name: name.to_string(),
            topology: RwLock::new(t),
            storage,
            save_lock: Mutex::new(()),
            me: me.clone(),
            access,
            deleted: std::sync::atomic::AtomicBool::new(false),
            policies: RwLock::new(Vec::new()),
            operator_policies: RwLock::new(Vec::new()),
            churn,
            tracing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Replaces the vhost's policies and operator policies and applies them at once to
    /// existing queues (exchanges read theirs when routing), as RabbitMQ does.
    pub fn set_policies(
        &self,
        policies: Vec<crate::policy::Policy>,
        operator: Vec<crate::policy::Policy>,
    ) {
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = policies;
        *self
            .operator_policies
            .write()
            .unwrap_or_else(|e| e.into_inner()) = operator;
        for q in self.queues() {
            let declared = QueueArgs::declared(&q.arguments);
            q.set_args(self.effective_args(&q.name, &q.arguments, declared));
        }
    }

    /// A queue's effective arguments: declared arguments merged with its policy, then
    /// with its operator policy (the lower limit wins).
    fn effective_args(&self, name: &str, arguments: &FieldTable, args: QueueArgs) -> QueueArgs {
        let declared_overflow = arguments.contains_key("x-overflow");
        let args = match self.queue_policy(name) {
            Some(p) => crate::policy::apply_to_queue(args, declared_overflow, &p.definition),
            None => args,
        };
        match self.queue_operator_policy(name) {
            Some(p) => crate::policy::apply_to_queue(args, declared_overflow, &p.definition),
            None => args,
        }
    }

    /// The policy that applies to a queue, if any.
    pub fn queue_policy(&self, name: &str) -> Option<crate::policy::Policy> {
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner());
        crate::policy::matching(&policies, name, true).cloned()
    }

    /// The operator policy that applies to a queue, if any.
    pub fn queue_operator_policy(&self, name: &str) -> Option<crate::policy::Policy> {
        let policies = self
            .operator_policies
            .read()
            .unwrap_or_else(|e| e.into_inner());
        crate::policy::matching(&policies, name, true).cloned()
    }

    /// The policy that applies to an exchange, if any.
    pub fn exchange_policy(&self, name: &str) -> Option<crate::policy::Policy> {
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner());
        crate::policy::matching(&policies, name, false).cloned()
    }

    /// An exchange's alternate exchange: its argument, else its policy's.
    pub fn alternate_exchange_of(&self, x: &Exchange) -> Option<String> {
        if let Some(ae) = x.alternate_exchange() {
            return Some(ae.to_string());
        }
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner());
        crate::policy::matching(&policies, &x.name, false)
            .and_then(|p| p.definition.alternate_exchange.clone())
    }

    /// Turns the firehose on or off (`rabbitmqctl trace_on` / `trace_off`).
    pub fn set_tracing(&self, on: bool) {
        self.tracing.store(on, Relaxed);
        tracing::info!(vhost = %self.name, on, "message tracing (firehose) switched");
    }

    /// Whether the firehose is on: one relaxed load per publish and delivery.
    pub fn is_tracing(&self) -> bool {
        self.tracing.load(Relaxed)
    }

    /// Whether the vhost was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Deletes every queue (with its stored messages) and refuses further changes; the
    /// broker then forgets the vhost. Returns how many queues were deleted.
    pub(crate) fn destroy(&self) -> usize {
        let queues: Vec<Arc<Queue>> = {
            let mut t = self.write();
            self.deleted
                .store(true, std::sync::atomic::Ordering::Release);
            t.exchanges.clear();
            t.queues.drain().map(|(_, q)| q).collect()
        };
        for q in &queues {
            q.delete();
        }
        queues.len()
    }

    /// Writes the durable definitions. Must not be called with the topology lock held.
    fn persist(&self) -> Result<(), Error> {
        let Some(storage) = &self.storage else {
            return Ok(());
        };
        let _order = self.save_lock.lock().unwrap_or_else(|e| e.into_inner());
        let defs = self.snapshot();
        storage.save(&defs).map_err(|e| {
            tracing::error!(vhost = %self.name, error = %e, "cannot write definitions");
            Error::Storage(e.to_string())
        })
    }

    /// The durable exchanges, queues and bindings.
    pub fn snapshot(&self) -> Definitions {
        let t = self.read();
        let predeclared = |n: &str| PREDECLARED.iter().any(|(p, _)| *p == n);
        let mut defs = Definitions {
            vhost: self.name.clone(),
            ..Definitions::default()
        };
        for x in t.exchanges.values() {
            if x.durable && !predeclared(&x.name) {
                defs.exchanges.push(ExchangeDef {
                    name: x.name.clone(),
                    kind: x.kind.as_str().to_string(),
                    auto_delete: x.auto_delete,
                    internal: x.internal,
                    arguments: table_to_hex(&x.arguments),
                });
            }
        }
        for q in t.queues.values() {
            if q.durable {
                defs.queues.push(QueueDef {
                    name: q.name.clone(),
                    auto_delete: q.auto_delete,
                    arguments: table_to_hex(&q.arguments),
                });
            }
        }
        for x in t.exchanges.values() {
            if !x.durable || x.name.is_empty() {
                continue;
            }
            for (key, dest, args) in x.bindings() {
                let (name, is_x, durable) = match dest {
                    Destination::Queue(n) => (n, false, t.queues.get(n).is_some_and(|q| q.durable)),
                    Destination::Exchange(n) => {
                        (n, true, t.exchanges.get(n).is_some_and(|d| d.durable))
                    }
                };
                if durable {
                    defs.bindings.push(BindingDef {
                        source: x.name.clone(),
                        destination: name.clone(),
                        destination_is_exchange: is_x,
                        routing_key: key.to_string(),
                        arguments: table_to_hex(args),
                    });
                }
            }
        }
        defs.exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        defs.queues.sort_by(|a, b| a.name.cmp(&b.name));
        defs
    }

    /// Rebuilds durable entities from `defs` at start, recovering each queue's messages.
    /// Returns (queues, ready messages).
    ///
    /// # Errors
    /// A queue store or the definitions cannot be read.
    pub fn restore(&self, defs: &Definitions) -> Result<(usize, u64), StorageError> {
        let Some(storage) = self.storage.clone() else {
            return Ok((0, 0));
        };
        let corrupt = |what: &str| StorageError::Corrupt {
            path: std::path::PathBuf::from(format!("definitions of vhost '{}'", self.name)),
            reason: format!("bad arguments of {what}"),
        };
        let mut t = self.write();
        for x in &defs.exchanges {
            let Some(kind) = ExchangeKind::parse(&x.kind) else {
                tracing::warn!(exchange = %x.name, kind = %x.kind, "skipping exchange of unknown type");
                continue;
            };
            let args = table_from_hex(&x.arguments).ok_or_else(|| corrupt(&x.name))?;
            t.exchanges.insert(
                x.name.clone(),
                Exchange::new(&x.name, kind, true, x.auto_delete, x.internal, args),
            );
        }
        let mut messages = 0u64;
        for q in &defs.queues {
            let arguments = table_from_hex(&q.arguments).ok_or_else(|| corrupt(&q.name))?;
            let args = QueueArgs::declared(&arguments);
            let args = self.effective_args(&q.name, &arguments, args);
            let io = |what: &str| {
                let path = std::path::PathBuf::from(format!("{what} '{}'", q.name));
                move |source| StorageError::Io { path, source }
            };
            let spec = QueueSpec {
                vhost: self.name.clone(),
                name: q.name.clone(),
                durable: true,
                exclusive_owner: None,
                auto_delete: q.auto_delete,
                arguments,
                args,
            };
            let queue = match spec.args.stream_settings() {
                Some(settings) => {
                    let log = storage
                        .stream(&self.name, &q.name, settings)
                        .map_err(io("stream"))?;
                    messages += log.len();
                    Queue::with_stream(spec, log, self.me.clone())
                }
                None => {
                    let store = storage
                        .queue_store(&self.name, &q.name, spec.args.levels())
                        .map_err(io("queue"))?;
                    messages += store.len() as u64;
                    Queue::with_store(spec, Box::new(store), self.me.clone())
                }
            };
            t.queues.insert(q.name.clone(), Arc::new(queue));
        }
        for b in &defs.bindings {
            let args = table_from_hex(&b.arguments).ok_or_else(|| corrupt(&b.source))?;
            let dest = if b.destination_is_exchange {
                Destination::Exchange(b.destination.clone())
            } else {
                Destination::Queue(b.destination.clone())
            };
            let exists = match &dest {
                Destination::Queue(n) => t.queues.contains_key(n),
                Destination::Exchange(n) => t.exchanges.contains_key(n),
            };
            if let (true, Some(x)) = (exists, t.exchanges.get_mut(&b.source)) {
                x.bind(dest, &b.routing_key, args);
            }
        }
        Ok((defs.queues.len(), messages))
    }

    fn read(&self) -> RwLockReadGuard<'_, Topology> {
        self.topology.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The topology for writing. Changes to exchanges, queues and bindings go through
    /// [`VHost::change`], which decides whether the durable definitions are rewritten.
    fn write(&self) -> RwLockWriteGuard<'_, Topology> {
        self.topology.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one change of the topology under the write lock. `f` returns its result and
    /// whether it touched a durable definition (a durable exchange or queue, or a
    /// binding between durable ones); if it did, the definitions file is rewritten (after
    /// the lock is released) before this returns, so a `declare-ok` or `bind-ok` sent
    /// afterwards survives `kill -9`. Every operation that changes exchanges, queues or
    /// bindings goes through here: none can forget to persist.
    ///
    /// # Errors
    /// `f`'s error, or the definitions could not be written.
    fn change<R>(
        &self,
        f: impl FnOnce(&mut Topology) -> Result<(R, Durability), Error>,
    ) -> Result<R, Error> {
        let (result, durability) = {
            let mut t = self.write();
            if self.is_deleted() {
                return Err(Error::Storage(format!("vhost '{}' is deleted", self.name)));
            }
            f(&mut t)?
        };
        if durability == Durability::Durable {
            self.persist()?;
        }
        Ok(result)
    }

    fn queue_not_found(&self, name: &str) -> Error {
        Error::QueueNotFound {
            vhost: self.name.clone(),
            queue: name.to_string(),
        }
    }

    fn exchange_not_found(&self, name: &str) -> Error {
        Error::ExchangeNotFound {
            vhost: self.name.clone(),
            exchange: name.to_string(),
        }
    }

    fn check_exclusive(&self, q: &Queue, connection: ConnectionId) -> Result<(), Error> {
        match q.exclusive_owner {
            Some(owner) if owner != connection => Err(Error::ExclusiveLocked {
                vhost: self.name.clone(),
                queue: q.name.clone(),
            }),
            _ => Ok(()),
        }
    }

    // ----- exchanges -----

    /// `exchange.declare`.
    ///
    /// # Errors
    /// 403-class errors for the default exchange and reserved names, unknown type,
    /// not found (passive), inequivalent redeclaration.
    pub fn declare_exchange(&self, o: &ExchangeOptions) -> Result<(), Error> {
        if o.name.is_empty() {
            return Err(Error::DefaultExchange);
        }
        if o.passive {
            return if self.read().exchanges.contains_key(&o.name) {
                Ok(())
            } else {
                Err(self.exchange_not_found(&o.name))
            };
        }
        let kind = ExchangeKind::parse(&o.kind)
            .ok_or_else(|| Error::UnknownExchangeType(o.kind.clone()))?;
        if let Some(v) = o.arguments.inner().get("alternate-exchange") {
            if !matches!(
                v,
                amq_protocol::types::AMQPValue::LongString(_)
                    | amq_protocol::types::AMQPValue::ShortString(_)
            ) {
                return Err(Error::InvalidArg(format!(
                    "invalid type '{}' for arg 'alternate-exchange' in exchange '{}' in vhost '{}'",
                    crate::args::type_name(v),
                    o.name,
                    self.name
                )));
            }
        }
        self.change(|t| {
            if let Some(x) = t.exchanges.get(&o.name) {
                let inequivalent = |arg: &str, received: String, current: String| {
                    Error::Inequivalent(Box::new(Inequivalent {
                        kind: "exchange",
                        name: o.name.clone(),
                        vhost: self.name.clone(),
                        arg: arg.to_string(),
                        received,
                        current,
                    }))
                };
                if x.kind != kind {
                    return Err(inequivalent(
                        "type",
                        format!("'{}'", kind.as_str()),
                        format!("'{}'", x.kind.as_str()),
                    ));
                }
                for (arg, r, c) in [
                    ("durable", o.durable, x.durable),
                    ("auto_delete", o.auto_delete, x.auto_delete),
                    ("internal", o.internal, x.internal),
                ] {
                    if r != c {
                        return Err(inequivalent(arg, format!("'{r}'"), format!("'{c}'")));
                    }
                }
                if let Some((arg, r, c)) =
                    first_difference(EXCHANGE_EQUIVALENCE_KEYS, &o.arguments, &x.arguments)
                {
                    return Err(inequivalent(arg, r, c));
                }
                return Ok(((), Durability::Transient));
            }
            if o.name.starts_with("amq.") {
                return Err(Error::ReservedName {
                    kind: "exchange",
                    name: o.name.clone(),
                });
            }
            t.exchanges.insert(
                o.name.clone(),
                Exchange::new(
                    &o.name,
                    kind,
                    o.durable,
                    o.auto_delete,
                    o.internal,
                    o.arguments.clone(),
                ),
            );
            Ok(((), Durability::of(o.durable)))
        })
    }

    /// `exchange.delete`. Deleting a missing exchange succeeds, as on RabbitMQ.
    ///
    /// # Errors
    /// Default or system exchange; `if_unused` with bindings.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::DefaultExchange);
        }
        if name.starts_with("amq.") {
            return Err(Error::SystemExchange {
                vhost: self.name.clone(),
                exchange: name.to_string(),
            });
        }
        self.change(|t| {
            let Some(x) = t.exchanges.get(name) else {
                return Ok(((), Durability::Transient));
            };
            if if_unused && x.binding_count() > 0 {
                return Err(Error::InUse {
                    kind: "exchange",
                    name: name.to_string(),
                    vhost: self.name.clone(),
                });
            }
            let durable = x.durable;
            t.exchanges.remove(name);
            let removed = Self::remove_destination(t, &Destination::Exchange(name.to_string()));
            Ok(((), Durability::of(durable || removed > 0)))
        })
    }

    /// Every queue (not the direct reply-to pseudo-queues), by name.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        let mut v: Vec<Arc<Queue>> = self.read().queues.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Every exchange (the default exchange included, named ""), by name.
    pub fn exchanges(&self) -> Vec<ExchangeInfo> {
        let t = self.read();
        let mut v: Vec<ExchangeInfo> = t
            .exchanges
            .values()
            .map(|x| ExchangeInfo {
                name: x.name.clone(),
                kind: x.kind,
                durable: x.durable,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One exchange.
    pub fn exchange(&self, name: &str) -> Option<ExchangeInfo> {
        self.exchanges().into_iter().find(|x| x.name == name)
    }

    /// Every binding: the default exchange's implicit one to each queue first (as
    /// RabbitMQ lists them), then the explicit ones by source.
    pub fn bindings(&self) -> Vec<BindingInfo> {
        let t = self.read();
        let mut out: Vec<BindingInfo> = Vec::new();
        let mut queues: Vec<&String> = t.queues.keys().collect();
        queues.sort();
        for q in queues {
            out.push(BindingInfo {
                source: String::new(),
                destination: Destination::Queue(q.clone()),
                routing_key: q.clone(),
                arguments: FieldTable::default(),
            });
        }
        let mut explicit: Vec<BindingInfo> = t
            .exchanges
            .values()
            .filter(|x| !x.name.is_empty())
            .flat_map(|x| {
                x.bindings().map(|(key, dest, args)| BindingInfo {
                    source: x.name.clone(),
                    destination: dest.clone(),
                    routing_key: key.to_string(),
                    arguments: args.clone(),
                })
            })
            .collect();
        explicit.sort_by(|a, b| {
            (&a.source, a.destination.name(), &a.routing_key).cmp(&(
                &b.source,
                b.destination.name(),
                &b.routing_key,
            ))
        });
        out.extend(explicit);
        out
    }

    /// The explicit bindings whose source is `exchange`, in the order of
    /// [`VHost::bindings`] (`None` if the exchange does not exist).
    pub fn bindings_from(&self, exchange: &str) -> Option<Vec<BindingInfo>> {
        let t = self.read();
        let x = t.exchanges.get(exchange)?;
        let mut out: Vec<BindingInfo> = x
            .bindings()
            .map(|(key, dest, args)| BindingInfo {
                source: x.name.clone(),
                destination: dest.clone(),
                routing_key: key.to_string(),
                arguments: args.clone(),
            })
            .collect();
        out.sort_by(|a, b| {
            (a.destination.name(), &a.routing_key).cmp(&(b.destination.name(), &b.routing_key))
        });
        Some(out)
    }

    /// An exchange's type, if it exists.
    pub fn exchange_kind(&self, name: &str) -> Option<ExchangeKind> {
        self.read().exchanges.get(name).map(|x| x.kind)
    }

    /// Whether an exchange exists.
    pub fn has_exchange(&self, name: &str) -> bool {
        self.read().exchanges.contains_key(name)
    }

    /// Removes all bindings to `dest` and deletes auto-delete exchanges left unbound.
    /// Returns how many exchanges were deleted.
    fn remove_destination(t: &mut Topology, dest: &Destination) -> usize {
        let mut emptied = Vec::new();
        for x in t.exchanges.values_mut() {
            if x.remove_destination(dest) > 0 && x.auto_delete && x.binding_count() == 0 {
                emptied.push(x.name.clone());
            }
        }
        let mut removed = emptied.len();
        for name in emptied {
            t.exchanges.remove(&name);
            removed += Self::remove_destination(t, &Destination::Exchange(name));
        }
        removed
    }

    // ----- queues -----

    /// `queue.declare`. Returns the queue with its message and consumer counts.
    ///
    /// # Errors
    /// Not found (passive), exclusive lock (405), reserved name (403), inequivalent
    /// redeclaration (406).
    pub fn declare_queue(
        &self,
        o: QueueOptions,
        connection: ConnectionId,
    ) -> Result<(Arc<Queue>, u32, u32), Error> {
        self.declare_queue_checked(o, connection, &|_, _| Ok(()))
    }

    /// `queue.declare` with the caller's permission checks, run where RabbitMQ runs
    /// them: `authorize(name, false)` once the (possibly server-generated) name is known,
    /// and `authorize(name, true)` when the queue does not exist and is about to be
    /// created (after the vhost's queue limit), for the checks that apply to new queues
    /// only (the dead-letter exchange's).
    ///
    /// # Errors
    /// As [`VHost::declare_queue`], and `authorize`'s.
    pub fn declare_queue_checked(
        &self,
        o: QueueOptions,
        connection: ConnectionId,
        authorize: &dyn Fn(&str, bool) -> Result<(), Error>,
    ) -> Result<(Arc<Queue>, u32, u32), Error> {
        if o.passive {
            let q = self.queue(&o.name, connection)?;
            // RabbitMQ: a passive declare renews an x-expires lease too.
            q.touch();
            let (m, c) = (q.message_count(), q.consumer_count());
            return Ok((q, m, c));
        }
        if o.name.is_empty() && QueueArgs::is_stream(&o.arguments) {
            return Err(Error::InvalidArg(
                "Cannot declare a server-named queue for type rabbit_stream_queue".into(),
            ));
        }
        let name = if o.name.is_empty() {
            names::queue_name()
        } else {
            if o.name.starts_with("amq.") {
                return Err(Error::ReservedName {
                    kind: "queue",
                    name: o.name,
                });
            }
            o.name.clone()
        };
        authorize(&name, false)?;
        // RabbitMQ (errata §30): durable + exclusive is an exclusive transient queue.
        let durable = o.durable && !o.exclusive;
        let owner = o.exclusive.then_some(connection);
        let created = self.change(|t| {
            if let Some(q) = t.queues.get(&name) {
                return Ok((Err(q.clone()), Durability::Transient));
            }
            if let Some(limit) = self.access.as_ref().and_then(|a| a.max_queues(&self.name)) {
                if t.queues.len() as u64 >= limit {
                    return Err(Error::QueueLimit {
                        queue: name.clone(),
                        vhost: self.name.clone(),
                        limit,
                    });
                }
            }
            authorize(&name, true)?;
            let q = self.new_queue(&o, &name, durable, owner)?;
            t.queues.insert(name.clone(), q.clone());
            Ok((Ok(q), Durability::of(durable)))
        })?;
        let declared = match created {
            Ok(q) => {
                self.churn.created.fetch_add(1, Relaxed);
                Ok((q, 0, 0))
            }
            Err(existing) => self.redeclare_queue(&o, existing, &name, durable, owner, connection),
        };
        if declared.is_ok() {
            self.churn.declared.fetch_add(1, Relaxed);
        }
        declared
    }

    /// A new queue (not yet in the topology) with its store.
    fn new_queue(
        &self,
        o: &QueueOptions,
        name: &str,
        durable: bool,
        owner: Option<ConnectionId>,
    ) -> Result<Arc<Queue>, Error> {
        if QueueArgs::is_stream(&o.arguments) {
            // RabbitMQ's order: auto-delete, exclusive, non-durable.
            let property = if o.auto_delete {
                Some("auto-delete")
            } else if owner.is_some() {
                Some("exclusive-owner")
            } else if !durable {
                Some("non-durable")
            } else {
                None
            };
            if let Some(p) = property {
                return Err(Error::InvalidArg(format!(
                    "invalid property '{p}' for queue '{name}' in vhost '{}'",
                    self.name
                )));
            }
        }
        let args = QueueArgs::parse_for_declare(&o.arguments, durable)
            .map_err(|e| Error::InvalidArg(e.message(name, &self.name)))?;
        let args = self.effective_args(name, &o.arguments, args);
        let spec = QueueSpec {
            vhost: self.name.clone(),
            name: name.to_string(),
            durable,
            exclusive_owner: owner,
            auto_delete: o.auto_delete,
            arguments: o.arguments.clone(),
            args,
        };
        let failed = |what: &'static str| {
            move |e: std::io::Error| {
                tracing::error!(queue = %name, error = %e, "cannot create {what}");
                Error::Storage(e.to_string())
            }
        };
        if let Some(settings) = spec.args.stream_settings() {
            let log = match &self.storage {
                Some(storage) => storage
                    .fresh_stream(&self.name, name, settings)
                    .map_err(failed("a stream"))?,
                None => crate::stream::StreamLog::in_memory(settings),
            };
            return Ok(Arc::new(Queue::with_stream(spec, log, self.me.clone())));
        }
        let levels = spec.args.levels();
        let store: Box<dyn QueueStore> = match (&self.storage, durable) {
            (Some(storage), true) => Box::new(
                storage
                    .fresh_queue_store(&self.name, name, levels)
                    .map_err(failed("a queue store"))?,
            ),
            // Non-durable queues page out to the data directory's scratch area.
            (Some(storage), false) => Box::new(storage.transient_queue_store(levels)),
            (None, _) => Box::new(MemoryStore::new(levels)),
        };
        Ok(Arc::new(Queue::with_store(spec, store, self.me.clone())))
    }

    /// `queue.declare` of a queue that exists: the equivalence checks.
    fn redeclare_queue(
        &self,
        o: &QueueOptions,
        q: Arc<Queue>,
        name: &str,
        durable: bool,
        owner: Option<ConnectionId>,
        connection: ConnectionId,
    ) -> Result<(Arc<Queue>, u32, u32), Error> {
        {
            let name = name.to_string();
            self.check_exclusive(&q, connection)?;
            if q.exclusive_owner != owner {
                return Err(Error::ExclusiveLocked {
                    vhost: self.name.clone(),
                    queue: name,
                });
            }
            let inequivalent = |arg: &str, received: String, current: String| {
                Error::Inequivalent(Box::new(Inequivalent {
                    kind: "queue",
                    name: name.clone(),
                    vhost: self.name.clone(),
                    arg: arg.to_string(),
                    received,
                    current,
                }))
            };
            for (arg, r, c) in [
                ("durable", durable, q.durable),
                ("auto_delete", o.auto_delete, q.auto_delete),
            ] {
                if r != c {
                    return Err(inequivalent(arg, format!("'{r}'"), format!("'{c}'")));
                }
            }
            if let Some((arg, r, c)) =
                first_difference(QUEUE_EQUIVALENCE_KEYS, &o.arguments, &q.arguments)
            {
                return Err(inequivalent(arg, r, c));
            }
            q.touch();
            let (m, c) = (q.message_count(), q.consumer_count());
            Ok((q, m, c))
        }
    }

    /// Looks up a queue the connection may use.
    ///
    /// # Errors
    /// Not found (404) or exclusive to another connection (405).
    pub fn queue(&self, name: &str, connection: ConnectionId) -> Result<Arc<Queue>, Error> {
        let q = self
            .read()
            .queues
            .get(name)
            .cloned()
            .ok_or_else(|| self.queue_not_found(name))?;
        self.check_exclusive(&q, connection)?;
        Ok(q)
    }

    /// `queue.delete`. Returns the ready-message count; a missing queue gives 0.
    ///
    /// # Errors
    /// Exclusive lock, `if_unused` with consumers, `if_empty` with messages.
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        connection: ConnectionId,
    ) -> Result<u32, Error> {
        let q = match self.queue(name, connection) {
            Ok(q) => q,
            Err(Error::QueueNotFound { .. }) => return Ok(0),
            Err(e) => return Err(e),
        };
        if if_unused && q.consumer_count() > 0 {
            return Err(Error::InUse {
                kind: "queue",
                name: name.to_string(),
                vhost: self.name.clone(),
            });
        }
        if if_empty && q.message_count() > 0 {
            return Err(Error::NotEmpty {
                vhost: self.name.clone(),
                queue: name.to_string(),
            });
        }
        Ok(self.remove_queue(&q))
    }

    /// Removes a queue and its bindings, cancels its consumers. Returns its message count.
    pub fn remove_queue(&self, q: &Arc<Queue>) -> u32 {
        let removed = self.change(|t| {
            match t.queues.get(&q.name) {
                Some(current) if Arc::ptr_eq(current, q) => {
                    t.queues.remove(&q.name);
                    self.churn.deleted.fetch_add(1, Relaxed);
                }
                _ => return Ok((false, Durability::Transient)),
            }
            let unbound = Self::remove_destination(t, &Destination::Queue(q.name.clone()));
            Ok((true, Durability::of(q.durable || unbound > 0)))
        });
        // A failed definitions write is logged by persist; the queue is gone either way.
        if let Ok(false) = removed {
            return 0;
        }
        tracing::info!(vhost = %self.name, queue = %q.name, "queue deleted");
        q.delete()
    }

    /// A consumer left; delete an auto-delete queue with no consumers left.
    pub fn consumer_removed(
        &self,
        q: &Arc<Queue>,
        connection: ConnectionId,
        channel: u16,
        tag: &str,
        dispatch: bool,
    ) {
        if q.remove_consumer(connection, channel, tag, dispatch) == Removed::AutoDelete {
            self.remove_queue(q);
        }
    }

    /// `queue.purge`. Returns the number of messages removed.
    ///
    /// # Errors
    /// Not found or exclusive lock.
    pub fn purge_queue(&self, name: &str, connection: ConnectionId) -> Result<u32, Error> {
        let q = self.queue(name, connection)?;
        if q.is_stream() {
            return Err(Error::NotImplemented(format!(
                "queue.purge not supported by stream queues {}",
                q.display_name()
            )));
        }
        Ok(q.purge())
    }

    /// The connection closed: delete its exclusive queues.
    pub fn connection_closed(&self, connection: ConnectionId) {
        let owned: Vec<Arc<Queue>> = self
            .read()
            .queues
            .values()
            .filter(|q| q.exclusive_owner == Some(connection))
            .cloned()
            .collect();
        for q in owned {
            self.remove_queue(&q);
        }
    }

    /// Number of queues.
    pub fn queue_count(&self) -> usize {
        self.read().queues.len()
    }

    // ----- bindings -----

    fn check_binding_args(&self, x: &Exchange, args: &FieldTable) -> Result<(), Error> {
        if x.kind == ExchangeKind::Headers {
            headers::x_match(args).map_err(Error::BindingInvalid)?;
        }
        Ok(())
    }

    /// `queue.bind`.
    ///
    /// # Errors
    /// Default exchange (403), missing queue or exchange (404), exclusive lock (405).
    pub fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: &FieldTable,
        connection: ConnectionId,
    ) -> Result<(), Error> {
        if exchange.is_empty() {
            return Err(Error::DefaultExchange);
        }
        let q = self.queue(queue, connection)?;
        self.change(|t| {
            if !t.queues.get(queue).is_some_and(|cur| Arc::ptr_eq(cur, &q)) {
                return Err(self.queue_not_found(queue));
            }
            let x = t
                .exchanges
                .get_mut(exchange)
                .ok_or_else(|| self.exchange_not_found(exchange))?;
            self.check_binding_args(x, args)?;
            let added = x.bind(Destination::Queue(queue.to_string()), key, args.clone());
            Ok(((), Durability::of(added && x.durable && q.durable)))
        })
    }

    /// `queue.unbind`. As on RabbitMQ 3.10 it is idempotent: a binding, queue or
    /// exchange that does not exist is not an error.
    ///
    /// # Errors
    /// Default exchange (403), exclusive lock (405).
    pub fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: &FieldTable,
        connection: ConnectionId,
    ) -> Result<(), Error> {
        if exchange.is_empty() {
            return Err(Error::DefaultExchange);
        }
        let q = match self.queue(queue, connection) {
            Ok(q) => q,
            Err(Error::QueueNotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.change(|t| {
            let Some(x) = t.exchanges.get_mut(exchange) else {
                return Ok(((), Durability::Transient));
            };
            let removed = x.unbind(&Destination::Queue(queue.to_string()), key, args);
            let durable = removed && x.durable && q.durable;
            let mut deleted = 0;
            if removed && x.auto_delete && x.binding_count() == 0 {
                let name = x.name.clone();
                t.exchanges.remove(&name);
                deleted = 1 + Self::remove_destination(t, &Destination::Exchange(name));
            }
            Ok(((), Durability::of(durable || deleted > 0)))
        })
    }

    /// `exchange.bind`: route from `source` to `destination` as well.
    ///
    /// # Errors
    /// Default exchange (403), missing exchange (404).
    pub fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        key: &str,
        args: &FieldTable,
    ) -> Result<(), Error> {
        if destination.is_empty() || source.is_empty() {
            return Err(Error::DefaultExchange);
        }
        self.change(|t| {
            let Some(dest_durable) = t.exchanges.get(destination).map(|d| d.durable) else {
                return Err(self.exchange_not_found(destination));
            };
            let x = t
                .exchanges
                .get_mut(source)
                .ok_or_else(|| self.exchange_not_found(source))?;
            self.check_binding_args(x, args)?;
            let added = x.bind(
                Destination::Exchange(destination.to_string()),
                key,
                args.clone(),
            );
            Ok(((), Durability::of(added && x.durable && dest_durable)))
        })
    }

    /// `exchange.unbind`. Idempotent, as on RabbitMQ 3.10: a missing source,
    /// destination or binding is not an error.
    ///
    /// # Errors
    /// Default exchange (403).
    pub fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        key: &str,
        args: &FieldTable,
    ) -> Result<(), Error> {
        if destination.is_empty() || source.is_empty() {
            return Err(Error::DefaultExchange);
        }
        self.change(|t| {
            let Some(x) = t.exchanges.get_mut(source) else {
                return Ok(((), Durability::Transient));
            };
            let removed = x.unbind(&Destination::Exchange(destination.to_string()), key, args);
            let mut changed = removed && x.durable;
            if removed && x.auto_delete && x.binding_count() == 0 {
                let name = x.name.clone();
                t.exchanges.remove(&name);
                Self::remove_destination(t, &Destination::Exchange(name));
                changed = true;
            }
            Ok(((), Durability::of(changed)))
        })
    }

    // ----- routing -----

    /// Checks that `exchange` exists and may be published to.
    ///
    /// # Errors
    /// 404 for a missing exchange, 403 for an internal one.
    pub fn check_publish(&self, exchange: &str) -> Result<(), Error> {
        let t = self.read();
        match t.exchanges.get(exchange) {
            None => Err(self.exchange_not_found(exchange)),
            Some(x) if x.internal => Err(Error::InternalExchange {
                vhost: self.name.clone(),
                exchange: exchange.to_string(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// The queues a message published to `exchange` with `routing_key` goes to, each
    /// once, following exchange-to-exchange bindings and alternate exchanges (loops are
    /// cut). `CC` and `BCC` headers add routing keys.
    ///
    /// # Errors
    /// 404 for a missing exchange, 403 for an internal one.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &Message,
    ) -> Result<Vec<Arc<Queue>>, Error> {
        let keys = message.routing_keys(routing_key);
        self.route_keys(exchange, &keys, message, true)
    }

    /// [`VHost::route`] with explicit routing keys.
    ///
    /// # Errors
    /// 404 for a missing exchange, 403 for an internal one if `check_internal`.
    pub fn route_keys(
        &self,
        exchange: &str,
        keys: &[&str],
        message: &Message,
        check_internal: bool,
    ) -> Result<Vec<Arc<Queue>>, Error> {
        let t = self.read();
        if exchange.is_empty() {
            let mut out: Vec<Arc<Queue>> = Vec::with_capacity(1);
            for key in keys {
                let q = t.queues.get(*key).or_else(|| {
                    key.strip_prefix(REPLY_TO)
                        .filter(|rest| rest.starts_with('.'))
                        .and_then(|_| t.reply_queues.get(*key))
                });
                if let Some(q) = q {
                    if !out.iter().any(|o| Arc::ptr_eq(o, q)) {
                        out.push(q.clone());
                    }
                }
            }
            return Ok(out);
        }
        let x = t
            .exchanges
            .get(exchange)
            .ok_or_else(|| self.exchange_not_found(exchange))?;
        if check_internal && x.internal {
            return Err(Error::InternalExchange {
                vhost: self.name.clone(),
                exchange: exchange.to_string(),
            });
        }
        // Topic exchanges need the keys split into words; compute that only if one is met.
        let mut split_keys: Option<Vec<Vec<&str>>> = None;
        let headers = message.headers();
        let mut out: Vec<Arc<Queue>> = Vec::new();
        let mut seen_queues = Seen::default();
        let mut seen_exchanges = Seen::default();
        let mut work: Vec<&Exchange> = vec![x];
        seen_exchanges.insert(exchange);
        let mut dests = Vec::new();
        while let Some(x) = work.pop() {
            dests.clear();
            if x.kind == ExchangeKind::Topic {
                let split = split_keys
                    .get_or_insert_with(|| keys.iter().map(|k| topic::split(k)).collect());
                for (key, words) in keys.iter().zip(split.iter()) {
                    x.route(key, words, headers, &mut dests);
                }
            } else {
                for key in keys {
                    x.route(key, &[], headers, &mut dests);
                }
            }
            if dests.is_empty() {
                // Unroutable here: try the exchange's alternate exchange.
                if let Some(ae) = self.alternate_exchange_of(x) {
                    if let Some((name, next)) = t.exchanges.get_key_value(ae.as_str()) {
                        if seen_exchanges.insert(name.as_str()) {
                            work.push(next);
                        }
                    }
                }
                continue;
            }
            for d in dests.drain(..) {
                match d {
                    Destination::Queue(name) => {
                        if seen_queues.insert(name.as_str()) {
                            if let Some(q) = t.queues.get(name) {
                                out.push(q.clone());
                            }
                        }
                    }
                    Destination::Exchange(name) => {
                        if seen_exchanges.insert(name.as_str()) {
                            if let Some(next) = t.exchanges.get(name) {
                                work.push(next);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Creates a direct reply-to pseudo-queue for a consumer of `amq.rabbitmq.reply-to`
    /// on `connection`. Replies published to its name through the default exchange reach
    /// that consumer.
    pub fn create_reply_queue(&self, connection: ConnectionId) -> Arc<Queue> {
        let name = format!(
            "{REPLY_TO}.{}",
            names::queue_name().trim_start_matches("amq.gen-")
        );
        let q = Arc::new(Queue::new(
            &self.name,
            &name,
            false,
            Some(connection),
            false,
            FieldTable::default(),
        ));
        self.write().reply_queues.insert(name, q.clone());
        q
    }

    /// Whether `name` is `amq.rabbitmq.reply-to` or a live reply pseudo-queue.
    pub fn is_reply_queue(&self, name: &str) -> bool {
        name == REPLY_TO || self.read().reply_queues.contains_key(name)
    }

    /// Removes a direct reply-to pseudo-queue (its consumer went away).
    pub fn drop_reply_queue(&self, q: &Arc<Queue>) {
        let removed = self.write().reply_queues.remove(&q.name);
        if removed.is_some() {
            q.delete();
        }
    }

    /// Publishes messages a queue dead-lettered to its dead-letter exchange. Called with
    /// no lock held. A missing dead-letter exchange drops them, as RabbitMQ does; a
    /// target that would close a cycle without a rejection is skipped.
    pub fn dead_letter(&self, from: &Arc<Queue>, dead: Vec<DeadLetter>) {
        let args = from.args();
        let Some(dlx) = args.dead_letter_exchange.as_deref() else {
            return;
        };
        let now_secs = crate::queue::now_ms() / 1000;
        for d in dead {
            let (msg, keys) = crate::deadletter::dead_lettered(
                &d.message,
                &from.name,
                d.reason,
                dlx,
                args.dead_letter_routing_key.as_deref(),
                now_secs,
            );
            let msg = Arc::new(msg);
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let queues = match self.route_keys(dlx, &keys, &msg, false) {
                Ok(q) => q,
                Err(e) => {
                    tracing::debug!(queue = %from.name, error = %e, "dead letter dropped");
                    continue;
                }
            };
            for q in queues {
                if crate::deadletter::is_cycle(&msg, &q.name) {
                    tracing::debug!(queue = %q.name, "dead-letter cycle: message dropped");
                    continue;
                }
                if let Err(e) = q.publish(msg.clone()) {
                    tracing::error!(queue = %q.name, error = %e, "cannot store a dead-lettered message");
                }
            }
        }
    }

    /// Writes every queue's buffered records to the OS (at shutdown).
    pub fn flush(&self) {
        let queues: Vec<Arc<Queue>> = self.read().queues.values().cloned().collect();
        for q in queues {
            q.flush();
        }
    }

    /// Periodic work: message expiry at queue heads, `x-expires` queue expiry, and
    /// writing out persistent messages buffered since the last tick.
    pub fn tick(&self, now_ms: u64) {
        let timed: Vec<Arc<Queue>> = self
            .read()
            .queues
            .values()
            .filter(|q| q.has_timers())
            .cloned()
            .collect();
        for q in timed {
            if q.tick(now_ms) {
                tracing::info!(vhost = %self.name, queue = %q.name, "queue expired (x-expires)");
                self.remove_queue(&q);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(rk: &str) -> Message {
        Message::new("x", rk, Bytes::new(), Bytes::new())
    }
    fn declare_q(v: &VHost, name: &str) {
        v.declare_queue(
            QueueOptions {
                name: name.into(),
                ..Default::default()
            },
            1,
        )
        .unwrap();
    }
    fn declare_x(v: &VHost, name: &str, kind: &str) {
        v.declare_exchange(&ExchangeOptions {
            name: name.into(),
            kind: kind.into(),
            ..Default::default()
        })
        .unwrap();
    }
    fn names(qs: Vec<Arc<Queue>>) -> Vec<String> {
        let mut n: Vec<_> = qs.iter().map(|q| q.name.clone()).collect();
        n.sort();
        n
    }

    #[test]
    fn one_copy_per_queue_even_with_several_matching_bindings() {
        let v = VHost::new("/");
        declare_q(&v, "q");
        declare_x(&v, "t", "topic");
        let none = FieldTable::default();
        v.bind_queue("q", "t", "a.*", &none, 1).unwrap();
        v.bind_queue("q", "t", "#", &none, 1).unwrap();
        v.bind_queue("q", "t", "a.b", &none, 1).unwrap();
        assert_eq!(names(v.route("t", "a.b", &msg("a.b")).unwrap()), vec!["q"]);
    }

    #[test]
    fn large_fan_out_reaches_each_queue_once() {
        let v = VHost::new("/");
        declare_x(&v, "f", "fanout");
        declare_x(&v, "g", "fanout");
        let none = FieldTable::default();
        v.bind_exchange("g", "f", "", &none).unwrap();
        for i in 0..40 {
            let q = format!("q{i}");
            declare_q(&v, &q);
            v.bind_queue(&q, "f", "", &none, 1).unwrap();
            v.bind_queue(&q, "g", "", &none, 1).unwrap();
        }
        let routed = names(v.route("f", "", &msg("")).unwrap());
        assert_eq!(routed.len(), 40);
        let mut dedup = routed.clone();
        dedup.dedup();
        assert_eq!(dedup, routed);
    }

    #[test]
    fn exchange_to_exchange_with_a_loop() {
        let v = VHost::new("/");
        declare_q(&v, "q");
        declare_x(&v, "a", "fanout");
        declare_x(&v, "b", "fanout");
        let none = FieldTable::default();
        v.bind_exchange("b", "a", "", &none).unwrap();
        v.bind_exchange("a", "b", "", &none).unwrap();
        v.bind_queue("q", "b", "", &none, 1).unwrap();
        assert_eq!(names(v.route("a", "", &msg("")).unwrap()), vec!["q"]);
    }

    #[test]
    fn declare_rules() {
        let v = VHost::new("/");
        declare_x(&v, "d", "direct");
        let e = v
            .declare_exchange(&ExchangeOptions {
                name: "d".into(),
                kind: "fanout".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "inequivalent arg 'type' for exchange 'd' in vhost '/': received 'fanout' but current is 'direct'");
        assert!(matches!(
            v.declare_exchange(&ExchangeOptions {
                name: "amq.new".into(),
                kind: "direct".into(),
                ..Default::default()
            }),
            Err(Error::ReservedName { .. })
        ));
        // Redeclaring a predeclared exchange with equal properties is fine.
        v.declare_exchange(&ExchangeOptions {
            name: "amq.direct".into(),
            kind: "direct".into(),
            durable: true,
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(
            v.delete_exchange("amq.direct", false),
            Err(Error::SystemExchange { .. })
        ));
        assert_eq!(v.delete_exchange("", false), Err(Error::DefaultExchange));
        let (q, _, _) = v
            .declare_queue(
                QueueOptions {
                    exclusive: true,
                    ..Default::default()
                },
                7,
            )
            .unwrap();
        assert!(q.name.starts_with("amq.gen-"));
        assert!(matches!(
            v.queue(&q.name, 8),
            Err(Error::ExclusiveLocked { .. })
        ));
        v.connection_closed(7);
        assert!(matches!(
            v.queue(&q.name, 7),
            Err(Error::QueueNotFound { .. })
        ));
    }

    #[test]
    fn delete_queue_removes_bindings_and_auto_delete_exchange() {
        let v = VHost::new("/");
        declare_q(&v, "q");
        v.declare_exchange(&ExchangeOptions {
            name: "ad".into(),
            kind: "fanout".into(),
            auto_delete: true,
            ..Default::default()
        })
        .unwrap();
        v.bind_queue("q", "ad", "", &FieldTable::default(), 1)
            .unwrap();
        assert!(v.delete_exchange("ad", true).is_err());
        v.delete_queue("q", false, false, 1).unwrap();
        assert!(!v.has_exchange("ad"));
    }
}
