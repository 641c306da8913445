//! A queue: its ready messages (behind [`QueueStore`]), its consumers and the count of
//! messages delivered but not yet settled.
//!
//! Responsibilities: ordering (FIFO, with requeued messages back at their original
//! position), round-robin dispatch to consumers that have credit, exclusive consumers,
//! and telling consumers when the queue goes away. Collaborators: the server's
//! [`DeliverySink`] per channel, and [`Credit`] windows that the server settles.
//!
//! All state sits behind one short mutex; no `.await` happens under it, and a queue never
//! takes another lock while holding it except the sink's non-blocking `deliver`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use amq_protocol::types::FieldTable;

use crate::credit::Credit;
use crate::message::{Message, QueuedMessage};
use crate::store::{MemoryStore, QueueStore, Settled};
use crate::ConnectionId;

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

/// Where a queue sends deliveries for the consumers of one channel. Implemented by the
/// server; every method must return at once (no blocking).
pub trait DeliverySink: Send + Sync + std::fmt::Debug {
    /// Whether the channel can take another delivery now (flow, socket backlog).
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
    /// Per-consumer prefetch window.
    pub credit: Arc<Credit>,
    /// Per-channel prefetch window (basic.qos global).
    pub channel_credit: Arc<Credit>,
    /// Where deliveries go.
    pub sink: Arc<dyn DeliverySink>,
}

impl Consumer {
    fn can_take(&self) -> bool {
        (self.no_ack || (self.credit.has_room() && self.channel_credit.has_room()))
            && self.sink.ready()
    }
}

#[derive(Debug)]
struct State {
    store: Box<dyn QueueStore>,
    next_seq: u64,
    unacked: usize,
    consumers: Vec<Consumer>,
    next_consumer: usize,
    had_consumers: bool,
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
    deleted: AtomicBool,
    state: Mutex<State>,
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
    /// A new, empty, in-memory queue.
    pub fn new(
        vhost: &str,
        name: &str,
        durable: bool,
        exclusive_owner: Option<ConnectionId>,
        auto_delete: bool,
        arguments: FieldTable,
    ) -> Self {
        Self::with_store(
            vhost,
            name,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            Box::new(MemoryStore::default()),
        )
    }

    /// A queue over the given store (which may hold recovered messages).
    pub fn with_store(
        vhost: &str,
        name: &str,
        durable: bool,
        exclusive_owner: Option<ConnectionId>,
        auto_delete: bool,
        arguments: FieldTable,
        store: Box<dyn QueueStore>,
    ) -> Self {
        let next_seq = store.next_seq();
        Queue {
            name: name.to_string(),
            vhost: vhost.to_string(),
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            deleted: AtomicBool::new(false),
            state: Mutex::new(State {
                store,
                next_seq,
                unacked: 0,
                consumers: Vec::new(),
                next_consumer: 0,
                had_consumers: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be our bug; keep serving the queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the queue has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Adds a message and delivers what can be delivered. Returns the file to sync
    /// before confirming the publish, if the message was written to disk.
    ///
    /// # Errors
    /// Writing a persistent message failed; the message is still queued (in memory), but
    /// must not be confirmed.
    pub fn publish(
        self: &Arc<Self>,
        message: Arc<Message>,
    ) -> std::io::Result<Option<Arc<std::fs::File>>> {
        let mut st = self.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let r = st.store.push(QueuedMessage {
            seq,
            message,
            redelivered: false,
            loc: None,
        });
        self.dispatch_locked(&mut st);
        r
    }

    /// Delivers ready messages to consumers with credit, round-robin.
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.lock();
        self.dispatch_locked(&mut st);
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut State) {
        while !st.store.is_empty() {
            let n = st.consumers.len();
            if n == 0 {
                return;
            }
            let start = st.next_consumer % n;
            let Some(idx) = (0..n)
                .map(|i| (start + i) % n)
                .find(|&i| st.consumers[i].can_take())
            else {
                return;
            };
            let Some(message) = st.store.pop() else {
                return;
            };
            st.next_consumer = (idx + 1) % n;
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
            if delivery.no_ack {
                st.store.settle(&[Settled::from(&delivery.message)]);
            } else {
                st.unacked += 1;
                st.store.delivered(&delivery.message);
            }
            sink.deliver(delivery);
        }
        st.store.flush();
    }

    /// `basic.get`: takes the head message. Returns it with the number of messages left.
    pub fn get(&self, no_ack: bool) -> Option<(QueuedMessage, u32)> {
        let mut st = self.lock();
        let m = st.store.pop()?;
        if no_ack {
            st.store.settle(&[Settled::from(&m)]);
        } else {
            st.unacked += 1;
            st.store.delivered(&m);
            st.store.flush();
        }
        Some((m, st.store.len() as u32))
    }

    /// Settles delivered messages (ack, or reject without requeue).
    pub fn settle(&self, messages: &[Settled]) {
        let mut st = self.lock();
        st.unacked = st.unacked.saturating_sub(messages.len());
        if !self.is_deleted() {
            st.store.settle(messages);
        }
    }

    /// Puts delivered messages back, marked redelivered, and delivers again.
    /// `counted` says whether they were counted as unacknowledged (not for no-ack
    /// deliveries that never reached the client).
    pub fn requeue(self: &Arc<Self>, mut messages: Vec<QueuedMessage>, counted: bool) {
        if messages.is_empty() {
            return;
        }
        let mut st = self.lock();
        if counted {
            st.unacked = st.unacked.saturating_sub(messages.len());
            for m in &mut messages {
                m.redelivered = true;
            }
        }
        if self.is_deleted() {
            return;
        }
        st.store.requeue(messages);
        self.dispatch_locked(&mut st);
    }

    /// Attaches a consumer.
    ///
    /// # Errors
    /// [`crate::Error::ExclusiveConsumer`] if an exclusive consumer is involved.
    pub fn add_consumer(self: &Arc<Self>, consumer: Consumer) -> Result<(), crate::Error> {
        let mut st = self.lock();
        if (consumer.exclusive && !st.consumers.is_empty())
            || st.consumers.iter().any(|c| c.exclusive)
        {
            return Err(crate::Error::ExclusiveConsumer {
                vhost: self.vhost.clone(),
                queue: self.name.clone(),
            });
        }
        st.consumers.push(consumer);
        st.had_consumers = true;
        self.dispatch_locked(&mut st);
        Ok(())
    }

    /// Detaches a consumer.
    pub fn remove_consumer(&self, connection: ConnectionId, channel: u16, tag: &str) -> Removed {
        let mut st = self.lock();
        let before = st.consumers.len();
        st.consumers
            .retain(|c| !(c.connection == connection && c.channel == channel && &*c.tag == tag));
        if st.consumers.len() == before {
            return Removed::NotFound;
        }
        if st.consumers.is_empty() && self.auto_delete && st.had_consumers {
            Removed::AutoDelete
        } else {
            Removed::Removed
        }
    }

    /// Ready messages.
    pub fn message_count(&self) -> u32 {
        self.lock().store.len() as u32
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
        self.lock().store.purge() as u32
    }

    /// Marks the queue deleted, drops its messages and tells its consumers. Returns the
    /// number of ready messages it had.
    pub fn delete(&self) -> u32 {
        self.deleted.store(true, Ordering::Release);
        let (count, consumers) = {
            let mut st = self.lock();
            let count = st.store.len() as u32;
            st.store.destroy();
            (count, std::mem::take(&mut st.consumers))
        };
        for c in consumers {
            c.sink.cancelled(c.channel, c.tag.clone());
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Mutex as StdMutex;

    #[derive(Debug, Default)]
    struct Recorder {
        got: StdMutex<Vec<(Arc<str>, u64, bool)>>,
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
        }
        fn cancelled(&self, _channel: u16, tag: Arc<str>) {
            self.cancelled.lock().unwrap().push(tag);
        }
    }

    fn queue() -> Arc<Queue> {
        Arc::new(Queue::new(
            "/",
            "q",
            false,
            None,
            false,
            FieldTable::default(),
        ))
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
            credit: Arc::new(Credit::new(prefetch)),
            channel_credit: Arc::new(Credit::new(0)),
            sink,
        }
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
        let got = sink.got.lock().unwrap().clone();
        let tags: Vec<&str> = got.iter().map(|(t, _, _)| &**t).collect();
        assert_eq!(tags, vec!["a", "b", "a", "b"]);
        assert_eq!(q.message_count(), 1);
        assert_eq!(q.unacked_count(), 4);
        // Settling one of a's messages lets the fifth go to a.
        a.credit.give(1);
        q.settle(&[Settled { seq: 0, loc: None }]);
        q.dispatch();
        assert_eq!(sink.got.lock().unwrap().len(), 5);
        assert_eq!(q.message_count(), 0);
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
        assert_eq!(q.remove_consumer(1, 1, "a"), Removed::Removed);
        assert_eq!(q.remove_consumer(1, 1, "zzz"), Removed::NotFound);
        assert_eq!(q.remove_consumer(1, 1, "b"), Removed::AutoDelete);
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
