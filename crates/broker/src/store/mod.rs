//! Where a queue keeps its ready messages. The queue talks to its contents only through
//! [`QueueStore`]: [`MemoryStore`] for transient queues, [`SegmentStore`] (append-only
//! segment files with a checksum per record, bodies paged out beyond a cache budget)
//! for durable ones. [`Persister`] groups the fsyncs that publisher confirms wait for.

mod memory;
mod persister;
mod ready;
mod segment;

use std::fmt::Debug;

use std::sync::Arc;

pub use memory::MemoryStore;
pub use persister::{FsyncPolicy, Persister, SyncFile};
pub use segment::{SegmentConfig, SegmentStore};

use crate::message::QueuedMessage;

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
