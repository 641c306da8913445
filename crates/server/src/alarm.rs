//! Resource alarms: when the broker's resident memory crosses the high watermark,
//! publishing connections are blocked (their sockets are no longer read) and clients
//! that advertise the `connection.blocked` capability are told so, as RabbitMQ does.
//! Consumers keep draining, which is what brings memory back down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

/// The memory alarm.
#[derive(Debug)]
pub struct Alarms {
    watermark_bytes: AtomicU64,
    state: watch::Sender<bool>,
}

impl Alarms {
    /// An alarm that fires when RSS reaches `watermark_bytes` (0 disables it).
    pub fn new(watermark_bytes: u64) -> Arc<Self> {
        let (state, _) = watch::channel(false);
        let a = Arc::new(Alarms {
            watermark_bytes: AtomicU64::new(watermark_bytes),
            state,
        });
        a.evaluate();
        a
    }

    /// Follows the alarm state (true = publishers blocked).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.state.subscribe()
    }

    /// Whether the alarm is on.
    pub fn is_on(&self) -> bool {
        *self.state.borrow()
    }

    /// The current watermark in bytes.
    pub fn watermark_bytes(&self) -> u64 {
        self.watermark_bytes.load(Ordering::Relaxed)
    }

    /// Changes the watermark at run time (like `rabbitmqctl
    /// set_vm_memory_high_watermark`) and re-evaluates at once.
    pub fn set_watermark_bytes(&self, bytes: u64) {
        self.watermark_bytes.store(bytes, Ordering::Relaxed);
        self.evaluate();
    }

    /// Samples memory use and raises or clears the alarm.
    pub fn evaluate(&self) {
        let watermark = self.watermark_bytes();
        let rss = rss_bytes();
        let on = watermark > 0 && rss.is_some_and(|r| r >= watermark);
        let was = *self.state.borrow();
        if on != was {
            if on {
                warn!(
                    rss = rss.unwrap_or(0),
                    watermark, "memory resource limit alarm set: blocking publishers"
                );
            } else {
                info!(
                    rss = rss.unwrap_or(0),
                    watermark, "memory resource limit alarm cleared: unblocking publishers"
                );
            }
            self.state.send_replace(on);
        }
    }
}

/// Re-evaluates the alarm every `interval` until the task is aborted.
pub async fn monitor(alarms: Arc<Alarms>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        alarms.evaluate();
    }
}

/// Resident set size of this process, from `/proc/self/statm` (Linux).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Physical memory of the machine, from `/proc/meminfo` (Linux).
pub fn total_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_follows_the_watermark() {
        let a = Alarms::new(1);
        if rss_bytes().is_none() {
            return; // not on Linux
        }
        assert!(a.is_on());
        let rx = a.subscribe();
        a.set_watermark_bytes(u64::MAX);
        assert!(!a.is_on());
        assert!(!*rx.borrow());
        a.set_watermark_bytes(0);
        assert!(!a.is_on());
        assert!(total_memory_bytes().unwrap_or(0) > 0);
    }
}
