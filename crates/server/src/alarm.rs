//! Resource alarms: when the broker's resident memory crosses the high watermark, or the
//! free space of the data directory's file system falls below the disk limit, publishing
//! connections are blocked (their sockets are no longer read) and clients that advertise
//! the `connection.blocked` capability are told so, as RabbitMQ does. Consumers keep
//! draining, which is what brings memory back down and lets acks free disk space.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

/// Which resource alarms are set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlarmState {
    /// Resident memory at or above the high watermark.
    pub memory: bool,
    /// Free disk space below the limit.
    pub disk: bool,
}

impl AlarmState {
    /// Whether any alarm is set.
    pub fn any(self) -> bool {
        self.memory || self.disk
    }

    /// The `connection.blocked` reason RabbitMQ sends: "low on " and the alarms joined
    /// with " & ".
    pub fn reason(self) -> &'static str {
        match (self.memory, self.disk) {
            (true, true) => "low on memory & disk",
            (false, true) => "low on disk",
            _ => "low on memory",
        }
    }
}

/// The memory and disk alarms.
#[derive(Debug)]
pub struct Alarms {
    watermark_bytes: AtomicU64,
    disk_free_limit_bytes: AtomicU64,
    data_dir: std::path::PathBuf,
    state: watch::Sender<AlarmState>,
}

impl Alarms {
    /// Alarms that fire when RSS reaches `watermark_bytes`, or when the file system of
    /// `data_dir` has less than `disk_free_limit_bytes` available (0 disables either).
    pub fn new(
        watermark_bytes: u64,
        disk_free_limit_bytes: u64,
        data_dir: std::path::PathBuf,
    ) -> Arc<Self> {
        let (state, _) = watch::channel(AlarmState::default());
        let a = Arc::new(Alarms {
            watermark_bytes: AtomicU64::new(watermark_bytes),
            disk_free_limit_bytes: AtomicU64::new(disk_free_limit_bytes),
            data_dir,
            state,
        });
        a.evaluate();
        a
    }

    /// Changes the disk free-space limit at run time (like `rabbitmqctl
    /// set_disk_free_limit`) and re-evaluates at once.
    pub fn set_disk_free_limit_bytes(&self, bytes: u64) {
        self.disk_free_limit_bytes.store(bytes, Ordering::Relaxed);
        self.evaluate();
    }

    /// The current disk free-space limit in bytes.
    pub fn disk_free_limit_bytes(&self) -> u64 {
        self.disk_free_limit_bytes.load(Ordering::Relaxed)
    }

    /// Follows the alarm state (any alarm set = publishers blocked).
    pub fn subscribe(&self) -> watch::Receiver<AlarmState> {
        self.state.subscribe()
    }

    /// Whether the alarm is on.
    pub fn is_on(&self) -> bool {
        self.state.borrow().any()
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
        let memory = watermark > 0 && rss.is_some_and(|r| r >= watermark);
        let limit = self.disk_free_limit_bytes.load(Ordering::Relaxed);
        let free = if limit > 0 {
            available_bytes(&self.data_dir)
        } else {
            None
        };
        let disk = limit > 0 && free.is_some_and(|f| f < limit);
        let new = AlarmState { memory, disk };
        let on = new.any();
        let was = *self.state.borrow();
        if new != was {
            if on {
                warn!(
                    rss = rss.unwrap_or(0),
                    watermark,
                    disk_free = free.unwrap_or(0),
                    disk_free_limit = limit,
                    memory_alarm = memory,
                    disk_alarm = disk,
                    "resource limit alarm set: blocking publishers"
                );
            } else {
                info!(
                    rss = rss.unwrap_or(0),
                    disk_free = free.unwrap_or(0),
                    "resource limit alarm cleared: unblocking publishers"
                );
            }
            self.state.send_replace(new);
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

/// Space available to unprivileged users on the file system holding `path`.
pub fn available_bytes(path: &std::path::Path) -> Option<u64> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// File descriptors this process has open, from `/proc/self/fd` (Linux).
pub fn open_fds() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64)
}

/// This process's open-files limit, from `/proc/self/limits` (Linux).
pub fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
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
    fn disk_alarm_follows_the_free_space_limit() {
        let dir = std::env::temp_dir();
        let a = Alarms::new(0, u64::MAX, dir);
        assert!(
            a.is_on(),
            "no file system has u64::MAX bytes free (available: {:?}, {:?})",
            available_bytes(&std::env::temp_dir()),
            rustix::fs::statvfs(std::env::temp_dir()).map(|s| (s.f_bavail, s.f_frsize))
        );
        a.set_disk_free_limit_bytes(1);
        assert!(!a.is_on());
        assert!(available_bytes(&std::env::temp_dir()).unwrap_or(0) > 0);
    }

    #[test]
    fn alarm_follows_the_watermark() {
        let a = Alarms::new(1, 0, std::env::temp_dir());
        if rss_bytes().is_none() {
            return; // not on Linux
        }
        assert!(a.is_on());
        let rx = a.subscribe();
        a.set_watermark_bytes(u64::MAX);
        assert!(!a.is_on());
        assert!(!rx.borrow().any());
        a.set_watermark_bytes(0);
        assert!(!a.is_on());
        assert!(total_memory_bytes().unwrap_or(0) > 0);
    }
}
