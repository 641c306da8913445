//! Single active consumer for streams (RabbitMQ 3.11+): the subscriptions that share a
//! name on one stream form a group, and only one of them, the active one, receives
//! chunks. The others wait and take over when it leaves.
//!
//! As RabbitMQ's coordinator does:
//! - on a plain stream (partition index -1) the first subscriber is active, and when it
//!   leaves the next one in order of arrival becomes active;
//! - on a super stream partition with index `i`, the active one is member
//!   `i mod n` of the `n` members, so a consumer group spreads the partitions over its
//!   members. When a member joins or leaves and the choice changes, the current active
//!   one is first told to step down (`consumer update`, active = false); once its client
//!   has answered, the new one is made active.
//!
//! The coordinator only decides; it tells each connection what to do through the
//! connection's event channel ([`Notice`]).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

/// A group: (vhost, stream, consumer name).
pub(crate) type GroupKey = (String, String, String);

/// What a connection is told about one of its subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    /// The subscription.
    pub subscription: u8,
    /// Whether it is now active.
    pub active: bool,
    /// It was active and must step down; when its client answers, the connection calls
    /// [`Groups::activate`].
    pub stepping_down: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Active,
    Waiting,
    /// Told to step down; waiting for its client's answer.
    Deactivating,
}

#[derive(Debug)]
struct Member {
    connection: u64,
    subscription: u8,
    status: Status,
    tell: mpsc::UnboundedSender<Notice>,
}

impl Member {
    fn is(&self, connection: u64, subscription: u8) -> bool {
        self.connection == connection && self.subscription == subscription
    }

    fn notify(&self, active: bool, stepping_down: bool) {
        let _ = self.tell.send(Notice {
            subscription: self.subscription,
            active,
            stepping_down,
        });
    }
}

#[derive(Debug)]
struct Group {
    partition_index: i64,
    members: Vec<Member>,
}

impl Group {
    /// The member that should be active.
    fn choice(&self) -> Option<usize> {
        if self.members.is_empty() {
            None
        } else if self.partition_index < 0 {
            Some(0)
        } else {
            Some((self.partition_index as usize) % self.members.len())
        }
    }

    fn find(&self, status: Status) -> Option<usize> {
        self.members.iter().position(|m| m.status == status)
    }

    /// Makes the right member active, stepping the current one down first if the choice
    /// moved (super stream partitions only: on a plain stream the active one stays).
    fn rebalance(&mut self) {
        if self.find(Status::Deactivating).is_some() {
            // Waiting for the former active one's answer.
            return;
        }
        let Some(want) = self.choice() else { return };
        match self.find(Status::Active) {
            Some(current) if current == want || self.partition_index < 0 => {}
            Some(current) => {
                self.members[current].status = Status::Deactivating;
                self.members[current].notify(false, true);
            }
            None => {
                self.members[want].status = Status::Active;
                self.members[want].notify(true, false);
            }
        }
    }
}

/// Every group of the broker.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    groups: Mutex<HashMap<GroupKey, Group>>,
}

impl Groups {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<GroupKey, Group>) -> T) -> T {
        let mut g = match self.groups.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut g)
    }

    /// Adds a subscription to its group; the coordinator tells it (through `tell`) when
    /// it becomes active.
    ///
    /// # Errors
    /// The group exists with another partition index (RabbitMQ refuses that too).
    pub(crate) fn register(
        &self,
        key: GroupKey,
        partition_index: i64,
        connection: u64,
        subscription: u8,
        tell: mpsc::UnboundedSender<Notice>,
    ) -> Result<(), ()> {
        self.with(|groups| {
            let group = groups.entry(key).or_insert_with(|| Group {
                partition_index,
                members: Vec::new(),
            });
            if group.partition_index != partition_index {
                return Err(());
            }
            group.members.push(Member {
                connection,
                subscription,
                status: Status::Waiting,
                tell,
            });
            group.rebalance();
            Ok(())
        })
    }

    /// Removes a subscription (unsubscribed, or its connection closed).
    pub(crate) fn unregister(&self, key: &GroupKey, connection: u64, subscription: u8) {
        self.with(|groups| {
            let Some(group) = groups.get_mut(key) else {
                return;
            };
            group.members.retain(|m| !m.is(connection, subscription));
            if group.members.is_empty() {
                groups.remove(key);
            } else {
                group.rebalance();
            }
        })
    }

    /// The member that was told to step down has answered: choose and notify the new
    /// active one.
    pub(crate) fn activate(&self, key: &GroupKey, connection: u64, subscription: u8) {
        self.with(|groups| {
            let Some(group) = groups.get_mut(key) else {
                return;
            };
            if let Some(m) = group
                .members
                .iter_mut()
                .find(|m| m.is(connection, subscription) && m.status == Status::Deactivating)
            {
                m.status = Status::Waiting;
            }
            group.rebalance();
        })
    }

    /// The members of a group with whether each is active, for listings and tests.
    #[cfg(test)]
    fn members(&self, key: &GroupKey) -> Vec<(u64, u8, bool)> {
        self.with(|groups| {
            groups.get(key).map_or_else(Vec::new, |g| {
                g.members
                    .iter()
                    .map(|m| (m.connection, m.subscription, m.status == Status::Active))
                    .collect()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> GroupKey {
        ("/".into(), "s".into(), "app".into())
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Notice>) -> Vec<Notice> {
        let mut v = Vec::new();
        while let Ok(n) = rx.try_recv() {
            v.push(n);
        }
        v
    }

    fn n(subscription: u8, active: bool, stepping_down: bool) -> Notice {
        Notice {
            subscription,
            active,
            stepping_down,
        }
    }

    #[test]
    fn plain_stream_first_is_active_then_next_in_order() {
        let g = Groups::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        g.register(key(), -1, 1, 0, tx.clone()).unwrap();
        g.register(key(), -1, 2, 0, tx.clone()).unwrap();
        g.register(key(), -1, 3, 0, tx.clone()).unwrap();
        assert_eq!(drain(&mut rx), vec![n(0, true, false)]);
        assert_eq!(
            g.members(&key()),
            vec![(1, 0, true), (2, 0, false), (3, 0, false)]
        );
        // A waiting member leaves: nothing changes.
        g.unregister(&key(), 3, 0);
        assert!(drain(&mut rx).is_empty());
        // The active one leaves: the next becomes active.
        g.unregister(&key(), 1, 0);
        assert_eq!(drain(&mut rx), vec![n(0, true, false)]);
        assert_eq!(g.members(&key()), vec![(2, 0, true)]);
        g.unregister(&key(), 2, 0);
        assert!(g.members(&key()).is_empty());
    }

    #[test]
    fn partition_moves_with_a_step_down() {
        let g = Groups::default();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        // Partition 1 of a super stream.
        g.register(key(), 1, 1, 5, tx1).unwrap();
        assert_eq!(drain(&mut rx1), vec![n(5, true, false)]);
        // A second member: 1 mod 2 = member 1, so the first steps down.
        g.register(key(), 1, 2, 7, tx2).unwrap();
        assert_eq!(drain(&mut rx1), vec![n(5, false, true)]);
        assert!(
            drain(&mut rx2).is_empty(),
            "activated only after the answer"
        );
        g.activate(&key(), 1, 5);
        assert_eq!(drain(&mut rx2), vec![n(7, true, false)]);
        assert_eq!(g.members(&key()), vec![(1, 5, false), (2, 7, true)]);
        // The active one leaves: the first is chosen again.
        g.unregister(&key(), 2, 7);
        assert_eq!(drain(&mut rx1), vec![n(5, true, false)]);
        // Another index for the same group is refused.
        let (tx3, _rx3) = mpsc::unbounded_channel();
        assert!(g.register(key(), 0, 3, 1, tx3).is_err());
    }

    #[test]
    fn member_told_to_step_down_leaving_unblocks_the_group() {
        let g = Groups::default();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        g.register(key(), 1, 1, 0, tx1).unwrap();
        g.register(key(), 1, 2, 0, tx2).unwrap();
        assert_eq!(drain(&mut rx1), vec![n(0, true, false), n(0, false, true)]);
        // Its connection closes instead of answering.
        g.unregister(&key(), 1, 0);
        assert_eq!(drain(&mut rx2), vec![n(0, true, false)]);
    }
}
