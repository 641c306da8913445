//! Ready messages held in memory only (transient queues).

use std::sync::Arc;

use super::ready::{Item, ReadyList};
use super::{QueueStore, SyncFile};
use crate::message::QueuedMessage;

impl Item for QueuedMessage {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn level(&self) -> usize {
        usize::from(self.priority)
    }
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

/// Ready messages held in memory.
#[derive(Debug)]
pub struct MemoryStore {
    ready: ReadyList<QueuedMessage>,
    bytes: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(1)
    }
}

impl MemoryStore {
    /// A store with `levels` priority levels (1 for a plain queue).
    pub fn new(levels: usize) -> Self {
        MemoryStore {
            ready: ReadyList::new(levels),
            bytes: 0,
        }
    }
}

impl QueueStore for MemoryStore {
    fn push(&mut self, message: QueuedMessage) -> std::io::Result<Option<Arc<SyncFile>>> {
        self.bytes += message.message.body.len() as u64;
        self.ready.push_back(message);
        Ok(None)
    }

    fn pop(&mut self) -> Option<QueuedMessage> {
        let m = self.ready.pop_front()?;
        self.bytes -= m.message.body.len() as u64;
        Some(m)
    }

    fn pop_expired(&mut self, now_ms: u64) -> Option<QueuedMessage> {
        let m = self.ready.pop_expired(now_ms)?;
        self.bytes -= m.message.body.len() as u64;
        Some(m)
    }

    fn next_expiry(&self) -> Option<u64> {
        self.ready.next_expiry()
    }

    fn requeue(&mut self, mut messages: Vec<QueuedMessage>) {
        messages.sort_by_key(|m| std::cmp::Reverse(m.seq));
        for m in messages {
            self.bytes += m.message.body.len() as u64;
            self.ready.insert_by_seq(m);
        }
    }

    fn len(&self) -> usize {
        self.ready.len()
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn purge(&mut self) -> usize {
        let n = self.ready.len();
        self.ready.drain();
        self.bytes = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::Bytes;

    fn qm(seq: u64) -> QueuedMessage {
        QueuedMessage {
            seq,
            message: Arc::new(Message::new(
                "",
                "q",
                Bytes::new(),
                Bytes::from(vec![0u8; 3]),
            )),
            redelivered: false,
            loc: None,
            priority: 0,
            expires_at: 0,
        }
    }

    #[test]
    fn requeue_restores_original_positions() {
        let mut s = MemoryStore::default();
        for i in 0..6 {
            s.push(qm(i)).unwrap();
        }
        let taken: Vec<_> = (0..4).filter_map(|_| s.pop()).collect();
        assert_eq!(s.len(), 2);
        // Put back 1 and 3 (out of order), then 0 and 2.
        s.requeue(vec![taken[3].clone(), taken[1].clone()]);
        s.requeue(vec![taken[2].clone(), taken[0].clone()]);
        let order: Vec<u64> = std::iter::from_fn(|| s.pop()).map(|m| m.seq).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn purge_counts() {
        let mut s = MemoryStore::default();
        s.push(qm(0)).unwrap();
        s.push(qm(1)).unwrap();
        assert_eq!(s.bytes(), 6);
        assert_eq!(s.purge(), 2);
        assert!(s.is_empty());
    }
}
