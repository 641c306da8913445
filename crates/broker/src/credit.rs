//! Delivery credit: how many unacknowledged messages a consumer (or a whole channel,
//! for `basic.qos global=true`) may hold. The queue takes credit when it delivers and the
//! channel gives it back on ack, reject, nack or requeue.

use std::sync::atomic::{AtomicU32, Ordering};

/// A prefetch window. A limit of 0 means unlimited.
#[derive(Debug, Default)]
pub struct Credit {
    limit: AtomicU32,
    used: AtomicU32,
}

impl Credit {
    /// A window of `limit` messages (0 = unlimited).
    pub fn new(limit: u32) -> Self {
        Credit {
            limit: AtomicU32::new(limit),
            used: AtomicU32::new(0),
        }
    }

    /// Changes the window.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// The window size.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Whether one more message may be delivered.
    pub fn has_room(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        limit == 0 || self.used.load(Ordering::Relaxed) < limit
    }

    /// Records one delivered, unacknowledged message.
    pub fn take(&self) {
        self.used.fetch_add(1, Ordering::Relaxed);
    }

    /// Records `n` messages settled.
    pub fn give(&self, n: u32) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Messages currently held.
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::Credit;

    #[test]
    fn window() {
        let c = Credit::new(2);
        assert!(c.has_room());
        c.take();
        c.take();
        assert!(!c.has_room());
        c.give(1);
        assert!(c.has_room());
        c.give(5);
        assert_eq!(c.used(), 0);
        let unlimited = Credit::new(0);
        for _ in 0..1000 {
            unlimited.take();
        }
        assert!(unlimited.has_room());
    }
}
