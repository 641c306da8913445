//! Message rates: cumulative counters sampled every interval; a rate is the change
//! between the last two samples divided by the time between them, so it is at most one
//! interval old (RabbitMQ samples every 5 s).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use warren_broker::queue::QueueStats;
use warren_server::admin::Admin;

#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    at: Option<Instant>,
    stats: QueueStats,
    ready: u64,
    unacked: u64,
}

#[derive(Debug, Default)]
struct Pair {
    previous: Sample,
    latest: Sample,
}

/// Two samples of a set of counters.
#[derive(Debug, Default, Clone)]
struct Counters {
    previous: Option<(Instant, Vec<u64>)>,
    latest: Option<(Instant, Vec<u64>)>,
}

impl Counters {
    fn push(&mut self, at: Instant, values: Vec<u64>) {
        self.previous = self.latest.take();
        self.latest = Some((at, values));
    }

    /// Per-second change of each counter between the last two samples (zeros until two
    /// exist).
    fn rates(&self, n: usize) -> Vec<f64> {
        match (&self.previous, &self.latest) {
            (Some((a, x)), Some((b, y))) => {
                let dt = b.duration_since(*a).as_secs_f64();
                (0..n)
                    .map(|i| {
                        let (x, y) = (
                            x.get(i).copied().unwrap_or(0),
                            y.get(i).copied().unwrap_or(0),
                        );
                        if dt > 0.0 {
                            y.saturating_sub(x) as f64 / dt
                        } else {
                            0.0
                        }
                    })
                    .collect()
            }
            _ => vec![0.0; n],
        }
    }
}

/// The last two samples of every queue (keyed by vhost and name), connection (socket
/// octets, keyed by id) and channel (message counters, keyed by connection id and
/// number).
#[derive(Debug, Default)]
pub struct Rates {
    queues: Mutex<HashMap<(String, String), Pair>>,
    connections: Mutex<HashMap<u64, Counters>>,
    channels: Mutex<HashMap<(u64, u16), Counters>>,
    churn: Mutex<Counters>,
}

/// The node's churn counters in the order [`churn_values`] lists them (RabbitMQ's
/// `churn_rates` keys).
pub const CHURN_COUNTERS: [&str; 7] = [
    "connection_created",
    "connection_closed",
    "channel_created",
    "channel_closed",
    "queue_declared",
    "queue_created",
    "queue_deleted",
];

/// The node's churn counters now, in [`CHURN_COUNTERS`] order.
pub fn churn_values(admin: &Admin) -> Vec<u64> {
    use std::sync::atomic::Ordering::Relaxed;
    let (co, cc, ho, hc) = admin.churn().read();
    let q = admin.broker().queue_churn();
    vec![
        co,
        cc,
        ho,
        hc,
        q.declared.load(Relaxed),
        q.created.load(Relaxed),
        q.deleted.load(Relaxed),
    ]
}

/// The channel counters in the order [`channel_values`] lists them.
pub const CHANNEL_COUNTERS: [&str; 12] = [
    "publish",
    "confirm",
    "return_unroutable",
    "drop_unroutable",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "get_empty",
    "ack",
    "redeliver",
    "deliver_get",
];

/// A channel's counters as a list, in [`CHANNEL_COUNTERS`] order.
pub fn channel_values(c: &warren_server::stats::ChannelCounters) -> Vec<u64> {
    vec![
        c.publish,
        c.confirm,
        c.return_unroutable,
        c.drop_unroutable,
        c.deliver,
        c.deliver_no_ack,
        c.get,
        c.get_no_ack,
        c.get_empty,
        c.ack,
        c.redeliver,
        c.deliver + c.deliver_no_ack + c.get + c.get_no_ack,
    ]
}

/// A queue's rates per second.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueueRates {
    /// publish
    pub publish: f64,
    /// deliver
    pub deliver: f64,
    /// deliver_no_ack
    pub deliver_no_ack: f64,
    /// get
    pub get: f64,
    /// get_no_ack
    pub get_no_ack: f64,
    /// get_empty
    pub get_empty: f64,
    /// deliver_get
    pub deliver_get: f64,
    /// redeliver
    pub redeliver: f64,
    /// ack
    pub ack: f64,
    /// change of messages_ready
    pub ready: f64,
    /// change of messages_unacknowledged
    pub unacked: f64,
}

impl Rates {
    /// The churn counters' rates per second, in [`CHURN_COUNTERS`] order.
    pub fn churn(&self) -> Vec<f64> {
        self.churn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rates(CHURN_COUNTERS.len())
    }

    /// `(recv_oct, send_oct)` per second of a connection.
    pub fn connection(&self, id: u64) -> (f64, f64) {
        let map = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        let r = map.get(&id).map_or(vec![0.0; 2], |c| c.rates(2));
        (r[0], r[1])
    }

    /// A channel's counter rates per second, in [`CHANNEL_COUNTERS`] order.
    pub fn channel(&self, connection: u64, number: u16) -> Vec<f64> {
        let map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(connection, number))
            .map_or(vec![0.0; CHANNEL_COUNTERS.len()], |c| {
                c.rates(CHANNEL_COUNTERS.len())
            })
    }

    /// The channel counters summed over the channels of `connections`, as sampled last,
    /// with their rates per second, in [`CHANNEL_COUNTERS`] order: the node's publisher
    /// confirms and unroutable messages for `/api/overview` (a closed channel's counts
    /// leave the sum with it).
    pub fn channel_sums(
        &self,
        connections: &std::collections::HashSet<u64>,
    ) -> (Vec<u64>, Vec<f64>) {
        let n = CHANNEL_COUNTERS.len();
        let (mut totals, mut rates) = (vec![0u64; n], vec![0.0f64; n]);
        let map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        for ((connection, _), counters) in map.iter() {
            if !connections.contains(connection) {
                continue;
            }
            if let Some((_, latest)) = &counters.latest {
                for (t, v) in totals.iter_mut().zip(latest) {
                    *t += v;
                }
            }
            for (r, v) in rates.iter_mut().zip(counters.rates(n)) {
                *r += v;
            }
        }
        (totals, rates)
    }

    /// The rates of one queue (zero until two samples exist).
    pub fn queue(&self, vhost: &str, name: &str) -> QueueRates {
        let map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = map.get(&(vhost.to_string(), name.to_string())) else {
            return QueueRates::default();
        };
        let (Some(a), Some(b)) = (p.previous.at, p.latest.at) else {
            return QueueRates::default();
        };
        let dt = b.duration_since(a).as_secs_f64();
        if dt <= 0.0 {
            return QueueRates::default();
        }
        let r = |x: u64, y: u64| (y.saturating_sub(x)) as f64 / dt;
        let d = |x: u64, y: u64| (y as f64 - x as f64) / dt;
        let (s0, s1) = (p.previous.stats, p.latest.stats);
        QueueRates {
            publish: r(s0.publish, s1.publish),
            deliver: r(s0.deliver, s1.deliver),
            deliver_no_ack: r(s0.deliver_no_ack, s1.deliver_no_ack),
            get: r(s0.get, s1.get),
            get_no_ack: r(s0.get_no_ack, s1.get_no_ack),
            get_empty: r(s0.get_empty, s1.get_empty),
            deliver_get: r(s0.deliver_get(), s1.deliver_get()),
            redeliver: r(s0.redeliver, s1.redeliver),
            ack: r(s0.ack, s1.ack),
            ready: d(p.previous.ready, p.latest.ready),
            unacked: d(p.previous.unacked, p.latest.unacked),
        }
    }
}

/// Samples every queue every `interval` until aborted.
pub(crate) async fn sample(admin: Admin, rates: std::sync::Arc<Rates>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Channels' message counters, as their connections report them (asked first:
        // no lock is held across the wait).
        let reports = admin.channels(interval / 2).await;
        let now = Instant::now();
        rates
            .churn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(now, churn_values(&admin));
        let mut seen = Vec::new();
        for v in admin.broker().vhosts() {
            for q in v.queues() {
                let s = q.snapshot();
                seen.push((
                    (v.name.clone(), q.name.clone()),
                    Sample {
                        at: Some(now),
                        stats: s.stats,
                        ready: s.ready,
                        unacked: s.unacked,
                    },
                ));
            }
        }
        {
            let mut map = rates.queues.lock().unwrap_or_else(|e| e.into_inner());
            let mut next = HashMap::with_capacity(seen.len());
            for (key, sample) in seen {
                let previous = map.remove(&key).map_or(Sample::default(), |p| p.latest);
                next.insert(
                    key,
                    Pair {
                        previous,
                        latest: sample,
                    },
                );
            }
            *map = next;
        }
        // Connections' socket octets.
        {
            let mut conns = rates.connections.lock().unwrap_or_else(|e| e.into_inner());
            let mut next = HashMap::new();
            for c in admin.connections() {
                let mut counters = conns.remove(&c.id).unwrap_or_default();
                counters.push(
                    now,
                    vec![
                        c.stats.recv_oct.load(std::sync::atomic::Ordering::Relaxed),
                        c.stats.send_oct.load(std::sync::atomic::Ordering::Relaxed),
                    ],
                );
                next.insert(c.id, counters);
            }
            *conns = next;
        }
        let mut chans = rates.channels.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::new();
        for (conn, channels) in reports {
            for ch in channels {
                let key = (conn.id, ch.number);
                let mut counters = chans.remove(&key).unwrap_or_default();
                counters.push(now, channel_values(&ch.counters));
                next.insert(key, counters);
            }
        }
        *chans = next;
    }
}
