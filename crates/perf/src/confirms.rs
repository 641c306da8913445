//! Publisher-confirm bookkeeping of the `--raw` producer.
//!
//! After `confirm.select` the broker numbers the channel's publishes 1, 2, 3, … and
//! settles each with `basic.ack` or `basic.nack`; `multiple` settles every tag up to and
//! including the one given. A broker may settle out of order (RabbitMQ does when the
//! messages went to different queues), so the tracker keeps one slot per tag from the
//! oldest unsettled one on, holding the publish timestamp until the tag is settled.

use std::collections::VecDeque;

/// Why a confirm could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    /// The broker settled a tag that was never published on this channel.
    #[error("confirm for delivery tag {tag}, but only {published} messages were published")]
    UnknownTag {
        /// The tag of the ack or nack.
        tag: u64,
        /// Messages published so far (the last tag handed out).
        published: u64,
    },
}

/// Delivery tags handed out and not yet settled, with their publish timestamps.
#[derive(Debug)]
pub struct ConfirmTracker {
    /// At most this many unsettled tags (`--confirm N`).
    window: usize,
    /// The tag of `slots[0]`.
    base: u64,
    /// The publish timestamp of tags `base..next_tag`; `None` once settled. The front
    /// slot is always unsettled (settled slots at the front are dropped at once).
    slots: VecDeque<Option<u64>>,
    /// `Some` slots in `slots`.
    outstanding: usize,
}

impl ConfirmTracker {
    /// A tracker for a channel that has just been put into confirm mode, allowing
    /// `window` (at least 1) unsettled messages.
    pub fn new(window: usize) -> Self {
        ConfirmTracker {
            window: window.max(1),
            base: 1,
            slots: VecDeque::with_capacity(window.clamp(1, 1 << 16)),
            outstanding: 0,
        }
    }

    /// How many more messages may be published before the window is full.
    pub fn room(&self) -> usize {
        self.window.saturating_sub(self.outstanding)
    }

    /// Messages published and not yet settled.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// The tag the next publish will get.
    pub fn next_tag(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// Records a publish made at `stamp` and returns its delivery tag. Call only when
    /// [`ConfirmTracker::room`] is positive; the bound is the caller's to keep.
    pub fn publish(&mut self, stamp: u64) -> u64 {
        let tag = self.next_tag();
        self.slots.push_back(Some(stamp));
        self.outstanding += 1;
        tag
    }

    /// Applies a `basic.ack` or `basic.nack` for `tag`: with `multiple`, every unsettled
    /// tag up to and including `tag` (tag 0 with `multiple`: every unsettled tag),
    /// otherwise `tag` alone. Calls `settled` with the publish timestamp of each newly
    /// settled tag and returns how many there were. Settling a tag twice settles nothing
    /// the second time.
    ///
    /// # Errors
    /// [`ConfirmError::UnknownTag`] if `tag` was never handed out; nothing is settled.
    pub fn settle(
        &mut self,
        tag: u64,
        multiple: bool,
        mut settled: impl FnMut(u64),
    ) -> Result<usize, ConfirmError> {
        let last = self.next_tag() - 1;
        if tag > last || (tag == 0 && !multiple) {
            return Err(ConfirmError::UnknownTag {
                tag,
                published: last,
            });
        }
        let upto = if tag == 0 { last } else { tag };
        let mut n = 0;
        if multiple {
            while self.base <= upto {
                let Some(slot) = self.slots.pop_front() else {
                    break;
                };
                self.base += 1;
                if let Some(stamp) = slot {
                    settled(stamp);
                    n += 1;
                }
            }
        } else if tag >= self.base {
            let i = (tag - self.base) as usize;
            if let Some(stamp) = self.slots[i].take() {
                settled(stamp);
                n = 1;
            }
        }
        self.outstanding -= n;
        // Keep the front slot unsettled, so a later `multiple` pops only what it settles.
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(window: usize, n: u64) -> ConfirmTracker {
        let mut t = ConfirmTracker::new(window);
        for i in 0..n {
            // Stamps 100, 101, ... so the tests can see which tags were settled.
            assert_eq!(t.publish(100 + i), i + 1);
        }
        t
    }

    fn settle(t: &mut ConfirmTracker, tag: u64, multiple: bool) -> Vec<u64> {
        let mut stamps = Vec::new();
        let n = t.settle(tag, multiple, |s| stamps.push(s)).unwrap();
        assert_eq!(n, stamps.len());
        stamps
    }

    #[test]
    fn tags_start_at_one_and_fill_the_window() {
        let t = published(4, 3);
        assert_eq!(t.next_tag(), 4);
        assert_eq!(t.outstanding(), 3);
        assert_eq!(t.room(), 1);
        let full = published(3, 3);
        assert_eq!(full.room(), 0);
    }

    #[test]
    fn multiple_ack_settles_everything_up_to_the_tag() {
        let mut t = published(10, 6);
        assert_eq!(settle(&mut t, 4, true), vec![100, 101, 102, 103]);
        assert_eq!(t.outstanding(), 2);
        assert_eq!(t.room(), 8);
        // Again up to 4: nothing left there.
        assert_eq!(settle(&mut t, 4, true), Vec::<u64>::new());
        assert_eq!(settle(&mut t, 6, true), vec![104, 105]);
        assert_eq!(t.outstanding(), 0);
        assert_eq!(t.room(), 10);
        assert_eq!(t.next_tag(), 7);
    }

    #[test]
    fn single_acks_out_of_order_then_multiple() {
        let mut t = published(10, 5);
        assert_eq!(settle(&mut t, 3, false), vec![102]);
        assert_eq!(settle(&mut t, 3, false), Vec::<u64>::new(), "duplicate ack");
        assert_eq!(t.outstanding(), 4);
        // Settling 1 moves the front to 2, the oldest unsettled tag.
        assert_eq!(settle(&mut t, 1, false), vec![100]);
        assert_eq!(t.outstanding(), 3);
        // multiple up to 4 settles 2 and 4, not 3 a second time.
        assert_eq!(settle(&mut t, 4, true), vec![101, 103]);
        assert_eq!(t.outstanding(), 1);
        assert_eq!(settle(&mut t, 5, false), vec![104]);
        assert_eq!(t.outstanding(), 0);
        // Publishing goes on with the next tag.
        assert_eq!(t.publish(200), 6);
        assert_eq!(settle(&mut t, 6, true), vec![200]);
    }

    #[test]
    fn tag_zero_with_multiple_settles_all() {
        let mut t = published(10, 3);
        assert_eq!(settle(&mut t, 0, true), vec![100, 101, 102]);
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn unknown_tags_are_errors_and_change_nothing() {
        let mut t = published(10, 3);
        assert_eq!(
            t.settle(4, true, |_| panic!("settled")),
            Err(ConfirmError::UnknownTag {
                tag: 4,
                published: 3
            })
        );
        assert!(t.settle(0, false, |_| panic!("settled")).is_err());
        assert_eq!(t.outstanding(), 3);
        let mut empty = ConfirmTracker::new(1);
        assert!(empty.settle(1, true, |_| {}).is_err());
    }

    #[test]
    fn window_bound_holds_across_partial_settles() {
        // Publish as the raw producer does: as many as there is room for, then settle
        // part of the window, alternating single and multiple acks.
        let mut t = ConfirmTracker::new(5);
        let mut next = 0u64;
        let mut settled = Vec::new();
        for round in 0..50u64 {
            for _ in 0..t.room() {
                t.publish(next);
                next += 1;
            }
            assert_eq!(t.outstanding(), 5);
            assert_eq!(t.room(), 0);
            let last = t.next_tag() - 1;
            if round % 2 == 0 {
                settled.extend(settle(&mut t, last - 1, false));
                assert_eq!(t.outstanding(), 4);
            } else {
                settled.extend(settle(&mut t, last - 2, true));
                assert!(t.outstanding() <= 2);
            }
        }
        settled.extend(settle(&mut t, 0, true));
        assert_eq!(t.outstanding(), 0);
        assert_eq!(t.next_tag(), next + 1);
        // Every publish settled exactly once.
        settled.sort_unstable();
        assert_eq!(settled, (0..next).collect::<Vec<_>>());
    }
}
