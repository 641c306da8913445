//! `--raw`: lean producers and consumers on Warren's own codec instead of lapin.
//!
//! lapin spends more CPU per message than the broker does (on the 2-core development
//! machine it used about 1.4 cores while Warren used 0.5), so a lapin run measures the
//! client. These clients do the least work per message that plain AMQP 0-9-1 allows:
//!
//! - the producer encodes up to [`BATCH`] `basic.publish` + content header + body frames
//!   into one buffer and hands it to the socket with one `write_all`; the method frame is
//!   encoded once and copied;
//! - the consumer reads into a large buffer and decodes frames with
//!   [`warren_codec::FrameDecoder`] in a loop, counting a delivery when its last body
//!   byte has arrived, and sends any acks once per read.
//!
//! Each has its own connection (the handshake of [`RawConnection`]) with channel 1, as
//! in the lapin mode; bodies carry the same timestamp and sequence number
//! ([`crate::throughput`]).
//!
//! With `--confirm N` the producer sends `confirm.select` before the clock starts and
//! then never has more than N messages unconfirmed: each batch is cut to the room left
//! in the window ([`ConfirmTracker`]). The socket is split into its read and write
//! halves, driven concurrently within the producer's task, so `basic.ack` /
//! `basic.nack` (with or without `multiple`) are read while a batch is being written;
//! acks count as `confirmed` (with the publish-to-confirm latency), nacks as `nacked`,
//! as in the lapin mode. After the deadline it waits up to 10 s for the outstanding
//! confirms, as the lapin mode does.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, channel, confirm, connection, AMQPClass};
use amq_protocol::types::{FieldTable, ShortString};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::sleep_until;
use warren_codec::{encode, Frame, FrameDecoder};

use crate::confirms::ConfirmTracker;
use crate::error::PerfError;
use crate::rawconn::{unexpected, RawConnection, Target};
use crate::stats::{Counters, Recorder};

/// Messages encoded into one buffer and written with one `write_all`.
pub const BATCH: usize = 256;

/// Bytes the consumer asks the socket for at a time.
const READ_CHUNK: usize = 256 * 1024;

/// How long a confirming producer waits after the deadline for its outstanding confirms
/// (as the lapin mode).
const CONFIRM_DRAIN: Duration = Duration::from_secs(10);

/// What the raw clients need to know about the run.
#[derive(Debug, Clone)]
pub struct RawPlan {
    /// Body size, bytes.
    pub size: usize,
    /// Messages per second per producer, if limited.
    pub rate: Option<f64>,
    /// Publish with delivery_mode 2.
    pub persistent: bool,
    /// Publisher confirms with at most this many unconfirmed messages per producer.
    pub confirm: Option<usize>,
    /// Consume with no_ack=true.
    pub auto_ack: bool,
    /// With manual acks: ack every N-th delivery (multiple=true when N > 1).
    pub ack_every: u32,
    /// When publishing starts.
    pub start: Instant,
    /// When producers and consumers stop.
    pub deadline: Instant,
}

/// A connected producer: channel 1 is open.
#[derive(Debug)]
pub struct RawProducer {
    /// Index, for error messages.
    pub id: usize,
    conn: RawConnection,
    exchange: String,
    /// Message k goes with routing key `routing_keys[(first + k) % len]` (one key but
    /// for the soak mode's round robin over every queue).
    routing_keys: Vec<String>,
    first: usize,
}

/// A connected consumer: channel 1 is open and basic.consume-ok has arrived.
#[derive(Debug)]
pub struct RawConsumer {
    conn: RawConnection,
}

impl RawProducer {
    /// Connects, opens channel 1 and, if `confirm`, puts it into confirm mode
    /// (confirm.select, waiting for select-ok).
    ///
    /// # Errors
    /// The handshake failed or the broker refused confirm mode.
    pub async fn open(
        target: &Target,
        id: usize,
        exchange: &str,
        routing_key: &str,
        confirm: bool,
    ) -> Result<Self, PerfError> {
        Self::open_round_robin(
            target,
            id,
            exchange,
            vec![routing_key.to_string()],
            0,
            confirm,
        )
        .await
    }

    /// [`RawProducer::open`] for a producer that cycles through `routing_keys` (at least
    /// one), message by message, starting at index `first`.
    ///
    /// # Errors
    /// As [`RawProducer::open`]; [`PerfError::Options`] if `routing_keys` is empty.
    pub async fn open_round_robin(
        target: &Target,
        id: usize,
        exchange: &str,
        routing_keys: Vec<String>,
        first: usize,
        confirm: bool,
    ) -> Result<Self, PerfError> {
        if routing_keys.is_empty() {
            return Err(PerfError::Options("a producer needs a routing key".into()));
        }
        let mut conn = RawConnection::open(target, true).await?;
        if confirm {
            conn.send_method(
                1,
                &AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                    nowait: false,
                })),
            )
            .await?;
            match conn.next_method().await? {
                (1, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))) => {}
                other => return Err(unexpected("confirm.select-ok", &other)),
            }
        }
        Ok(RawProducer {
            id,
            conn,
            exchange: exchange.to_string(),
            routing_keys,
            first,
        })
    }

    /// Publishes until the deadline, in batches of up to [`BATCH`] messages per write,
    /// at `plan.rate` if set; with `plan.confirm`, keeping at most that many messages
    /// unconfirmed, recording publish-to-confirm latency into `confirm_rec` and then
    /// waiting for the outstanding confirms. Then closes the connection (a failed
    /// close is ignored).
    ///
    /// # Errors
    /// A socket error, the broker closed the channel or connection, confirmed a tag
    /// never published, or (with confirms) left some unconfirmed for 10 s after the
    /// deadline.
    pub async fn run(
        mut self,
        plan: &RawPlan,
        counters: &Counters,
        confirm_rec: &Recorder,
    ) -> Result<(), PerfError> {
        let r = match plan.confirm {
            Some(window) => {
                self.publish_confirmed(plan, counters, confirm_rec, window)
                    .await
            }
            None => self.publish(plan, counters).await,
        };
        // As in the lapin mode, a slow close is not a failure of the run: a broker with a
        // backlog of publishes in its socket may take longer than the 5 s allowed to
        // reach connection.close.
        let _ = self.conn.close().await;
        r
    }

    async fn publish(&mut self, plan: &RawPlan, counters: &Counters) -> Result<(), PerfError> {
        let mut enc = BatchEncoder::new(self, plan);
        let mut inbound = BytesMut::with_capacity(4096);
        loop {
            let Some(n) = due(plan, enc.seq).await else {
                return Ok(());
            };
            enc.out.clear();
            for _ in 0..n {
                enc.push(counters.now_ns());
            }
            let write = self.conn.stream.write_all(&enc.out);
            match tokio::time::timeout_at(plan.deadline.into(), write).await {
                Ok(r) => r.map_err(PerfError::io("socket write"))?,
                // Blocked by TCP backpressure past the deadline: part of the batch may be
                // on the wire, count none of it.
                Err(_) => return Ok(()),
            }
            counters.published.fetch_add(n as u64, Ordering::Relaxed);
            self.check_inbound(&mut inbound)?;
        }
    }

    /// [`RawProducer::publish`] with publisher confirms: batches never take the number
    /// of unconfirmed messages above `window`; acks and nacks are read concurrently.
    async fn publish_confirmed(
        &mut self,
        plan: &RawPlan,
        counters: &Counters,
        rec: &Recorder,
        window: usize,
    ) -> Result<(), PerfError> {
        let mut enc = BatchEncoder::new(self, plan);
        let RawConnection {
            stream,
            buf,
            decoder,
            ..
        } = &mut self.conn;
        let (mut rd, mut wr) = stream.split();
        let io = ConfirmIo {
            rd: &mut rd,
            wr: &mut wr,
            buf,
            decoder,
        };
        publish_with_confirms(io, &mut enc, plan, counters, rec, window).await
    }

    /// Reads whatever the broker sent without waiting: a channel.close or
    /// connection.close is an error, anything else (heartbeats) is ignored.
    fn check_inbound(&mut self, inbound: &mut BytesMut) -> Result<(), PerfError> {
        loop {
            match self.conn.stream.try_read_buf(inbound) {
                Ok(0) => return Err(PerfError::Protocol("broker closed the socket".into())),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(PerfError::io("socket read")(e)),
            }
        }
        while let Some(f) = self
            .conn
            .decoder
            .decode(inbound)
            .map_err(|e| PerfError::Protocol(format!("undecodable frame: {e}")))?
        {
            if let Frame::Method { channel, method } = f {
                check_close(channel, &method)?;
            }
        }
        Ok(())
    }
}

/// Encodes publishes (method + content header + body frames) back to back.
struct BatchEncoder {
    /// The basic.publish method frame of each routing key, encoded once.
    publish_frames: Vec<BytesMut>,
    /// Index into `publish_frames` of the next message.
    next_frame: usize,
    /// The content header's property flags and properties.
    properties: &'static [u8],
    frame_max: u32,
    body: Vec<u8>,
    /// The batch being built.
    out: BytesMut,
    /// Sequence number of the next message (written into its body).
    seq: u64,
}

impl BatchEncoder {
    fn new(p: &RawProducer, plan: &RawPlan) -> Self {
        Self::with(
            &p.exchange,
            &p.routing_keys,
            p.first,
            p.conn.frame_max,
            plan,
        )
    }

    /// `routing_keys` must not be empty.
    fn with(
        exchange: &str,
        routing_keys: &[String],
        first: usize,
        frame_max: u32,
        plan: &RawPlan,
    ) -> Self {
        let publish_frames: Vec<BytesMut> = routing_keys
            .iter()
            .map(|key| {
                let mut frame = BytesMut::with_capacity(32 + exchange.len() + key.len());
                encode::method(
                    &mut frame,
                    1,
                    &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                        exchange: ShortString::from(exchange),
                        routing_key: ShortString::from(key.as_str()),
                        mandatory: false,
                        immediate: false,
                    })),
                );
                frame
            })
            .collect();
        let longest = publish_frames.iter().map(BytesMut::len).max().unwrap_or(0);
        // Property flags: bit 12 is delivery-mode, then the octet itself.
        let properties: &'static [u8] = if plan.persistent {
            &[0x10, 0x00, 2]
        } else {
            &encode::EMPTY_PROPERTIES
        };
        let frame_max = if frame_max == 0 { 131_072 } else { frame_max };
        let per_message = longest + 8 + 14 + properties.len() + plan.size + 16;
        BatchEncoder {
            next_frame: first % publish_frames.len().max(1),
            publish_frames,
            properties,
            frame_max,
            body: vec![0u8; plan.size],
            out: BytesMut::with_capacity(per_message * BATCH),
            seq: 0,
        }
    }

    /// Appends one publish stamped `stamp` to `out`.
    fn push(&mut self, stamp: u64) {
        stamp_body(&mut self.body, stamp, self.seq);
        self.out
            .extend_from_slice(&self.publish_frames[self.next_frame]);
        self.next_frame = (self.next_frame + 1) % self.publish_frames.len();
        encode::content(
            &mut self.out,
            1,
            self.properties,
            &self.body,
            self.frame_max,
        );
        self.seq += 1;
    }
}

/// How many messages may go now (at most [`BATCH`]; with a rate, those due by now,
/// sleeping until the next one is due if none is), or `None` at the deadline.
pub(crate) async fn due(plan: &RawPlan, sent: u64) -> Option<usize> {
    loop {
        let now = Instant::now();
        if now >= plan.deadline {
            return None;
        }
        let Some(rate) = plan.rate else {
            return Some(BATCH);
        };
        let due = (now.duration_since(plan.start).as_secs_f64() * rate) as u64;
        let n = due.saturating_sub(sent).min(BATCH as u64) as usize;
        if n > 0 {
            return Some(n);
        }
        let next = plan.start + Duration::from_secs_f64((sent + 1) as f64 / rate);
        sleep_until(next.min(plan.deadline).into()).await;
    }
}

/// What the writer and the reader of a confirming producer share.
struct Confirms<'a> {
    tracker: &'a Mutex<ConfirmTracker>,
    /// Signalled whenever confirms free room in the window.
    room: &'a Notify,
    counters: &'a Counters,
    rec: &'a Recorder,
}

fn lock(t: &Mutex<ConfirmTracker>) -> MutexGuard<'_, ConfirmTracker> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connection of a confirming producer, split in two.
struct ConfirmIo<'a, R, W> {
    rd: &'a mut R,
    wr: &'a mut W,
    /// Bytes read but not yet decoded.
    buf: &'a mut BytesMut,
    decoder: &'a FrameDecoder,
}

/// Publishes until the deadline with at most `window` messages unconfirmed, then waits
/// up to [`CONFIRM_DRAIN`] for the outstanding confirms. Both halves of `io` are polled
/// by the calling task: the writer while the reader waits for the socket and the other
/// way round, so the tracker's lock is never contended.
async fn publish_with_confirms<R, W>(
    io: ConfirmIo<'_, R, W>,
    enc: &mut BatchEncoder,
    plan: &RawPlan,
    counters: &Counters,
    rec: &Recorder,
    window: usize,
) -> Result<(), PerfError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let tracker = Mutex::new(ConfirmTracker::new(window));
    let room = Notify::new();
    let c = Confirms {
        tracker: &tracker,
        room: &room,
        counters,
        rec,
    };
    let ConfirmIo {
        rd,
        wr,
        buf,
        decoder,
    } = io;
    let publish_then_drain = async {
        if !write_confirmed(wr, enc, plan, &c).await? {
            return Ok(());
        }
        let drained = async {
            while lock(&tracker).outstanding() > 0 {
                room.notified().await;
            }
        };
        tokio::time::timeout(CONFIRM_DRAIN, drained)
            .await
            .map_err(|_| {
                PerfError::Timeout(format!(
                    "{} publishes still unconfirmed 10 s after the deadline",
                    lock(&tracker).outstanding()
                ))
            })
    };
    tokio::select! {
        r = publish_then_drain => r,
        r = read_confirms(rd, buf, decoder, &c) => r.map(|never| match never {}),
    }
}

/// The writing half of a confirming producer: publishes until the deadline in batches
/// cut to the room in the confirm window, waiting for room when there is none. Returns
/// whether every batch it started was written whole (`false`: a write was still blocked
/// at the deadline, so some tags never reached the broker and will not be confirmed).
async fn write_confirmed<W: AsyncWrite + Unpin>(
    wr: &mut W,
    enc: &mut BatchEncoder,
    plan: &RawPlan,
    c: &Confirms<'_>,
) -> Result<bool, PerfError> {
    loop {
        let Some(n) = due(plan, enc.seq).await else {
            return Ok(true);
        };
        let n = n.min(lock(c.tracker).room());
        if n == 0 {
            tokio::select! {
                _ = c.room.notified() => {}
                _ = sleep_until(plan.deadline.into()) => {}
            }
            continue;
        }
        enc.out.clear();
        {
            let mut t = lock(c.tracker);
            for _ in 0..n {
                let stamp = c.counters.now_ns();
                t.publish(stamp);
                enc.push(stamp);
            }
        }
        match tokio::time::timeout_at(plan.deadline.into(), wr.write_all(&enc.out)).await {
            Ok(r) => r.map_err(PerfError::io("socket write"))?,
            // As in the unconfirmed loop: count none of a batch cut off by the deadline.
            Err(_) => return Ok(false),
        }
        c.counters.published.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The reading half of a confirming producer: applies every basic.ack / basic.nack to
/// the tracker and counts them, until an error (it never returns otherwise).
async fn read_confirms<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    decoder: &FrameDecoder,
    c: &Confirms<'_>,
) -> Result<Infallible, PerfError> {
    loop {
        while let Some(f) = decoder
            .decode(buf)
            .map_err(|e| PerfError::Protocol(format!("undecodable frame: {e}")))?
        {
            let Frame::Method { channel, method } = f else {
                continue;
            };
            let (tag, multiple, ack) = match &*method {
                AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => (a.delivery_tag, a.multiple, true),
                AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => (n.delivery_tag, n.multiple, false),
                other => {
                    check_close(channel, other)?;
                    continue;
                }
            };
            let now = c.counters.now_ns();
            let n = lock(c.tracker)
                .settle(tag, multiple, |stamp| {
                    if ack {
                        c.rec.record(now.saturating_sub(stamp));
                    }
                })
                .map_err(|e| PerfError::Protocol(e.to_string()))?;
            let counter = if ack {
                &c.counters.confirmed
            } else {
                &c.counters.nacked
            };
            counter.fetch_add(n as u64, Ordering::Relaxed);
            c.room.notify_one();
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let n = rd
            .read_buf(buf)
            .await
            .map_err(PerfError::io("socket read"))?;
        if n == 0 {
            return Err(PerfError::Protocol("broker closed the socket".into()));
        }
    }
}

/// Writes the timestamp and sequence number over the first 16 bytes of `body` (as the
/// lapin mode's bodies; shorter bodies get what fits).
pub(crate) fn stamp_body(body: &mut [u8], stamp: u64, seq: u64) {
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(&stamp.to_be_bytes());
    header[8..].copy_from_slice(&seq.to_be_bytes());
    let n = body.len().min(16);
    body[..n].copy_from_slice(&header[..n]);
}

pub(crate) fn check_close(channel: u16, method: &AMQPClass) -> Result<(), PerfError> {
    match method {
        AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
            Err(PerfError::Protocol(format!(
                "broker closed the connection: {} {}",
                c.reply_code, c.reply_text
            )))
        }
        AMQPClass::Channel(channel::AMQPMethod::Close(c)) => Err(PerfError::Protocol(format!(
            "broker closed channel {channel}: {} {}",
            c.reply_code, c.reply_text
        ))),
        AMQPClass::Basic(basic::AMQPMethod::Cancel(_)) => Err(PerfError::Protocol(
            "the broker cancelled the consumer".into(),
        )),
        _ => Ok(()),
    }
}

/// Where the consumer is within a delivery.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Expecting basic.deliver (or another method).
    Idle,
    /// basic.deliver seen, expecting its content header.
    Header { tag: u64 },
    /// Expecting `left` more body bytes.
    Body { tag: u64, left: u64, first: bool },
}

impl RawConsumer {
    /// Connects, opens channel 1, sends basic.qos if `prefetch > 0` and basic.consume,
    /// and waits for consume-ok.
    ///
    /// # Errors
    /// The handshake failed or the broker refused the consumer.
    pub async fn open(
        target: &Target,
        queue: &str,
        tag: &str,
        prefetch: u16,
        no_ack: bool,
    ) -> Result<Self, PerfError> {
        let mut conn = RawConnection::open(target, true).await?;
        if prefetch > 0 {
            conn.send_method(
                1,
                &AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                    prefetch_count: prefetch,
                    global: false,
                })),
            )
            .await?;
            match conn.next_method().await? {
                (1, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))) => {}
                other => return Err(unexpected("basic.qos-ok", &other)),
            }
        }
        conn.send_method(
            1,
            &AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: ShortString::from(queue),
                consumer_tag: ShortString::from(tag),
                no_local: false,
                no_ack,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await?;
        match conn.next_method().await? {
            (1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))) => {}
            other => return Err(unexpected("basic.consume-ok", &other)),
        }
        Ok(RawConsumer { conn })
    }

    /// Consumes until the deadline, then closes the connection (a failed close is
    /// ignored; unacknowledged deliveries go back to the queue).
    ///
    /// # Errors
    /// A socket or framing error, or the broker closed the channel, the connection or
    /// the consumer.
    pub async fn run(
        mut self,
        plan: &RawPlan,
        counters: &Counters,
        rec: &Recorder,
    ) -> Result<(), PerfError> {
        let r = self.consume(plan, counters, rec).await;
        let _ = self.conn.close().await;
        r
    }

    async fn consume(
        &mut self,
        plan: &RawPlan,
        counters: &Counters,
        rec: &Recorder,
    ) -> Result<(), PerfError> {
        let conn = &mut self.conn;
        conn.buf.reserve(READ_CHUNK * 2);
        let mut out = BytesMut::with_capacity(4096);
        let mut state = State::Idle;
        let mut since_ack = 0u32;
        let mut last_seq: Option<u64> = None;
        let multiple = plan.ack_every > 1;
        let beat = Duration::from_secs(u64::from(conn.heartbeat.max(1)));
        let mut ticker = tokio::time::interval(beat / 2);
        ticker.tick().await;
        let deadline = sleep_until(plan.deadline.into());
        tokio::pin!(deadline);
        loop {
            // Everything already buffered (the handshake may have left some).
            let mut delivered = 0u64;
            while let Some(f) = conn
                .decoder
                .decode(&mut conn.buf)
                .map_err(|e| PerfError::Protocol(format!("undecodable frame: {e}")))?
            {
                let done = match (state, f) {
                    (_, Frame::Method { channel, method }) => {
                        if let AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) = &*method {
                            state = State::Header {
                                tag: d.delivery_tag,
                            };
                        } else {
                            check_close(channel, &method)?;
                        }
                        None
                    }
                    (State::Header { tag }, Frame::Header { body_size, .. }) => {
                        if body_size == 0 {
                            state = State::Idle;
                            Some(tag)
                        } else {
                            state = State::Body {
                                tag,
                                left: body_size,
                                first: true,
                            };
                            None
                        }
                    }
                    (State::Body { tag, left, first }, Frame::Body { payload, .. }) => {
                        if first {
                            if let Some(stamp) = stamp_of(&payload) {
                                rec.record(counters.now_ns().saturating_sub(stamp));
                            }
                            if let Some(seq) = seq_of(&payload) {
                                if last_seq.is_some_and(|l| seq <= l) {
                                    counters.out_of_order.fetch_add(1, Ordering::Relaxed);
                                }
                                last_seq = Some(seq);
                            }
                        }
                        let left = left.saturating_sub(payload.len() as u64);
                        if left == 0 {
                            state = State::Idle;
                            Some(tag)
                        } else {
                            state = State::Body {
                                tag,
                                left,
                                first: false,
                            };
                            None
                        }
                    }
                    (_, Frame::Heartbeat { .. }) => None,
                    (s, f) => {
                        return Err(PerfError::Protocol(format!(
                            "unexpected {} frame in state {s:?}",
                            match f {
                                Frame::Header { .. } => "content header",
                                _ => "content body",
                            }
                        )))
                    }
                };
                if let Some(tag) = done {
                    delivered += 1;
                    if !plan.auto_ack {
                        since_ack += 1;
                        if since_ack >= plan.ack_every {
                            since_ack = 0;
                            encode::method(
                                &mut out,
                                1,
                                &AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                                    delivery_tag: tag,
                                    multiple,
                                })),
                            );
                        }
                    }
                }
            }
            if delivered > 0 {
                counters.consumed.fetch_add(delivered, Ordering::Relaxed);
            }
            if !out.is_empty() {
                conn.stream
                    .write_all(&out)
                    .await
                    .map_err(PerfError::io("socket write"))?;
                out.clear();
            }
            if conn.buf.capacity() - conn.buf.len() < READ_CHUNK / 4 {
                conn.buf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                _ = &mut deadline => return Ok(()),
                _ = ticker.tick(), if conn.heartbeat > 0 => {
                    encode::heartbeat(&mut out);
                }
                r = conn.stream.read_buf(&mut conn.buf) => {
                    let n = r.map_err(PerfError::io("socket read"))?;
                    if n == 0 {
                        return Err(PerfError::Protocol("broker closed the socket".into()));
                    }
                }
            }
        }
    }
}

/// The timestamp of a body, if it is long enough to hold one.
/// The producer's sequence number in bytes 8..16 of a body, if it has them.
pub(crate) fn seq_of(data: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = data.get(8..16)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

pub(crate) fn stamp_of(data: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = data.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_body_matches_the_lapin_layout() {
        let mut b = vec![0u8; 32];
        stamp_body(&mut b, 0x0102_0304_0506_0708, 9);
        assert_eq!(stamp_of(&b), Some(0x0102_0304_0506_0708));
        assert_eq!(u64::from_be_bytes(b[8..16].try_into().unwrap()), 9);
        let mut short = vec![0u8; 4];
        stamp_body(&mut short, u64::MAX, 1);
        assert_eq!(short, vec![0xff; 4]);
    }

    #[test]
    fn batch_decodes_as_publishes() {
        let mut publish = BytesMut::new();
        encode::method(
            &mut publish,
            1,
            &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: ShortString::from(""),
                routing_key: ShortString::from("q"),
                mandatory: false,
                immediate: false,
            })),
        );
        let mut out = BytesMut::new();
        let mut body = vec![0u8; 16];
        for seq in 0..3 {
            stamp_body(&mut body, 42, seq);
            out.extend_from_slice(&publish);
            encode::content(&mut out, 1, &encode::EMPTY_PROPERTIES, &body, 131_072);
        }
        let dec = warren_codec::FrameDecoder::new(131_072);
        let mut kinds = Vec::new();
        while let Some(f) = dec.decode(&mut out).unwrap() {
            kinds.push(match f {
                Frame::Method { .. } => 'm',
                Frame::Header { body_size, .. } => {
                    assert_eq!(body_size, 16);
                    'h'
                }
                Frame::Body { payload, .. } => {
                    assert_eq!(stamp_of(&payload), Some(42));
                    'b'
                }
                Frame::Heartbeat { .. } => 'x',
            });
        }
        assert_eq!(kinds.iter().collect::<String>(), "mhbmhbmhb");
    }

    #[test]
    fn round_robin_cycles_through_the_routing_keys_from_first() {
        let start = Instant::now();
        let plan = RawPlan {
            size: 16,
            rate: None,
            persistent: false,
            confirm: None,
            auto_ack: true,
            ack_every: 1,
            start,
            deadline: start,
        };
        let keys: Vec<String> = ["a", "b", "c"].iter().map(|k| k.to_string()).collect();
        let mut enc = BatchEncoder::with("", &keys, 1, 131_072, &plan);
        for _ in 0..5 {
            enc.push(0);
        }
        let dec = FrameDecoder::new(131_072);
        let mut got = String::new();
        while let Some(f) = dec.decode(&mut enc.out).unwrap() {
            if let Frame::Method { method, .. } = f {
                if let AMQPClass::Basic(basic::AMQPMethod::Publish(p)) = *method {
                    got.push_str(p.routing_key.as_str());
                }
            }
        }
        assert_eq!(got, "bcabc");
    }

    /// What the fake broker saw and did.
    #[derive(Debug, Default)]
    struct BrokerLog {
        received: u64,
        max_unsettled: usize,
        acked: u64,
        nacked: u64,
    }

    /// A broker in confirm mode at the other end of `stream`: after each read it
    /// settles the publishes received, in turn with one multiple ack of all of them,
    /// with single acks in reverse order and a nack for the oldest, or with a multiple
    /// ack of the older half only (the rest wait for the next read, or for 20 ms of
    /// silence).
    async fn fake_broker(stream: tokio::io::DuplexStream) -> BrokerLog {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let dec = FrameDecoder::new(131_072);
        let mut buf = BytesMut::new();
        let mut unsettled = std::collections::BTreeSet::new();
        let mut log = BrokerLog::default();
        let mut round = 0u32;
        loop {
            buf.reserve(64 * 1024);
            let quiet = match tokio::time::timeout(Duration::from_millis(20), rd.read_buf(&mut buf))
                .await
            {
                Ok(Ok(0) | Err(_)) => return log,
                Ok(Ok(_)) => false,
                Err(_) => true,
            };
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                if let Frame::Method { method, .. } = f {
                    if let AMQPClass::Basic(basic::AMQPMethod::Publish(_)) = *method {
                        log.received += 1;
                        unsettled.insert(log.received);
                        log.max_unsettled = log.max_unsettled.max(unsettled.len());
                    }
                }
            }
            if unsettled.is_empty() {
                continue;
            }
            let mut out = BytesMut::new();
            let ack = |out: &mut BytesMut, tag: u64, multiple: bool| {
                encode::method(
                    out,
                    1,
                    &AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: tag,
                        multiple,
                    })),
                );
            };
            let last = *unsettled.last().unwrap();
            match if quiet { 0 } else { round % 3 } {
                0 => {
                    log.acked += unsettled.len() as u64;
                    unsettled.clear();
                    ack(&mut out, last, true);
                }
                1 => {
                    let oldest = unsettled.pop_first().unwrap();
                    for &tag in unsettled.iter().rev() {
                        ack(&mut out, tag, false);
                    }
                    log.acked += unsettled.len() as u64;
                    unsettled.clear();
                    encode::method(
                        &mut out,
                        1,
                        &AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                            delivery_tag: oldest,
                            multiple: false,
                            requeue: false,
                        })),
                    );
                    log.nacked += 1;
                }
                _ => {
                    let keep = unsettled
                        .split_off(&unsettled.iter().nth(unsettled.len() / 2).copied().unwrap());
                    if let Some(&upto) = unsettled.last() {
                        log.acked += unsettled.len() as u64;
                        ack(&mut out, upto, true);
                    }
                    unsettled = keep;
                }
            }
            round += 1;
            if wr.write_all(&out).await.is_err() {
                return log;
            }
        }
    }

    #[tokio::test]
    async fn confirmed_publishing_keeps_the_window_and_counts_every_confirm() {
        const WINDOW: usize = 10;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let broker = tokio::spawn(fake_broker(server));
        let start = Instant::now();
        let plan = RawPlan {
            size: 16,
            rate: None,
            persistent: true,
            confirm: Some(WINDOW),
            auto_ack: true,
            ack_every: 1,
            start,
            deadline: start + Duration::from_millis(300),
        };
        let counters = Counters::new();
        let rec = Recorder::new();
        let mut enc = BatchEncoder::with("", &["q".to_string()], 0, 131_072, &plan);
        let (mut rd, mut wr) = tokio::io::split(client);
        let io = ConfirmIo {
            rd: &mut rd,
            wr: &mut wr,
            buf: &mut BytesMut::new(),
            decoder: &FrameDecoder::new(131_072),
        };
        publish_with_confirms(io, &mut enc, &plan, &counters, &rec, WINDOW)
            .await
            .unwrap();
        drop((rd, wr));
        let log = broker.await.unwrap();

        let totals = counters.snapshot();
        assert!(
            log.received > 3 * WINDOW as u64,
            "too few publishes: {log:?}"
        );
        assert_eq!(log.max_unsettled, WINDOW, "{log:?}");
        assert_eq!(totals.published, log.received);
        assert_eq!(totals.confirmed, log.acked);
        assert_eq!(totals.nacked, log.nacked);
        assert!(log.nacked > 0);
        assert_eq!(totals.confirmed + totals.nacked, totals.published);
        assert_eq!(crate::stats::totals(&[rec]).count(), totals.confirmed);
    }
}
