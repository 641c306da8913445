//! The stream protocol listener and its connections.
//!
//! One task per connection reads frames, answers them, and writes deliveries and
//! publish confirms. Publishing appends to the stream queue through the engine (the
//! same `Queue::publish` as AMQP 0-9-1) and confirms after the segment file's
//! group-commit sync. A subscription is a position in the stream and a credit (in
//! chunks); the stream wakes the connection after each append, and the connection reads
//! from the log and sends each chunk as an osiris chunk of AMQP 1.0 messages.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};
use warren_broker::access::{Grant, Resource};
use warren_broker::stream::{FilterSpec, OffsetSpec};
use warren_broker::{Message, Queue, VHost};
use warren_server::admin::Admin;
use warren_server::auth;
use warren_server::registry::{
    ConnectionInfo, Registration, StreamConsumerReport, StreamPublisherReport, StreamReport,
};
use warren_server::sink::ConnEvent;
use warren_server::stats::ConnStats;

use crate::amqp10;
use crate::protocol::{code, key, ChunkWriter, Malformed, Reader, Writer};
use crate::sac::{self, GroupKey, Notice};

/// Frames larger than this are refused before `open` (RabbitMQ's default).
const INITIAL_FRAME_MAX: u32 = 8192;
/// The frame_max the server proposes in `tune`.
const FRAME_MAX: u32 = 1_048_576;
/// The heartbeat (seconds) the server proposes in `tune`.
const HEARTBEAT: u32 = 60;
/// The engine's connection id for stream-protocol work (stream queues are never
/// exclusive, so it never matters whose they are).
const STREAM_CONNECTION: u64 = 0;
/// The header the engine adds to every stream message for AMQP 0-9-1 consumers; stream
/// clients get offsets from the chunk instead.
const OFFSET_HEADER: &str = "x-stream-offset";

/// A running stream listener; dropping it stops accepting.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    tls_local_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
}

impl Running {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound address of the TLS listener, if there is one.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_local_addr
    }

    /// Stops accepting and closes the open connections.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What every connection of one listener needs.
struct Shared {
    admin: Admin,
    /// The host and port `metadata` and `open` advertise.
    host: String,
    port: u16,
    /// Single active consumer groups (all listeners).
    groups: Arc<sac::Groups>,
    /// Recently sent chunks (all listeners).
    chunks: Arc<ChunkCache>,
}

/// Binds `listen` and serves the stream protocol.
///
/// # Errors
/// The address cannot be bound.
pub async fn start(admin: Admin, listen: SocketAddr) -> std::io::Result<Running> {
    start_with_tls(admin, listen, None).await
}

/// Binds `listen`, and `tls` (address and certificate: RabbitMQ's
/// `stream.listeners.ssl`, port 5551) if given, and serves the stream protocol on both.
/// Over TLS, each handshake runs in its own task within
/// `limits.ssl_handshake_timeout_secs`, and a verified client certificate allows SASL
/// EXTERNAL as on the AMQPS listener.
///
/// # Errors
/// An address cannot be bound.
pub async fn start_with_tls(
    admin: Admin,
    listen: SocketAddr,
    tls: Option<(SocketAddr, Arc<ServerConfig>)>,
) -> std::io::Result<Running> {
    let listener = warren_server::bind(listen)?;
    let local_addr = listener.local_addr()?;
    let tls_listener = match tls {
        Some((addr, config)) => {
            let l = warren_server::bind(addr)?;
            let a = l.local_addr()?;
            Some((l, a, TlsAcceptor::from(config)))
        }
        None => None,
    };
    let tls_local_addr = tls_listener.as_ref().map(|(_, a, _)| *a);
    let cfg = admin.config().stream.clone();
    let advertised = |bound: SocketAddr, configured_port: u16| {
        let host = if !cfg.advertised_host.is_empty() {
            cfg.advertised_host.clone()
        } else if bound.ip().is_unspecified() {
            "localhost".to_string()
        } else {
            bound.ip().to_string()
        };
        let port = if configured_port != 0 {
            configured_port
        } else {
            bound.port()
        };
        (host, port)
    };
    let groups = Arc::new(sac::Groups::default());
    let chunks = Arc::new(ChunkCache::default());
    let (stop, stopped) = watch::channel(false);
    let (host, port) = advertised(local_addr, cfg.advertised_port);
    let shared = Arc::new(Shared {
        admin: admin.clone(),
        host,
        port,
        groups: groups.clone(),
        chunks: chunks.clone(),
    });
    tokio::spawn(accept(listener, shared, None, stopped.clone()));
    admin.add_listener("stream", local_addr);
    info!(address = %local_addr, "stream protocol listener started on port {}", local_addr.port());
    if let Some((l, a, acceptor)) = tls_listener {
        let (host, port) = advertised(a, cfg.advertised_tls_port);
        let shared = Arc::new(Shared {
            admin,
            host,
            port,
            groups,
            chunks,
        });
        shared.admin.add_listener("stream/ssl", a);
        tokio::spawn(accept(l, shared, Some(acceptor), stopped));
        info!(address = %a, "stream protocol TLS listener started on port {}", a.port());
    }
    Ok(Running {
        local_addr,
        tls_local_addr,
        stop,
    })
}

/// Accepts connections until stopped.
async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let local = socket.local_addr().unwrap_or(peer);
                    let shared = shared.clone();
                    let stopped = stopped.clone();
                    match tls.clone() {
                        None => {
                            tokio::spawn(connection(socket, None, (peer, local, false), shared, stopped));
                        }
                        Some(acceptor) => {
                            tokio::spawn(async move {
                                let limit = Duration::from_secs(
                                    shared.admin.config().limits.ssl_handshake_timeout_secs.max(1),
                                );
                                match tokio::time::timeout(limit, acceptor.accept(socket)).await {
                                    Ok(Ok(tls)) => {
                                        let cert = tls
                                            .get_ref()
                                            .1
                                            .peer_certificates()
                                            .and_then(|chain| chain.first())
                                            .map(|c| c.as_ref().to_vec());
                                        connection(tls, cert, (peer, local, true), shared, stopped).await;
                                    }
                                    Ok(Err(e)) => {
                                        debug!(%peer, error = %e, "stream TLS handshake failed")
                                    }
                                    Err(_) => debug!(%peer, "stream TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "stream listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped.changed() => break,
        }
    }
}

/// How many bytes of encoded chunks [`ChunkCache`] keeps (a chunk is at most about a
/// megabyte).
const CACHED_CHUNK_BYTES: usize = 32 << 20;

/// The osiris chunks most recently sent, by stream and first offset, so that readers
/// of the same part of a stream (several consumers from `first`, say) encode each chunk
/// once. What a stream holds at an offset never changes, so an entry stays right for as
/// long as its stream exists; holding the `Arc<Queue>` keeps a deleted stream's address
/// from being taken by a new one while its chunks are cached.
#[derive(Default)]
struct ChunkCache {
    inner: std::sync::Mutex<CachedChunks>,
}

/// A cached chunk: its stream (kept alive), message count and bytes.
type CachedChunk = (Arc<Queue>, u64, Arc<Vec<u8>>);

/// [`ChunkCache`]'s state: chunks by (stream address, first offset), their order of
/// arrival, and their total size.
#[derive(Default)]
struct CachedChunks {
    chunks: HashMap<(usize, u64), CachedChunk>,
    order: std::collections::VecDeque<(usize, u64)>,
    bytes: usize,
}

impl ChunkCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CachedChunks> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The chunk of `queue` starting at `first`: its message count and bytes.
    fn get(&self, queue: &Arc<Queue>, first: u64) -> Option<(u64, Arc<Vec<u8>>)> {
        let g = self.lock();
        let (q, count, bytes) = g.chunks.get(&(Arc::as_ptr(queue) as usize, first))?;
        Arc::ptr_eq(q, queue).then(|| (*count, bytes.clone()))
    }

    fn put(&self, queue: &Arc<Queue>, first: u64, count: u64, bytes: Arc<Vec<u8>>) {
        let key = (Arc::as_ptr(queue) as usize, first);
        let mut g = self.lock();
        let size = bytes.len();
        match g.chunks.insert(key, (queue.clone(), count, bytes)) {
            None => g.order.push_back(key),
            Some((_, _, replaced)) => g.bytes -= replaced.len(),
        }
        g.bytes += size;
        while g.bytes > CACHED_CHUNK_BYTES {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            if let Some((_, _, evicted)) = g.chunks.remove(&old) {
                g.bytes -= evicted.len();
            }
        }
    }
}

/// A publisher declared on the connection.
struct Publisher {
    queue: Arc<Queue>,
    reference: Option<String>,
    /// Messages published, confirmed and refused (for `list_stream_publishers`).
    published: u64,
    confirmed: u64,
    errored: u64,
}

/// A subscription: where it is in its stream and how many chunks it may still receive.
struct Subscription {
    queue: Arc<Queue>,
    next: u64,
    credit: u32,
    filter: Option<FilterSpec>,
    listener: u64,
    /// Where it asked to start (used when a single active consumer is activated and its
    /// client answers "none").
    spec: OffsetSpec,
    /// Its single-active-consumer group, if it is in one.
    group: Option<GroupKey>,
    /// Chunks flow (always for plain subscriptions; for a group member, once it is
    /// active and its client has answered the consumer update).
    reading: bool,
    /// The coordinator made it active (a group member only).
    active: bool,
    /// Messages sent to it (for `list_stream_consumers`).
    consumed: u64,
    /// The properties it subscribed with.
    properties: Vec<(String, String)>,
}

/// Completions from the group-commit thread.
enum Event {
    Confirmed {
        publisher: u8,
        ids: Vec<u64>,
        ok: bool,
    },
}

/// Why a connection ends.
enum End {
    /// The socket closed or failed.
    Gone(String),
    /// The client sent something that ends the connection; tell it why.
    Close(u16, String),
    /// The client closed (answered).
    Closed,
}

impl From<Malformed> for End {
    fn from(_: Malformed) -> Self {
        End::Close(code::UNKNOWN_FRAME, "malformed frame".into())
    }
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> Self {
        End::Gone(e.to_string())
    }
}

struct Conn {
    shared: Arc<Shared>,
    id: u64,
    peer: SocketAddr,
    /// Our end of the socket, and whether it is TLS (for the connection listings).
    local: SocketAddr,
    tls: bool,
    /// The client's `peer properties`.
    client_properties: FieldTable,
    /// The SASL mechanism it authenticated with.
    mechanism: String,
    /// Socket counters, shown by the management API.
    stats: Arc<ConnStats>,
    /// Where the registry's requests (force close, reports) arrive.
    requests: mpsc::UnboundedSender<ConnEvent>,
    /// In the node's connection registry once open.
    _registration: Option<Registration>,
    /// The client's verified TLS certificate (for SASL EXTERNAL).
    cert: Option<Vec<u8>>,
    out: Box<dyn AsyncWrite + Send + Unpin>,
    user: Option<String>,
    vhost: Option<Arc<VHost>>,
    grant: Option<Arc<Grant>>,
    _slot: Option<warren_broker::access::ConnectionSlot>,
    frame_max: u32,
    heartbeat: u32,
    publishers: HashMap<u8, Publisher>,
    subscriptions: HashMap<u8, Subscription>,
    events: mpsc::UnboundedSender<Event>,
    notices: mpsc::UnboundedSender<Notice>,
    /// Consumer updates sent and not yet answered: correlation id to (subscription,
    /// stepping down).
    updates: HashMap<u32, (u8, bool)>,
    correlation: u32,
    wake: Arc<Notify>,
    last_write: Instant,
}

async fn connection<S>(
    socket: S,
    cert: Option<Vec<u8>>,
    (peer, local, tls): (SocketAddr, SocketAddr, bool),
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, out) = tokio::io::split(socket);
    let (events, mut inbox) = mpsc::unbounded_channel();
    let (notices, mut notified) = mpsc::unbounded_channel();
    let (requests, mut requested) = mpsc::unbounded_channel();
    let id = shared.admin.next_connection_id();
    let mut conn = Conn {
        shared,
        id,
        peer,
        local,
        tls,
        client_properties: FieldTable::default(),
        mechanism: String::new(),
        stats: Arc::new(ConnStats::default()),
        requests,
        _registration: None,
        cert,
        out: Box::new(out),
        user: None,
        vhost: None,
        grant: None,
        _slot: None,
        frame_max: INITIAL_FRAME_MAX,
        heartbeat: 0,
        publishers: HashMap::new(),
        subscriptions: HashMap::new(),
        events,
        notices,
        updates: HashMap::new(),
        correlation: 0,
        wake: Arc::new(Notify::new()),
        last_write: Instant::now(),
    };
    let handshake_limit = Duration::from_secs(
        conn.shared
            .admin
            .config()
            .limits
            .handshake_timeout_secs
            .max(1),
    );
    let opened_by = Instant::now() + handshake_limit;
    // Bytes read and not yet taken as frames. Reading into it is cancel-safe, so a
    // delivery or confirm that wins the `select!` never loses part of a frame.
    let mut buf = bytes::BytesMut::with_capacity(4096);
    let mut last_read = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let end = loop {
        let wake = conn.wake.clone();
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => break End::Gone("client closed the socket".into()),
                Ok(n) => {
                    last_read = Instant::now();
                    conn.stats.received(n);
                    let mut ended = None;
                    loop {
                        match take_frame(&mut buf, conn.frame_max) {
                            Ok(Some(frame)) => {
                                if let Err(e) = conn.frame(&frame).await {
                                    ended = Some(e);
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                ended = Some(e);
                                break;
                            }
                        }
                    }
                    if let Some(e) = ended {
                        break e;
                    }
                }
                Err(e) => break End::Gone(e.to_string()),
            },
            Some(ev) = inbox.recv() => {
                if let Err(e) = conn.event(ev).await {
                    break e;
                }
            }
            Some(request) = requested.recv() => {
                if let Err(e) = conn.request(request) {
                    break e;
                }
            }
            Some(notice) = notified.recv() => {
                if let Err(e) = conn.consumer_update(notice).await {
                    break e;
                }
            }
            _ = wake.notified() => {
                if let Err(e) = conn.deliver_all().await {
                    break e;
                }
            }
            _ = tick.tick() => {
                if conn.vhost.is_none() && Instant::now() > opened_by {
                    break End::Gone("handshake not completed in time".into());
                }
                if let Err(e) = conn.check_deleted().await {
                    break e;
                }
                if conn.heartbeat > 0 {
                    let hb = Duration::from_secs(u64::from(conn.heartbeat));
                    if last_read.elapsed() > hb * 2 {
                        break End::Gone("missed heartbeats from client".into());
                    }
                    if conn.last_write.elapsed() >= hb {
                        let w = Writer::command(key::HEARTBEAT, 1);
                        if let Err(e) = conn.send(w.finish()).await {
                            break e;
                        }
                    }
                }
            }
            _ = stopped.changed() => break End::Close(code::OK, "broker shutdown".into()),
        }
    };
    match end {
        End::Close(c, reason) => {
            let mut w = Writer::command(key::CLOSE, 1);
            w.u32(0).u16(c).str(&reason);
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.send(w.finish())).await;
            debug!(peer = %peer, code = c, %reason, "stream connection closed by the server");
        }
        End::Gone(why) => debug!(peer = %peer, %why, "stream connection ended"),
        End::Closed => debug!(peer = %peer, "stream connection closed by the client"),
    }
    let ids: Vec<u8> = conn.subscriptions.keys().copied().collect();
    for id in ids {
        conn.unsubscribe(id);
    }
    let _ = conn.out.shutdown().await;
}

/// Takes the next whole frame (without its size) from `buf`, if it is all there.
fn take_frame(buf: &mut bytes::BytesMut, frame_max: u32) -> Result<Option<bytes::BytesMut>, End> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if frame_max != 0 && size > frame_max {
        return Err(End::Close(
            code::FRAME_TOO_LARGE,
            format!("frame too large: {size} bytes, frame_max {frame_max}"),
        ));
    }
    let total = 4 + size as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    let _ = frame.split_to(4);
    Ok(Some(frame))
}

/// The AMQP 1.0 encoding of a stored message, as a stream client receives it: without
/// the `x-stream-offset` header the engine adds for AMQP 0-9-1 consumers (it would be a
/// message annotation; stream clients get offsets from the chunk).
fn write_wire_message(m: &Message, out: &mut Vec<u8>) {
    amqp10::encode_from_amqp091_into(m, OFFSET_HEADER, out);
}

/// The answer to `route` or `partitions`, as RabbitMQ gives it: access refused (and no
/// streams) without permission on the super stream or on any stream found, "stream does
/// not exist" without the super stream, else the streams.
fn super_stream_answer(
    exchange_permitted: bool,
    find: impl FnOnce() -> Option<Vec<String>>,
    stream_permitted: impl Fn(&str) -> bool,
) -> (u16, Vec<String>) {
    if !exchange_permitted {
        return (code::ACCESS_REFUSED, Vec::new());
    }
    match find() {
        None => (code::STREAM_DOES_NOT_EXIST, Vec::new()),
        Some(streams) if streams.iter().all(|s| stream_permitted(s)) => (code::OK, streams),
        Some(_) => (code::ACCESS_REFUSED, Vec::new()),
    }
}

/// The queue arguments of a stream created through the protocol: its text arguments
/// (`max-age`, `max-length-bytes`...) as `x-` arguments, numbers as numbers; `None` if a
/// number does not parse.
fn stream_arguments(args: Vec<(String, String)>) -> Option<FieldTable> {
    let mut arguments = FieldTable::default();
    for (k, v) in args {
        let k = if k.starts_with("x-") {
            k
        } else {
            format!("x-{k}")
        };
        let value = match k.as_str() {
            "x-max-length-bytes"
            | "x-stream-max-segment-size-bytes"
            | "x-initial-cluster-size"
            | "x-stream-filter-size-bytes" => AMQPValue::LongLongInt(v.parse::<i64>().ok()?),
            _ => AMQPValue::LongString(v.into()),
        };
        arguments.insert(k.into(), value);
    }
    Some(arguments)
}

impl Conn {
    async fn send(&mut self, frame: Vec<u8>) -> Result<(), End> {
        self.out.write_all(&frame).await?;
        self.stats.sent(frame.len());
        self.last_write = Instant::now();
        Ok(())
    }

    /// A request from the node's connection registry.
    fn request(&mut self, request: ConnEvent) -> Result<(), End> {
        match request {
            ConnEvent::ForceClose { reason } => Err(End::Close(code::OK, reason)),
            ConnEvent::Report(reply) => {
                // No channels on a stream connection.
                let _ = reply.send(Vec::new());
                Ok(())
            }
            ConnEvent::StreamReport(reply) => {
                let _ = reply.send(self.report());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The publishers and subscriptions, by id.
    fn report(&self) -> StreamReport {
        let mut publishers: Vec<StreamPublisherReport> = self
            .publishers
            .iter()
            .map(|(id, p)| StreamPublisherReport {
                id: *id,
                stream: p.queue.name.to_string(),
                reference: p.reference.clone().unwrap_or_default(),
                published: p.published,
                confirmed: p.confirmed,
                errored: p.errored,
            })
            .collect();
        publishers.sort_by_key(|p| p.id);
        let mut consumers: Vec<StreamConsumerReport> = self
            .subscriptions
            .iter()
            .map(|(id, s)| {
                let offset = s.next.saturating_sub(1);
                let end = s
                    .queue
                    .with_stream_log(|l| l.next_offset().saturating_sub(1))
                    .unwrap_or(offset);
                StreamConsumerReport {
                    id: *id,
                    stream: s.queue.name.to_string(),
                    consumed: s.consumed,
                    offset,
                    offset_lag: end.saturating_sub(offset),
                    credits: s.credit,
                    properties: s.properties.clone(),
                }
            })
            .collect();
        consumers.sort_by_key(|c| c.id);
        StreamReport {
            publishers,
            consumers,
        }
    }

    async fn respond(&mut self, k: u16, correlation: u32, c: u16) -> Result<(), End> {
        self.send(Writer::response(k, correlation, c).finish())
            .await
    }

    fn opened(&self) -> Result<(&Arc<VHost>, &Arc<Grant>), End> {
        match (&self.vhost, &self.grant) {
            (Some(v), Some(g)) => Ok((v, g)),
            _ => Err(End::Close(
                code::UNKNOWN_FRAME,
                "command before the connection was opened".into(),
            )),
        }
    }

    /// The stream queue `name` of the connection's vhost.
    fn stream(&self, name: &str) -> Option<Arc<Queue>> {
        let v = self.vhost.as_ref()?;
        v.queue(name, STREAM_CONNECTION)
            .ok()
            .filter(|q| q.is_stream())
    }

    async fn frame(&mut self, frame: &[u8]) -> Result<(), End> {
        let mut r = Reader::new(frame);
        let k = r.u16()?;
        let version = r.u16()?;
        match k & !key::RESPONSE {
            key::PEER_PROPERTIES => self.peer_properties(&mut r).await,
            key::SASL_HANDSHAKE => self.sasl_handshake(&mut r).await,
            key::SASL_AUTHENTICATE => self.sasl_authenticate(&mut r).await,
            key::TUNE => {
                let frame_max = r.u32()?;
                let heartbeat = r.u32()?;
                self.frame_max = if frame_max == 0 {
                    FRAME_MAX
                } else {
                    frame_max.min(FRAME_MAX)
                };
                self.heartbeat = heartbeat.min(HEARTBEAT);
                Ok(())
            }
            key::OPEN => self.open(&mut r).await,
            key::CLOSE => {
                let correlation = r.u32()?;
                self.respond(key::CLOSE, correlation, code::OK).await?;
                Err(End::Closed)
            }
            key::HEARTBEAT => Ok(()),
            key::CONSUMER_UPDATE if k & key::RESPONSE != 0 => {
                self.consumer_update_answer(&mut r).await
            }
            _ if k & key::RESPONSE != 0 => Ok(()),
            _ if self.vhost.is_none() => Err(End::Close(
                code::UNKNOWN_FRAME,
                "command before the connection was opened".into(),
            )),
            key::DECLARE_PUBLISHER => self.declare_publisher(&mut r).await,
            key::PUBLISH => self.publish(&mut r, version).await,
            key::QUERY_PUBLISHER_SEQUENCE => self.query_publisher_sequence(&mut r).await,
            key::DELETE_PUBLISHER => {
                let correlation = r.u32()?;
                let id = r.u8()?;
                let c = if self.publishers.remove(&id).is_some() {
                    code::OK
                } else {
                    code::PUBLISHER_DOES_NOT_EXIST
                };
                self.respond(key::DELETE_PUBLISHER, correlation, c).await
            }
            key::SUBSCRIBE => self.subscribe(&mut r).await,
            key::CREDIT => {
                let id = r.u8()?;
                let credit = r.u16()?;
                match self.subscriptions.get_mut(&id) {
                    Some(s) if !s.reading => {
                        // An inactive single active consumer: credit is kept for when it
                        // becomes active, and the client is told, as RabbitMQ does.
                        s.credit = s.credit.saturating_add(u32::from(credit));
                        let mut w = Writer::command(key::CREDIT | key::RESPONSE, 1);
                        w.u16(code::PRECONDITION_FAILED).u8(id);
                        self.send(w.finish()).await
                    }
                    Some(s) => {
                        s.credit = s.credit.saturating_add(u32::from(credit));
                        self.deliver_all().await
                    }
                    None => {
                        let mut w = Writer::command(key::CREDIT | key::RESPONSE, 1);
                        w.u16(code::SUBSCRIPTION_ID_DOES_NOT_EXIST).u8(id);
                        self.send(w.finish()).await
                    }
                }
            }
            key::STORE_OFFSET => {
                let reference = r.str()?;
                let stream = r.str()?;
                let offset = r.u64()?;
                if let Some(q) = self.stream(&stream) {
                    q.with_stream_log(|l| l.store_offset(&reference, offset));
                }
                Ok(())
            }
            key::QUERY_OFFSET => {
                let correlation = r.u32()?;
                let reference = r.str()?;
                let stream = r.str()?;
                let found = self
                    .stream(&stream)
                    .map(|q| q.with_stream_log(|l| l.stored_offset(&reference)).flatten());
                let (c, offset) = match found {
                    None => (code::STREAM_DOES_NOT_EXIST, 0),
                    Some(None) => (code::NO_OFFSET, 0),
                    Some(Some(o)) => (code::OK, o),
                };
                let mut w = Writer::response(key::QUERY_OFFSET, correlation, c);
                w.u64(offset);
                self.send(w.finish()).await
            }
            key::UNSUBSCRIBE => {
                let correlation = r.u32()?;
                let id = r.u8()?;
                let c = if self.unsubscribe(id) {
                    code::OK
                } else {
                    code::SUBSCRIPTION_ID_DOES_NOT_EXIST
                };
                self.respond(key::UNSUBSCRIBE, correlation, c).await
            }
            key::CREATE => self.create(&mut r).await,
            key::DELETE => self.delete(&mut r).await,
            key::METADATA => self.metadata(&mut r).await,
            key::EXCHANGE_COMMAND_VERSIONS => {
                let correlation = r.u32()?;
                let mut w = Writer::response(key::EXCHANGE_COMMAND_VERSIONS, correlation, code::OK);
                let ours: &[(u16, u16, u16)] = &[
                    (key::DECLARE_PUBLISHER, 1, 1),
                    (key::PUBLISH, 1, 2),
                    (key::QUERY_PUBLISHER_SEQUENCE, 1, 1),
                    (key::DELETE_PUBLISHER, 1, 1),
                    (key::SUBSCRIBE, 1, 1),
                    (key::DELIVER, 1, 1),
                    (key::CREDIT, 1, 1),
                    (key::STORE_OFFSET, 1, 1),
                    (key::QUERY_OFFSET, 1, 1),
                    (key::UNSUBSCRIBE, 1, 1),
                    (key::CREATE, 1, 1),
                    (key::DELETE, 1, 1),
                    (key::METADATA, 1, 1),
                    (key::CLOSE, 1, 1),
                    (key::HEARTBEAT, 1, 1),
                    (key::EXCHANGE_COMMAND_VERSIONS, 1, 1),
                    (key::STREAM_STATS, 1, 1),
                    (key::ROUTE, 1, 1),
                    (key::PARTITIONS, 1, 1),
                    (key::CONSUMER_UPDATE, 1, 1),
                    (key::CREATE_SUPER_STREAM, 1, 1),
                    (key::DELETE_SUPER_STREAM, 1, 1),
                ];
                w.u32(ours.len() as u32);
                for (k, min, max) in ours {
                    w.u16(*k).u16(*min).u16(*max);
                }
                self.send(w.finish()).await
            }
            key::STREAM_STATS => {
                let correlation = r.u32()?;
                let stream = r.str()?;
                match self.stream(&stream) {
                    Some(q) => {
                        let (first, next) = q
                            .with_stream_log(|l| (l.first_offset(), l.next_offset()))
                            .unwrap_or((0, 0));
                        let committed = next.checked_sub(1).map_or(-1, |o| o as i64);
                        let mut w = Writer::response(key::STREAM_STATS, correlation, code::OK);
                        w.u32(3);
                        w.str("first_chunk_id")
                            .i64(if next > first { first as i64 } else { -1 });
                        w.str("committed_chunk_id").i64(committed);
                        w.str("committed_offset").i64(committed);
                        self.send(w.finish()).await
                    }
                    None => {
                        let mut w = Writer::response(
                            key::STREAM_STATS,
                            correlation,
                            code::STREAM_DOES_NOT_EXIST,
                        );
                        w.u32(0);
                        self.send(w.finish()).await
                    }
                }
            }
            key::ROUTE => self.route(&mut r).await,
            key::PARTITIONS => self.partitions(&mut r).await,
            key::CREATE_SUPER_STREAM => self.create_super_stream(&mut r).await,
            key::DELETE_SUPER_STREAM => self.delete_super_stream(&mut r).await,
            _ => Err(End::Close(
                code::UNKNOWN_FRAME,
                format!("unknown command {k:#06x}"),
            )),
        }
    }

    async fn peer_properties(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let client = r.map()?;
        let mut props = FieldTable::default();
        for (k, v) in client {
            props.insert(k.into(), AMQPValue::LongString(v.into()));
        }
        self.client_properties = props;
        let id = self.shared.admin.config().identity.resolved();
        let props = vec![
            ("product".to_string(), id.product),
            ("version".to_string(), id.version),
            ("platform".to_string(), id.platform),
            ("copyright".to_string(), id.copyright),
            ("information".to_string(), id.information),
            ("cluster_name".to_string(), id.cluster_name),
        ];
        let mut w = Writer::response(key::PEER_PROPERTIES, correlation, code::OK);
        w.map(&props);
        self.send(w.finish()).await
    }

    async fn sasl_handshake(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let peer = auth::Peer {
            ip: self.peer.ip(),
            cert: self.cert.as_deref(),
        };
        let mechanisms = auth::mechanisms(&self.shared.admin.config().auth, peer);
        let mut w = Writer::response(key::SASL_HANDSHAKE, correlation, code::OK);
        w.u32(mechanisms.len() as u32);
        for m in mechanisms {
            w.str(m);
        }
        self.send(w.finish()).await
    }

    async fn sasl_authenticate(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let mechanism = r.str()?;
        let response = r.bytes()?;
        let peer = auth::Peer {
            ip: self.peer.ip(),
            cert: self.cert.as_deref(),
        };
        let admin = &self.shared.admin;
        match auth::authenticate(
            &admin.config().auth,
            admin.access(),
            &mechanism,
            response,
            peer,
        ) {
            Ok(user) => {
                self.user = Some(user);
                self.mechanism = mechanism.to_string();
                self.respond(key::SASL_AUTHENTICATE, correlation, code::OK)
                    .await?;
                let mut w = Writer::command(key::TUNE, 1);
                w.u32(FRAME_MAX).u32(HEARTBEAT);
                self.send(w.finish()).await
            }
            Err(e) => {
                let c = match &e {
                    auth::AuthError::UnknownMechanism(_) => code::SASL_MECHANISM_NOT_SUPPORTED,
                    auth::AuthError::Malformed(_) => code::SASL_ERROR,
                    auth::AuthError::Refused { why, .. } if why.contains("loopback") => {
                        code::AUTHENTICATION_FAILURE_LOOPBACK
                    }
                    auth::AuthError::Refused { .. } => code::AUTHENTICATION_FAILURE,
                };
                warn!(peer = %self.peer, "stream protocol: authentication failed");
                self.respond(key::SASL_AUTHENTICATE, correlation, c).await?;
                Err(End::Gone("authentication failed".into()))
            }
        }
    }

    async fn open(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let vhost_name = r.str()?;
        let Some(user) = self.user.clone() else {
            return Err(End::Close(
                code::AUTHENTICATION_FAILURE,
                "open before authentication".into(),
            ));
        };
        let broker = self.shared.admin.broker().clone();
        let access = broker.access().clone();
        let vhost = broker.vhost(&vhost_name).filter(|v| !v.is_deleted());
        let grant = access.grant(&user, &vhost_name, None);
        let slot = access.open_connection(&user, &vhost_name).ok();
        match (vhost, grant, slot) {
            (Some(v), Some(g), Some(slot)) => {
                self.vhost = Some(v);
                self.grant = Some(Arc::new(g));
                self._slot = Some(slot);
                // Listed with the AMQP connections (protocol "stream"), as in RabbitMQ,
                // and closed with them (a deleted user or vhost, an operator).
                self._registration = Some(self.shared.admin.register_connection(
                    ConnectionInfo {
                        id: self.id,
                        protocol: warren_server::registry::STREAM,
                        name: warren_server::registry::connection_name(self.peer, self.local),
                        user: user.clone(),
                        vhost: vhost_name.clone(),
                        peer: self.peer,
                        local: self.local,
                        client_properties: self.client_properties.clone(),
                        connected_at: std::time::SystemTime::now(),
                        tls: self.tls,
                        auth_mechanism: self.mechanism.clone(),
                        frame_max: FRAME_MAX,
                        channel_max: 0,
                        heartbeat: HEARTBEAT as u16,
                        stats: self.stats.clone(),
                    },
                    self.requests.clone(),
                ));
                let props = vec![
                    ("advertised_host".to_string(), self.shared.host.clone()),
                    ("advertised_port".to_string(), self.shared.port.to_string()),
                ];
                let mut w = Writer::response(key::OPEN, correlation, code::OK);
                w.map(&props);
                info!(%user, vhost = %vhost_name, peer = %self.peer, "stream connection opened");
                self.send(w.finish()).await
            }
            _ => {
                self.respond(key::OPEN, correlation, code::VIRTUAL_HOST_ACCESS_FAILURE)
                    .await?;
                Err(End::Gone("virtual host access failure".into()))
            }
        }
    }

    async fn declare_publisher(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let id = r.u8()?;
        let reference = r.string()?.filter(|s| !s.is_empty());
        let stream = r.str()?;
        let (_, grant) = self.opened()?;
        if grant.check_write(Resource::Queue, &stream).is_err() {
            return self
                .respond(key::DECLARE_PUBLISHER, correlation, code::ACCESS_REFUSED)
                .await;
        }
        let c = match self.stream(&stream) {
            None => code::STREAM_DOES_NOT_EXIST,
            Some(_) if self.publishers.contains_key(&id) => code::PRECONDITION_FAILED,
            Some(queue) => {
                self.publishers.insert(
                    id,
                    Publisher {
                        queue,
                        reference,
                        published: 0,
                        confirmed: 0,
                        errored: 0,
                    },
                );
                code::OK
            }
        };
        self.respond(key::DECLARE_PUBLISHER, correlation, c).await
    }

    async fn publish(&mut self, r: &mut Reader<'_>, version: u16) -> Result<(), End> {
        let id = r.u8()?;
        let n = r.count(12)?;
        if self
            .publishers
            .get(&id)
            .is_some_and(|p| p.queue.is_deleted())
        {
            self.check_deleted().await?;
        }
        let Some(p) = self.publishers.get(&id) else {
            // Every message of an unknown publisher gets an error.
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(r.u64()?);
                if version >= 2 {
                    r.string()?;
                }
                r.bytes()?;
            }
            let mut w = Writer::command(key::PUBLISH_ERROR, 1);
            w.u8(id).u32(ids.len() as u32);
            for i in ids {
                w.u64(i).u16(code::PUBLISHER_DOES_NOT_EXIST);
            }
            return self.send(w.finish()).await;
        };
        let queue = p.queue.clone();
        let reference = p.reference.clone();
        let routing_key = queue.name.clone();
        if let Some(p) = self.publishers.get_mut(&id) {
            p.published += n as u64;
        }
        let mut confirmed_now = Vec::new();
        let mut to_sync = Vec::new();
        let mut failed = Vec::new();
        let mut files: Vec<Arc<warren_broker::store::SyncFile>> = Vec::new();
        let mut last = reference
            .as_deref()
            .and_then(|rf| queue.with_stream_log(|l| l.writer_sequence(rf)).flatten());
        for _ in 0..n {
            let publishing_id = r.u64()?;
            let filter = if version >= 2 { r.string()? } else { None };
            let data = r.bytes()?;
            if last.is_some_and(|l| publishing_id <= l) {
                // A duplicate of what this publisher reference already stored.
                confirmed_now.push(publishing_id);
                continue;
            }
            let (props, body) = match amqp10::decode(data) {
                Ok(m) => amqp10::to_amqp091(&m),
                Err(_) => (Bytes::new(), Bytes::copy_from_slice(data)),
            };
            let mut message = Message::new("", &routing_key, props, body);
            if let Some(f) = filter {
                message = message.with_header(
                    warren_broker::stream::FILTER_VALUE_HEADER,
                    AMQPValue::LongString(f.into()),
                );
            }
            match queue.publish(Arc::new(message)) {
                Ok(published) => {
                    if let Some(rf) = &reference {
                        queue.with_stream_log(|l| l.set_writer_sequence(rf, publishing_id));
                        last = Some(publishing_id);
                    }
                    match published.sync {
                        Some(f) => {
                            if !files.iter().any(|g| Arc::ptr_eq(g, &f)) {
                                files.push(f);
                            }
                            to_sync.push(publishing_id);
                        }
                        None => confirmed_now.push(publishing_id),
                    }
                }
                Err(e) => {
                    warn!(stream = %queue.name, error = %e, "stream append failed");
                    failed.push(publishing_id);
                }
            }
        }
        if !to_sync.is_empty() {
            match self.shared.admin.broker().storage() {
                Some(storage) => {
                    let events = self.events.clone();
                    storage.persister().sync(files, move |ok| {
                        let _ = events.send(Event::Confirmed {
                            publisher: id,
                            ids: to_sync,
                            ok,
                        });
                    });
                }
                None => confirmed_now.extend(to_sync),
            }
        }
        if !confirmed_now.is_empty() {
            self.confirm(id, &confirmed_now).await?;
        }
        if !failed.is_empty() {
            self.publish_error(id, &failed, code::INTERNAL_ERROR)
                .await?;
        }
        Ok(())
    }

    async fn confirm(&mut self, publisher: u8, ids: &[u64]) -> Result<(), End> {
        if let Some(p) = self.publishers.get_mut(&publisher) {
            p.confirmed += ids.len() as u64;
        }
        let mut w = Writer::command(key::PUBLISH_CONFIRM, 1);
        w.u8(publisher).u32(ids.len() as u32);
        for i in ids {
            w.u64(*i);
        }
        self.send(w.finish()).await
    }

    async fn publish_error(&mut self, publisher: u8, ids: &[u64], c: u16) -> Result<(), End> {
        if let Some(p) = self.publishers.get_mut(&publisher) {
            p.errored += ids.len() as u64;
        }
        let mut w = Writer::command(key::PUBLISH_ERROR, 1);
        w.u8(publisher).u32(ids.len() as u32);
        for i in ids {
            w.u64(*i).u16(c);
        }
        self.send(w.finish()).await
    }

    async fn event(&mut self, ev: Event) -> Result<(), End> {
        match ev {
            Event::Confirmed { publisher, ids, ok } => {
                if ok {
                    self.confirm(publisher, &ids).await
                } else {
                    self.publish_error(publisher, &ids, code::INTERNAL_ERROR)
                        .await
                }
            }
        }
    }

    async fn query_publisher_sequence(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let reference = r.str()?;
        let stream = r.str()?;
        let (c, seq) = match self.stream(&stream) {
            None => (code::STREAM_DOES_NOT_EXIST, 0),
            Some(q) => (
                code::OK,
                q.with_stream_log(|l| l.writer_sequence(&reference))
                    .flatten()
                    .unwrap_or(0),
            ),
        };
        let mut w = Writer::response(key::QUERY_PUBLISHER_SEQUENCE, correlation, c);
        w.u64(seq);
        self.send(w.finish()).await
    }

    async fn subscribe(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let id = r.u8()?;
        let stream = r.str()?;
        let spec = match r.u16()? {
            1 => OffsetSpec::First,
            2 => OffsetSpec::Last,
            3 => OffsetSpec::Next,
            4 => OffsetSpec::Offset(r.u64()?.min(i64::MAX as u64) as i64),
            5 => OffsetSpec::Timestamp(r.i64()?.max(0) as u64),
            _ => {
                return self
                    .respond(key::SUBSCRIBE, correlation, code::PRECONDITION_FAILED)
                    .await
            }
        };
        let credit = r.u16()?;
        let properties = if r.remaining() > 0 {
            r.map()?
        } else {
            Vec::new()
        };
        let (_, grant) = self.opened()?;
        if grant.check_read(Resource::Queue, &stream).is_err() {
            return self
                .respond(key::SUBSCRIBE, correlation, code::ACCESS_REFUSED)
                .await;
        }
        if self.subscriptions.contains_key(&id) {
            return self
                .respond(
                    key::SUBSCRIBE,
                    correlation,
                    code::SUBSCRIPTION_ID_ALREADY_EXISTS,
                )
                .await;
        }
        let Some(queue) = self.stream(&stream) else {
            return self
                .respond(key::SUBSCRIBE, correlation, code::STREAM_DOES_NOT_EXIST)
                .await;
        };
        let prop = |k: &str| properties.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let group = if prop("single-active-consumer").is_some_and(|v| v == "true") {
            // A single active consumer must have a name (its group).
            let Some(name) = prop("name").filter(|n| !n.is_empty()) else {
                return self
                    .respond(key::SUBSCRIBE, correlation, code::PRECONDITION_FAILED)
                    .await;
            };
            let (vhost, _) = self.opened()?;
            let index = prop("super-stream")
                .and_then(|ss| vhost.super_stream_partition_index(ss, &stream))
                .unwrap_or(-1);
            let key: GroupKey = (vhost.name.clone(), stream.clone(), name.clone());
            if self
                .shared
                .groups
                .register(key.clone(), index, self.id, id, self.notices.clone())
                .is_err()
            {
                return self
                    .respond(key::SUBSCRIBE, correlation, code::PRECONDITION_FAILED)
                    .await;
            }
            Some(key)
        } else {
            None
        };
        let values: Vec<String> = properties
            .iter()
            .filter(|(k, _)| k.starts_with("filter."))
            .map(|(_, v)| v.clone())
            .collect();
        let filter = (!values.is_empty()).then(|| FilterSpec {
            values,
            match_unfiltered: prop("match-unfiltered").is_some_and(|v| v == "true"),
        });
        let next = queue.with_stream_log(|l| l.start_offset(spec)).unwrap_or(0);
        let wake = self.wake.clone();
        let listener = queue
            .stream_listen(Arc::new(move || wake.notify_one()))
            .unwrap_or(0);
        let reading = group.is_none();
        self.subscriptions.insert(
            id,
            Subscription {
                queue,
                next,
                credit: u32::from(credit),
                filter,
                listener,
                spec,
                group,
                reading,
                active: false,
                consumed: 0,
                properties,
            },
        );
        self.respond(key::SUBSCRIBE, correlation, code::OK).await?;
        self.deliver_all().await
    }

    /// Sends every subscription what its credit allows: one `deliver` per chunk (split
    /// to fit frame_max).
    async fn deliver_all(&mut self) -> Result<(), End> {
        self.check_deleted().await?;
        let ids: Vec<u8> = self.subscriptions.keys().copied().collect();
        let budget = (self.frame_max as usize).saturating_sub(64).max(4096);
        for id in ids {
            while let Some(s) = self.subscriptions.get(&id) {
                if s.credit == 0 || !s.reading {
                    break;
                }
                let (queue, next, filter) = (s.queue.clone(), s.next, s.filter.clone());
                // A chunk another reader was just sent, unless retention removed it (a
                // filtered subscription reads the log: it may skip the chunk).
                let hit = if filter.is_none() {
                    self.shared.chunks.get(&queue, next).filter(|(_, bytes)| {
                        bytes.len() <= budget + 64
                            && queue
                                .with_stream_log(|l| l.first_offset() <= next)
                                .unwrap_or(false)
                    })
                } else {
                    None
                };
                let (first, count, bytes) = match hit {
                    Some((count, bytes)) => (next, count, bytes),
                    None => {
                        let entries = match queue
                            .with_stream_log(|l| l.read_chunk(next, filter.as_ref()))
                        {
                            Some(Ok(Some(e))) if !e.is_empty() => e,
                            Some(Err(e)) => {
                                warn!(stream = %queue.name, error = %e, "cannot read a stream chunk");
                                break;
                            }
                            _ => break,
                        };
                        let first = entries[0].offset;
                        // As many entries as fit in one frame (at least one).
                        let wanted: usize = entries.iter().map(|e| e.message.body.len() + 96).sum();
                        let mut chunk = ChunkWriter::with_capacity(wanted.min(budget));
                        for e in &entries {
                            let before = chunk.data_len();
                            chunk.push(|out| write_wire_message(&e.message, out));
                            if chunk.entries() > 1 && chunk.data_len() > budget {
                                chunk.pop_to(before);
                                break;
                            }
                        }
                        let count = u64::from(chunk.entries());
                        let bytes = Arc::new(chunk.finish(first, entries[0].timestamp));
                        self.shared.chunks.put(&queue, first, count, bytes.clone());
                        (first, count, bytes)
                    }
                };
                if let Some(s) = self.subscriptions.get_mut(&id) {
                    s.consumed += count;
                    s.next = first + count;
                    s.credit -= 1;
                }
                // The frame's head, then the shared chunk (not copied into the frame).
                let mut w = Writer::command(key::DELIVER, 1);
                w.u8(id);
                let mut head = w.finish();
                let size = (head.len() - 4 + bytes.len()) as u32;
                head[..4].copy_from_slice(&size.to_be_bytes());
                self.out.write_all(&head).await?;
                self.out.write_all(&bytes).await?;
                self.stats.sent(head.len() + bytes.len());
                self.last_write = Instant::now();
            }
        }
        Ok(())
    }

    async fn create(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let name = r.str()?;
        let args = r.map()?;
        let (vhost, grant) = self.opened()?;
        let (vhost, grant) = (vhost.clone(), grant.clone());
        if grant.check_configure(Resource::Queue, &name).is_err() {
            return self
                .respond(key::CREATE, correlation, code::ACCESS_REFUSED)
                .await;
        }
        // An existing stream with the same arguments is "already exists"; with others
        // (or a queue of another type), the declare's equivalence check fails:
        // precondition failed, as RabbitMQ answers.
        let existed = vhost.queue(&name, STREAM_CONNECTION).is_ok();
        let Some(mut arguments) = stream_arguments(args) else {
            return self
                .respond(key::CREATE, correlation, code::PRECONDITION_FAILED)
                .await;
        };
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        let options = warren_broker::QueueOptions {
            name: name.clone(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments,
        };
        let c = match vhost.declare_queue(options, STREAM_CONNECTION) {
            Ok(_) if existed => code::STREAM_ALREADY_EXISTS,
            Ok(_) => code::OK,
            Err(warren_broker::Error::ReservedName { .. }) => code::ACCESS_REFUSED,
            Err(e) => {
                debug!(stream = %name, error = %e, "stream create refused");
                code::PRECONDITION_FAILED
            }
        };
        self.respond(key::CREATE, correlation, c).await
    }

    async fn delete(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let name = r.str()?;
        let (vhost, grant) = self.opened()?;
        let (vhost, grant) = (vhost.clone(), grant.clone());
        if grant.check_configure(Resource::Queue, &name).is_err() {
            return self
                .respond(key::DELETE, correlation, code::ACCESS_REFUSED)
                .await;
        }
        let c = if self.stream(&name).is_some() {
            match vhost.delete_queue(&name, false, false, STREAM_CONNECTION) {
                Ok(_) => code::OK,
                Err(_) => code::INTERNAL_ERROR,
            }
        } else {
            code::STREAM_DOES_NOT_EXIST
        };
        self.respond(key::DELETE, correlation, c).await
    }

    async fn metadata(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let n = r.count(2)?;
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            names.push(r.str()?);
        }
        let mut w = Writer::command(key::METADATA | key::RESPONSE, 1);
        w.u32(correlation);
        w.u32(1)
            .u16(0)
            .str(&self.shared.host)
            .u32(u32::from(self.shared.port));
        w.u32(names.len() as u32);
        for name in &names {
            w.str(name);
            if self.stream(name).is_some() {
                w.u16(code::OK).u16(0).u32(0);
            } else {
                w.u16(code::STREAM_DOES_NOT_EXIST).u16(u16::MAX).u32(0);
            }
        }
        self.send(w.finish()).await
    }

    /// Ends subscription `id` (and its single-active-consumer membership).
    fn unsubscribe(&mut self, id: u8) -> bool {
        let Some(s) = self.subscriptions.remove(&id) else {
            return false;
        };
        s.queue.stream_unlisten(s.listener);
        if let Some(g) = &s.group {
            self.shared.groups.unregister(g, self.id, id);
        }
        true
    }

    /// Drops the publishers and subscriptions of deleted streams and tells the client
    /// with one `metadata update` (stream not available) per stream, as RabbitMQ does.
    async fn check_deleted(&mut self) -> Result<(), End> {
        let mut gone: Vec<String> = Vec::new();
        let subs: Vec<u8> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| s.queue.is_deleted())
            .map(|(id, _)| *id)
            .collect();
        for id in subs {
            if let Some(s) = self.subscriptions.get(&id) {
                if !gone.contains(&s.queue.name) {
                    gone.push(s.queue.name.clone());
                }
            }
            self.unsubscribe(id);
        }
        let pubs: Vec<u8> = self
            .publishers
            .iter()
            .filter(|(_, p)| p.queue.is_deleted())
            .map(|(id, _)| *id)
            .collect();
        for id in pubs {
            if let Some(p) = self.publishers.remove(&id) {
                if !gone.contains(&p.queue.name) {
                    gone.push(p.queue.name.clone());
                }
            }
        }
        for name in gone {
            let mut w = Writer::command(key::METADATA_UPDATE, 1);
            w.u16(code::STREAM_NOT_AVAILABLE).str(&name);
            self.send(w.finish()).await?;
        }
        Ok(())
    }

    /// The coordinator changed a subscription's state: tell the client with a
    /// `consumer update` request; chunks flow once it answers.
    async fn consumer_update(&mut self, notice: Notice) -> Result<(), End> {
        let Some(s) = self.subscriptions.get_mut(&notice.subscription) else {
            return Ok(());
        };
        s.active = notice.active;
        if !notice.active {
            s.reading = false;
        }
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        self.updates
            .insert(correlation, (notice.subscription, notice.stepping_down));
        let mut w = Writer::command(key::CONSUMER_UPDATE, 1);
        w.u32(correlation)
            .u8(notice.subscription)
            .u8(u8::from(notice.active));
        self.send(w.finish()).await
    }

    /// The client's answer to a `consumer update`: an active subscription starts reading
    /// where the answer says (or where it asked when subscribing); a subscription that
    /// stepped down lets its group move on.
    async fn consumer_update_answer(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let _code = r.u16()?;
        let answered = match r.u16()? {
            1 => Some(OffsetSpec::First),
            2 => Some(OffsetSpec::Last),
            3 => Some(OffsetSpec::Next),
            4 => Some(OffsetSpec::Offset(r.u64()?.min(i64::MAX as u64) as i64)),
            5 => Some(OffsetSpec::Timestamp(r.i64()?.max(0) as u64)),
            _ => None,
        };
        let Some((id, stepping_down)) = self.updates.remove(&correlation) else {
            return Ok(());
        };
        let Some(s) = self.subscriptions.get_mut(&id) else {
            return Ok(());
        };
        if s.active {
            let spec = answered.unwrap_or(s.spec);
            let queue = s.queue.clone();
            let next = queue.with_stream_log(|l| l.start_offset(spec)).unwrap_or(0);
            if let Some(s) = self.subscriptions.get_mut(&id) {
                s.next = next;
                s.reading = true;
            }
            self.deliver_all().await
        } else {
            if stepping_down {
                if let Some(g) = s.group.clone() {
                    self.shared.groups.activate(&g, self.id, id);
                }
            }
            Ok(())
        }
    }

    /// Reads a list of strings (`count` then each).
    fn strings(r: &mut Reader<'_>) -> Result<Vec<String>, End> {
        let n = r.count(2)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(r.str()?);
        }
        Ok(out)
    }

    async fn respond_streams(
        &mut self,
        k: u16,
        correlation: u32,
        c: u16,
        streams: &[String],
    ) -> Result<(), End> {
        let mut w = Writer::response(k, correlation, c);
        w.u32(streams.len() as u32);
        for s in streams {
            w.str(s);
        }
        self.send(w.finish()).await
    }

    /// `route`: the partitions of a super stream a routing key goes to (write
    /// permission on the exchange and on each of them).
    async fn route(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let routing_key = r.str()?;
        let super_stream = r.str()?;
        let (vhost, grant) = self.opened()?;
        let writable = |kind, name: &str| grant.check_write(kind, name).is_ok();
        let (c, streams) = super_stream_answer(
            writable(Resource::Exchange, &super_stream),
            || vhost.super_stream_route(&super_stream, &routing_key),
            |s| writable(Resource::Queue, s),
        );
        self.respond_streams(key::ROUTE, correlation, c, &streams)
            .await
    }

    /// `partitions`: a super stream's partitions, in order (read or write permission on
    /// the exchange and on each of them).
    async fn partitions(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let super_stream = r.str()?;
        let (vhost, grant) = self.opened()?;
        let readable_or_writable = |kind, name: &str| {
            grant.check_read(kind, name).is_ok() || grant.check_write(kind, name).is_ok()
        };
        let (c, streams) = super_stream_answer(
            readable_or_writable(Resource::Exchange, &super_stream),
            || vhost.super_stream_partitions(&super_stream),
            |s| readable_or_writable(Resource::Queue, s),
        );
        self.respond_streams(key::PARTITIONS, correlation, c, &streams)
            .await
    }

    /// `create super stream` (RabbitMQ 3.13).
    async fn create_super_stream(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let name = r.str()?;
        let partitions = Self::strings(r)?;
        let binding_keys = Self::strings(r)?;
        let args = r.map()?;
        let (vhost, grant) = self.opened()?;
        let (vhost, grant) = (vhost.clone(), grant.clone());
        let permitted = grant.check_configure(Resource::Exchange, &name).is_ok()
            && partitions
                .iter()
                .all(|p| grant.check_configure(Resource::Queue, p).is_ok());
        let c = if !permitted {
            code::ACCESS_REFUSED
        } else if let Some(arguments) = stream_arguments(args) {
            use warren_broker::super_stream::SuperStreamError;
            match vhost.create_super_stream(&name, &partitions, &binding_keys, &arguments) {
                Ok(()) => code::OK,
                Err(SuperStreamError::AlreadyExists(why)) => {
                    debug!(super_stream = %name, %why, "super stream create refused");
                    code::STREAM_ALREADY_EXISTS
                }
                Err(e) => {
                    debug!(super_stream = %name, error = %e, "super stream create refused");
                    code::PRECONDITION_FAILED
                }
            }
        } else {
            code::PRECONDITION_FAILED
        };
        self.respond(key::CREATE_SUPER_STREAM, correlation, c).await
    }

    /// `delete super stream` (RabbitMQ 3.13): the exchange and its partitions.
    async fn delete_super_stream(&mut self, r: &mut Reader<'_>) -> Result<(), End> {
        let correlation = r.u32()?;
        let name = r.str()?;
        let (vhost, grant) = self.opened()?;
        let (vhost, grant) = (vhost.clone(), grant.clone());
        let c = if grant.check_configure(Resource::Exchange, &name).is_err() {
            code::ACCESS_REFUSED
        } else {
            match vhost.super_stream_partitions(&name) {
                None => code::STREAM_DOES_NOT_EXIST,
                Some(parts)
                    if !parts
                        .iter()
                        .all(|p| grant.check_configure(Resource::Queue, p).is_ok()) =>
                {
                    code::ACCESS_REFUSED
                }
                Some(_) => {
                    vhost.delete_super_stream(&name);
                    code::OK
                }
            }
        };
        self.respond(key::DELETE_SUPER_STREAM, correlation, c)
            .await?;
        self.check_deleted().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(v: &VHost, name: &str) -> Arc<Queue> {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        v.declare_queue(
            warren_broker::QueueOptions {
                name: name.into(),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments,
            },
            0,
        )
        .unwrap()
        .0
    }

    #[test]
    fn chunk_cache_is_per_stream_and_bounded_in_bytes() {
        let v = VHost::new("/");
        let (a, b) = (stream(&v, "a"), stream(&v, "b"));
        let cache = ChunkCache::default();
        cache.put(&a, 0, 10, Arc::new(vec![1; 100]));
        assert_eq!(cache.get(&a, 0).map(|(n, c)| (n, c.len())), Some((10, 100)));
        assert!(cache.get(&b, 0).is_none(), "another stream");
        assert!(cache.get(&a, 10).is_none(), "another offset");
        // Past the byte bound the oldest chunks go.
        let big = CACHED_CHUNK_BYTES / 4 + 1;
        for i in 1..=4u64 {
            cache.put(&b, i * 100, 1, Arc::new(vec![0; big]));
        }
        assert!(cache.get(&a, 0).is_none());
        assert!(cache.get(&b, 100).is_none());
        assert!(cache.get(&b, 400).is_some());
        assert!(cache.lock().bytes <= CACHED_CHUNK_BYTES);
    }
}
