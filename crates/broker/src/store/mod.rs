//! Where a queue keeps its ready messages. The queue talks to its contents only through
//! [`QueueStore`]: [`SegmentStore`] (append-only segment files with a checksum per
//! record, bodies paged out beyond a per-queue cache and the global [`PageBudget`]) for
//! every queue of a broker with a data directory (non-durable queues in a scratch area
//! that is never recovered), [`MemoryStore`] for brokers without one. [`Persister`]
//! groups the fsyncs that publisher confirms wait for.

mod memory;
mod persister;
mod ready;
mod segment;

use std::fmt::Debug;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use memory::MemoryStore;
pub use persister::{FsyncPolicy, Persister, SyncFile};
pub(crate) use segment::{
    decode_stream_records, encode_stream_record, open_stream_segment, walk_stream_segment,
};
pub use segment::{SegmentConfig, SegmentStore};

use crate::message::QueuedMessage;

/// The message bodies all queue stores together may keep in memory; beyond it (or a
/// queue's own `cache_bytes`), bodies go to disk and are read back when delivered.
#[derive(Debug)]
pub struct PageBudget {
    limit: u64,
    used: AtomicU64,
}

impl PageBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(PageBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// No global limit (each store's own `cache_bytes` still applies).
    pub fn unlimited() -> Arc<Self> {
        Self::new(u64::MAX)
    }

    /// Takes `n` bytes if they fit.
    pub fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok()
    }

    /// Takes `n` bytes whether or not they fit (bodies that must stay in memory).
    pub fn force_take(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives back `n` bytes.
    pub fn give(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Bytes of bodies held in memory by all stores.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Where a persisted message lives on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLoc {
    /// Segment number.
    pub segment: u32,
    /// Offset of the record in the segment file.
    pub offset: u64,
    /// Record length in bytes, header included.
    pub len: u32,
}

/// A delivered message that is now settled for good (acked, or dropped).
#[derive(Debug, Clone, Copy)]
pub struct Settled {
    /// Its sequence number.
    pub seq: u64,
    /// Its record, if it was persisted.
    pub loc: Option<DiskLoc>,
}

impl From<&QueuedMessage> for Settled {
    fn from(m: &QueuedMessage) -> Self {
        Settled {
            seq: m.seq,
            loc: m.loc,
        }
    }
}

/// The ready messages of one queue, in order of `seq`.
pub trait QueueStore: Send + Debug {
    /// Appends a newly published message. Returns the file that must be synced before
    /// the publish is confirmed, if the message was written to disk. On a write error the
    /// message is still kept, in memory only, and the error is returned.
    ///
    /// # Errors
    /// The disk write failed.
    fn push(&mut self, message: QueuedMessage) -> std::io::Result<Option<Arc<SyncFile>>>;
    /// Takes the message at the head (highest priority first).
    fn pop(&mut self) -> Option<QueuedMessage>;
    /// Takes an expired message from the head of a priority level, if any.
    fn pop_expired(&mut self, now_ms: u64) -> Option<QueuedMessage>;
    /// The earliest expiry (epoch ms) among the heads, if any.
    fn next_expiry(&self) -> Option<u64>;
    /// Records that a message taken by `pop` was handed to a client that will ack it
    /// (so that it comes back marked redelivered after a restart).
    fn delivered(&mut self, _message: &QueuedMessage) {}
    /// Puts previously taken messages back at their original positions (by `seq`).
    fn requeue(&mut self, messages: Vec<QueuedMessage>);
    /// Records that messages taken earlier are settled for good (acked or dropped). The
    /// record may stay buffered until [`QueueStore::flush`].
    fn settle(&mut self, _messages: &[Settled]) {}
    /// Writes out buffered bookkeeping (delivery and settle marks).
    fn flush(&mut self) {}
    /// Writes out buffered message records too (they are otherwise written by the sync
    /// that confirms them, or when the buffer fills).
    fn write_buffered(&mut self) {
        self.flush();
    }
    /// Ready messages.
    fn len(&self) -> usize;
    /// Whether there are no ready messages.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Body bytes of ready messages.
    fn bytes(&self) -> u64;
    /// Drops every ready message; returns how many.
    fn purge(&mut self) -> usize;
    /// The sequence number the next published message should get (after recovery).
    fn next_seq(&self) -> u64 {
        0
    }
    /// The queue was deleted: remove what it keeps on disk.
    fn destroy(&mut self) {}
}
