//! A queue: its ready messages (behind [`QueueStore`]), its consumers and the count of
//! messages delivered but not yet settled.
//!
//! Responsibilities: ordering (FIFO per priority level, requeued messages back at their
//! original position), dispatch to consumers that have credit (highest consumer priority
//! first, round-robin among equals, or only the single active consumer), exclusive
//! consumers, message TTL, length limits with their overflow behaviours, queue expiry,
//! and handing messages to dead-lettering. Collaborators: the server's [`DeliverySink`]
//! per connection, [`Credit`] windows that the server settles, and the owning [`VHost`]
//! which routes dead-lettered messages.
//!
//! All state sits behind one short mutex; no `.await` happens under it. Dead letters are
//! collected under the lock and routed after it is released, because routing takes the
//! vhost's topology lock and other queues' locks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use amq_protocol::types::FieldTable;

use crate::credit::Credit;
use crate::message::{Message, QueuedMessage};
use crate::queue_args::{Overflow, QueueArgs};
use crate::store::{MemoryStore, QueueStore, Settled, SyncFile};
use crate::stream::{FilterSpec, ReaderSpec, StreamLog};
use crate::vhost::VHost;
use crate::ConnectionId;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One message handed to a consumer.
#[derive(Debug)]
pub struct Delivery {
    /// Channel of the consumer.
    pub channel: u16,
    /// Consumer tag.
    pub consumer_tag: Arc<str>,
    /// The queue it came from (for ack and requeue).
    pub queue: Arc<Queue>,
    /// The message.
    pub message: QueuedMessage,
    /// Whether the consumer acknowledges (false) or not (true).
    pub no_ack: bool,
    /// The consumer's credit window, to settle on ack.
    pub credit: Arc<Credit>,
}

/// Where a queue sends deliveries for the consumers of one connection. Implemented by
/// the server; every method must return at once (no blocking).
pub trait DeliverySink: Send + Sync + std::fmt::Debug {
    /// Whether the connection can take another delivery now (socket backlog).
    fn ready(&self) -> bool;
    /// Hands over a delivery.
    fn deliver(&self, delivery: Delivery);
    /// The queue went away: the consumer `tag` on `channel` is cancelled by the broker.
    fn cancelled(&self, channel: u16, tag: Arc<str>);
}

/// A consumer attached to a queue.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// Consumer tag, unique per channel.
    pub tag: Arc<str>,
    /// Owning connection.
    pub connection: ConnectionId,
    /// Channel number.
    pub channel: u16,
    /// No acknowledgements: messages are settled when sent.
    pub no_ack: bool,
    /// Exclusive consumer: no other consumer may attach.
    pub exclusive: bool,
    /// `x-priority`: higher-priority consumers with credit are served first.
    pub priority: i64,
    /// Per-consumer prefetch window.
    pub credit: Arc<Credit>,
    /// Per-channel prefetch window (basic.qos global).
    pub channel_credit: Arc<Credit>,
    /// Where deliveries go.
    pub sink: Arc<dyn DeliverySink>,
    /// The arguments of basic.consume (a stream reads its `x-stream-*` ones).
    pub arguments: FieldTable,
}

impl Consumer {
    fn can_take(&self) -> bool {
        (self.no_ack || (self.credit.has_room() && self.channel_credit.has_room()))
            && self.sink.ready()
    }
}

/// Why a message was dead-lettered (the `reason` of its `x-death` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    /// Rejected or nacked without requeue.
    Rejected,
    /// Its TTL ran out.
    Expired,
    /// Dropped or refused by a length limit.
    Maxlen,
}

impl DeathReason {
    /// The name RabbitMQ uses.
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::Maxlen => "maxlen",
        }
    }
}

/// A message leaving a queue for its dead-letter exchange.
#[derive(Debug)]
pub struct DeadLetter {
    /// The message as it was in the queue.
    pub message: Arc<Message>,
    /// Why.
    pub reason: DeathReason,
}

/// The result of publishing into a queue.
#[derive(Debug, Default)]
pub struct Published {
    /// File to sync before the publish may be confirmed (persisted messages).
    pub sync: Option<Arc<SyncFile>>,
    /// The queue refused the message (`x-overflow` reject-publish): nack the publisher.
    pub rejected: bool,
    /// The queue's consumers are taking messages but more than [`FLOW_BACKLOG`] wait:
    /// the publisher should pause until they catch up (see [`Queue::under_pressure`]).
    pub pressure: bool,
}

/// Ready messages beyond which a queue whose consumers are active asks its publishers to
/// pause ([`Published::pressure`]); they resume below half of it. Publishing runs on
/// the publisher's connection task, so without this a fast publisher takes the CPU its
/// queue's consumers need, and a publisher faster than its consumers' acks grows the
/// queue (and memory) without bound. RabbitMQ's credit flow plays this part.
pub const FLOW_BACKLOG: usize = 4096;

/// Consumers that delivered nothing for this long are not "active": a stuck consumer
/// does not hold publishers back (the queue then grows, bounded by the memory alarm).
pub const FLOW_ACTIVE_MS: u64 = 100;

#[derive(Debug)]
struct State {
    store: Box<dyn QueueStore>,
    next_seq: u64,
    unacked: usize,
    /// Body bytes of the unacknowledged messages (not counted for streams, whose
    /// delivered messages stay in the log).
    unacked_bytes: u64,
    consumers: Vec<Consumer>,
    next_consumer: usize,
    had_consumers: bool,
    /// Last time the queue was used (declare, consume, get), for `x-expires`.
    last_used_ms: u64,
    /// Last time a message was handed to a consumer (for flow control).
    last_delivery_ms: u64,
    /// Dead letters collected under the lock, routed after it is released.
    dead: Vec<DeadLetter>,
    /// Single active consumer: the credit of a cancelled active consumer that still
    /// holds unacknowledged messages. The next consumer takes over once they are settled
    /// (acked, rejected or requeued), so it starts with requeued messages in order.
    handing_over: Option<Arc<Credit>>,
    /// Exact message counts since the queue was created (management statistics). They
    /// change under the queue's lock, which every counted operation holds anyway.
    stats: QueueStats,
    /// Effective interpreted arguments: the declared ones merged with the policies that
    /// apply now (a policy change replaces them at run time).
    args: QueueArgs,
    /// A stream's log and its consumers' positions (`None` for other queues).
    stream: Option<Box<StreamState>>,
}

/// What a stream queue holds besides what every queue has.
struct StreamState {
    log: StreamLog,
    readers: Vec<Reader>,
    /// Called after every append (stream-protocol subscribers waiting for data).
    listeners: Vec<(u64, Arc<dyn Fn() + Send + Sync>)>,
    next_listener: u64,
}

impl std::fmt::Debug for StreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamState")
            .field("log", &self.log)
            .field("readers", &self.readers)
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

/// A stream consumer's position.
#[derive(Debug)]
struct Reader {
    connection: ConnectionId,
    channel: u16,
    tag: Arc<str>,
    /// Next offset to deliver.
    next: u64,
    /// Messages appended before this time (epoch ms) are skipped (a timestamp start).
    not_before: u64,
    filter: Option<FilterSpec>,
}

/// Cumulative counts of a queue's message operations, read by the management API and
/// Prometheus (RabbitMQ's `message_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages enqueued (`publish`).
    pub publish: u64,
    /// Deliveries to consumers that acknowledge (`deliver`).
    pub deliver: u64,
    /// Deliveries to no-ack consumers (`deliver_no_ack`).
    pub deliver_no_ack: u64,
    /// basic.get with acknowledgement (`get`).
    pub get: u64,
    /// basic.get without acknowledgement (`get_no_ack`).
    pub get_no_ack: u64,
    /// basic.get on an empty queue (`get_empty`).
    pub get_empty: u64,
    /// Deliveries and gets of redelivered messages (`redeliver`).
    pub redeliver: u64,
    /// Acknowledged messages (`ack`).
    pub ack: u64,
}

impl std::ops::AddAssign for QueueStats {
    fn add_assign(&mut self, o: QueueStats) {
        self.publish += o.publish;
        self.deliver += o.deliver;
        self.deliver_no_ack += o.deliver_no_ack;
        self.get += o.get;
        self.get_no_ack += o.get_no_ack;
        self.get_empty += o.get_empty;
        self.redeliver += o.redeliver;
        self.ack += o.ack;
    }
}

impl QueueStats {
    /// `deliver_get` as RabbitMQ sums it.
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }
}

/// How to build a queue.
#[derive(Debug, Clone, Default)]
pub struct QueueSpec {
    /// Vhost name.
    pub vhost: String,
    /// Queue name.
    pub name: String,
    /// Survives restarts.
    pub durable: bool,
    /// Owning connection of an exclusive queue.
    pub exclusive_owner: Option<ConnectionId>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declared arguments.
    pub arguments: FieldTable,
    /// Effective interpreted arguments (declared arguments merged with policies).
    pub args: QueueArgs,
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    /// Queue name.
    pub name: String,
    /// Vhost name.
    pub vhost: String,
    /// Survives restarts.
    pub durable: bool,
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<ConnectionId>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declared arguments.
    pub arguments: FieldTable,
    vhost_ref: Weak<VHost>,
    /// Whether the effective arguments set a queue TTL or expiry (read lock-free by the
    /// periodic tick); kept in step with `State::args`.
    timed: AtomicBool,
    deleted: AtomicBool,
    /// Set once a message with a per-message TTL was queued, so the periodic tick can
    /// skip queues that never need it without taking their lock.
    expiring: AtomicBool,
    /// Set when persistent messages were buffered for their segment file; the periodic
    /// tick writes them out (publishes with confirms are written by their sync sooner).
    unflushed: AtomicBool,
    /// A stream (`x-queue-type=stream`).
    stream: bool,
    state: Mutex<State>,
}

/// A consistent view of a queue at one instant.
#[derive(Debug, Clone, Default)]
pub struct QueueSnapshot {
    /// Ready messages.
    pub ready: u64,
    /// Body bytes of the ready messages.
    pub ready_bytes: u64,
    /// Delivered, unacknowledged messages.
    pub unacked: u64,
    /// Body bytes of the unacknowledged messages.
    pub unacked_bytes: u64,
    /// Consumers.
    pub consumers: u64,
    /// Cumulative counts.
    pub stats: QueueStats,
    /// When the queue was last used (epoch ms).
    pub idle_since_ms: u64,
    /// The tag of an exclusive consumer, if any.
    pub exclusive_consumer: Option<String>,
    /// Its consumers.
    pub consumers_detail: Vec<ConsumerInfo>,
}

/// A consumer as the management API lists it.
#[derive(Debug, Clone)]
pub struct ConsumerInfo {
    /// Consumer tag.
    pub tag: String,
    /// Connection id.
    pub connection: ConnectionId,
    /// Channel number.
    pub channel: u16,
    /// No acknowledgements.
    pub no_ack: bool,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// Prefetch count (0 = unlimited).
    pub prefetch: u32,
    /// `x-priority`.
    pub priority: i64,
}

/// Why removing a consumer might delete the queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Removed {
    /// The consumer was not there.
    NotFound,
    /// Removed; the queue stays.
    Removed,
    /// Removed the last consumer of an auto-delete queue: delete it.
    AutoDelete,
}

impl Queue {
    /// A new, empty, in-memory queue without arguments (tests and pseudo-queues).
    pub fn new(
        vhost: &str,
        name: &str,
        durable: bool,
        exclusive_owner: Option<ConnectionId>,
        auto_delete: bool,
        arguments: FieldTable,
    ) -> Self {
        let args = QueueArgs::parse(&arguments).unwrap_or_default();
        let store = Box::new(MemoryStore::new(args.levels()));
        Self::with_store(
            QueueSpec {
                vhost: vhost.to_string(),
                name: name.to_string(),
                durable,
                exclusive_owner,
                auto_delete,
                arguments,
                args,
            },
            store,
            Weak::new(),
        )
    }

    /// A queue over the given store (which may hold recovered messages), owned by the
    /// vhost behind `vhost_ref` (which routes its dead letters).
    pub fn with_store(spec: QueueSpec, store: Box<dyn QueueStore>, vhost_ref: Weak<VHost>) -> Self {
        Self::build(spec, store, None, vhost_ref)
    }

    /// A stream queue over `log` (which may hold recovered messages).
    pub fn with_stream(spec: QueueSpec, log: StreamLog, vhost_ref: Weak<VHost>) -> Self {
        let stream = Box::new(StreamState {
            log,
            readers: Vec::new(),
            listeners: Vec::new(),
            next_listener: 0,
        });
        Self::build(spec, Box::new(MemoryStore::new(1)), Some(stream), vhost_ref)
    }

    fn build(
        spec: QueueSpec,
        store: Box<dyn QueueStore>,
        stream: Option<Box<StreamState>>,
        vhost_ref: Weak<VHost>,
    ) -> Self {
        let next_seq = store.next_seq();
        Queue {
            name: spec.name,
            vhost: spec.vhost,
            durable: spec.durable,
            exclusive_owner: spec.exclusive_owner,
            auto_delete: spec.auto_delete,
            arguments: spec.arguments,
            timed: AtomicBool::new(spec.args.expires.is_some() || spec.args.message_ttl.is_some()),
            vhost_ref,
            deleted: AtomicBool::new(false),
            expiring: AtomicBool::new(store.next_expiry().is_some()),
            unflushed: AtomicBool::new(false),
            stream: stream.is_some(),
            state: Mutex::new(State {
                store,
                next_seq,
                unacked: 0,
                unacked_bytes: 0,
                consumers: Vec::new(),
                next_consumer: 0,
                had_consumers: false,
                last_used_ms: now_ms(),
                last_delivery_ms: 0,
                dead: Vec::new(),
                handing_over: None,
                stats: QueueStats::default(),
                args: spec.args,
                stream,
            }),
        }
    }

    /// Whether this is a stream (`x-queue-type=stream`).
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// The queue type as RabbitMQ lists it: `classic`, `quorum` or `stream`.
    pub fn type_name(&self) -> &'static str {
        if self.stream {
            return "stream";
        }
        match self.arguments.inner().get("x-queue-type") {
            Some(amq_protocol::types::AMQPValue::LongString(t)) if t.as_bytes() == b"quorum" => {
                "quorum"
            }
            Some(amq_protocol::types::AMQPValue::ShortString(t)) if t.as_str() == "quorum" => {
                "quorum"
            }
            _ => "classic",
        }
    }

    /// How RabbitMQ names the queue in errors: `queue 'Q' in vhost 'V'`.
    pub fn display_name(&self) -> String {
        format!("queue '{}' in vhost '{}'", self.name, self.vhost)
    }

    /// The effective arguments (declared arguments merged with policies).
    pub fn args(&self) -> QueueArgs {
        self.lock().args.clone()
    }

    /// Replaces the effective arguments after a policy change, as RabbitMQ applies a
    /// policy to existing queues: a lower length limit drops (or dead-letters) the
    /// oldest messages at once; a TTL applies to messages published from now on.
    pub fn set_args(self: &Arc<Self>, args: QueueArgs) {
        let dead = {
            let mut st = self.lock();
            if st.args == args {
                return;
            }
            self.timed.store(
                args.expires.is_some() || args.message_ttl.is_some(),
                Ordering::Relaxed,
            );
            if let (Some(s), Some(settings)) = (st.stream.as_mut(), args.stream_settings()) {
                s.log.set_settings(settings, now_ms());
            }
            st.args = args;
            self.trim_locked(&mut st);
            std::mem::take(&mut st.dead)
        };
        self.route_dead(dead);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be our bug; keep serving the queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes dead letters collected under the lock; call after releasing it.
    fn route_dead(self: &Arc<Self>, dead: Vec<DeadLetter>) {
        if dead.is_empty() {
            return;
        }
        if let Some(v) = self.vhost_ref.upgrade() {
            v.dead_letter(self, dead);
        }
    }

    /// Whether the queue has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Whether the queue needs the periodic [`Queue::tick`] (TTL or expiry).
    pub fn has_timers(&self) -> bool {
        self.stream
            || self.unflushed.load(Ordering::Relaxed)
            || self.timed.load(Ordering::Relaxed)
            || self.expiring.load(Ordering::Relaxed)
    }

    /// Marks the queue as used (redeclared), for `x-expires`.
    pub fn touch(&self) {
        self.lock().last_used_ms = now_ms();
    }

    /// Drops or dead-letters a message leaving the queue without being delivered.
    fn discard(&self, st: &mut State, m: QueuedMessage, reason: DeathReason) {
        st.store.settle(&[Settled::from(&m)]);
        self.unflushed.store(true, Ordering::Relaxed);
        if st.args.dead_letter_exchange.is_some() {
            st.dead.push(DeadLetter {
                message: m.message,
                reason,
            });
        }
    }

    fn expire_locked(&self, st: &mut State, now: u64) {
        // Expired means strictly before now, so a TTL-0 message can still go to a
        // consumer that is waiting in the same millisecond.
        while let Some(m) = st.store.pop_expired(now.saturating_sub(1)) {
            self.discard(st, m, DeathReason::Expired);
        }
    }

    fn over_limit(&self, st: &State, extra_bytes: u64, extra: u64) -> bool {
        let len = st.store.len() as u64 + extra;
        let bytes = st.store.bytes() + extra_bytes;
        st.args.max_length.is_some_and(|m| len > m)
            || st.args.max_length_bytes.is_some_and(|m| bytes > m)
    }

    /// Adds a message and delivers what can be delivered.
    ///
    /// # Errors
    /// Writing a persistent message failed; the message is still queued (in memory), but
    /// must not be confirmed.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> std::io::Result<Published> {
        self.publish_at(message, now_ms())
    }

    /// [`Queue::publish`] at the given time (epoch ms).
    fn publish_at(self: &Arc<Self>, message: Arc<Message>, now: u64) -> std::io::Result<Published> {
        if self.stream {
            return self.publish_stream(&message, now);
        }
        let (result, dead) = {
            let mut st = self.lock();
            self.expire_locked(&mut st, now);
            let size = message.body.len() as u64;
            if st.args.overflow != Overflow::DropHead && self.over_limit(&st, size, 1) {
                if st.args.overflow == Overflow::RejectPublishDlx
                    && st.args.dead_letter_exchange.is_some()
                {
                    st.dead.push(DeadLetter {
                        message,
                        reason: DeathReason::Maxlen,
                    });
                }
                let dead = std::mem::take(&mut st.dead);
                drop(st);
                self.route_dead(dead);
                return Ok(Published {
                    sync: None,
                    rejected: true,
                    pressure: false,
                });
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            let priority = match st.args.max_priority {
                Some(max) => message.properties.priority.unwrap_or(0).min(max),
                None => 0,
            };
            let per_message = message_expiration(&message);
            if per_message.is_some() {
                self.expiring.store(true, Ordering::Relaxed);
            }
            let ttl = match (st.args.message_ttl, per_message) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            st.stats.publish += 1;
            let r = st.store.push(QueuedMessage {
                seq,
                message,
                redelivered: false,
                loc: None,
                priority,
                expires_at: ttl.map_or(0, |t| now.saturating_add(t).max(1)),
            });
            self.dispatch_locked(&mut st, now);
            if ttl == Some(0) {
                // TTL 0: delivered to a waiting consumer just now, or expired at once.
                while let Some(m) = st.store.pop_expired(now) {
                    self.discard(&mut st, m, DeathReason::Expired);
                }
            }
            self.trim_locked(&mut st);
            let pressure = st.store.len() > FLOW_BACKLOG && Self::consumers_active(&st, now);
            (r.map(|sync| (sync, pressure)), std::mem::take(&mut st.dead))
        };
        self.route_dead(dead);
        if matches!(result, Ok((Some(_), _))) {
            self.unflushed.store(true, Ordering::Relaxed);
        }
        result.map(|(sync, pressure)| Published {
            sync,
            rejected: false,
            pressure,
        })
    }

    /// A stream appends every message (whatever its delivery mode) and confirms it once
    /// its segment file is synced.
    fn publish_stream(self: &Arc<Self>, message: &Message, now: u64) -> std::io::Result<Published> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(s) = st.stream.as_mut() else {
            return Ok(Published::default());
        };
        let (_, sync) = s.log.append(message, now)?;
        for (_, wake) in &s.listeners {
            wake();
        }
        st.stats.publish += 1;
        self.dispatch_stream(st, now);
        if sync.is_some() {
            self.unflushed.store(true, Ordering::Relaxed);
        }
        Ok(Published {
            sync,
            rejected: false,
            pressure: false,
        })
    }

    /// Runs `f` on the stream's log (`None` for other queues), under the queue's lock.
    pub fn with_stream_log<T>(&self, f: impl FnOnce(&mut StreamLog) -> T) -> Option<T> {
        let mut st = self.lock();
        st.stream.as_mut().map(|s| f(&mut s.log))
    }

    /// Calls `wake` after every append to this stream until [`Queue::stream_unlisten`];
    /// `wake` runs under the queue's lock and must only signal. Returns its handle.
    pub fn stream_listen(&self, wake: Arc<dyn Fn() + Send + Sync>) -> Option<u64> {
        let mut st = self.lock();
        let s = st.stream.as_mut()?;
        s.next_listener += 1;
        let id = s.next_listener;
        s.listeners.push((id, wake));
        Some(id)
    }

    /// Removes a listener added by [`Queue::stream_listen`].
    pub fn stream_unlisten(&self, id: u64) {
        if let Some(s) = self.lock().stream.as_mut() {
            s.listeners.retain(|(i, _)| *i != id);
        }
    }

    /// Hands each stream consumer what it has credit for, from its own position.
    fn dispatch_stream(self: &Arc<Self>, st: &mut State, now: u64) {
        let State {
            stream,
            consumers,
            stats,
            unacked,
            last_delivery_ms,
            ..
        } = st;
        let Some(s) = stream.as_mut() else {
            return;
        };
        for c in consumers.iter() {
            let Some(r) = s
                .readers
                .iter_mut()
                .find(|r| r.connection == c.connection && r.channel == c.channel && r.tag == c.tag)
            else {
                continue;
            };
            while c.can_take() {
                let entry = match s.log.read(r.next, r.filter.as_ref(), r.not_before) {
                    Ok(Some(e)) => e,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(queue = %self.name, error = %e, "cannot read a stream chunk");
                        break;
                    }
                };
                r.next = entry.offset + 1;
                c.credit.take();
                c.channel_credit.take();
                stats.deliver += 1;
                *unacked += 1;
                *last_delivery_ms = now;
                c.sink.deliver(Delivery {
                    channel: c.channel,
                    consumer_tag: c.tag.clone(),
                    queue: self.clone(),
                    message: QueuedMessage {
                        seq: entry.offset,
                        message: entry.message,
                        redelivered: false,
                        loc: None,
                        priority: 0,
                        expires_at: 0,
                    },
                    no_ack: false,
                    credit: c.credit.clone(),
                });
            }
        }
    }

    /// Drop-head: the oldest messages make room (after delivery had its chance).
    fn trim_locked(&self, st: &mut State) {
        if st.args.overflow != Overflow::DropHead {
            return;
        }
        while self.over_limit(st, 0, 0) {
            let Some(m) = st.store.pop() else { break };
            self.discard(st, m, DeathReason::Maxlen);
        }
    }

    /// Delivers ready messages to consumers with credit.
    pub fn dispatch(self: &Arc<Self>) {
        let dead = {
            let mut st = self.lock();
            self.dispatch_locked(&mut st, now_ms());
            std::mem::take(&mut st.dead)
        };
        self.route_dead(dead);
    }

    fn pick_consumer(&self, st: &State) -> Option<usize> {
        let n = st.consumers.len();
        if n == 0 {
            return None;
        }
        if st.args.single_active_consumer {
            if st.handing_over.as_ref().is_some_and(|c| c.used() > 0) {
                return None;
            }
            // Only the earliest consumer is active; the others wait their turn.
            return st.consumers[0].can_take().then_some(0);
        }
        let start = st.next_consumer % n;
        let mut best: Option<usize> = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let c = &st.consumers[idx];
            if best.is_some_and(|b| st.consumers[b].priority >= c.priority) {
                continue;
            }
            if c.can_take() {
                best = Some(idx);
            }
        }
        best
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut State, now: u64) {
        if self.is_deleted() {
            return;
        }
        if self.stream {
            self.dispatch_stream(st, now);
            return;
        }
        self.expire_locked(st, now);
        let mut marked = false;
        while !st.store.is_empty() {
            let Some(idx) = self.pick_consumer(st) else {
                break;
            };
            let Some(message) = st.store.pop() else {
                break;
            };
            if message.expires_at != 0 && message.expires_at < now {
                self.discard(st, message, DeathReason::Expired);
                continue;
            }
            st.next_consumer = (idx + 1) % st.consumers.len();
            st.last_delivery_ms = now;
            let c = &st.consumers[idx];
            if !c.no_ack {
                c.credit.take();
                c.channel_credit.take();
            }
            let delivery = Delivery {
                channel: c.channel,
                consumer_tag: c.tag.clone(),
                queue: self.clone(),
                message,
                no_ack: c.no_ack,
                credit: c.credit.clone(),
            };
            let sink = c.sink.clone();
            st.stats.redeliver += u64::from(delivery.message.redelivered);
            if delivery.no_ack {
                st.stats.deliver_no_ack += 1;
                // A persisted message is settled on disk only once the connection has
                // written it (see `Queue::written`), so a delivery that never leaves the
                // broker is not lost.
                if delivery.message.loc.is_none() {
                    st.store.settle(&[Settled::from(&delivery.message)]);
                }
            } else {
                st.stats.deliver += 1;
                st.unacked += 1;
                st.unacked_bytes += delivery.message.message.body.len() as u64;
                st.store.delivered(&delivery.message);
                marked |= delivery.message.loc.is_some();
            }
            sink.deliver(delivery);
        }
        if marked {
            // Delivery marks are written by the next flush (an ack's, or the tick's).
            self.unflushed.store(true, Ordering::Relaxed);
        }
    }

    /// `basic.get`: takes the head message. Returns it with the number of messages left.
    pub fn get(self: &Arc<Self>, no_ack: bool) -> Option<(QueuedMessage, u32)> {
        if self.stream {
            return None;
        }
        let (out, dead) = {
            let mut st = self.lock();
            let now = now_ms();
            st.last_used_ms = now;
            self.expire_locked(&mut st, now);
            let mut out = None;
            while let Some(m) = st.store.pop() {
                if m.expires_at != 0 && m.expires_at < now {
                    self.discard(&mut st, m, DeathReason::Expired);
                    continue;
                }
                st.stats.redeliver += u64::from(m.redelivered);
                if no_ack {
                    st.stats.get_no_ack += 1;
                    st.store.settle(&[Settled::from(&m)]);
                    self.unflushed.store(true, Ordering::Relaxed);
                } else {
                    st.stats.get += 1;
                    st.unacked += 1;
                    st.unacked_bytes += m.message.body.len() as u64;
                    st.store.delivered(&m);
                    st.store.flush();
                }
                out = Some((m, st.store.len() as u32));
                break;
            }
            if out.is_none() {
                st.stats.get_empty += 1;
            }
            (out, std::mem::take(&mut st.dead))
        };
        self.route_dead(dead);
        out
    }

    /// A no-ack delivery of persisted messages was written to the client: settle them on
    /// disk.
    pub fn written(&self, messages: &[Settled]) {
        if self.is_deleted() {
            return;
        }
        self.lock().store.settle(messages);
        self.unflushed.store(true, Ordering::Relaxed);
    }

    /// Settles delivered messages for good (ack).
    pub fn settle(&self, messages: &[QueuedMessage]) {
        let mut st = self.lock();
        Self::forget_unacked(&mut st, messages);
        st.stats.ack += messages.len() as u64;
        // A stream keeps what was acked: the ack only returned credit.
        if !self.is_deleted() && !self.stream {
            let settled: Vec<Settled> = messages.iter().map(Settled::from).collect();
            st.store.settle(&settled);
            self.unflushed.store(true, Ordering::Relaxed);
        }
    }

    /// Delivered messages are no longer unacknowledged (acked, rejected or requeued).
    fn forget_unacked(st: &mut State, messages: &[QueuedMessage]) {
        st.unacked = st.unacked.saturating_sub(messages.len());
        let bytes: u64 = messages.iter().map(|m| m.message.body.len() as u64).sum();
        st.unacked_bytes = st.unacked_bytes.saturating_sub(bytes);
    }

    fn consumers_active(st: &State, now: u64) -> bool {
        !st.consumers.is_empty() && now.saturating_sub(st.last_delivery_ms) < FLOW_ACTIVE_MS
    }

    /// Whether a publisher paused by [`Published::pressure`] should keep waiting: more
    /// than half of [`FLOW_BACKLOG`] messages are ready and the consumers are still
    /// taking messages.
    pub fn under_pressure(&self) -> bool {
        self.under_pressure_at(now_ms())
    }

    fn under_pressure_at(&self, now: u64) -> bool {
        let st = self.lock();
        st.store.len() > FLOW_BACKLOG / 2 && Self::consumers_active(&st, now)
    }

    /// Writes buffered settle and delivery marks to the OS. The connection calls it once
    /// per batch of client frames that settled messages here, before it answers them.
    pub fn flush_marks(&self) {
        self.lock().store.flush();
    }

    /// Reject or nack without requeue: settle, and dead-letter if configured.
    pub fn reject(self: &Arc<Self>, messages: Vec<QueuedMessage>) {
        let dead = {
            let mut st = self.lock();
            Self::forget_unacked(&mut st, &messages);
            if self.is_deleted() || self.stream {
                return;
            }
            for m in messages {
                self.discard(&mut st, m, DeathReason::Rejected);
            }
            self.unflushed.store(true, Ordering::Relaxed);
            std::mem::take(&mut st.dead)
        };
        self.route_dead(dead);
    }

    /// Puts delivered messages back, marked redelivered, and delivers again.
    /// `counted` says whether they were counted as unacknowledged (not for no-ack
    /// deliveries that never reached the client).
    pub fn requeue(self: &Arc<Self>, messages: Vec<QueuedMessage>, counted: bool) {
        self.requeue_marked(messages, counted, counted);
    }

    /// [`Queue::requeue`] with explicit control of the redelivered flag: a delivery that
    /// never reached the client keeps its flag.
    pub fn requeue_marked(
        self: &Arc<Self>,
        mut messages: Vec<QueuedMessage>,
        counted: bool,
        mark_redelivered: bool,
    ) {
        if messages.is_empty() {
            return;
        }
        let dead = {
            let mut st = self.lock();
            if counted {
                Self::forget_unacked(&mut st, &messages);
            }
            if mark_redelivered {
                for m in &mut messages {
                    m.redelivered = true;
                }
            }
            if self.is_deleted() {
                return;
            }
            if self.stream {
                // Nothing goes back into a stream; the returned credit lets its
                // consumers read on.
                self.dispatch_locked(&mut st, now_ms());
                return;
            }
            st.store.requeue(messages);
            self.dispatch_locked(&mut st, now_ms());
            // A message requeued into a full drop-head queue is dropped like any head.
            self.trim_locked(&mut st);
            std::mem::take(&mut st.dead)
        };
        self.route_dead(dead);
    }

    /// Attaches a consumer.
    ///
    /// # Errors
    /// [`crate::Error::ExclusiveConsumer`] if an exclusive consumer is involved.
    pub fn add_consumer(self: &Arc<Self>, consumer: Consumer) -> Result<(), crate::Error> {
        let reader = if self.stream {
            Some(self.stream_reader(&consumer)?)
        } else {
            None
        };
        let dead = {
            let mut st = self.lock();
            if (consumer.exclusive && !st.consumers.is_empty())
                || st.consumers.iter().any(|c| c.exclusive)
            {
                return Err(crate::Error::ExclusiveConsumer {
                    vhost: self.vhost.clone(),
                    queue: self.name.clone(),
                });
            }
            if let (Some(spec), Some(s)) = (reader, st.stream.as_mut()) {
                let next = s.log.start_offset(spec.start);
                let not_before = match spec.start {
                    crate::stream::OffsetSpec::Timestamp(ts) => ts,
                    _ => 0,
                };
                s.readers.push(Reader {
                    connection: consumer.connection,
                    channel: consumer.channel,
                    tag: consumer.tag.clone(),
                    next,
                    not_before,
                    filter: spec.filter,
                });
            }
            st.consumers.push(consumer);
            st.had_consumers = true;
            st.last_used_ms = now_ms();
            self.dispatch_locked(&mut st, now_ms());
            std::mem::take(&mut st.dead)
        };
        self.route_dead(dead);
        Ok(())
    }

    /// What RabbitMQ requires of a stream consumer (a prefetch, manual acks, no global
    /// QoS, a valid `x-stream-offset`), and where it starts.
    fn stream_reader(&self, c: &Consumer) -> Result<ReaderSpec, crate::Error> {
        let display = self.display_name();
        if c.credit.limit() == 0 {
            return Err(crate::Error::InvalidArg(format!(
                "consumer prefetch count is not set for '{display}'"
            )));
        }
        if c.no_ack {
            return Err(crate::Error::NotImplemented(format!(
                "automatic acknowledgement not supported by stream queues {display}"
            )));
        }
        if c.channel_credit.limit() > 0 {
            return Err(crate::Error::NotImplemented(format!(
                "{display} does not support global qos"
            )));
        }
        ReaderSpec::from_arguments(&c.arguments, now_ms()).map_err(|reason| {
            crate::Error::InvalidArg(format!("failed consuming from stream {display}: {reason}"))
        })
    }

    /// Detaches a consumer. With `dispatch`, the remaining consumers (or the next single
    /// active consumer) get a chance to take messages at once.
    pub fn remove_consumer(
        self: &Arc<Self>,
        connection: ConnectionId,
        channel: u16,
        tag: &str,
        dispatch: bool,
    ) -> Removed {
        let (removed, dead) =
            {
                let mut st = self.lock();
                let Some(pos) = st.consumers.iter().position(|c| {
                    c.connection == connection && c.channel == channel && &*c.tag == tag
                }) else {
                    return Removed::NotFound;
                };
                let gone = st.consumers.remove(pos);
                if let Some(s) = st.stream.as_mut() {
                    s.readers.retain(|r| {
                        !(r.connection == connection && r.channel == channel && &*r.tag == tag)
                    });
                }
                if st.args.single_active_consumer && pos == 0 && gone.credit.used() > 0 {
                    st.handing_over = Some(gone.credit);
                }
                st.last_used_ms = now_ms();
                let removed = if st.consumers.is_empty() && self.auto_delete && st.had_consumers {
                    Removed::AutoDelete
                } else {
                    // With a single active consumer, the next one may take over now.
                    if dispatch {
                        self.dispatch_locked(&mut st, now_ms());
                    }
                    Removed::Removed
                };
                (removed, std::mem::take(&mut st.dead))
            };
        self.route_dead(dead);
        removed
    }

    /// Periodic work: expires messages at the head and reports whether the queue itself
    /// has expired (`x-expires`: unused for that long).
    pub fn tick(self: &Arc<Self>, now: u64) -> bool {
        let (expired_queue, dead) = {
            let mut st = self.lock();
            if let Some(s) = st.stream.as_mut() {
                // What was appended since the last tick forms a chunk; old segments go.
                s.log.close_chunk();
                s.log.retain(now);
                s.log.save_tracking();
            }
            self.expire_locked(&mut st, now);
            // Persistent messages published without confirms reach the OS within a tick.
            if self.unflushed.swap(false, Ordering::Relaxed) {
                st.store.write_buffered();
                if let Some(s) = &st.stream {
                    s.log.write_buffered();
                }
            }
            let expired = st.args.expires.is_some_and(|ttl| {
                st.consumers.is_empty() && now.saturating_sub(st.last_used_ms) >= ttl
            });
            (expired, std::mem::take(&mut st.dead))
        };
        self.route_dead(dead);
        expired_queue
    }

    /// Writes buffered records and marks to the OS (at shutdown).
    pub fn flush(&self) {
        self.unflushed.store(false, Ordering::Relaxed);
        let mut st = self.lock();
        st.store.write_buffered();
        if let Some(s) = &st.stream {
            s.log.write_buffered();
        }
    }

    /// Everything the management API shows about the queue's contents, read at once
    /// under its lock: `(ready, unacknowledged, consumers, stats)`.
    pub fn snapshot(&self) -> QueueSnapshot {
        let st = self.lock();
        let (ready, ready_bytes) = match &st.stream {
            Some(s) => (s.log.len(), s.log.bytes()),
            None => (st.store.len() as u64, st.store.bytes()),
        };
        QueueSnapshot {
            ready,
            ready_bytes,
            // A stream's delivered messages are still in it (counted in `ready`).
            unacked: if self.stream { 0 } else { st.unacked as u64 },
            unacked_bytes: st.unacked_bytes,
            consumers: st.consumers.len() as u64,
            stats: st.stats,
            idle_since_ms: st.last_used_ms.max(st.last_delivery_ms),
            exclusive_consumer: st
                .consumers
                .iter()
                .find(|c| c.exclusive)
                .map(|c| c.tag.to_string()),
            consumers_detail: st
                .consumers
                .iter()
                .map(|c| ConsumerInfo {
                    tag: c.tag.to_string(),
                    connection: c.connection,
                    channel: c.channel,
                    no_ack: c.no_ack,
                    exclusive: c.exclusive,
                    prefetch: c.credit.limit(),
                    priority: c.priority,
                })
                .collect(),
        }
    }

    /// Ready messages.
    pub fn message_count(&self) -> u32 {
        let st = self.lock();
        match &st.stream {
            Some(s) => u32::try_from(s.log.len()).unwrap_or(u32::MAX),
            None => st.store.len() as u32,
        }
    }

    /// Delivered, unsettled messages.
    pub fn unacked_count(&self) -> usize {
        self.lock().unacked
    }

    /// Attached consumers.
    pub fn consumer_count(&self) -> u32 {
        self.lock().consumers.len() as u32
    }

    /// Drops ready messages; returns how many.
    pub fn purge(&self) -> u32 {
        if self.stream {
            return 0;
        }
        self.lock().store.purge() as u32
    }

    /// Marks the queue deleted, removes its files and tells its consumers. Returns the
    /// number of ready messages it had.
    pub fn delete(&self) -> u32 {
        self.deleted.store(true, Ordering::Release);
        let (count, consumers) = {
            let mut st = self.lock();
            let mut count = st.store.len() as u32;
            st.store.destroy();
            if let Some(s) = st.stream.as_mut() {
                // RabbitMQ answers a stream's queue.delete with a count of 0.
                count = 0;
                s.log.destroy();
                // Stream-protocol readers learn of the deletion (they check
                // `is_deleted` when woken).
                for (_, wake) in &s.listeners {
                    wake();
                }
            }
            (count, std::mem::take(&mut st.consumers))
        };
        for c in consumers {
            c.sink.cancelled(c.channel, c.tag.clone());
        }
        count
    }
}

/// The per-message TTL from the `expiration` property (validated at publish).
fn message_expiration(m: &Message) -> Option<u64> {
    m.properties
        .expiration
        .as_deref()
        .and_then(|e| e.parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Mutex as StdMutex;

    #[derive(Debug, Default)]
    struct Recorder {
        got: StdMutex<Vec<(Arc<str>, u64, bool)>>,
        kept: StdMutex<Vec<QueuedMessage>>,
        cancelled: StdMutex<Vec<Arc<str>>>,
        paused: AtomicBool,
    }
    impl DeliverySink for Recorder {
        fn ready(&self) -> bool {
            !self.paused.load(Ordering::Relaxed)
        }
        fn deliver(&self, d: Delivery) {
            self.got.lock().unwrap().push((
                d.consumer_tag.clone(),
                d.message.seq,
                d.message.redelivered,
            ));
            self.kept.lock().unwrap().push(d.message);
        }
        fn cancelled(&self, _channel: u16, tag: Arc<str>) {
            self.cancelled.lock().unwrap().push(tag);
        }
    }

    fn queue_with(args: FieldTable) -> Arc<Queue> {
        Arc::new(Queue::new("/", "q", false, None, false, args))
    }
    fn queue() -> Arc<Queue> {
        queue_with(FieldTable::default())
    }
    fn msg() -> Arc<Message> {
        Arc::new(Message::new(
            "",
            "q",
            Bytes::new(),
            Bytes::from_static(b"x"),
        ))
    }
    fn consumer(tag: &str, prefetch: u32, sink: Arc<Recorder>) -> Consumer {
        Consumer {
            tag: tag.into(),
            connection: 1,
            channel: 1,
            no_ack: false,
            exclusive: false,
            priority: 0,
            credit: Arc::new(Credit::new(prefetch)),
            channel_credit: Arc::new(Credit::new(0)),
            sink,
            arguments: Default::default(),
        }
    }
    fn tags(sink: &Recorder) -> Vec<String> {
        sink.got
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _, _)| t.to_string())
            .collect()
    }

    #[test]
    fn round_robin_with_prefetch() {
        let q = queue();
        let sink = Arc::new(Recorder::default());
        let a = consumer("a", 2, sink.clone());
        let b = consumer("b", 2, sink.clone());
        q.add_consumer(a.clone()).unwrap();
        q.add_consumer(b).unwrap();
        for _ in 0..5 {
            q.publish(msg()).unwrap();
        }
        assert_eq!(tags(&sink), vec!["a", "b", "a", "b"]);
        assert_eq!(q.message_count(), 1);
        assert_eq!(q.unacked_count(), 4);
        assert_eq!(q.snapshot().unacked_bytes, 4);
        // Settling one of a's messages lets the fifth go to a.
        a.credit.give(1);
        let first = sink.kept.lock().unwrap()[0].clone();
        q.settle(&[first]);
        assert_eq!(q.snapshot().unacked_bytes, 3);
        q.dispatch();
        assert_eq!(sink.got.lock().unwrap().len(), 5);
        assert_eq!(q.snapshot().unacked_bytes, 4);
        assert_eq!(q.message_count(), 0);
    }

    #[test]
    fn consumer_priority_wins_while_it_has_credit() {
        let q = queue();
        let sink = Arc::new(Recorder::default());
        let mut high = consumer("high", 2, sink.clone());
        high.priority = 10;
        q.add_consumer(consumer("low", 0, sink.clone())).unwrap();
        q.add_consumer(high).unwrap();
        for _ in 0..4 {
            q.publish(msg()).unwrap();
        }
        assert_eq!(tags(&sink), vec!["high", "high", "low", "low"]);
    }

    #[test]
    fn single_active_consumer_fails_over() {
        let mut args = FieldTable::default();
        args.insert(
            "x-single-active-consumer".into(),
            amq_protocol::types::AMQPValue::Boolean(true),
        );
        let q = queue_with(args);
        let sink = Arc::new(Recorder::default());
        let first = consumer("first", 1, sink.clone());
        q.add_consumer(first.clone()).unwrap();
        q.add_consumer(consumer("second", 0, sink.clone())).unwrap();
        for _ in 0..3 {
            q.publish(msg()).unwrap();
        }
        assert_eq!(tags(&sink), vec!["first"]);
        // The active consumer leaves holding an unacked message: the next one takes over
        // only once that message is settled, and then starts with it.
        q.remove_consumer(1, 1, "first", true);
        assert_eq!(tags(&sink), vec!["first"]);
        let (_, seq0, _) = sink.got.lock().unwrap()[0].clone();
        first.credit.give(1);
        q.requeue(
            vec![QueuedMessage {
                seq: seq0,
                message: msg(),
                redelivered: false,
                loc: None,
                priority: 0,
                expires_at: 0,
            }],
            true,
        );
        let got = sink.got.lock().unwrap().clone();
        let order: Vec<(String, u64, bool)> = got
            .iter()
            .map(|(t, s, r)| (t.to_string(), *s, *r))
            .collect();
        assert_eq!(
            order,
            vec![
                ("first".to_string(), 0, false),
                ("second".to_string(), 0, true),
                ("second".to_string(), 1, false),
                ("second".to_string(), 2, false),
            ]
        );
    }

    #[test]
    fn requeue_redelivers_in_original_order() {
        let q = queue();
        for _ in 0..3 {
            q.publish(msg()).unwrap();
        }
        let (m0, left) = q.get(false).unwrap();
        assert_eq!(left, 2);
        let (m1, _) = q.get(false).unwrap();
        q.requeue(vec![m1, m0], true);
        assert_eq!(q.unacked_count(), 0);
        let (first, _) = q.get(true).unwrap();
        assert_eq!(first.seq, 0);
        assert!(first.redelivered);
        let (second, _) = q.get(true).unwrap();
        assert_eq!(second.seq, 1);
        let (third, _) = q.get(true).unwrap();
        assert!(!third.redelivered);
    }

    #[test]
    fn max_length_drop_head_and_reject_publish() {
        let mut args = FieldTable::default();
        args.insert(
            "x-max-length".into(),
            amq_protocol::types::AMQPValue::LongInt(2),
        );
        let q = queue_with(args.clone());
        for _ in 0..4 {
            assert!(!q.publish(msg()).unwrap().rejected);
        }
        assert_eq!(q.message_count(), 2);
        assert_eq!(q.get(true).unwrap().0.seq, 2);
        args.insert(
            "x-overflow".into(),
            amq_protocol::types::AMQPValue::LongString("reject-publish".into()),
        );
        let q = queue_with(args);
        let outcomes: Vec<bool> = (0..3).map(|_| q.publish(msg()).unwrap().rejected).collect();
        assert_eq!(outcomes, vec![false, false, true]);
        assert_eq!(q.get(true).unwrap().0.seq, 0);
    }

    #[test]
    fn expired_messages_are_not_delivered() {
        let mut args = FieldTable::default();
        args.insert(
            "x-message-ttl".into(),
            amq_protocol::types::AMQPValue::LongInt(1),
        );
        let q = queue_with(args);
        q.publish(msg()).unwrap();
        assert_eq!(q.message_count(), 1);
        q.tick(now_ms() + 10);
        assert_eq!(q.message_count(), 0);
    }

    #[test]
    fn exclusive_consumer_excludes_others() {
        let q = queue();
        let sink = Arc::new(Recorder::default());
        let mut ex = consumer("ex", 0, sink.clone());
        ex.exclusive = true;
        q.add_consumer(ex).unwrap();
        assert!(q.add_consumer(consumer("other", 0, sink.clone())).is_err());
        let q2 = queue();
        q2.add_consumer(consumer("first", 0, sink.clone())).unwrap();
        let mut ex2 = consumer("ex2", 0, sink);
        ex2.exclusive = true;
        assert!(q2.add_consumer(ex2).is_err());
    }

    #[test]
    fn paused_sink_gets_nothing_until_ready() {
        let q = queue();
        let sink = Arc::new(Recorder::default());
        sink.paused.store(true, Ordering::Relaxed);
        q.add_consumer(consumer("a", 0, sink.clone())).unwrap();
        q.publish(msg()).unwrap();
        assert!(sink.got.lock().unwrap().is_empty());
        sink.paused.store(false, Ordering::Relaxed);
        q.dispatch();
        assert_eq!(sink.got.lock().unwrap().len(), 1);
    }

    #[test]
    fn backlog_with_active_consumers_pauses_publishers() {
        let t = 1_000_000u64;
        // No consumers: a queue is a buffer and never pushes back.
        let q = queue();
        for _ in 0..=FLOW_BACKLOG {
            assert!(!q.publish_at(msg(), t).unwrap().pressure);
        }
        // A consumer that took a message at t and whose connection is now behind:
        // pressure once the backlog passes the limit, and not before.
        let q = queue();
        let sink = Arc::new(Recorder::default());
        q.add_consumer(consumer("a", 0, sink.clone())).unwrap();
        assert!(!q.publish_at(msg(), t).unwrap().pressure);
        assert_eq!(sink.got.lock().unwrap().len(), 1);
        sink.paused.store(true, Ordering::Relaxed);
        for _ in 0..FLOW_BACKLOG {
            assert!(!q.publish_at(msg(), t + 1).unwrap().pressure);
        }
        assert!(q.publish_at(msg(), t + 1).unwrap().pressure);
        assert!(q.under_pressure_at(t + 2));
        // A consumer that has taken nothing for FLOW_ACTIVE_MS is stuck, not slow: the
        // publisher goes on (the memory alarm is the limit then).
        assert!(!q.under_pressure_at(t + FLOW_ACTIVE_MS));
        assert!(!q.publish_at(msg(), t + FLOW_ACTIVE_MS).unwrap().pressure);
        // Once the consumer catches up the pressure is gone.
        sink.paused.store(false, Ordering::Relaxed);
        q.dispatch();
        assert!(!q.under_pressure_at(t + FLOW_ACTIVE_MS + 1));
        assert!(
            !q.publish_at(msg(), t + FLOW_ACTIVE_MS + 1)
                .unwrap()
                .pressure
        );
    }

    #[test]
    fn auto_delete_after_last_consumer_and_delete_cancels() {
        let q = Arc::new(Queue::new(
            "/",
            "q",
            false,
            None,
            true,
            FieldTable::default(),
        ));
        let sink = Arc::new(Recorder::default());
        q.add_consumer(consumer("a", 0, sink.clone())).unwrap();
        q.add_consumer(consumer("b", 0, sink.clone())).unwrap();
        assert_eq!(q.remove_consumer(1, 1, "a", true), Removed::Removed);
        assert_eq!(q.remove_consumer(1, 1, "zzz", true), Removed::NotFound);
        assert_eq!(q.remove_consumer(1, 1, "b", true), Removed::AutoDelete);
        let q = queue();
        q.add_consumer(consumer("c", 0, sink.clone())).unwrap();
        q.publish(msg()).unwrap();
        q.publish(msg()).unwrap();
        // c has unlimited credit: both delivered, none ready.
        assert_eq!(q.delete(), 0);
        assert_eq!(&*sink.cancelled.lock().unwrap()[0], "c");
        assert!(q.is_deleted());
    }
}
