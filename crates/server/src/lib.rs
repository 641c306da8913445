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

pub mod alarm;
pub mod auth;
pub mod channel;
pub mod config;
pub mod connection;
pub mod error;
pub mod sink;

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

    /// The engine, for inspection in tests.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.shared.broker
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
        self.shared.broker.flush();
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be used.
    #[error(transparent)]
    Storage(#[from] warren_broker::StorageError),
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
            },
        },
    )?;
    let mut policies = Vec::new();
    for p in &config.policies {
        match warren_broker::policy::Policy::compile(p) {
            Ok(compiled) => policies.push((p.vhost.clone(), compiled)),
            Err(e) => warn!(error = %e, "ignoring invalid policy"),
        }
    }
    let broker = Arc::new(Broker::with_storage(storage, policies)?);
    for vhost in &config.vhosts {
        broker.add_vhost(vhost);
    }
    let listen_err = |source| StartError::Listen {
        addr: config.listen,
        source,
    };
    let listener = TcpListener::bind(config.listen).await.map_err(listen_err)?;
    let local_addr = listener.local_addr().map_err(listen_err)?;
    let alarms = alarm::Alarms::new(
        config.resources.watermark_bytes(),
        config.resources.disk_free_limit_bytes,
        config.data_dir.clone(),
    );
    let monitor = tokio::spawn(alarm::monitor(
        alarms.clone(),
        Duration::from_millis(config.resources.check_interval_ms),
    ));
    let shared = Arc::new(Shared {
        broker,
        config: Arc::new(config),
        alarms,
        next_id: AtomicU64::new(0),
    });
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, shared.clone(), rx));
    let ticker = tokio::spawn(tick_loop(shared.broker.clone()));
    info!(address = %local_addr, "Server startup complete; AMQP listener on {local_addr}");
    Ok(Running {
        local_addr,
        shared,
        shutdown: tx,
        task,
        monitor,
        ticker,
    })
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

async fn accept_loop(
    listener: TcpListener,
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
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let shared = shared.clone();
        let rx = shutdown.clone();
        tasks.spawn(async move {
            connection::serve(stream, peer, shared, rx).await;
            drop(permit);
        });
        // Reap finished connection tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
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
