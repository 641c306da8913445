//! The bridge from queues back to a connection task: queues call [`ConnSink::deliver`]
//! (non-blocking) and the connection task drains its inbox and writes frames.
//!
//! Back-pressure: a consumer's prefetch bounds acknowledged deliveries; for no-ack
//! consumers (and as a global cap) the sink reports not-ready once `MAX_QUEUED`
//! deliveries or `MAX_QUEUED_BYTES` body bytes wait unwritten, so a slow socket stops its queues instead of filling RAM.
//! When the backlog drains, the connection asks its consumers' queues to dispatch again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use warren_broker::{Delivery, DeliverySink};

/// Deliveries allowed to wait in a connection's inbox before queues hold back.
pub const MAX_QUEUED: usize = 1024;
/// Body bytes allowed to wait in a connection's inbox before queues hold back (with
/// large messages this, not [`MAX_QUEUED`], is the limit).
pub const MAX_QUEUED_BYTES: usize = 1 << 20;

/// Events queues send to a connection.
#[derive(Debug)]
pub enum ConnEvent {
    /// A message for a consumer (boxed: it keeps every event, and so every connection's
    /// inbox and event buffer, small).
    Deliver(Box<Delivery>),
    /// A consumer was cancelled by the broker (queue deleted).
    Cancelled {
        /// Channel of the consumer.
        channel: u16,
        /// Its tag.
        tag: Arc<str>,
    },
    /// Publishes up to `upto` on `channel` are on disk (or the sync failed).
    Synced {
        /// Channel.
        channel: u16,
        /// Highest publish sequence number covered.
        upto: u64,
        /// Whether the sync succeeded.
        ok: bool,
    },
    /// Report the connection's channels (management API); the answer goes back on the
    /// sender.
    Report(tokio::sync::oneshot::Sender<Vec<crate::stats::ChannelReport>>),
    /// Report a stream protocol connection's publishers and subscriptions (AMQP
    /// connections are never asked).
    StreamReport(tokio::sync::oneshot::Sender<crate::registry::StreamReport>),
    /// Close the connection with 320 CONNECTION_FORCED and this reason (an operator or
    /// a deleted vhost or user).
    ForceClose {
        /// The text after `CONNECTION_FORCED - `.
        reason: String,
    },
    /// A transaction's messages are on disk: send commit-ok.
    Committed {
        /// Channel.
        channel: u16,
        /// Whether the sync succeeded.
        ok: bool,
    },
}

/// One per connection.
#[derive(Debug)]
pub struct ConnSink {
    tx: mpsc::UnboundedSender<ConnEvent>,
    queued: AtomicUsize,
    queued_bytes: AtomicUsize,
    starved: AtomicBool,
    closed: AtomicBool,
}

impl ConnSink {
    /// A sink feeding `tx`.
    pub fn new(tx: mpsc::UnboundedSender<ConnEvent>) -> Self {
        ConnSink {
            tx,
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            starved: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// A sender for events that do not come from queues (persister completions).
    pub fn event_sender(&self) -> mpsc::UnboundedSender<ConnEvent> {
        self.tx.clone()
    }

    /// The connection wrote (or returned) one delivery of `bytes` body bytes.
    pub fn delivered(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }

    fn full(&self) -> bool {
        self.queued.load(Ordering::SeqCst) >= MAX_QUEUED
            || self.queued_bytes.load(Ordering::SeqCst) >= MAX_QUEUED_BYTES
    }

    /// Whether a queue was turned away since the last call.
    pub fn take_starved(&self) -> bool {
        self.starved.swap(false, Ordering::SeqCst)
    }

    /// The connection is going away: refuse further deliveries.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

impl DeliverySink for ConnSink {
    fn ready(&self) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        if self.full() {
            self.starved.store(true, Ordering::SeqCst);
            // The connection may have drained its inbox and checked `starved` between
            // our load and our store; it would then never ask us to dispatch again.
            // Look once more: either it sees `starved` or we see its progress.
            return !self.full();
        }
        true
    }

    fn deliver(&self, delivery: Delivery) {
        self.queued_bytes
            .fetch_add(delivery.message.message.body.len(), Ordering::AcqRel);
        self.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError(ConnEvent::Deliver(_d))) =
            self.tx.send(ConnEvent::Deliver(Box::new(delivery)))
        {
            // Unreachable by construction: a connection removes its consumers from their
            // queues (under each queue's lock) before it drops the inbox receiver.
            tracing::error!("delivery to a closed connection inbox");
        }
    }

    fn cancelled(&self, channel: u16, tag: Arc<str>) {
        let _ = self.tx.send(ConnEvent::Cancelled { channel, tag });
    }
}
