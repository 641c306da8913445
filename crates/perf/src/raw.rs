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
//! ([`crate::throughput`]). Publisher confirms are not supported.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use amq_protocol::types::{FieldTable, ShortString};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::sleep_until;
use warren_codec::{encode, Frame};

use crate::error::PerfError;
use crate::rawconn::{unexpected, RawConnection, Target};
use crate::stats::{Counters, Recorder};

/// Messages encoded into one buffer and written with one `write_all`.
pub const BATCH: usize = 256;

/// Bytes the consumer asks the socket for at a time.
const READ_CHUNK: usize = 256 * 1024;

/// What the raw clients need to know about the run.
#[derive(Debug, Clone)]
pub struct RawPlan {
    /// Body size, bytes.
    pub size: usize,
    /// Messages per second per producer, if limited.
    pub rate: Option<f64>,
    /// Publish with delivery_mode 2.
    pub persistent: bool,
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
    routing_key: String,
}

/// A connected consumer: channel 1 is open and basic.consume-ok has arrived.
#[derive(Debug)]
pub struct RawConsumer {
    conn: RawConnection,
}

impl RawProducer {
    /// Connects and opens channel 1.
    ///
    /// # Errors
    /// The handshake failed.
    pub async fn open(
        target: &Target,
        id: usize,
        exchange: &str,
        routing_key: &str,
    ) -> Result<Self, PerfError> {
        let conn = RawConnection::open(target, true).await?;
        Ok(RawProducer {
            id,
            conn,
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
        })
    }

    /// Publishes until the deadline, in batches of up to [`BATCH`] messages per write,
    /// at `plan.rate` if set; then closes the connection (a failed close is ignored).
    ///
    /// # Errors
    /// A socket error, or the broker closed the channel or connection.
    pub async fn run(mut self, plan: &RawPlan, counters: &Counters) -> Result<(), PerfError> {
        let r = self.publish(plan, counters).await;
        // As in the lapin mode, a slow close is not a failure of the run: a broker with a
        // backlog of publishes in its socket may take longer than the 5 s allowed to
        // reach connection.close.
        let _ = self.conn.close().await;
        r
    }

    async fn publish(&mut self, plan: &RawPlan, counters: &Counters) -> Result<(), PerfError> {
        let mut publish_frame = BytesMut::with_capacity(64);
        encode::method(
            &mut publish_frame,
            1,
            &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: ShortString::from(self.exchange.as_str()),
                routing_key: ShortString::from(self.routing_key.as_str()),
                mandatory: false,
                immediate: false,
            })),
        );
        // Property flags: bit 12 is delivery-mode, then the octet itself.
        let properties: &[u8] = if plan.persistent {
            &[0x10, 0x00, 2]
        } else {
            &encode::EMPTY_PROPERTIES
        };
        let frame_max = if self.conn.frame_max == 0 {
            131_072
        } else {
            self.conn.frame_max
        };
        let mut body = vec![0u8; plan.size];
        let per_message = publish_frame.len() + 8 + 14 + properties.len() + plan.size + 16;
        let mut out = BytesMut::with_capacity(per_message * BATCH);
        let mut seq = 0u64;
        let mut inbound = BytesMut::with_capacity(4096);
        loop {
            let now = Instant::now();
            if now >= plan.deadline {
                return Ok(());
            }
            let n = match plan.rate {
                None => BATCH,
                Some(rate) => {
                    let due = (now.duration_since(plan.start).as_secs_f64() * rate) as u64;
                    let n = due.saturating_sub(seq).min(BATCH as u64) as usize;
                    if n == 0 {
                        let next = plan.start + Duration::from_secs_f64((seq + 1) as f64 / rate);
                        sleep_until(next.min(plan.deadline).into()).await;
                        continue;
                    }
                    n
                }
            };
            out.clear();
            for _ in 0..n {
                stamp_body(&mut body, counters.now_ns(), seq);
                out.extend_from_slice(&publish_frame);
                encode::content(&mut out, 1, properties, &body, frame_max);
                seq += 1;
            }
            let write = self.conn.stream.write_all(&out);
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

/// Writes the timestamp and sequence number over the first 16 bytes of `body` (as the
/// lapin mode's bodies; shorter bodies get what fits).
fn stamp_body(body: &mut [u8], stamp: u64, seq: u64) {
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(&stamp.to_be_bytes());
    header[8..].copy_from_slice(&seq.to_be_bytes());
    let n = body.len().min(16);
    body[..n].copy_from_slice(&header[..n]);
}

fn check_close(channel: u16, method: &AMQPClass) -> Result<(), PerfError> {
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
fn stamp_of(data: &[u8]) -> Option<u64> {
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
}
