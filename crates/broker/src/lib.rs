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

pub mod args;
pub mod credit;
pub mod deadletter;
pub mod error;
pub mod exchange;
pub mod headers;
pub mod message;
pub mod names;
pub mod policy;
pub mod queue;
pub mod queue_args;
pub mod storage;
pub mod store;
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

/// The whole broker state: the set of virtual hosts.
#[derive(Debug)]
pub struct Broker {
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    storage: Option<Arc<Storage>>,
    /// Policies per vhost name, applied to vhosts as they are created.
    policies: HashMap<String, Vec<policy::Policy>>,
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
            storage: None,
            policies: HashMap::new(),
        };
        b.add_vhost("/");
        b
    }

    /// A broker over a data directory: durable exchanges, queues (with their persistent
    /// messages) and bindings are recovered from it.
    ///
    /// # Errors
    /// Unreadable definitions or queue stores.
    pub fn with_storage(
        storage: Arc<Storage>,
        policies: Vec<(String, policy::Policy)>,
    ) -> Result<Self, StorageError> {
        let mut by_vhost: HashMap<String, Vec<policy::Policy>> = HashMap::new();
        for (vhost, p) in policies {
            by_vhost.entry(vhost).or_default().push(p);
        }
        let b = Broker {
            vhosts: RwLock::new(HashMap::new()),
            storage: Some(storage.clone()),
            policies: by_vhost,
        };
        let started = std::time::Instant::now();
        let mut queues = 0;
        let mut messages = 0u64;
        for defs in storage.load()? {
            let v = b.add_vhost(&defs.vhost);
            let (q, m) = v.restore(&defs)?;
            queues += q;
            messages += m;
        }
        b.add_vhost("/");
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

    /// Creates a vhost (with the predeclared `amq.*` exchanges) if it does not exist.
    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        let mut vhosts = self.vhosts.write().unwrap_or_else(|e| e.into_inner());
        vhosts
            .entry(name.to_string())
            .or_insert_with(|| {
                let v = VHost::with_storage(name, self.storage.clone());
                if let Some(p) = self.policies.get(name) {
                    v.set_policies(p.clone());
                }
                v
            })
            .clone()
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
