//! The broker's administrative operations, one function each, shared by every view
//! (the management HTTP API, `rabbitmqctl`, tests): vhosts, users, permissions, limits
//! and connections. Operations on users and permissions alone live in the engine
//! ([`warren_broker::access::Access`]); those that also touch open connections (a
//! deleted vhost or user closes them, as in RabbitMQ) are here.
//!
//! ```no_run
//! # async fn demo(broker: &warren_server::Running) {
//! let admin = broker.admin();
//! admin.access().add_user("app", Some("s3cret"), &[]).unwrap();
//! admin.create_vhost("jobs", "", &[]).unwrap();
//! admin.access().set_permissions("app", "jobs", ".*", ".*", ".*").unwrap();
//! admin.delete_vhost("jobs").unwrap(); // its connections get 320
//! # }
//! ```

use std::sync::Arc;

use warren_broker::access::{Access, AdminError};
use warren_broker::VHost;

use crate::registry::ConnectionInfo;
use crate::Shared;

/// Administrative operations on a running broker.
#[derive(Debug, Clone)]
pub struct Admin {
    shared: Arc<Shared>,
}

impl Admin {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Admin { shared }
    }

    /// The engine.
    pub fn broker(&self) -> &Arc<warren_broker::Broker> {
        &self.shared.broker
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &crate::Config {
        &self.shared.config
    }

    /// The resource alarms.
    pub fn alarms(&self) -> &Arc<crate::alarm::Alarms> {
        &self.shared.alarms
    }

    /// The node name (RabbitMQ's `rabbit@HOST`, Warren's `warren@HOST` or the configured
    /// `cluster_name`).
    pub fn node_name(&self) -> String {
        self.shared.config.identity.resolved().cluster_name
    }

    /// The AMQP listener's bound address.
    pub fn amqp_addr(&self) -> std::net::SocketAddr {
        self.shared.amqp_addr
    }

    /// Every open connection with its channels, as the connections report them (each
    /// answers from its own task; one that does not within `timeout` is left out).
    pub async fn channels(
        &self,
        timeout: std::time::Duration,
    ) -> Vec<(Arc<ConnectionInfo>, Vec<crate::stats::ChannelReport>)> {
        self.shared.registry.channels_where(|_| true, timeout).await
    }

    /// Connections and channels opened and closed since the start.
    pub fn churn(&self) -> &Arc<crate::stats::Churn> {
        &self.shared.churn
    }

    /// The AMQPS listener's bound address, when TLS is configured.
    pub fn amqps_addr(&self) -> Option<std::net::SocketAddr> {
        self.shared.amqps_addr
    }

    /// Records a listener another surface started (the stream protocol's `stream` and
    /// `stream/ssl`), for the management API's and the tools' listener listings.
    pub fn add_listener(&self, protocol: &'static str, addr: std::net::SocketAddr) {
        let mut l = self
            .shared
            .other_listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        l.push((protocol, addr));
    }

    /// The listeners recorded with [`Admin::add_listener`].
    pub fn other_listeners(&self) -> Vec<(&'static str, std::net::SocketAddr)> {
        self.shared
            .other_listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Users, permissions, topic permissions and limits.
    pub fn access(&self) -> &Arc<Access> {
        self.shared.broker.access()
    }

    /// How long the broker has been running.
    pub fn uptime(&self) -> std::time::Duration {
        self.shared.started_at.elapsed()
    }

    /// Creates a vhost.
    ///
    /// # Errors
    /// It exists, the name is invalid, or the state cannot be written.
    pub fn create_vhost(
        &self,
        name: &str,
        description: &str,
        tags: &[String],
    ) -> Result<Arc<VHost>, AdminError> {
        self.shared.broker.create_vhost(name, description, tags)
    }

    /// Deletes a vhost with its queues, messages (on disk too), exchanges, bindings and
    /// permissions; its connections are closed with
    /// `320 CONNECTION_FORCED - vhost 'NAME' is deleted`, as RabbitMQ does.
    ///
    /// # Errors
    /// No such vhost, or the state cannot be written.
    pub fn delete_vhost(&self, name: &str) -> Result<(), AdminError> {
        if self.shared.broker.vhost(name).is_none() && self.access().vhost(name).is_none() {
            return Err(AdminError::NoSuchVHost(name.to_string()));
        }
        self.shared
            .registry
            .close_where(|c| c.vhost == name, &format!("vhost '{name}' is deleted"));
        self.shared.broker.delete_vhost(name)
    }

    /// Deletes a user with their permissions; their connections are closed with
    /// `320 CONNECTION_FORCED - user 'NAME' is deleted`, as RabbitMQ does.
    ///
    /// # Errors
    /// No such user, or the state cannot be written.
    pub fn delete_user(&self, name: &str) -> Result<(), AdminError> {
        self.access().delete_user(name)?;
        self.shared
            .registry
            .close_where(|c| c.user == name, &format!("user '{name}' is deleted"));
        tracing::info!(user = %name, "user deleted");
        Ok(())
    }

    /// The open connections (AMQP and stream protocol).
    pub fn connections(&self) -> Vec<Arc<ConnectionInfo>> {
        self.shared.registry.list()
    }

    /// A new connection id, unique among every protocol's connections.
    pub fn next_connection_id(&self) -> u64 {
        self.shared.next_connection_id()
    }

    /// Records a connection another protocol (the stream protocol) opened, so that the
    /// listings, limits and force-close see it. It answers [`ConnEvent::ForceClose`],
    /// [`ConnEvent::Report`] and [`ConnEvent::StreamReport`] from `events`; it is
    /// forgotten when the returned guard drops.
    pub fn register_connection(
        &self,
        info: ConnectionInfo,
        events: tokio::sync::mpsc::UnboundedSender<crate::sink::ConnEvent>,
    ) -> crate::registry::Registration {
        self.shared.registry.register(info, events)
    }

    /// The stream protocol connections' publishers and subscriptions.
    pub async fn stream_reports(
        &self,
        timeout: std::time::Duration,
    ) -> Vec<(Arc<ConnectionInfo>, crate::registry::StreamReport)> {
        self.shared
            .registry
            .stream_reports_where(|_| true, timeout)
            .await
    }

    /// Closes the connection called `name` (RabbitMQ's `"PEER -> LOCAL"`) with 320 and
    /// `reason`. Returns whether it existed.
    pub fn close_connection(&self, name: &str, reason: &str) -> bool {
        self.shared.registry.close_where(|c| c.name == name, reason) > 0
    }

    /// Closes every connection of `vhost` (all of them with `None`) with 320 and
    /// `reason`. Returns how many.
    pub fn close_all_connections(&self, vhost: Option<&str>, reason: &str) -> usize {
        self.shared
            .registry
            .close_where(|c| vhost.is_none_or(|v| c.vhost == v), reason)
    }

    /// `rabbitmqctl stop_app`: closes every client connection with
    /// `320 CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'`
    /// and refuses new ones until [`Admin::start_app`]; the process keeps running.
    pub fn stop_app(&self) -> usize {
        self.shared
            .paused
            .store(true, std::sync::atomic::Ordering::Release);
        let n = self.close_all_connections(None, SHUTDOWN_REASON);
        tracing::info!(connections = n, "application stopped (stop_app)");
        n
    }

    /// `rabbitmqctl start_app`: accepts connections again.
    pub fn start_app(&self) {
        self.shared
            .paused
            .store(false, std::sync::atomic::Ordering::Release);
        tracing::info!("application started (start_app)");
    }

    /// Whether `stop_app` is in effect.
    pub fn is_app_stopped(&self) -> bool {
        self.shared
            .paused
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// `rabbitmqctl reset`: the node forgets everything (every vhost with its queues,
    /// exchanges, bindings, policies and stored messages; every user and permission;
    /// global parameters) and is seeded again as a fresh node is: the configured
    /// vhosts and default user, and the boot definitions file if one is configured.
    ///
    /// # Errors
    /// The data directory cannot be written or the definitions file is invalid.
    pub fn reset(&self) -> Result<(), AdminError> {
        let started = std::time::Instant::now();
        self.close_all_connections(None, SHUTDOWN_REASON);
        let access = self.access();
        let mut vhosts: Vec<String> = access.vhosts().into_iter().map(|v| v.name).collect();
        for v in self.shared.broker.vhosts() {
            if !vhosts.contains(&v.name) {
                vhosts.push(v.name.clone());
            }
        }
        for v in vhosts {
            match self.shared.broker.delete_vhost(&v) {
                Ok(()) | Err(AdminError::NoSuchVHost(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for u in access.users() {
            access.delete_user(&u.name)?;
        }
        for (name, _) in access.global_parameters() {
            access.delete_global_parameter(&name)?;
        }
        crate::seed(&self.shared.broker, &self.shared.config).map_err(AdminError::Storage)?;
        for p in &self.shared.config.policies {
            self.shared
                .broker
                .put_policy(warren_broker::policy::PolicyKind::Regular, p.record())?;
        }
        if let Some(path) = &self.shared.config.load_definitions {
            let text = std::fs::read_to_string(path)
                .map_err(|e| AdminError::Storage(format!("cannot read {}: {e}", path.display())))?;
            warren_broker::definitions::import(&self.shared.broker, &text)
                .map_err(AdminError::Invalid)?;
        }
        tracing::info!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "node reset: every vhost, user and message removed, fresh-node state seeded"
        );
        Ok(())
    }
}

/// RabbitMQ's text when the application stops.
const SHUTDOWN_REASON: &str = "broker forced connection closure with reason 'shutdown'";
