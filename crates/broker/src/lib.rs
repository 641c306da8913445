//! Warren's routing engine: virtual hosts, exchanges, bindings, queues, consumers and
//! the accounting of unacknowledged deliveries. No sockets and no frames.
//!
//! The server hands a published [`Message`] to [`VHost::route`], which returns the set of
//! target queues (each at most once), then calls [`Queue::publish`] on each. A queue
//! delivers to its consumers through the [`DeliverySink`] of the consumer's channel,
//! which the server implements; consumer credit ([`Credit`]) bounds what is in flight.
//!
//! ```
//! use std::sync::Arc;
//! use warren_broker::{Broker, Message, QueueOptions};
//!
//! let broker = Broker::new();
//! let vhost = broker.vhost("/").unwrap();
//! let opts = QueueOptions { name: "q".into(), ..QueueOptions::default() };
//! vhost.declare_queue(opts, 1).unwrap();
//! let msg = Arc::new(Message::new("", "q", bytes::Bytes::new(), bytes::Bytes::from("hi")));
//! let queues = vhost.route("", "q", &msg).unwrap();
//! for q in &queues { q.publish(msg.clone()).unwrap(); }
//! assert_eq!(vhost.queue("q", 1).unwrap().message_count(), 1);
//! ```

pub mod access;
pub mod args;
pub mod credit;
pub mod deadletter;
pub mod definitions;
pub mod error;
pub mod exchange;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod message;
pub mod names;
pub mod policy;
pub mod queue;
pub mod queue_args;
pub mod storage;
pub mod store;
pub mod stream;
pub mod super_stream;
pub mod topic;
pub mod vhost;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use credit::Credit;
pub use error::Error;
pub use exchange::{ExchangeKind, ExchangeOptions};
pub use message::{Message, QueuedMessage};
pub use queue::{Consumer, Delivery, DeliverySink, Queue};
pub use storage::{Storage, StorageConfig, StorageError};
pub use vhost::{QueueOptions, VHost};

/// Identifies a client connection (for exclusive queues and consumers).
pub type ConnectionId = u64;

/// Queues declared, created and deleted since the start (Prometheus'
/// `rabbitmq_queues_{declared,created,deleted}_total`).
#[derive(Debug, Default)]
pub struct QueueChurn {
    /// Successful non-passive `queue.declare`s (new or existing queue).
    pub declared: std::sync::atomic::AtomicU64,
    /// Queues created.
    pub created: std::sync::atomic::AtomicU64,
    /// Queues deleted (by a client, expiry, auto-delete or an exclusive owner leaving).
    pub deleted: std::sync::atomic::AtomicU64,
}

/// The whole broker state: the set of virtual hosts, and who may use them.
#[derive(Debug)]
pub struct Broker {
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    /// Users, vhost metadata, permissions and limits.
    access: Arc<access::Access>,
    /// The data directory had no access state: the caller seeds users and vhosts.
    fresh: bool,
    storage: Option<Arc<Storage>>,
    /// Queues declared, created and deleted.
    queue_churn: Arc<QueueChurn>,
}

impl Default for Broker {
    fn default() -> Self {
        Self::new()
    }
}

impl Broker {
    /// An in-memory broker with the default vhost `/`.
    pub fn new() -> Self {
        let b = Broker {
            vhosts: RwLock::new(HashMap::new()),
            access: Arc::new(access::Access::in_memory()),
            fresh: true,
            storage: None,
            queue_churn: Arc::default(),
        };
        let _ = b.access.add_vhost("/", "Default virtual host", &[]);
        b.add_vhost("/");
        b
    }

    /// A broker over a data directory: durable exchanges, queues (with their persistent
    /// messages) and bindings are recovered from it.
    ///
    /// # Errors
    /// Unreadable definitions or queue stores.
    pub fn with_storage(storage: Arc<Storage>) -> Result<Self, StorageError> {
        let (access, fresh) =
            access::Access::load(storage.root()).map_err(|reason| StorageError::Corrupt {
                path: storage.root().join(access::ACCESS_FILE),
                reason,
            })?;
        let b = Broker {
            vhosts: RwLock::new(HashMap::new()),
            access: Arc::new(access),
            fresh,
            storage: Some(storage.clone()),
            queue_churn: Arc::default(),
        };

        let started = std::time::Instant::now();
        let mut queues = 0;
        let mut messages = 0u64;
        for defs in storage.load()? {
            if b.access.vhost(&defs.vhost).is_none() {
                // A data directory from before vhosts had metadata.
                let _ = b.access.add_vhost(&defs.vhost, "", &[]);
            }
            let v = b.add_vhost(&defs.vhost);
            let (q, m) = v.restore(&defs)?;
            queues += q;
            messages += m;
        }
        // Vhosts created at run time that hold no durable definitions yet.
        for v in b.access.vhosts() {
            b.add_vhost(&v.name).set_tracing(v.tracing);
        }
        if fresh {
            b.add_vhost("/");
        }
        tracing::info!(
            queues,
            messages,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recovered durable state"
        );
        Ok(b)
    }

    /// The data directory, if the broker is durable.
    pub fn storage(&self) -> Option<&Arc<Storage>> {
        self.storage.as_ref()
    }

    /// Queues declared, created and deleted since the start.
    pub fn queue_churn(&self) -> &Arc<QueueChurn> {
        &self.queue_churn
    }

    /// Users, permissions and limits.
    pub fn access(&self) -> &Arc<access::Access> {
        &self.access
    }

    /// Whether the data directory had no users and vhosts yet (the server then seeds
    /// them from its configuration, as RabbitMQ creates its default user and vhost on a
    /// fresh node).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Creates a vhost: its metadata and its (empty) topology.
    ///
    /// # Errors
    /// It exists, or the name is invalid, or the state cannot be written.
    pub fn create_vhost(
        &self,
        name: &str,
        description: &str,
        tags: &[String],
    ) -> Result<Arc<VHost>, access::AdminError> {
        self.access.add_vhost(name, description, tags)?;
        tracing::info!(vhost = %name, "vhost created");
        Ok(self.add_vhost(name))
    }

    /// Switches a vhost's firehose on or off (`trace_on` / `trace_off`, the management
    /// API's `tracing` field) and records it, so it survives a restart.
    ///
    /// # Errors
    /// No such vhost, or the state cannot be written.
    pub fn set_tracing(&self, name: &str, on: bool) -> Result<(), access::AdminError> {
        let Some(v) = self.vhost(name) else {
            return Err(access::AdminError::NoSuchVHost(name.to_string()));
        };
        self.access.set_vhost_tracing(name, on)?;
        v.set_tracing(on);
        tracing::info!(vhost = %name, on, "tracing switched");
        Ok(())
    }

    /// Makes sure a vhost exists (configuration seeding): creates what is missing.
    ///
    /// # Errors
    /// The state cannot be written.
    pub fn ensure_vhost(
        &self,
        name: &str,
        description: &str,
    ) -> Result<Arc<VHost>, access::AdminError> {
        if self.access.vhost(name).is_none() {
            self.access.add_vhost(name, description, &[])?;
        }
        Ok(self.add_vhost(name))
    }

    /// Deletes a vhost: its queues (with their messages, on disk too), exchanges,
    /// bindings, permissions and limits. The caller closes its connections.
    ///
    /// # Errors
    /// No such vhost, or the state cannot be written.
    pub fn delete_vhost(&self, name: &str) -> Result<(), access::AdminError> {
        let removed = {
            let mut vhosts = self.vhosts.write().unwrap_or_else(|e| e.into_inner());
            vhosts.remove(name)
        };
        let known = self.access.vhost(name).is_some();
        if removed.is_none() && !known {
            return Err(access::AdminError::NoSuchVHost(name.to_string()));
        }
        let queues = removed.map_or(0, |v| v.destroy());
        if let Some(storage) = &self.storage {
            storage.remove_vhost(name).map_err(|e| {
                tracing::error!(vhost = %name, error = %e, "cannot remove the vhost's data");
                access::AdminError::Storage(e.to_string())
            })?;
        }
        if known {
            self.access.delete_vhost(name)?;
        }
        tracing::info!(vhost = %name, queues, "vhost deleted");
        Ok(())
    }

    /// Creates a vhost's topology (with the predeclared `amq.*` exchanges) if it does not
    /// exist; its metadata is [`Broker::create_vhost`]'s business.
    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        let mut vhosts = self.vhosts.write().unwrap_or_else(|e| e.into_inner());
        vhosts
            .entry(name.to_string())
            .or_insert_with(|| {
                let v = VHost::with_storage(
                    name,
                    self.storage.clone(),
                    Some(self.access.clone()),
                    self.queue_churn.clone(),
                );
                let (regular, operator) = self.compiled_policies(name);
                v.set_policies(regular, operator);
                v
            })
            .clone()
    }

    /// A vhost's stored policies and operator policies, compiled.
    fn compiled_policies(&self, vhost: &str) -> (Vec<policy::Policy>, Vec<policy::Policy>) {
        let compile = |kind| {
            self.access
                .policies(kind, Some(vhost))
                .iter()
                .filter_map(|r| policy::Policy::from_record(r, kind).ok())
                .collect::<Vec<_>>()
        };
        (
            compile(policy::PolicyKind::Regular),
            compile(policy::PolicyKind::Operator),
        )
    }

    /// Re-applies a vhost's policies to its queues and exchanges after a change.
    pub fn refresh_policies(&self, vhost: &str) {
        if let Some(v) = self.vhost(vhost) {
            let (regular, operator) = self.compiled_policies(vhost);
            v.set_policies(regular, operator);
        }
    }

    /// Creates or replaces a policy (or operator policy) and applies it at once to
    /// matching queues and exchanges: one operation for the management API, the CLI and
    /// definitions. Returns whether it replaced one.
    ///
    /// # Errors
    /// No such vhost, an invalid policy, or the state cannot be written.
    pub fn put_policy(
        &self,
        kind: policy::PolicyKind,
        record: policy::PolicyRecord,
    ) -> Result<bool, access::AdminError> {
        let vhost = record.vhost.clone();
        let name = record.name.clone();
        let existed = self.access.put_policy(kind, record)?;
        self.refresh_policies(&vhost);
        tracing::info!(vhost = %vhost, policy = %name, operator = kind == policy::PolicyKind::Operator, "policy set");
        Ok(existed)
    }

    /// Deletes a policy (or operator policy); queues fall back to the next match.
    ///
    /// # Errors
    /// No such policy, or the state cannot be written.
    pub fn delete_policy(
        &self,
        kind: policy::PolicyKind,
        vhost: &str,
        name: &str,
    ) -> Result<(), access::AdminError> {
        self.access.delete_policy(kind, vhost, name)?;
        self.refresh_policies(vhost);
        tracing::info!(vhost = %vhost, policy = %name, "policy cleared");
        Ok(())
    }

    /// Looks up a vhost.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        let vhosts = self.vhosts.read().unwrap_or_else(|e| e.into_inner());
        vhosts.get(name).cloned()
    }

    /// Writes every queue's buffered records to the OS (at shutdown).
    pub fn flush(&self) {
        for v in self.vhosts() {
            v.flush();
        }
    }

    /// Every vhost.
    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        let vhosts = self.vhosts.read().unwrap_or_else(|e| e.into_inner());
        vhosts.values().cloned().collect()
    }
}
