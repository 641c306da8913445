//! Shared test support: an in-process broker, lapin helpers, error assertions, a polling
//! `eventually` and a raw-bytes AMQP client.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::{basic, channel, connection, gen_class, parse_class, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use futures_lite::{Stream, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single expected event may take before a test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `fut`, failing the test if it takes longer than [`TIMEOUT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

/// Polls `cond` until it holds, failing the test after `timeout`.
pub async fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Like [`eventually`], for conditions that need to talk to the broker.
pub async fn eventually_async<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Ok(true) = tokio::time::timeout(remaining, cond()).await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The broker
// ---------------------------------------------------------------------------------------

/// A broker running in this process on `127.0.0.1:<ephemeral>` with a temporary data
/// directory. Dropping it shuts it down; [`TestBroker::shutdown`] waits for that.
pub struct TestBroker {
    running: Option<warren_server::Running>,
    addr: SocketAddr,
    // Kept alive for as long as the broker runs.
    _dir: tempfile::TempDir,
}

impl TestBroker {
    /// A broker with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A broker whose configuration `tweak` may change (listen address and data
    /// directory are set before `tweak` runs).
    pub async fn start_with(tweak: impl FnOnce(&mut warren_server::Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = warren_server::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            ..warren_server::Config::default()
        };
        tweak(&mut config);
        let running = warren_server::start(config).await.expect("broker starts");
        let addr = running.local_addr();
        assert_ne!(addr.port(), 0);
        TestBroker {
            running: Some(running),
            addr,
            _dir: dir,
        }
    }

    /// The running broker: its engine (`running().broker()`) and its resource alarms.
    pub fn running(&self) -> &warren_server::Running {
        self.running.as_ref().expect("broker is running")
    }

    /// The AMQP listener address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`, optionally with another vhost.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// A lapin connection as guest to vhost `/`.
    pub async fn connect(&self) -> Connection {
        connect_uri(&self.uri()).await.expect("lapin connects")
    }

    /// Stops the broker (connections get 320 CONNECTION_FORCED) and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            within("broker shutdown", running.shutdown()).await;
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(running.shutdown());
                }
                // Dropping `Running` also signals shutdown to its tasks.
                Err(_) => drop(running),
            }
        }
    }
}

/// Connects with lapin, bounded by [`TIMEOUT`].
pub async fn connect_uri(uri: &str) -> lapin::Result<Connection> {
    within(
        "lapin connect",
        Connection::connect(uri, ConnectionProperties::default()),
    )
    .await
}

// ---------------------------------------------------------------------------------------
// lapin helpers
// ---------------------------------------------------------------------------------------

/// A short string (test names are always short).
pub fn ss(s: &str) -> ShortString {
    ShortString::from(s)
}

/// Declares a plain (non-durable, non-exclusive, non-auto-delete) queue.
pub async fn declare_queue(ch: &Channel, name: &str) -> lapin::Queue {
    within(
        "queue.declare",
        ch.queue_declare(
            ss(name),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("declare queue {name}: {e}"))
}

/// Publishes `body` with default properties and waits for the confirm if the channel is in
/// confirm mode. Panics if the publish fails or is nacked.
pub async fn publish(ch: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    publish_with(ch, exchange, routing_key, body, BasicProperties::default()).await;
}

/// [`publish`] with properties.
pub async fn publish_with(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            ss(exchange),
            ss(routing_key),
            BasicPublishOptions::default(),
            body,
            properties,
        ),
    )
    .await
    .expect("basic.publish");
    let confirmation = within("publisher confirm", confirm)
        .await
        .expect("publisher confirm");
    assert!(!confirmation.is_nack(), "publish was nacked");
}

/// Starts a consumer with manual acks and a generated tag.
pub async fn consume(ch: &Channel, queue: &str) -> Consumer {
    consume_with(ch, queue, "", BasicConsumeOptions::default()).await
}

/// Starts a consumer.
pub async fn consume_with(
    ch: &Channel,
    queue: &str,
    tag: &str,
    options: BasicConsumeOptions,
) -> Consumer {
    within(
        "basic.consume",
        ch.basic_consume(ss(queue), ss(tag), options, FieldTable::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("consume from {queue}: {e}"))
}

/// The next delivery of `consumer`; fails on error, cancellation or timeout.
pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    match within("a delivery", consumer.next()).await {
        Some(Ok(d)) => d,
        Some(Err(e)) => panic!("consumer failed: {e}"),
        None => panic!("consumer was cancelled while a delivery was expected"),
    }
}

/// A delivery (or error) that `consumer` already has, without waiting for one.
pub async fn ready_delivery(consumer: &mut Consumer) -> Option<lapin::Result<Delivery>> {
    futures_lite::future::poll_once(consumer.next())
        .await
        .flatten()
}

/// Passive-declares `queue` on a fresh channel of `conn`:
/// `Ok((ready message count, consumer count))` or the channel error.
pub async fn queue_state(conn: &Connection, queue: &str) -> lapin::Result<(u32, u32)> {
    let ch = within("channel.open", conn.create_channel()).await?;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let q = within(
        "passive queue.declare",
        ch.queue_declare(ss(queue), options, FieldTable::default()),
    )
    .await?;
    let _ = within("channel.close", ch.close(200, ss("OK"))).await;
    Ok((q.message_count(), q.consumer_count()))
}

/// The ready message count of an existing queue.
pub async fn ready_count(conn: &Connection, queue: &str) -> u32 {
    queue_state(conn, queue)
        .await
        .unwrap_or_else(|e| panic!("passive declare of {queue}: {e}"))
        .0
}

/// Waits until a passive declare of `queue` fails with 404.
pub async fn wait_queue_gone(conn: &Connection, queue: &str) {
    eventually_async(TIMEOUT, &format!("queue {queue} is deleted"), || async {
        match queue_state(conn, queue).await {
            Ok(_) => false,
            Err(e) => {
                assert_reply(
                    &e,
                    404,
                    &format!("NOT_FOUND - no queue '{queue}' in vhost '/'"),
                );
                true
            }
        }
    })
    .await;
}

/// A position-sensitive 64-bit FNV-1a checksum.
pub fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A deterministic body of `len` bytes that does not repeat with any period that divides
/// a frame size (a 65521-byte pseudo-random block, 65521 being prime, repeated).
pub fn test_body(len: usize) -> Vec<u8> {
    const BLOCK: usize = 65_521;
    let mut block = Vec::with_capacity(BLOCK);
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..BLOCK {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        block.push((x >> 24) as u8);
    }
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        let n = (len - body.len()).min(BLOCK);
        body.extend_from_slice(&block[..n]);
    }
    body
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// The reply code and text of an AMQP error (channel.close or connection.close).
pub fn reply_of(err: &lapin::Error) -> Option<(u16, String)> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some((e.get_id(), e.get_message().to_string())),
        _ => None,
    }
}

/// Asserts that `err` is an AMQP error with exactly this code and text.
pub fn assert_reply(err: &lapin::Error, code: u16, text: &str) {
    match reply_of(err) {
        Some((c, t)) => assert_eq!(
            (c, t.as_str()),
            (code, text),
            "unexpected AMQP error (got {c} {t:?})"
        ),
        None => panic!("expected AMQP error {code} {text:?}, got {err:?}"),
    }
}

/// The errors a lapin connection reports for its channels and itself, as they happen.
pub struct ErrorEvents(Pin<Box<dyn Stream<Item = Event> + Send>>);

impl ErrorEvents {
    /// Starts listening; only errors after this call are seen.
    pub fn listen(conn: &Connection) -> Self {
        ErrorEvents(Box::pin(conn.events_listener()))
    }

    /// The next error event.
    pub async fn next(&mut self) -> lapin::Error {
        loop {
            match within("an error event", self.0.next()).await {
                Some(Event::Error(e)) => return e,
                Some(_) => continue,
                None => panic!("event stream ended without an error"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------------------

/// AMQP 0-9-1 protocol header.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// Frame-end octet.
pub const FRAME_END: u8 = 0xCE;

/// A frame as the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A method frame.
    Method {
        /// Channel.
        channel: u16,
        /// The decoded method.
        method: AMQPClass,
    },
    /// A content header frame.
    Header {
        /// Channel.
        channel: u16,
        /// Announced body size.
        body_size: u64,
        /// Raw property flags and list.
        properties: Vec<u8>,
    },
    /// A content body frame.
    Body {
        /// Channel.
        channel: u16,
        /// Payload.
        payload: Vec<u8>,
    },
    /// A heartbeat.
    Heartbeat {
        /// Channel.
        channel: u16,
    },
}

/// How a server ended a conversation.
#[derive(Debug)]
pub enum Ending {
    /// It sent connection.close.
    Close(connection::Close),
    /// It closed the socket without a connection.close.
    Eof,
}

/// What the raw client says in the handshake.
#[derive(Debug, Clone)]
pub struct Login {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Vhost for connection.open.
    pub vhost: String,
    /// Heartbeat in tune-ok (0 disables).
    pub heartbeat: u16,
    /// Whether to advertise the `authentication_failure_close` capability.
    pub failure_close: bool,
}

impl Default for Login {
    fn default() -> Self {
        Login {
            user: "guest".into(),
            password: "guest".into(),
            vhost: "/".into(),
            heartbeat: 0,
            failure_close: true,
        }
    }
}

/// Builds one frame.
pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
    out
}

/// The argument bytes of a method (class id, method id, arguments).
pub fn method_payload(method: &AMQPClass) -> Vec<u8> {
    gen_class(method)(WriteContext::from(Vec::new()))
        .expect("method serialises")
        .write
}

/// A method frame.
pub fn method_frame(channel: u16, method: &AMQPClass) -> Vec<u8> {
    frame(1, channel, &method_payload(method))
}

/// A basic content header frame with no properties.
pub fn header_frame(channel: u16, body_size: u64) -> Vec<u8> {
    header_frame_with(channel, body_size, &0u16.to_be_bytes())
}

/// A basic content header frame with raw property flags and list.
pub fn header_frame_with(channel: u16, body_size: u64, properties: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + properties.len());
    p.extend_from_slice(&60u16.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(properties);
    frame(2, channel, &p)
}

/// A content body frame.
pub fn body_frame(channel: u16, body: &[u8]) -> Vec<u8> {
    frame(3, channel, body)
}

/// `basic.publish` to `exchange` with `routing_key`.
pub fn publish_method(exchange: &str, routing_key: &str) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: ss(exchange),
        routing_key: ss(routing_key),
        mandatory: false,
        immediate: false,
    }))
}

/// `channel.open`.
pub fn channel_open() -> AMQPClass {
    AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}))
}

/// A client speaking AMQP byte by byte over a tokio socket.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Frame size negotiated in the handshake (the server's offer).
    pub frame_max: u32,
    /// Heartbeat the server offered in connection.tune.
    pub server_heartbeat: u16,
}

impl RawClient {
    /// Opens the TCP connection only.
    pub async fn tcp(addr: SocketAddr) -> Self {
        let stream = within("TCP connect", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
            frame_max: 0,
            server_heartbeat: 0,
        }
    }

    /// A fully opened connection (guest, vhost `/`, heartbeats off).
    pub async fn open(addr: SocketAddr) -> Self {
        Self::open_with(addr, &Login::default()).await
    }

    /// A fully opened connection.
    pub async fn open_with(addr: SocketAddr, login: &Login) -> Self {
        let mut c = Self::begin(addr, login).await;
        c.tune_and_open(login).await;
        c.expect_open_ok().await;
        c
    }

    /// Sends the protocol header, reads connection.start and answers start-ok.
    pub async fn begin(addr: SocketAddr, login: &Login) -> Self {
        let mut c = Self::tcp(addr).await;
        c.send(PROTOCOL_HEADER).await;
        match c.next_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => {
                assert_eq!((s.version_major, s.version_minor), (0, 9));
                let mechs = String::from_utf8_lossy(s.mechanisms.as_bytes()).to_string();
                assert!(
                    mechs.split(' ').any(|m| m == "PLAIN"),
                    "PLAIN offered: {mechs}"
                );
            }
            other => panic!("expected connection.start, got {other:?}"),
        }
        let mut caps = FieldTable::default();
        caps.insert(
            ss("authentication_failure_close"),
            AMQPValue::Boolean(login.failure_close),
        );
        caps.insert(ss("consumer_cancel_notify"), AMQPValue::Boolean(true));
        let mut props = FieldTable::default();
        props.insert(ss("product"), AMQPValue::LongString("warren-it".into()));
        props.insert(ss("capabilities"), AMQPValue::FieldTable(caps));
        let response = format!("\0{}\0{}", login.user, login.password);
        c.send_method(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: props,
                mechanism: ss("PLAIN"),
                response: LongString::from(response),
                locale: ss("en_US"),
            })),
        )
        .await;
        c
    }

    /// Reads connection.tune, answers tune-ok (the server's frame_max and channel_max,
    /// `login.heartbeat`) and sends connection.open.
    pub async fn tune_and_open(&mut self, login: &Login) {
        let tune = match self.next_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
            other => panic!("expected connection.tune, got {other:?}"),
        };
        self.frame_max = tune.frame_max;
        self.server_heartbeat = tune.heartbeat;
        self.send_method(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: login.heartbeat,
            })),
        )
        .await;
        self.send_method(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: ss(&login.vhost),
            })),
        )
        .await;
    }

    /// Reads connection.open-ok.
    pub async fn expect_open_ok(&mut self) {
        match self.next_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
    }

    /// Opens channel `ch` and waits for open-ok.
    pub async fn open_channel(&mut self, ch: u16) {
        self.send_method(ch, &channel_open()).await;
        match self.next_method().await {
            (c, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) if c == ch => {}
            other => panic!("expected channel.open-ok on {ch}, got {other:?}"),
        }
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        within("socket write", self.stream.write_all(bytes))
            .await
            .expect("socket write");
    }

    /// Writes raw bytes, tolerating a server that already closed the socket.
    pub async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = within("socket write", self.stream.write_all(bytes)).await;
    }

    /// Writes a method frame.
    pub async fn send_method(&mut self, ch: u16, method: &AMQPClass) {
        self.send(&method_frame(ch, method)).await;
    }

    /// Closes the write half (the server sees EOF).
    pub async fn shutdown_write(&mut self) {
        let _ = within("socket shutdown", self.stream.shutdown()).await;
    }

    /// Reads more bytes; `false` on EOF or a socket error (reset counts as closed).
    async fn fill(&mut self) -> bool {
        self.buf.reserve(64 * 1024);
        match within("data from the server", self.stream.read_buf(&mut self.buf)).await {
            Ok(0) | Err(_) => false,
            Ok(_) => true,
        }
    }

    /// The next frame, or `None` if the server closed the socket.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 7 {
                let size = u32::from_be_bytes(self.buf[3..7].try_into().unwrap()) as usize;
                if self.buf.len() >= size + 8 {
                    let raw: Vec<u8> = self.buf.drain(..size + 8).collect();
                    return Some(decode_frame(&raw));
                }
            }
            if !self.fill().await {
                assert!(
                    self.buf.is_empty(),
                    "server closed the socket in the middle of a frame: {:?}",
                    self.buf
                );
                return None;
            }
        }
    }

    /// The next method frame (heartbeats skipped); panics on EOF or content frames.
    pub async fn next_method(&mut self) -> (u16, AMQPClass) {
        loop {
            match self.next_frame().await {
                Some(Frame::Method { channel, method }) => return (channel, method),
                Some(Frame::Heartbeat { .. }) => continue,
                Some(other) => panic!("expected a method frame, got {other:?}"),
                None => panic!("server closed the socket while a method was expected"),
            }
        }
    }

    /// Reads until the server sends connection.close or closes the socket. Any other frame
    /// but heartbeats fails the test.
    pub async fn ending(&mut self) -> Ending {
        loop {
            match self.next_frame().await {
                None => return Ending::Eof,
                Some(Frame::Heartbeat { channel: 0 }) => continue,
                Some(Frame::Method {
                    channel: 0,
                    method: AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                }) => return Ending::Close(c),
                Some(other) => panic!("expected connection.close or EOF, got {other:?}"),
            }
        }
    }

    /// Expects connection.close, answers close-ok and expects the socket to close.
    pub async fn expect_close(&mut self) -> connection::Close {
        match self.ending().await {
            Ending::Close(c) => {
                self.send_lossy(&method_frame(
                    0,
                    &AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                ))
                .await;
                self.expect_eof().await;
                c
            }
            Ending::Eof => panic!("server closed the socket without connection.close"),
        }
    }

    /// Expects the server to close the socket, skipping heartbeats only.
    pub async fn expect_eof(&mut self) {
        loop {
            match self.next_frame().await {
                None => return,
                Some(Frame::Heartbeat { .. }) => continue,
                Some(other) => panic!("expected the socket to close, got {other:?}"),
            }
        }
    }

    /// Every byte the server sends until it closes the socket.
    pub async fn read_to_eof(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }
}

fn decode_frame(raw: &[u8]) -> Frame {
    let kind = raw[0];
    let channel = u16::from_be_bytes([raw[1], raw[2]]);
    let payload = &raw[7..raw.len() - 1];
    assert_eq!(
        raw[raw.len() - 1],
        FRAME_END,
        "server frame without frame-end"
    );
    match kind {
        1 => {
            let (rest, method) = parse_class(payload)
                .unwrap_or_else(|e| panic!("server sent an undecodable method: {e:?}"));
            assert!(rest.is_empty(), "trailing bytes after a method");
            Frame::Method { channel, method }
        }
        2 => Frame::Header {
            channel,
            body_size: u64::from_be_bytes(payload[4..12].try_into().unwrap()),
            properties: payload[12..].to_vec(),
        },
        3 => Frame::Body {
            channel,
            payload: payload.to_vec(),
        },
        8 => Frame::Heartbeat { channel },
        other => panic!("server sent frame type {other}"),
    }
}

/// Asserts a connection.close's code and exact text.
pub fn assert_close(close: &connection::Close, code: u16, text: &str) {
    assert_eq!(
        (close.reply_code, close.reply_text.as_str()),
        (code, text),
        "unexpected connection.close"
    );
}

/// Asserts a connection.close's code and text prefix.
pub fn assert_close_prefix(close: &connection::Close, code: u16, prefix: &str) {
    assert!(
        close.reply_code == code && close.reply_text.as_str().starts_with(prefix),
        "expected connection.close {code} {prefix:?}..., got {} {:?}",
        close.reply_code,
        close.reply_text.as_str()
    );
}
