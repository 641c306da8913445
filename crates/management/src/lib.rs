#![recursion_limit = "256"]
//! Warren's management HTTP API: RabbitMQ's management plugin endpoints (`/api/...`), so
//! that rabbitmqadmin, Terraform's provider, KEDA, Flower, Spring's test support and test
//! helpers work unchanged. It is a view of the engine: every handler parses the request,
//! checks the caller's tags and permissions, calls the one engine operation
//! ([`warren_server::admin::Admin`], [`warren_broker`]) and renders RabbitMQ's JSON.
//!
//! Counts are read from the owning queue or connection at the time of the request, not
//! sampled; rates are computed over the last `management.rate_interval_ms` (1 s).
//!
//! ```no_run
//! # async fn demo(broker: &warren_server::Running) -> std::io::Result<()> {
//! let http = warren_management::start(broker.admin(), "127.0.0.1:0".parse().unwrap()).await?;
//! println!("management API on http://{}/api/overview", http.local_addr());
//! # Ok(()) }
//! ```

pub mod auth;
pub mod error;
pub mod json;
pub mod metrics;
mod policies;
mod rates;
mod resources;
mod system;
mod topology;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use warren_server::admin::Admin;

pub use rates::Rates;

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The broker's operations.
    pub admin: Admin,
    /// Message rates.
    pub rates: Arc<Rates>,
    /// Where the plain-HTTP listener is bound, when this state serves it: `listeners`
    /// reports this port rather than a configured port 0.
    pub http_addr: Option<SocketAddr>,
}

/// The API's routes over `state`, and the web UI at `/`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(system::routes())
        .merge(resources::routes())
        .merge(topology::routes())
        .merge(policies::routes())
        .merge(ui::routes())
        .fallback(|| async { error::ApiError::not_found() })
        .layer(axum::middleware::from_fn(ui::no_auth_prompt))
        .with_state(state)
}

/// A running management listener.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
        self.sampler.abort();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
        self.sampler.abort();
    }
}

/// Binds `listen` and serves the API until the returned handle is stopped or dropped.
///
/// # Errors
/// The address cannot be bound.
pub async fn start(admin: Admin, listen: SocketAddr) -> std::io::Result<Running> {
    let listener = warren_server::bind(listen)?;
    let local_addr = listener.local_addr()?;
    let running = launch(admin, listener, local_addr, Some(local_addr));
    tracing::info!(
        address = %local_addr,
        "Management plugin: HTTP (non-TLS) listener started on port {}",
        local_addr.port()
    );
    Ok(running)
}

/// Serves the API over HTTPS on `listen` with `tls` (the AMQPS certificate; RabbitMQ's
/// `management.ssl.port`, 15671). Each TLS handshake runs in its own task within
/// `handshake_timeout`, so a stalled client holds up no one.
///
/// # Errors
/// The address cannot be bound.
pub async fn start_tls(
    admin: Admin,
    listen: SocketAddr,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    handshake_timeout: Duration,
) -> std::io::Result<Running> {
    let tcp = warren_server::bind(listen)?;
    let local_addr = tcp.local_addr()?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshakes = tokio::spawn(async move {
        loop {
            let (stream, peer) = match tcp.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "management TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %peer, "management TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "management TLS handshake timed out"),
                }
            });
        }
    });
    let listener = TlsListener {
        rx,
        local_addr,
        _handshakes: AbortOnDrop(handshakes),
    };
    let running = launch(admin, listener, local_addr, None);
    tracing::info!(
        address = %local_addr,
        "Management plugin: HTTP (TLS) listener started on port {}",
        local_addr.port()
    );
    Ok(running)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connections whose TLS handshake completed, for axum.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    local_addr: SocketAddr,
    _handshakes: AbortOnDrop,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The handshake task is gone (aborted at shutdown): serve no more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// The client's address, for `loopback_users` (plain and TLS listeners alike).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// Starts the rate sampler and serves the API on `listener`.
fn launch<L>(
    admin: Admin,
    listener: L,
    local_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
) -> Running
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    PeerAddr: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let interval = Duration::from_millis(admin.config().management.rate_interval_ms.max(100));
    let rates = Arc::new(Rates::default());
    let sampler = tokio::spawn(rates::sample(admin.clone(), rates.clone(), interval));
    let app = router(AppState {
        admin,
        rates,
        http_addr,
    });
    let task = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<PeerAddr>();
        if let Err(e) = axum::serve(listener, service).await {
            tracing::error!(error = %e, "management listener failed");
        }
    });
    Running {
        local_addr,
        task,
        sampler,
    }
}
