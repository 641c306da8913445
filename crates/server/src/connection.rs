//! One client connection: the handshake, then the frame loop.
//!
//! Responsibilities: protocol header check, connection.start/tune/open with SASL and
//! limits, heartbeats both ways, channel open/close, mapping errors to channel.close or
//! connection.close, and tearing down channel state when the connection ends.
//! Collaborators: [`Channel`] (per-channel methods) and [`ConnSink`] (deliveries from
//! queues).
//!
//! The connection task `select!`s over socket reads, its inbox, socket writability,
//! heartbeat ticks and shutdown. Replies and deliveries go into one output buffer that
//! is written to the socket (without waiting) once per wake-up, so a burst of
//! deliveries costs one `send` and no hand-off to another task. What the socket does
//! not take stays buffered; beyond [`OUTPUT_HIGH_WATER`] the task stops processing
//! input and draining its inbox until the client catches up, which is where a slow
//! client pushes back (its queues then hold their messages). Input is still read, up to
//! [`INPUT_HOLD`] bytes, so the heartbeat timeout closes a client that neither reads
//! nor sends, as RabbitMQ does.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use warren_codec::protocol::{basic, channel, connection, AMQPClass};
use warren_codec::types::{AMQPValue, FieldTable, LongString, ShortString};
use warren_codec::{encode, AmqpError, Frame, FrameDecoder, ReplyCode, PROTOCOL_HEADER};

use crate::auth::{self, AuthError};
use crate::channel::{return_delivery, Channel, Ctx};
use crate::sink::{ConnEvent, ConnSink};
use crate::Shared;

/// Frame size accepted before tune-ok (RabbitMQ 4.1+: 8192).
const PRE_TUNE_FRAME_MAX: u32 = 8192;
/// How long to wait for connection.close-ok after sending connection.close.
const CLOSE_OK_TIMEOUT: Duration = Duration::from_secs(2);
/// Unwritten output at which the connection stops reading from the client and taking
/// deliveries from its inbox, until the socket accepts more.
const OUTPUT_HIGH_WATER: usize = 1 << 20;
/// Output buffer capacity kept between bursts; a larger one is released once written.
const OUTPUT_KEEP: usize = 64 * 1024;
/// Input held unprocessed while the output is backlogged. Reading goes on until this
/// much is held, so a client that stops reading but still sends (heartbeats) is seen
/// alive, and one that sends nothing is closed on its heartbeat timeout.
const INPUT_HOLD: usize = 128 * 1024;
/// How often a publisher paused by flow control checks its queue again.
const FLOW_CHECK: Duration = Duration::from_millis(1);
/// The longest a publisher is paused by flow control at a time.
const FLOW_MAX_PAUSE: Duration = Duration::from_millis(100);
/// How long a closing connection may take to flush its last frames.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the client said it can do.
#[derive(Debug, Default, Clone, Copy)]
struct ClientCaps {
    consumer_cancel_notify: bool,
    authentication_failure_close: bool,
    connection_blocked: bool,
}

fn short(s: &str) -> ShortString {
    ShortString::try_new(s.to_string()).unwrap_or_default()
}

fn long(s: &str) -> LongString {
    LongString::from(s.as_bytes().to_vec())
}

/// `connection.start`'s server properties: RabbitMQ 3.10's capability set and the
/// configured identity.
pub(crate) fn server_properties(id: &crate::config::ResolvedIdentity) -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        caps.insert(short(cap), AMQPValue::Boolean(true));
    }
    let mut p = FieldTable::default();
    p.insert(short("capabilities"), AMQPValue::FieldTable(caps));
    for (key, value) in [
        ("product", &id.product),
        ("version", &id.version),
        ("platform", &id.platform),
        ("cluster_name", &id.cluster_name),
        ("copyright", &id.copyright),
        ("information", &id.information),
    ] {
        p.insert(short(key), AMQPValue::LongString(long(value)));
    }
    p
}

fn client_caps(props: &FieldTable) -> ClientCaps {
    let mut c = ClientCaps::default();
    if let Some(AMQPValue::FieldTable(t)) = props.inner().get("capabilities") {
        let flag = |k: &str| matches!(t.inner().get(k), Some(AMQPValue::Boolean(true)));
        c.consumer_cancel_notify = flag("consumer_cancel_notify");
        c.authentication_failure_close = flag("authentication_failure_close");
        c.connection_blocked = flag("connection.blocked");
    }
    c
}

fn close_method(e: &AmqpError) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: e.code.code(),
        reply_text: short(&e.text),
        class_id: e.class_id,
        method_id: e.method_id,
    }))
}

/// Serves one accepted socket until it closes; `tls` is set for the AMQPS listener.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let id = shared.next_connection_id();
    let span = tracing::info_span!("connection", id, %peer);
    let _enter = span.enter();
    drop(_enter);
    tracing::Instrument::instrument(run(stream, peer, id, tls, shared, shutdown), span).await;
}

/// Runs the AMQP handshake up to connection.open within `deadline`; on failure closes
/// the stream (FIN, and close_notify on TLS).
async fn open<S: Wire>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    peer: auth::Peer<'_>,
    shared: &Shared,
    deadline: Instant,
    limit: Duration,
) -> Option<Session> {
    match tokio::time::timeout_at(deadline, handshake(stream, rbuf, peer, shared)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(why)) => {
            debug!(%why, "handshake failed");
            let _ = stream.shutdown().await;
            None
        }
        Err(_) => {
            warn!(
                "closing connection: handshake not completed within {}s",
                limit.as_secs()
            );
            let _ = stream.shutdown().await;
            None
        }
    }
}

async fn run(
    mut stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let limit = Duration::from_secs(shared.config.limits.handshake_timeout_secs.max(1));
    // As RabbitMQ: the TLS handshake has its own timeout (5 s), and the AMQP handshake
    // timeout starts once it is done.
    let tls_limit = Duration::from_secs(shared.config.limits.ssl_handshake_timeout_secs.max(1));
    let deadline = Instant::now() + limit;
    // Small to start with: an idle connection should cost little. The main loop grows
    // the buffer for connections that move data.
    let mut rbuf = BytesMut::with_capacity(512);
    let (stream, tls, session) = match tls {
        None => {
            let plain = auth::Peer {
                ip: peer.ip(),
                cert: None,
            };
            let Some(session) = open(&mut stream, &mut rbuf, plain, &shared, deadline, limit).await
            else {
                return;
            };
            (stream, None, session)
        }
        Some(acceptor) => {
            let mut tls_stream =
                match tokio::time::timeout(tls_limit, acceptor.accept(stream)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        info!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        warn!(
                            "closing connection: TLS handshake not completed within {}s",
                            tls_limit.as_secs()
                        );
                        return;
                    }
                };
            let deadline = Instant::now() + limit;
            let cert = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| c.as_ref().to_vec());
            let over_tls = auth::Peer {
                ip: peer.ip(),
                cert: cert.as_deref(),
            };
            let Some(session) = open(
                &mut tls_stream,
                &mut rbuf,
                over_tls,
                &shared,
                deadline,
                limit,
            )
            .await
            else {
                return;
            };
            let (tcp, conn) = tls_stream.into_inner();
            (tcp, Some(crate::tls::Session::new(conn)), session)
        }
    };
    info!(user = %session.user, vhost = %session.vhost.name, tls = tls.is_some(), "connection opened");
    let local = stream.local_addr().unwrap_or(peer);
    let (itx, inbox) = mpsc::unbounded_channel();
    let stats = Arc::new(crate::stats::ConnStats::default());
    // Registered before open-ok goes out, so a client that has its open-ok finds itself
    // in the management API's connection list.
    let _registration = shared.registry.register(
        crate::registry::ConnectionInfo {
            id,
            protocol: crate::registry::AMQP_091,
            name: crate::registry::connection_name(peer, local),
            user: session.user.clone(),
            vhost: session.vhost.name.clone(),
            peer,
            local,
            client_properties: session.client_properties,
            connected_at: std::time::SystemTime::now(),
            tls: tls.is_some(),
            auth_mechanism: session.mechanism.clone(),
            frame_max: session.frame_max,
            channel_max: session.channel_max,
            heartbeat: session.heartbeat,
            stats: stats.clone(),
        },
        itx.clone(),
    );
    let _churn = shared.churn.connection();
    // open-ok is the first thing the main loop writes, before any reply to frames the
    // client pipelined after connection.open.
    let mut out = BytesMut::new();
    encode::method(
        &mut out,
        0,
        &AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
    );
    let (rd, wr) = stream.into_split();
    let _slot = session.slot;
    let sink = Arc::new(ConnSink::new(itx));
    let mut conn = Connection {
        ctx: Ctx {
            id,
            vhost: session.vhost,
            user: session.user,
            sink,
            frame_max: session.frame_max,
            max_message_bytes: shared.config.limits.max_message_bytes,
            persister: shared.broker.storage().map(|s| s.persister().clone()),
            flow: std::cell::RefCell::new(None),
            grant: session.grant,
            access: shared.broker.access().clone(),
            node: shared.node_name.clone(),
        },
        caps: session.caps,
        channel_max: session.channel_max,
        decoder: FrameDecoder::new(session.frame_max),
        channels: HashMap::default(),
        out,
        closing_since: None,
        done: false,
        publishes: 0,
        heartbeat: session.heartbeat,
        send_timeout_secs: shared.config.limits.send_timeout_secs,
        stats,
        churn: shared.churn.clone(),
    };
    let alarm = shared.alarms.subscribe();
    let reason = conn
        .main_loop(Transport { rd, wr, tls }, rbuf, inbox, shutdown, alarm)
        .await;
    info!(%reason, "connection closed");
}

/// The socket halves of an open connection, and its TLS session on AMQPS.
struct Transport {
    rd: tokio::net::tcp::OwnedReadHalf,
    wr: OwnedWriteHalf,
    tls: Option<crate::tls::Session>,
}

struct Session {
    user: String,
    mechanism: String,
    vhost: Arc<warren_broker::VHost>,
    caps: ClientCaps,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    grant: Arc<warren_broker::access::Grant>,
    slot: warren_broker::access::ConnectionSlot,
    client_properties: FieldTable,
}

/// Why the handshake read failed.
enum ReadError {
    /// The socket failed or closed.
    Io(String),
    /// The client sent something the protocol forbids here.
    Protocol(AmqpError),
}

impl From<AmqpError> for ReadError {
    fn from(e: AmqpError) -> Self {
        ReadError::Protocol(e)
    }
}

/// A byte stream the handshake runs over: a TCP socket, or a TLS session on one.
trait Wire: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Wire for T {}

/// Reads the next handshake frame. Heartbeats are skipped; a frame on a channel other
/// than 0 before connection.open is RabbitMQ's 505 "type N, all octets = ...".
async fn read_frame<S: Wire>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    decoder: &FrameDecoder,
) -> Result<Frame, ReadError> {
    loop {
        if let Some(e) = frame_before_open(rbuf) {
            return Err(e.into());
        }
        match decoder.decode(rbuf) {
            Ok(Some(Frame::Heartbeat { channel: 0 })) => continue,
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => return Err(e.into()),
        }
        match stream.read_buf(rbuf).await {
            Ok(0) => return Err(ReadError::Io("client closed the socket".into())),
            Ok(_) => {}
            Err(e) => return Err(ReadError::Io(e.to_string())),
        }
    }
}

/// A whole method or content frame on a channel other than 0 at the front of `rbuf`,
/// as the error RabbitMQ answers it with before the connection is open.
fn frame_before_open(rbuf: &BytesMut) -> Option<AmqpError> {
    if rbuf.len() < 7 {
        return None;
    }
    let kind = rbuf[0];
    let channel = u16::from_be_bytes([rbuf[1], rbuf[2]]);
    let size = u32::from_be_bytes([rbuf[3], rbuf[4], rbuf[5], rbuf[6]]) as usize;
    if channel == 0 || !(1..=3).contains(&kind) || size > PRE_TUNE_FRAME_MAX as usize {
        return None;
    }
    let payload = rbuf.get(7..7 + size)?;
    Some(AmqpError::unexpected_frame(format!(
        "type {kind}, all octets = {}",
        warren_codec::error::erlang_binary(payload)
    )))
}

/// [`read_frame`], answering a protocol error as RabbitMQ does before giving up.
async fn next_frame<S: Wire>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    decoder: &FrameDecoder,
) -> Result<Frame, String> {
    match read_frame(stream, rbuf, decoder).await {
        Ok(f) => Ok(f),
        Err(ReadError::Io(why)) => Err(why),
        Err(ReadError::Protocol(e)) => Err(refuse(stream, rbuf, e).await),
    }
}

/// RabbitMQ's 504 for a method the handshake does not expect in `state`.
fn unexpected_in(state: &str, m: &AMQPClass) -> AmqpError {
    AmqpError::channel_error(format!("unexpected method in connection state {state}"))
        .with_method(m.get_amqp_class_id(), m.get_amqp_method_id())
}

async fn send<S: Wire>(stream: &mut S, m: AMQPClass) -> Result<(), String> {
    let mut out = BytesMut::new();
    encode::method(&mut out, 0, &m);
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    // TLS buffers what it is given: push it to the socket.
    stream.flush().await.map_err(|e| e.to_string())
}

/// Sends connection.close for a handshake failure and waits briefly for close-ok; for an
/// error RabbitMQ answers by closing the socket, just returns (the caller closes it).
async fn refuse<S: Wire>(stream: &mut S, rbuf: &mut BytesMut, e: AmqpError) -> String {
    warn!(code = e.code.code(), text = %e.text, "refusing connection");
    if e.close_socket {
        return e.text;
    }
    if send(stream, close_method(&e)).await.is_ok() {
        let dec = FrameDecoder::new(PRE_TUNE_FRAME_MAX);
        let _ = tokio::time::timeout(CLOSE_OK_TIMEOUT, read_frame(stream, rbuf, &dec)).await;
    }
    e.text
}

async fn handshake<S: Wire>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    peer: auth::Peer<'_>,
    shared: &Shared,
) -> Result<Session, String> {
    // AMQP 0-9-1 §4.2.2: the client opens with the 8-byte protocol header.
    while rbuf.len() < 8 {
        match stream.read_buf(rbuf).await {
            Ok(0) => return Err("closed before the protocol header".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let header = rbuf.split_to(8);
    // RabbitMQ also accepts the 0-9 header AMQP 1 1 0 9 as 0-9-1.
    if header[..] != PROTOCOL_HEADER && header[..] != *b"AMQP\x01\x01\x00\x09" {
        let _ = stream.write_all(&PROTOCOL_HEADER).await;
        let _ = stream.flush().await;
        return Err(format!("bad protocol header {:?}", &header[..]));
    }
    let limits = &shared.config.limits;
    send(
        stream,
        AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: shared.server_properties.clone(),
            mechanisms: long(&auth::mechanisms(&shared.config.auth, peer).join(" ")),
            locales: long("en_US"),
        })),
    )
    .await?;
    let decoder = FrameDecoder::new(PRE_TUNE_FRAME_MAX);
    // RabbitMQ answers anything but start-ok here by closing the socket.
    let start_ok = match next_frame(stream, rbuf, &decoder).await? {
        Frame::Method { channel: 0, method } => match *method {
            AMQPClass::Connection(connection::AMQPMethod::StartOk(s)) => s,
            other => {
                return Err(format!(
                    "expected connection.start-ok, got {}",
                    warren_codec::methods::name(
                        other.get_amqp_class_id(),
                        other.get_amqp_method_id()
                    )
                ))
            }
        },
        _ => return Err("expected connection.start-ok".into()),
    };
    let caps = client_caps(&start_ok.client_properties);
    let mechanism = start_ok.mechanism.as_str().to_string();
    let user = match auth::authenticate(
        &shared.config.auth,
        shared.broker.access(),
        &mechanism,
        start_ok.response.as_bytes(),
        peer,
    ) {
        Ok(u) => u,
        Err(AuthError::UnknownMechanism(m)) => {
            // RabbitMQ closes the socket without a connection.close.
            let e = AmqpError::command_invalid(format!("unknown authentication mechanism '{m}'"))
                .with_method(10, 11)
                .silently();
            return Err(refuse(stream, rbuf, e).await);
        }
        Err(AuthError::Malformed(why)) => {
            let e = AmqpError::new(ReplyCode::SyntaxError, why).with_method(10, 11);
            return Err(refuse(stream, rbuf, e).await);
        }
        Err(AuthError::Refused { user, why }) => {
            warn!(%user, %mechanism, reason = why, "login refused");
            if caps.authentication_failure_close {
                let e = AmqpError::access_refused(format!(
                    "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
                ));
                return Err(refuse(stream, rbuf, e).await);
            }
            return Err(format!("login refused for user '{user}'"));
        }
    };
    send(
        stream,
        AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
            channel_max: limits.channel_max,
            frame_max: limits.frame_max_bytes,
            heartbeat: limits.heartbeat_secs,
        })),
    )
    .await?;
    let tune_ok = match next_frame(stream, rbuf, &decoder).await? {
        Frame::Method { channel: 0, method } => match *method {
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(t)) => t,
            other => return Err(refuse(stream, rbuf, unexpected_in("tuning", &other)).await),
        },
        _ => return Err("expected connection.tune-ok".into()),
    };
    let server_max = limits.frame_max_bytes;
    let frame_max = tune_ok.frame_max;
    if frame_max != 0 && frame_max < 4096 {
        let e = AmqpError::not_allowed(format!(
            "negotiated frame_max = {frame_max} is lower than the minimum allowed value (4096)"
        ))
        .with_method(10, 31)
        .silently();
        return Err(refuse(stream, rbuf, e).await);
    }
    if server_max != 0 && (frame_max == 0 || frame_max > server_max) {
        let e = AmqpError::not_allowed(format!(
            "negotiated frame_max = {frame_max} is higher than the maximum allowed value ({server_max})"
        ))
        .with_method(10, 31)
        .silently();
        return Err(refuse(stream, rbuf, e).await);
    }
    let channel_max = match tune_ok.channel_max {
        0 => limits.channel_max,
        n => n.min(limits.channel_max),
    };
    let decoder = FrameDecoder::new(frame_max);
    let open = match next_frame(stream, rbuf, &decoder).await? {
        Frame::Method { channel: 0, method } => match *method {
            AMQPClass::Connection(connection::AMQPMethod::Open(o)) => o,
            other => return Err(refuse(stream, rbuf, unexpected_in("opening", &other)).await),
        },
        _ => return Err("expected connection.open".into()),
    };
    let vhost_name = open.virtual_host.as_str();
    let Some(vhost) = shared.broker.vhost(vhost_name).filter(|v| !v.is_deleted()) else {
        let e = AmqpError::not_allowed(format!("vhost {vhost_name} not found")).with_method(10, 40);
        return Err(refuse(stream, rbuf, e).await);
    };
    // RabbitMQ: no permissions in the vhost, or a connection limit, is 530 at open.
    let access = shared.broker.access();
    let Some(grant) = access.grant(&user, vhost_name, None) else {
        let e = AmqpError::not_allowed(warren_broker::access::LimitError::VHostRefused {
            vhost: vhost_name.to_string(),
            user: user.clone(),
        })
        .with_method(10, 40);
        return Err(refuse(stream, rbuf, e).await);
    };
    let slot = match access.open_connection(&user, vhost_name) {
        Ok(slot) => slot,
        Err(limit) => {
            let e = AmqpError::not_allowed(limit).with_method(10, 40);
            return Err(refuse(stream, rbuf, e).await);
        }
    };
    // open-ok is sent by the caller once the connection is registered, so a client that
    // has its open-ok already finds itself in the management API's connection list.
    Ok(Session {
        user,
        mechanism,
        vhost,
        caps,
        frame_max,
        channel_max,
        heartbeat: tune_ok.heartbeat,
        grant: Arc::new(grant),
        slot,
        client_properties: start_ok.client_properties,
    })
}

/// Reads what the socket has. The buffer grows only for connections whose reads fill
/// it (`hint` doubles up to 64 KiB), so a busy connection reads in large batches while
/// an idle one keeps a small buffer.
async fn read_some(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    rbuf: &mut BytesMut,
    hint: &mut usize,
) -> std::io::Result<usize> {
    if rbuf.capacity() - rbuf.len() < 256 {
        rbuf.reserve(*hint);
    }
    let spare = rbuf.capacity() - rbuf.len();
    let n = rd.read_buf(rbuf).await?;
    if n == spare {
        *hint = (*hint * 2).min(64 * 1024);
    }
    Ok(n)
}

/// Writes as much of `out` as the socket takes now. Returns whether anything was written.
/// Records the publish count at which a raised alarm was first seen (a later publish
/// blocks the connection).
fn note_alarm(
    alarm: &watch::Receiver<crate::alarm::AlarmState>,
    alarm_publishes: &mut Option<u64>,
    publishes: u64,
) {
    if alarm.borrow().any() {
        alarm_publishes.get_or_insert(publishes);
    }
}

fn write_some(wr: &OwnedWriteHalf, out: &mut BytesMut) -> std::io::Result<bool> {
    let mut wrote = false;
    while !out.is_empty() {
        match wr.try_write(out) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                out.advance(n);
                wrote = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(wrote)
}

/// Channel numbers are small integers chosen by the client (at most `channel_max`):
/// they index the channel map as they are. Three lookups per published message made
/// SipHash visible in profiles.
#[derive(Default)]
struct ChannelIdHasher(u64);

impl Hasher for ChannelIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n);
    }
}

struct Connection {
    ctx: Ctx,
    caps: ClientCaps,
    channel_max: u16,
    decoder: FrameDecoder,
    channels: HashMap<u16, Box<Channel>, BuildHasherDefault<ChannelIdHasher>>,
    /// Frames to send, written to the socket once per wake-up.
    out: BytesMut,
    /// Set when we sent connection.close and wait for close-ok.
    closing_since: Option<Instant>,
    /// Set when the connection is finished (close-ok sent or received).
    done: bool,
    /// How many basic.publish the client has sent: as RabbitMQ, a resource alarm blocks
    /// a connection once it publishes during the alarm.
    publishes: u64,
    /// Negotiated heartbeat interval in seconds (0 = none).
    heartbeat: u16,
    /// Close when pending output has not moved for this long (seconds).
    send_timeout_secs: u64,
    /// Socket counters and open channels, read by the management API.
    stats: Arc<crate::stats::ConnStats>,
    /// The node's churn counters (channels opened and closed).
    churn: Arc<crate::stats::Churn>,
}

impl Connection {
    async fn main_loop(
        &mut self,
        transport: Transport,
        mut rbuf: BytesMut,
        mut inbox: mpsc::UnboundedReceiver<ConnEvent>,
        mut shutdown: watch::Receiver<bool>,
        mut alarm: watch::Receiver<crate::alarm::AlarmState>,
    ) -> String {
        let Transport {
            mut rd,
            mut wr,
            mut tls,
        } = transport;
        let heartbeat = self.heartbeat;
        let mut blocked_notified = false;
        // The publish count when the current alarm was first seen: a publish after it
        // blocks the connection (RabbitMQ's rabbit_reader: `publish_received`).
        let mut alarm_publishes: Option<u64> = None;
        let mut read_hint = 1024usize;
        let hb = Duration::from_secs(u64::from(heartbeat));
        let tick_every = if heartbeat == 0 {
            Duration::from_secs(3600)
        } else {
            (hb / 2).max(Duration::from_millis(500))
        };
        let mut tick = tokio::time::interval_at(Instant::now() + tick_every, tick_every);
        // RabbitMQ's heartbeat monitor: a check every interval (every second tick
        // here), the first one counting as activity; two checks in a row without a
        // byte from the client close the connection (2 to 3 intervals after its last
        // byte, 3 for a client silent since it opened).
        let mut ticks: u64 = 0;
        let mut read_since_check = false;
        let mut missed_checks = 0u32;
        let mut last_write = Instant::now();
        let send_timeout = Duration::from_secs(self.send_timeout_secs.max(1));
        // The client stopped reading or sending: the final flush must not wait on it.
        let mut peer_dead = false;
        // Grows on first use only: idle connections never allocate it.
        let mut events = Vec::new();
        // Flow control: the queue this connection's publishes are waiting on, and since
        // when (reading is paused meanwhile).
        let mut flow_wait: Option<(Arc<warren_broker::Queue>, Instant)> = None;
        // Input read while the output was backlogged, not processed yet.
        let mut deferred = false;
        // Frames may already be buffered from the handshake read (decrypted or not).
        let mut ended = None;
        if let Some(t) = tls.as_mut() {
            if let Err(e) = t.decrypt(&mut rbuf) {
                ended = Some(format!("TLS error: {e}"));
            }
        }
        self.process_frames(&mut rbuf);
        for ch in self.channels.values_mut() {
            ch.flush_marks();
            ch.flush_confirms(&self.ctx, &mut self.out);
        }
        let reason = loop {
            if let Some(reason) = ended.take() {
                break reason;
            }
            if self.done {
                break "closed".to_string();
            }
            if let Some(since) = self.closing_since {
                if since.elapsed() > CLOSE_OK_TIMEOUT {
                    break "no connection.close-ok from client".to_string();
                }
            }
            // Resource alarm: stop reading from a publishing connection (TCP then pushes
            // back on the client) and tell it, if it listens for connection.blocked.
            let alarm_state = *alarm.borrow();
            if alarm_state.any() {
                alarm_publishes.get_or_insert(self.publishes);
            } else {
                alarm_publishes = None;
            }
            let blocked = alarm_publishes.is_some_and(|at| self.publishes != at)
                && self.closing_since.is_none();
            if blocked != blocked_notified {
                blocked_notified = blocked;
                if self.caps.connection_blocked {
                    let m = if blocked {
                        connection::AMQPMethod::Blocked(connection::Blocked {
                            reason: short(alarm_state.reason()),
                        })
                    } else {
                        connection::AMQPMethod::Unblocked(connection::Unblocked {})
                    };
                    encode::method(&mut self.out, 0, &AMQPClass::Connection(m));
                }
                if blocked {
                    info!("connection blocked by the memory alarm");
                } else {
                    info!("connection unblocked");
                }
            }
            let pending = self.out.len();
            let written = match tls.as_mut() {
                None => write_some(&wr, &mut self.out),
                Some(t) => t.write_some(&wr, &mut self.out),
            };
            match written {
                Ok(true) => {
                    self.stats.sent(pending - self.out.len());
                    last_write = Instant::now();
                }
                Ok(false) => {}
                Err(e) => break format!("socket write failed: {e}"),
            }
            if self.out.is_empty() && self.out.capacity() > OUTPUT_KEEP {
                // A burst grew the buffer: do not keep it for an idle connection.
                self.out = BytesMut::new();
            }
            let backlogged = self.out.len() >= OUTPUT_HIGH_WATER;
            if deferred && !backlogged {
                deferred = false;
                note_alarm(&alarm, &mut alarm_publishes, self.publishes);
                self.input(&mut rbuf, &mut flow_wait).await;
                continue;
            }
            let held = rbuf.len() + tls.as_ref().map_or(0, |t| t.raw.len());
            tokio::select! {
                w = wr.writable(), if !self.out.is_empty() || tls.as_ref().is_some_and(|t| t.wants_write()) => {
                    if let Err(e) = w {
                        break format!("socket write failed: {e}");
                    }
                }
                changed = shutdown.changed(), if self.closing_since.is_none() => {
                    if changed.is_err() || *shutdown.borrow() {
                        self.connection_error(AmqpError::new(
                            ReplyCode::ConnectionForced,
                            "broker forced connection closure with reason 'shutdown'",
                        ));
                    }
                }
                changed = alarm.changed() => {
                    if changed.is_err() {
                        break "broker stopped".to_string();
                    }
                }
                _ = tokio::time::sleep(FLOW_CHECK), if flow_wait.is_some() => {
                    if let Some((q, since)) = &flow_wait {
                        if !q.under_pressure() || since.elapsed() >= FLOW_MAX_PAUSE {
                            flow_wait = None;
                        }
                    }
                }
                r = read_some(&mut rd, tls.as_mut().map_or(&mut rbuf, |t| &mut t.raw), &mut read_hint), if !blocked && flow_wait.is_none() && (!backlogged || held < INPUT_HOLD) => match r {
                    Ok(0) => break "client closed the socket".to_string(),
                    Err(e) => break format!("socket read failed: {e}"),
                    Ok(n) => {
                        self.stats.received(n);
                        read_since_check = true;
                        if let Some(t) = tls.as_mut() {
                            // Frames before a close_notify or a bad record still count.
                            match t.decrypt(&mut rbuf) {
                                Ok(false) => {}
                                Ok(true) => ended = Some("client closed the TLS session".to_string()),
                                Err(e) => ended = Some(format!("TLS error: {e}")),
                            }
                        }
                        if backlogged {
                            // The client is behind on reading: hold its input (what it
                            // sent still proves it alive) until the output drains.
                            deferred = true;
                        } else {
                            // The alarm may have been raised since the loop last looked:
                            // a publish in this input is then one made during it.
                            note_alarm(&alarm, &mut alarm_publishes, self.publishes);
                            self.input(&mut rbuf, &mut flow_wait).await;
                        }
                    }
                },
                n = inbox.recv_many(&mut events, 64), if !backlogged => {
                    if n == 0 {
                        break "inbox closed".to_string();
                    }
                    for ev in events.drain(..) {
                        self.event(ev);
                    }
                    if self.ctx.sink.take_starved() {
                        for ch in self.channels.values() {
                            ch.dispatch_all();
                        }
                    }
                }
                _ = tokio::time::sleep_until(last_write + send_timeout), if !self.out.is_empty() => {
                    if !self.out.is_empty() && last_write.elapsed() >= send_timeout {
                        warn!(timeout_secs = send_timeout.as_secs(), "closing connection: the client has not read for too long");
                        peer_dead = true;
                        break "socket write timed out".to_string();
                    }
                }
                _ = tick.tick() => {
                    if heartbeat > 0 {
                        ticks += 1;
                        if ticks.is_multiple_of(2) {
                            // A blocked or flow-paused connection is not read, so its
                            // heartbeats are not seen (RabbitMQ pauses its monitor too).
                            // A connection whose held input is full has sent plenty.
                            let alive = read_since_check
                                || ticks == 2
                                || blocked
                                || flow_wait.is_some()
                                || (backlogged && held >= INPUT_HOLD);
                            read_since_check = false;
                            if alive {
                                missed_checks = 0;
                            } else {
                                missed_checks += 1;
                                if missed_checks >= 2 {
                                    warn!(timeout_secs = heartbeat, "missed heartbeats from client, closing");
                                    peer_dead = true;
                                    break "missed heartbeats".to_string();
                                }
                            }
                        }
                        if last_write.elapsed() >= tick_every {
                            encode::heartbeat(&mut self.out);
                        }
                    }
                }
                _ = tokio::time::sleep(CLOSE_OK_TIMEOUT), if self.closing_since.is_some() => {}
            }
        };
        // Release everything, then flush what is left (close-ok, close).
        self.teardown(&mut inbox);
        let flush = async {
            match tls.as_mut() {
                None => wr.write_all(&self.out).await?,
                Some(t) => t.finish(&wr, &mut self.out).await,
            }
            wr.shutdown().await
        };
        // A client that stopped reading gets what the socket takes now, nothing more.
        let limit = if peer_dead {
            Duration::ZERO
        } else {
            FINAL_FLUSH_TIMEOUT
        };
        let _ = tokio::time::timeout(limit, flush).await;
        reason
    }

    /// Processes the frames in `rbuf`, then sends the confirms they settled, and pauses
    /// reading from a publisher whose queue's consumers are behind.
    async fn input(
        &mut self,
        rbuf: &mut BytesMut,
        flow_wait: &mut Option<(Arc<warren_broker::Queue>, Instant)>,
    ) {
        self.process_frames(rbuf);
        for ch in self.channels.values_mut() {
            ch.flush_marks();
            ch.flush_confirms(&self.ctx, &mut self.out);
        }
        if let Some(q) = self.ctx.flow.take() {
            if self.channels.values().any(|c| c.has_consumers()) {
                // Its own acks may be what the queue waits for: do not stop reading,
                // just let the consumers' tasks run.
                tokio::task::yield_now().await;
            } else if flow_wait.is_none() {
                // A queue's consumers are behind: stop reading from this publisher (TCP
                // pushes back) until they catch up.
                debug!(queue = %q.name, "flow: pausing a publisher");
                *flow_wait = Some((q, Instant::now()));
            }
        }
    }

    fn teardown(&mut self, inbox: &mut mpsc::UnboundedReceiver<ConnEvent>) {
        self.ctx.sink.close();
        for ch in self.channels.values_mut() {
            if !ch.closing {
                ch.close(&self.ctx);
            }
        }
        self.channels.clear();
        // Deliveries still in the inbox never reached the client: put them back.
        inbox.close();
        while let Ok(ev) = inbox.try_recv() {
            if let ConnEvent::Deliver(d) = ev {
                self.ctx.sink.delivered(d.message.message.body.len());
                return_delivery(*d);
            }
        }
        self.ctx.vhost.connection_closed(self.ctx.id);
    }

    fn process_frames(&mut self, rbuf: &mut BytesMut) {
        while !self.done {
            match self.decoder.decode(rbuf) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    if let Err(e) = self.frame(frame) {
                        self.connection_error(e);
                    }
                }
                Err(e) => {
                    self.connection_error(e);
                    // The stream cannot be resynchronised after a framing error.
                    rbuf.clear();
                    break;
                }
            }
        }
    }

    /// Sends connection.close and releases channel state; waits for close-ok.
    fn connection_error(&mut self, e: AmqpError) {
        if self.closing_since.is_some() {
            return;
        }
        if e.close_socket {
            // RabbitMQ drops the socket without a connection.close for this one.
            warn!(code = e.code.code(), text = %e.text, "closing the socket on error");
            for ch in self.channels.values_mut() {
                if !ch.closing {
                    ch.close(&self.ctx);
                }
            }
            self.channels.clear();
            self.done = true;
            return;
        }
        if e.code == ReplyCode::ConnectionForced {
            info!(code = e.code.code(), text = %e.text, "closing connection");
        } else {
            warn!(code = e.code.code(), text = %e.text, "closing connection on error");
        }
        encode::method(&mut self.out, 0, &close_method(&e));
        for ch in self.channels.values_mut() {
            if !ch.closing {
                ch.close(&self.ctx);
            }
        }
        self.channels.clear();
        self.closing_since = Some(Instant::now());
    }

    fn frame(&mut self, frame: Frame) -> Result<(), AmqpError> {
        let ch = frame.channel();
        if self.closing_since.is_some() {
            // After connection.close only close-ok (or a crossing close) matters.
            if let Frame::Method { channel: 0, method } = frame {
                match *method {
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => self.done = true,
                    AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                        encode::method(
                            &mut self.out,
                            0,
                            &AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        );
                        self.done = true;
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        if let Frame::Method { method, .. } = &frame {
            if matches!(
                method.as_ref(),
                AMQPClass::Basic(basic::AMQPMethod::Publish(_))
            ) {
                self.publishes = self.publishes.wrapping_add(1);
            }
        }
        if let Frame::Heartbeat { channel } = frame {
            if channel != 0 {
                return Err(AmqpError::unexpected_frame(format!(
                    "heartbeat frame on non-zero channel {channel}"
                )));
            }
            return Ok(());
        }
        if ch == 0 {
            return self.channel_zero(frame);
        }
        let Some(channel) = self.channels.get_mut(&ch) else {
            return self.open_channel(ch, frame);
        };
        if channel.closing {
            if let Frame::Method { method, .. } = frame {
                match *method {
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                        self.channels.remove(&ch);
                        self.stats
                            .channels
                            .store(self.channels.len() as u64, Relaxed);
                        self.stats
                            .channels
                            .store(self.channels.len() as u64, Relaxed);
                    }
                    AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                        self.channels.remove(&ch);
                        self.stats
                            .channels
                            .store(self.channels.len() as u64, Relaxed);
                        self.stats
                            .channels
                            .store(self.channels.len() as u64, Relaxed);
                        encode::method(
                            &mut self.out,
                            ch,
                            &AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        );
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        if let Frame::Method { method, .. } = &frame {
            match method.as_ref() {
                AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
                    debug!(channel = ch, code = c.reply_code, "client closed channel");
                    channel.close(&self.ctx);
                    self.channels.remove(&ch);
                    self.stats
                        .channels
                        .store(self.channels.len() as u64, Relaxed);
                    encode::method(
                        &mut self.out,
                        ch,
                        &AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    );
                    return Ok(());
                }
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => return Ok(()),
                _ => {}
            }
        }
        match channel.frame(&self.ctx, &mut self.out, frame) {
            Ok(()) => Ok(()),
            Err(e) if e.code.is_hard() => Err(e),
            Err(e) => {
                warn!(channel = ch, code = e.code.code(), text = %e.text, "closing channel on error");
                channel.flush_confirms(&self.ctx, &mut self.out);
                channel.close(&self.ctx);
                channel.close_frame(&mut self.out, &e);
                Ok(())
            }
        }
    }

    fn open_channel(&mut self, ch: u16, frame: Frame) -> Result<(), AmqpError> {
        match frame {
            Frame::Method { method, .. }
                if matches!(*method, AMQPClass::Channel(channel::AMQPMethod::Open(_))) =>
            {
                if self.channels.len() >= usize::from(self.channel_max) {
                    return Err(AmqpError::not_allowed(format!(
                        "number of channels opened ({}) has reached the negotiated channel_max ({})",
                        self.channels.len(),
                        self.channel_max
                    )));
                }
                let slot = self
                    .ctx
                    .access
                    .open_channel(&self.ctx.user)
                    .map_err(AmqpError::not_allowed)?;
                self.channels.insert(
                    ch,
                    Box::new(Channel::new(
                        ch,
                        self.ctx.max_message_bytes,
                        slot,
                        self.churn.channel(),
                    )),
                );
                self.stats
                    .channels
                    .store(self.channels.len() as u64, Relaxed);
                encode::method(
                    &mut self.out,
                    ch,
                    &AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                );
                Ok(())
            }
            Frame::Method { method, .. } => {
                Err(AmqpError::channel_error("expected 'channel.open'")
                    .with_method(method.get_amqp_class_id(), method.get_amqp_method_id()))
            }
            _ => Err(AmqpError::channel_error("expected 'channel.open'")),
        }
    }

    fn channel_zero(&mut self, frame: Frame) -> Result<(), AmqpError> {
        let Frame::Method { method, .. } = frame else {
            return Err(AmqpError::unexpected_frame("content frame on channel 0"));
        };
        match *method {
            AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                debug!(code = c.reply_code, text = %c.reply_text, "client closed connection");
                for ch in self.channels.values_mut() {
                    if !ch.closing {
                        ch.close(&self.ctx);
                    }
                }
                self.channels.clear();
                encode::method(
                    &mut self.out,
                    0,
                    &AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.done = true;
                Ok(())
            }
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => {
                self.done = true;
                Ok(())
            }
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(u)) => {
                // RabbitMQ re-checks the secret with the user's authentication backend
                // only where it can expire (OAuth 2); its internal (password) backend
                // accepts any new secret, and so does Warren's.
                // Never log the secret itself.
                info!(reason = %u.reason, "secret updated");
                encode::method(
                    &mut self.out,
                    0,
                    &AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                );
                Ok(())
            }
            other => Err(unexpected_in("running", &other)),
        }
    }

    fn event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Deliver(d) => {
                self.ctx.sink.delivered(d.message.message.body.len());
                match self.channels.get_mut(&d.channel) {
                    Some(ch) => ch.deliver(&self.ctx, &mut self.out, *d),
                    None => return_delivery(*d),
                }
            }
            ConnEvent::Synced { channel, upto, ok } => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.synced(&mut self.out, upto, ok);
                }
            }
            ConnEvent::ForceClose { reason } => {
                self.connection_error(AmqpError::new(ReplyCode::ConnectionForced, reason));
            }
            ConnEvent::Report(reply) => {
                let mut channels: Vec<_> = self.channels.values().map(|c| c.report()).collect();
                channels.sort_by_key(|c| c.number);
                let _ = reply.send(channels);
            }
            // Only stream protocol connections are asked (dropping the sender answers).
            ConnEvent::StreamReport(_) => {}
            ConnEvent::Committed { channel, ok } => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    if !ch.committed() {
                        // The channel closed meanwhile.
                    } else if ok {
                        encode::method(
                            &mut self.out,
                            channel,
                            &AMQPClass::Tx(warren_codec::protocol::tx::AMQPMethod::CommitOk(
                                warren_codec::protocol::tx::CommitOk {},
                            )),
                        );
                    } else {
                        let e = AmqpError::internal_error("cannot sync a transaction to disk")
                            .with_method(90, 20);
                        ch.close(&self.ctx);
                        ch.close_frame(&mut self.out, &e);
                    }
                }
            }
            ConnEvent::Cancelled { channel, tag } => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    if ch.consumer_cancelled(&tag) && self.caps.consumer_cancel_notify {
                        encode::method(
                            &mut self.out,
                            channel,
                            &AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                                consumer_tag: short(&tag),
                                nowait: true,
                            })),
                        );
                    }
                }
            }
        }
    }
}
