//! Connection and channel statistics for the management API and Prometheus, kept where
//! the work happens so they cost the message path almost nothing:
//!
//! - socket octets and operation counts per connection, one relaxed atomic add per
//!   socket read or write (not per message) in [`ConnStats`];
//! - per-channel message counters as plain fields of the channel, owned by its
//!   connection task, reported on request through the connection's inbox
//!   ([`ChannelReport`]);
//! - node-wide churn counters (connections and channels opened and closed) in
//!   [`Churn`], changed when a connection or channel opens or closes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Node-wide counts of connections and channels opened and closed (Prometheus'
/// `rabbitmq_{connections,channels}_{opened,closed}_total`).
#[derive(Debug, Default)]
pub struct Churn {
    /// Connections that completed `connection.open`.
    pub connections_opened: AtomicU64,
    /// Of those, closed.
    pub connections_closed: AtomicU64,
    /// Channels opened.
    pub channels_opened: AtomicU64,
    /// Channels closed.
    pub channels_closed: AtomicU64,
}

impl Churn {
    /// Counts a channel open; the guard counts its close when dropped.
    pub fn channel(self: &Arc<Self>) -> ChannelGuard {
        self.channels_opened.fetch_add(1, Ordering::Relaxed);
        ChannelGuard(self.clone())
    }

    /// Counts a connection open; the guard counts its close when dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// `(connections opened, closed, channels opened, closed)`.
    pub fn read(&self) -> (u64, u64, u64, u64) {
        (
            self.connections_opened.load(Ordering::Relaxed),
            self.connections_closed.load(Ordering::Relaxed),
            self.channels_opened.load(Ordering::Relaxed),
            self.channels_closed.load(Ordering::Relaxed),
        )
    }
}

/// Counts a channel's close when dropped.
#[derive(Debug)]
pub struct ChannelGuard(Arc<Churn>);

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        self.0.channels_closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a connection's close when dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Churn>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection's socket counters and open channels.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Bytes read from the socket.
    pub recv_oct: AtomicU64,
    /// Socket reads.
    pub recv_cnt: AtomicU64,
    /// Bytes written to the socket.
    pub send_oct: AtomicU64,
    /// Socket writes.
    pub send_cnt: AtomicU64,
    /// Open channels.
    pub channels: AtomicU64,
}

impl ConnStats {
    /// Counts a read of `n` bytes.
    pub fn received(&self, n: usize) {
        self.recv_oct.fetch_add(n as u64, Ordering::Relaxed);
        self.recv_cnt.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a write of `n` bytes.
    pub fn sent(&self, n: usize) {
        self.send_oct.fetch_add(n as u64, Ordering::Relaxed);
        self.send_cnt.fetch_add(1, Ordering::Relaxed);
    }
}

/// A channel's cumulative message counts (RabbitMQ's channel `message_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelCounters {
    /// Messages published on the channel (routed or not).
    pub publish: u64,
    /// Publisher confirms sent (acks and nacks).
    pub confirm: u64,
    /// Mandatory messages returned as unroutable.
    pub return_unroutable: u64,
    /// Non-mandatory messages dropped as unroutable.
    pub drop_unroutable: u64,
    /// Deliveries to consumers that acknowledge.
    pub deliver: u64,
    /// Deliveries to no-ack consumers.
    pub deliver_no_ack: u64,
    /// basic.get answered with a message, to be acknowledged.
    pub get: u64,
    /// basic.get answered with a message, no-ack.
    pub get_no_ack: u64,
    /// basic.get answered with get-empty.
    pub get_empty: u64,
    /// Messages acknowledged.
    pub ack: u64,
    /// Redelivered messages delivered or got.
    pub redeliver: u64,
}

impl std::ops::AddAssign for ChannelCounters {
    fn add_assign(&mut self, o: Self) {
        self.publish += o.publish;
        self.confirm += o.confirm;
        self.return_unroutable += o.return_unroutable;
        self.drop_unroutable += o.drop_unroutable;
        self.deliver += o.deliver;
        self.deliver_no_ack += o.deliver_no_ack;
        self.get += o.get;
        self.get_no_ack += o.get_no_ack;
        self.get_empty += o.get_empty;
        self.ack += o.ack;
        self.redeliver += o.redeliver;
    }
}

/// One channel as its connection reports it.
#[derive(Debug, Clone, Default)]
pub struct ChannelReport {
    /// Channel number.
    pub number: u16,
    /// Consumers on the channel.
    pub consumers: u64,
    /// Delivered, unacknowledged messages.
    pub unacked: u64,
    /// Published, not yet confirmed (confirm mode).
    pub unconfirmed: u64,
    /// Messages published in the open transaction.
    pub uncommitted: u64,
    /// Acknowledgements in the open transaction.
    pub acks_uncommitted: u64,
    /// basic.qos prefetch for new consumers.
    pub prefetch: u32,
    /// basic.qos global prefetch.
    pub global_prefetch: u32,
    /// In confirm mode.
    pub confirm: bool,
    /// In transaction mode.
    pub transactional: bool,
    /// Cumulative counts.
    pub counters: ChannelCounters,
}
