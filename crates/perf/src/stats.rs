//! Counters and latency recorders shared by producers, consumers and the reporter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::histogram::Histogram;

/// Totals, incremented by producers and consumers, read by the reporter.
#[derive(Debug)]
pub struct Counters {
    /// The shared monotonic origin of every timestamp put into a message body.
    pub origin: Instant,
    /// The wall-clock time at `origin`, in nanoseconds since the Unix epoch. Timestamps
    /// are `origin_unix_ns + origin.elapsed()`: monotonic within the process, and
    /// comparable with those of another warren-perf process on the same machine (a
    /// queue filled by one run and drained by another).
    pub origin_unix_ns: u64,
    /// Messages handed to the socket by producers.
    pub published: AtomicU64,
    /// Publisher confirms received as basic.ack.
    pub confirmed: AtomicU64,
    /// Publisher confirms received as basic.nack.
    pub nacked: AtomicU64,
    /// Deliveries received by consumers.
    pub consumed: AtomicU64,
    /// Deliveries (lean client) whose producer sequence number was not above the
    /// previous one the same consumer got: reordering, meaningful with one producer.
    pub out_of_order: AtomicU64,
}

impl Counters {
    /// Zeroed counters with the origin set to now.
    pub fn new() -> Self {
        let origin = Instant::now();
        let origin_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Counters {
            origin,
            origin_unix_ns,
            published: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
        }
    }

    /// Now, in nanoseconds since the Unix epoch, from the monotonic clock (see
    /// [`Counters::origin_unix_ns`]).
    pub fn now_ns(&self) -> u64 {
        self.origin_unix_ns + self.origin.elapsed().as_nanos() as u64
    }

    /// A consistent-enough reading of every counter.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            published: self.published.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            nacked: self.nacked.load(Ordering::Relaxed),
            consumed: self.consumed.load(Ordering::Relaxed),
        }
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Snapshot {
    /// See [`Counters::published`].
    pub published: u64,
    /// See [`Counters::confirmed`].
    pub confirmed: u64,
    /// See [`Counters::nacked`].
    pub nacked: u64,
    /// See [`Counters::consumed`].
    pub consumed: u64,
}

impl Snapshot {
    /// `self - earlier`, counter by counter.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            published: self.published.saturating_sub(earlier.published),
            confirmed: self.confirmed.saturating_sub(earlier.confirmed),
            nacked: self.nacked.saturating_sub(earlier.nacked),
            consumed: self.consumed.saturating_sub(earlier.consumed),
        }
    }
}

/// One task's latency histograms: the current reporting interval and the whole run. One
/// per consumer (or producer, for confirm latency), so the mutex is never contended but
/// by the reporter once a second.
#[derive(Debug, Default)]
pub struct Recorder {
    inner: Mutex<(Histogram, Histogram)>,
}

impl Recorder {
    /// A fresh recorder, shareable.
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder::default())
    }

    /// Records one latency.
    pub fn record(&self, ns: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.record(ns);
        g.1.record(ns);
    }

    /// Adds the current interval into `out` and starts a new interval.
    pub fn take_interval(&self, out: &mut Histogram) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        out.merge(&g.0);
        g.0.clear();
    }

    /// Adds the whole run into `out`.
    pub fn add_total(&self, out: &mut Histogram) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        out.merge(&g.1);
    }
}

/// Latency percentiles, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 95th percentile.
    pub p95_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: u64,
}

impl From<&Histogram> for Percentiles {
    fn from(h: &Histogram) -> Self {
        Percentiles {
            count: h.count(),
            p50_ns: h.quantile(0.50),
            p95_ns: h.quantile(0.95),
            p99_ns: h.quantile(0.99),
            max_ns: h.max(),
            mean_ns: h.mean(),
        }
    }
}

/// Merges the current interval of every recorder.
pub fn take_intervals(recorders: &[Arc<Recorder>]) -> Histogram {
    let mut h = Histogram::default();
    for r in recorders {
        r.take_interval(&mut h);
    }
    h
}

/// Merges the whole run of every recorder.
pub fn totals(recorders: &[Arc<Recorder>]) -> Histogram {
    let mut h = Histogram::default();
    for r in recorders {
        r.add_total(&mut h);
    }
    h
}

/// Formats nanoseconds for people: `850 ns`, `12.3 µs`, `4.56 ms`, `1.20 s`.
pub fn human_ns(ns: u64) -> String {
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", f / 1e6)
    } else {
        format!("{:.2} s", f / 1e9)
    }
}

/// Formats bytes as MiB with one decimal.
pub fn human_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_intervals_reset_totals_do_not() {
        let r = Recorder::new();
        r.record(10);
        r.record(20);
        assert_eq!(take_intervals(std::slice::from_ref(&r)).count(), 2);
        r.record(30);
        assert_eq!(take_intervals(std::slice::from_ref(&r)).count(), 1);
        assert_eq!(totals(&[r]).count(), 3);
    }

    #[test]
    fn formats() {
        assert_eq!(human_ns(850), "850 ns");
        assert_eq!(human_ns(12_300), "12.3 µs");
        assert_eq!(human_ns(4_560_000), "4.56 ms");
        assert_eq!(human_mib(3 * 1024 * 1024), "3.0 MiB");
    }
}
