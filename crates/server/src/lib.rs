//! Warren's connection server: the tokio listener, connection and channel state machines,
//! delivery and flow control. It glues the frame codec (`warren-codec`) to the routing
//! engine (`warren-broker`).
//!
//! A broker can be started in-process, which is how the integration tests run it:
//!
//! ```no_run
//! # async fn demo() -> Result<(), warren_server::StartError> {
//! let mut config = warren_server::Config::default();
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! let broker = warren_server::start(config).await?;
//! println!("listening on {}", broker.local_addr());
//! broker.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod alarm;
pub mod auth;
pub mod channel;
pub mod config;
pub mod connection;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod registry;
pub mod sink;
pub mod stats;
pub mod tls;
pub mod trace;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};
use warren_broker::store::SegmentConfig;
use warren_broker::{Broker, Storage, StorageConfig};

pub use config::Config;

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    /// The engine.
    pub broker: Arc<Broker>,
    /// The configuration.
    pub config: Arc<Config>,
    /// Resource alarms.
    pub alarms: Arc<alarm::Alarms>,
    /// `connection.start`'s server properties, built once from the configuration.
    pub server_properties: warren_codec::types::FieldTable,
    /// The open connections.
    pub registry: Arc<registry::Registry>,
    /// The AMQP listener's bound address.
    pub amqp_addr: SocketAddr,
    /// The AMQPS listener's bound address, when TLS is configured.
    pub amqps_addr: Option<SocketAddr>,
    /// Connections and channels opened and closed.
    pub churn: Arc<stats::Churn>,
    /// The node's name (the identity's cluster name), for the firehose.
    pub node_name: Arc<str>,
    /// Set by `rabbitmqctl stop_app`: new connections are closed at once.
    pub paused: std::sync::atomic::AtomicBool,
    /// When the broker started (for `uptime`).
    pub started_at: std::time::Instant,
    /// Listeners other surfaces started on top of the broker (the stream protocol's), as
    /// (RabbitMQ protocol name, bound address), for the listener listings.
    pub other_listeners: std::sync::Mutex<Vec<(&'static str, SocketAddr)>>,
    next_id: AtomicU64,
}

impl Shared {
    fn next_connection_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A running broker.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    monitor: tokio::task::JoinHandle<()>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The address the AMQP listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the AMQPS (TLS) listener is bound to, when TLS is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.shared.amqps_addr
    }

    /// The engine, for inspection in tests.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.shared.broker
    }

    /// Administrative operations (users, vhosts, permissions, connections).
    pub fn admin(&self) -> admin::Admin {
        admin::Admin::new(self.shared.clone())
    }

    /// Changes the memory high watermark at run time (0 disables the alarm) and
    /// re-evaluates it at once, like `rabbitmqctl set_vm_memory_high_watermark`.
    pub fn set_memory_high_watermark_bytes(&self, bytes: u64) {
        self.shared.alarms.set_watermark_bytes(bytes);
    }

    /// Changes the disk free-space limit at run time (0 disables the alarm) and
    /// re-evaluates it at once, like `rabbitmqctl set_disk_free_limit`.
    pub fn set_disk_free_limit_bytes(&self, bytes: u64) {
        self.shared.alarms.set_disk_free_limit_bytes(bytes);
    }

    /// Whether a resource alarm currently blocks publishers.
    pub fn alarm_active(&self) -> bool {
        self.shared.alarms.is_on()
    }

    /// Stops accepting, closes every connection with 320 CONNECTION_FORCED and waits for
    /// the connection tasks to finish (at most a few seconds).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.task).await;
        self.monitor.abort();
        self.ticker.abort();
        // Wait until the aborted tasks are gone: they hold the broker, and with it the
        // data directory's lock, which a restart in the same process needs.
        let _ = (&mut self.monitor).await;
        let _ = (&mut self.ticker).await;
        self.shared.broker.flush();
    }
}

/// A fresh data directory gets the configured vhosts and users (RabbitMQ creates its
/// default user and vhost on a fresh node the same way): each user with full
/// permissions on each vhost.
pub(crate) fn seed(broker: &Broker, config: &Config) -> Result<(), String> {
    let access = broker.access();
    for vhost in &config.vhosts {
        let description = if vhost == "/" {
            "Default virtual host"
        } else {
            ""
        };
        broker
            .ensure_vhost(vhost, description)
            .map_err(|e| e.to_string())?;
    }
    for u in &config.auth.users {
        let hash = match (&u.password, &u.password_hash) {
            (_, Some(h)) => h.clone(),
            (Some(p), None) => warren_broker::access::hash_password(u.hashing_algorithm, p),
            (None, None) => String::new(),
        };
        if access.user(&u.name).is_none() {
            access
                .add_user_with_hash(&u.name, &hash, u.hashing_algorithm, &u.tags)
                .map_err(|e| e.to_string())?;
        }
        for vhost in &config.vhosts {
            access
                .set_permissions(&u.name, vhost, ".*", ".*", ".*")
                .map_err(|e| e.to_string())?;
        }
    }
    info!(
        users = config.auth.users.len(),
        vhosts = config.vhosts.len(),
        "fresh data directory: created the configured users and vhosts"
    );
    Ok(())
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configured users and vhosts could not be created.
    #[error("cannot set up users and vhosts: {0}")]
    Access(String),
    /// The definitions file to load at boot is unreadable or invalid (nothing of it was
    /// imported).
    #[error("cannot load definitions: {0}")]
    Definitions(String),
    /// The data directory cannot be used.
    #[error(transparent)]
    Storage(#[from] warren_broker::StorageError),
    /// The TLS listener's certificate, key or CA bundle is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The listener cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl Drop for Running {
    /// Dropping without [`Running::shutdown`] still stops the broker's tasks, so the
    /// data directory is released once connections finish.
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.monitor.abort();
        self.ticker.abort();
    }
}

/// Opens the data directory (recovering durable state), binds the listener and starts
/// serving.
///
/// # Errors
/// The data directory is unusable (locked by another Warren, unreadable, another format
/// version) or the listener address cannot be bound.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let storage = Storage::open(
        &config.data_dir,
        StorageConfig {
            fsync: config.storage.fsync,
            segment: SegmentConfig {
                segment_bytes: config.storage.segment_bytes,
                cache_bytes: config.storage.queue_cache_bytes,
                index_entries: config.storage.queue_index_entries,
            },
            ram_budget_bytes: config.storage.ram_budget_bytes,
        },
    )?;
    let broker = Arc::new(Broker::with_storage(storage)?);
    if broker.is_fresh() {
        seed(&broker, &config).map_err(StartError::Access)?;
    }
    // Policies from the configuration (validated with it) are created or replaced at
    // every start, as a definitions import at boot would; their vhost must exist.
    for p in &config.policies {
        let kind = warren_broker::policy::PolicyKind::Regular;
        if let Err(e) = broker.put_policy(kind, p.record()) {
            warn!(policy = %p.name, vhost = %p.vhost, error = %e, "ignoring a configured policy");
        }
    }
    if let Some(path) = &config.load_definitions {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StartError::Definitions(format!("cannot read {}: {e}", path.display())))?;
        let summary = warren_broker::definitions::import(&broker, &text)
            .map_err(|e| StartError::Definitions(format!("{}: {e}", path.display())))?;
        info!(
            file = %path.display(),
            users = summary.users,
            vhosts = summary.vhosts,
            permissions = summary.permissions,
            topic_permissions = summary.topic_permissions,
            queues_exchanges_bindings = summary.topology,
            "imported definitions"
        );
        for (section, n) in &summary.skipped {
            warn!(file = %path.display(), section = %section, entries = n, "definitions section not imported at boot");
        }
    }
    let listen_err = |source| StartError::Listen {
        addr: config.listen,
        source,
    };
    let listener = bind(config.listen).map_err(listen_err)?;
    let local_addr = listener.local_addr().map_err(listen_err)?;
    let tls = if config.tls.enabled() {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&config.tls)?);
        let tls_err = |source| StartError::Listen {
            addr: config.tls.listen,
            source,
        };
        let l = bind(config.tls.listen).map_err(tls_err)?;
        let addr = l.local_addr().map_err(tls_err)?;
        Some((l, acceptor, addr))
    } else {
        None
    };
    let amqps_addr = tls.as_ref().map(|(_, _, addr)| *addr);
    let alarms = alarm::Alarms::new(
        config.resources.watermark_bytes(),
        config.resources.disk_free_limit_bytes,
        config.data_dir.clone(),
    );
    let monitor = tokio::spawn(alarm::monitor(
        alarms.clone(),
        Duration::from_millis(config.resources.check_interval_ms),
    ));
    let server_properties = connection::server_properties(&config.identity.resolved());
    let node_name: Arc<str> = Arc::from(config.identity.resolved().cluster_name);
    let shared = Arc::new(Shared {
        broker,
        config: Arc::new(config),
        alarms,
        server_properties,
        registry: Arc::default(),
        amqp_addr: local_addr,
        amqps_addr,
        churn: Arc::default(),
        paused: std::sync::atomic::AtomicBool::new(false),
        node_name,
        started_at: std::time::Instant::now(),
        other_listeners: std::sync::Mutex::default(),
        next_id: AtomicU64::new(0),
    });
    let (tx, rx) = watch::channel(false);
    info!("started TCP listener on {local_addr}");
    let tls = tls.map(|(l, acceptor, addr)| {
        info!("started TLS (SSL) listener on {addr}");
        (l, acceptor)
    });
    let task = tokio::spawn(accept_loop(listener, tls, shared.clone(), rx));
    let ticker = tokio::spawn(tick_loop(shared.broker.clone()));

    Ok(Running {
        local_addr,
        shared,
        shutdown: tx,
        task,
        monitor,
        ticker,
    })
}

/// Binds a listening socket. An unspecified IPv6 address (`[::]`) also accepts IPv4
/// clients (IPV6_V6ONLY off, whatever the system default), as RabbitMQ's listener does.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// Message TTL and queue expiry: every queue with timers is looked at every 25 ms. The
/// observable behaviour does not depend on this period: expired messages are also
/// dropped whenever a queue is about to deliver or answer basic.get.
async fn tick_loop(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = warren_broker::queue::now_ms();
        for vhost in broker.vhosts() {
            vhost.tick(now);
        }
    }
}

/// The next client of either listener, and whether it came to the TLS one.
async fn accept_any(
    plain: &TcpListener,
    tls: Option<&TcpListener>,
) -> (std::io::Result<(tokio::net::TcpStream, SocketAddr)>, bool) {
    match tls {
        None => (plain.accept().await, false),
        Some(tls) => tokio::select! {
            r = plain.accept() => (r, false),
            r = tls.accept() => (r, true),
        },
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(shared.config.limits.max_connections));
    let mut tasks = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (stream, peer, acceptor) = tokio::select! {
            (r, is_tls) = accept_any(&listener, tls.as_ref().map(|(l, _)| l)) => match r {
                Ok((stream, peer)) => {
                    let acceptor = if is_tls { tls.as_ref().map(|(_, a)| a.clone()) } else { None };
                    (stream, peer, acceptor)
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        if shared.paused.load(Ordering::Acquire) {
            // stop_app: the application is stopped; the client sees its socket close.
            drop(stream);
            continue;
        }
        let shared = shared.clone();
        let rx = shutdown.clone();
        tasks.spawn(async move {
            connection::serve(stream, peer, acceptor, shared, rx).await;
            drop(permit);
        });
        // Reap finished connection tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    drop(tls);
    info!(
        connections = tasks.len(),
        "shutting down: closing client connections"
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}
