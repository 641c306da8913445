//! The ordered list of ready messages shared by both stores: one FIFO per priority level
//! (a single level for queues without `x-max-priority`), ordered by sequence number so a
//! requeued message returns to its original position.

use std::collections::VecDeque;

/// What the list needs to know about an element.
pub(crate) trait Item {
    /// Position in publish order.
    fn seq(&self) -> u64;
    /// Priority level (already capped to the queue's maximum).
    fn level(&self) -> usize;
    /// Expiry as epoch milliseconds; 0 = never.
    fn expires_at(&self) -> u64;
}

#[derive(Debug)]
pub(crate) struct ReadyList<T> {
    levels: Vec<VecDeque<T>>,
    len: usize,
}

impl<T: Item> ReadyList<T> {
    pub(crate) fn new(levels: usize) -> Self {
        ReadyList {
            levels: (0..levels.max(1)).map(|_| VecDeque::new()).collect(),
            len: 0,
        }
    }

    fn slot(&self, t: &T) -> usize {
        t.level().min(self.levels.len() - 1)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push_back(&mut self, t: T) {
        let l = self.slot(&t);
        self.levels[l].push_back(t);
        self.len += 1;
    }

    /// The next message to deliver: the head of the highest non-empty level.
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let level = self.levels.iter_mut().rev().find(|l| !l.is_empty())?;
        let t = level.pop_front()?;
        self.len -= 1;
        Some(t)
    }

    /// Puts `t` back at its position by sequence number.
    pub(crate) fn insert_by_seq(&mut self, t: T) {
        let l = self.slot(&t);
        let level = &mut self.levels[l];
        if level.front().is_none_or(|f| f.seq() > t.seq()) {
            level.push_front(t);
        } else {
            let at = level.partition_point(|x| x.seq() < t.seq());
            level.insert(at, t);
        }
        self.len += 1;
    }

    /// Removes one expired message from the head of a level, if any (RabbitMQ expires
    /// messages when they reach the head of the queue).
    pub(crate) fn pop_expired(&mut self, now_ms: u64) -> Option<T> {
        for level in self.levels.iter_mut().rev() {
            if level
                .front()
                .is_some_and(|f| f.expires_at() != 0 && f.expires_at() <= now_ms)
            {
                self.len -= 1;
                return level.pop_front();
            }
        }
        None
    }

    /// Earliest expiry among the heads of the levels.
    pub(crate) fn next_expiry(&self) -> Option<u64> {
        self.levels
            .iter()
            .filter_map(|l| l.front().map(Item::expires_at))
            .filter(|e| *e != 0)
            .min()
    }

    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.len = 0;
        let mut out = Vec::new();
        for level in self.levels.iter_mut().rev() {
            out.extend(level.drain(..));
        }
        out
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.levels.iter().flat_map(|l| l.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct E(u64, usize, u64);
    impl Item for E {
        fn seq(&self) -> u64 {
            self.0
        }
        fn level(&self) -> usize {
            self.1
        }
        fn expires_at(&self) -> u64 {
            self.2
        }
    }

    #[test]
    fn priorities_then_fifo_and_requeue_position() {
        let mut r = ReadyList::new(3);
        r.push_back(E(0, 0, 0));
        r.push_back(E(1, 2, 0));
        r.push_back(E(2, 1, 0));
        r.push_back(E(3, 2, 0));
        r.push_back(E(4, 9, 0)); // capped to level 2
        let order: Vec<u64> = std::iter::from_fn(|| r.pop_front()).map(|e| e.0).collect();
        assert_eq!(order, vec![1, 3, 4, 2, 0]);
        r.push_back(E(5, 0, 0));
        r.insert_by_seq(E(2, 0, 0));
        r.insert_by_seq(E(3, 0, 0));
        let order: Vec<u64> = std::iter::from_fn(|| r.pop_front()).map(|e| e.0).collect();
        assert_eq!(order, vec![2, 3, 5]);
    }

    #[test]
    fn expiry_only_at_the_head() {
        let mut r = ReadyList::new(1);
        r.push_back(E(0, 0, 0));
        r.push_back(E(1, 0, 5));
        assert_eq!(r.pop_expired(10), None);
        assert_eq!(r.next_expiry(), None);
        r.pop_front();
        assert_eq!(r.next_expiry(), Some(5));
        assert_eq!(r.pop_expired(4), None);
        assert_eq!(r.pop_expired(5), Some(E(1, 0, 5)));
        assert_eq!(r.len(), 0);
    }
}
