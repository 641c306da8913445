//! The open client connections: who they are, and a way to close them from outside
//! (a deleted vhost or user, `rabbitmqctl close_connection`, the management API).
//!
//! Each connection registers after `connection.open` and is removed when its task ends
//! (the [`Registration`] guard). Closing one sends an event to its task, which answers
//! with `connection.close 320 CONNECTION_FORCED`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::mpsc;
use warren_codec::types::FieldTable;

use crate::sink::ConnEvent;

/// `protocol` of an AMQP 0-9-1 connection, as RabbitMQ's management API names it.
pub const AMQP_091: &str = "AMQP 0-9-1";
/// `protocol` of a stream protocol connection.
pub const STREAM: &str = "stream";

/// What is known about an open connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Internal id.
    pub id: u64,
    /// [`AMQP_091`] or [`STREAM`].
    pub protocol: &'static str,
    /// RabbitMQ's connection name: `"PEER -> LOCAL"`, e.g. `127.0.0.1:50632 -> 127.0.0.1:5672`.
    pub name: String,
    /// Authenticated user.
    pub user: String,
    /// Vhost.
    pub vhost: String,
    /// Client address.
    pub peer: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
    /// The client's `connection.start-ok` properties.
    pub client_properties: FieldTable,
    /// When `connection.open` succeeded.
    pub connected_at: SystemTime,
    /// Whether the client connected over TLS.
    pub tls: bool,
    /// The SASL mechanism it logged in with.
    pub auth_mechanism: String,
    /// Negotiated frame_max.
    pub frame_max: u32,
    /// Negotiated channel_max.
    pub channel_max: u16,
    /// Negotiated heartbeat, seconds.
    pub heartbeat: u16,
    /// Socket counters and open channels.
    pub stats: Arc<crate::stats::ConnStats>,
}

/// An address's IP as RabbitMQ shows it (`peer_host`, `host`): IPv4-mapped IPv6
/// addresses as plain IPv4.
pub fn host_of(a: SocketAddr) -> String {
    match a.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.to_string(), |v4| v4.to_string()),
        v4 => v4.to_string(),
    }
}

/// RabbitMQ's name for a connection: `"PEER -> LOCAL"`.
pub fn connection_name(peer: SocketAddr, local: SocketAddr) -> String {
    let show = |a: SocketAddr| match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", v6.port()),
            None => format!("[{}]:{}", v6.ip(), v6.port()),
        },
        v4 => v4.to_string(),
    };
    format!("{} -> {}", show(peer), show(local))
}

#[derive(Debug)]
struct Entry {
    info: Arc<ConnectionInfo>,
    events: mpsc::UnboundedSender<ConnEvent>,
}

/// Every open connection.
#[derive(Debug, Default)]
pub struct Registry {
    conns: Mutex<HashMap<u64, Entry>>,
}

impl Registry {
    /// Records a connection; it is forgotten when the guard drops.
    pub fn register(
        self: &Arc<Self>,
        info: ConnectionInfo,
        events: mpsc::UnboundedSender<ConnEvent>,
    ) -> Registration {
        let id = info.id;
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.insert(
            id,
            Entry {
                info: Arc::new(info),
                events,
            },
        );
        Registration {
            registry: self.clone(),
            id,
        }
    }

    /// Every open connection.
    pub fn list(&self) -> Vec<Arc<ConnectionInfo>> {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = conns.values().map(|e| e.info.clone()).collect();
        v.sort_by_key(|i| i.id);
        v
    }

    /// Asks every connection `which` selects for its channels and waits (at most
    /// `timeout` in all) for the answers; a connection that closes meanwhile is left out.
    pub async fn channels_where(
        &self,
        which: impl Fn(&ConnectionInfo) -> bool,
        timeout: std::time::Duration,
    ) -> Vec<(Arc<ConnectionInfo>, Vec<crate::stats::ChannelReport>)> {
        self.ask_where(which, ConnEvent::Report, timeout).await
    }

    /// Asks every stream protocol connection `which` selects for its publishers and
    /// subscriptions, waiting (at most `timeout` in all) for the answers.
    pub async fn stream_reports_where(
        &self,
        which: impl Fn(&ConnectionInfo) -> bool,
        timeout: std::time::Duration,
    ) -> Vec<(Arc<ConnectionInfo>, StreamReport)> {
        self.ask_where(
            |c| c.protocol == STREAM && which(c),
            ConnEvent::StreamReport,
            timeout,
        )
        .await
    }

    /// Sends `ask` (carrying a reply sender) to every connection `which` selects and
    /// collects the answers that come within `timeout`, by connection id.
    async fn ask_where<T>(
        &self,
        which: impl Fn(&ConnectionInfo) -> bool,
        ask: impl Fn(tokio::sync::oneshot::Sender<T>) -> ConnEvent,
        timeout: std::time::Duration,
    ) -> Vec<(Arc<ConnectionInfo>, T)> {
        let asked: Vec<_> = {
            let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns
                .values()
                .filter(|e| which(&e.info))
                .filter_map(|e| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    e.events.send(ask(tx)).ok()?;
                    Some((e.info.clone(), rx))
                })
                .collect()
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(asked.len());
        for (info, rx) in asked {
            if let Ok(Ok(answer)) = tokio::time::timeout_at(deadline, rx).await {
                out.push((info, answer));
            }
        }
        out.sort_by_key(|(i, _)| i.id);
        out
    }

    /// Closes every connection `which` selects with 320 and `reason` (the text after
    /// `CONNECTION_FORCED - `). Returns how many were asked to close.
    pub fn close_where(&self, which: impl Fn(&ConnectionInfo) -> bool, reason: &str) -> usize {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for e in conns.values().filter(|e| which(&e.info)) {
            if e.events
                .send(ConnEvent::ForceClose {
                    reason: reason.to_string(),
                })
                .is_ok()
            {
                n += 1;
            }
        }
        n
    }
}

/// A stream protocol connection's publishers and subscriptions, for
/// `rabbitmq-streams list_stream_publishers` / `list_stream_consumers`.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// Declared publishers, by id.
    pub publishers: Vec<StreamPublisherReport>,
    /// Subscriptions, by id.
    pub consumers: Vec<StreamConsumerReport>,
}

/// One declared publisher.
#[derive(Debug, Clone, Default)]
pub struct StreamPublisherReport {
    /// Its id on the connection.
    pub id: u8,
    /// The stream.
    pub stream: String,
    /// Its name for deduplication (empty when none).
    pub reference: String,
    /// Messages it published.
    pub published: u64,
    /// Of those, confirmed.
    pub confirmed: u64,
    /// Of those, refused.
    pub errored: u64,
}

/// One subscription.
#[derive(Debug, Clone, Default)]
pub struct StreamConsumerReport {
    /// Its id on the connection.
    pub id: u8,
    /// The stream.
    pub stream: String,
    /// Messages sent to it.
    pub consumed: u64,
    /// Offset of the last message sent (its start offset before any).
    pub offset: u64,
    /// How far the stream's end is beyond `offset`.
    pub offset_lag: u64,
    /// Chunks it may still receive.
    pub credits: u32,
    /// The properties it subscribed with.
    pub properties: Vec<(String, String)>,
}

/// Removes a connection from the registry when dropped.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut conns = self
            .registry
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        conns.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_rabbitmq_prints_them() {
        let peer: SocketAddr = "[::ffff:127.0.0.1]:50632".parse().unwrap();
        let local: SocketAddr = "[::1]:5672".parse().unwrap();
        assert_eq!(
            connection_name(peer, local),
            "127.0.0.1:50632 -> [::1]:5672"
        );
    }
}
