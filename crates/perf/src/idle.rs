//! Idle-connection mode: how much broker memory one open connection with one channel
//! costs. Opens N connections (64 handshakes at a time), waits `--idle-settle` seconds,
//! holds them for `--duration` seconds sampling the broker's RSS, closes them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::cli::Cli;
use crate::error::PerfError;
use crate::procfs;
use crate::rawconn::{RawConnection, Target};
use crate::stats::human_mib;

/// Handshakes in flight at once while opening.
const OPEN_CONCURRENCY: usize = 64;

/// What the idle-connection mode measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Connections opened (each with one channel).
    pub connections: usize,
    /// Seconds to open them all.
    pub open_seconds: f64,
    /// Broker RSS before the first connection.
    pub rss_before_bytes: Option<u64>,
    /// Broker RSS after `--idle-settle`.
    pub rss_settled_bytes: Option<u64>,
    /// Broker RSS at the end of the hold, with every connection still open.
    pub rss_after_bytes: Option<u64>,
    /// (rss_after − rss_before) / connections.
    pub per_connection_bytes: Option<f64>,
    /// Connections the broker closed while they were held, and other failures.
    pub errors: Vec<String>,
}

/// Runs the mode.
///
/// # Errors
/// A connection could not be opened.
pub async fn run(cli: &Cli, n: usize) -> Result<IdleReport, PerfError> {
    let target = Target::parse(&cli.uri)?;
    let rss = || cli.broker_pid.and_then(|p| procfs::rss_bytes(p).ok());
    let rss_before = rss();
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let started = Instant::now();
    let mut opening = JoinSet::new();
    for _ in 0..n {
        let (target, permits) = (target.clone(), permits.clone());
        opening.spawn(async move {
            let _permit = permits.acquire_owned().await;
            tokio::time::timeout(Duration::from_secs(30), RawConnection::open(&target, true))
                .await
                .map_err(|_| PerfError::Timeout("opening an idle connection".into()))?
        });
    }
    let mut holders = JoinSet::new();
    let mut open_error = None;
    while let Some(r) = opening.join_next().await {
        match r {
            Ok(Ok(conn)) => {
                holders.spawn(conn.hold(stop_rx.clone()));
            }
            Ok(Err(e)) => {
                open_error.get_or_insert(e);
            }
            Err(e) => {
                open_error.get_or_insert(PerfError::Protocol(format!("open task: {e}")));
            }
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    if let Some(e) = open_error {
        let _ = stop_tx.send(true);
        while holders.join_next().await.is_some() {}
        return Err(e);
    }
    println!("opened {n} connections with one channel each in {open_seconds:.2} s");

    tokio::time::sleep(Duration::from_secs_f64(cli.idle_settle.max(0.0))).await;
    let rss_settled = rss();
    let hold_until = Instant::now() + Duration::from_secs_f64(cli.duration);
    while Instant::now() < hold_until {
        let left = hold_until.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        if !cli.quiet {
            if let Some(r) = rss() {
                println!("holding {n} connections, broker RSS {}", human_mib(r));
            }
        }
    }
    let rss_after = rss();
    let _ = stop_tx.send(true);
    let mut errors = Vec::new();
    while let Some(r) = holders.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(e) => errors.push(format!("hold task: {e}")),
        }
    }
    errors.truncate(20);
    let per_connection_bytes = match (rss_before, rss_after) {
        (Some(b), Some(a)) if n > 0 => Some((a as f64 - b as f64) / n as f64),
        _ => None,
    };
    Ok(IdleReport {
        connections: n,
        open_seconds,
        rss_before_bytes: rss_before,
        rss_settled_bytes: rss_settled,
        rss_after_bytes: rss_after,
        per_connection_bytes,
        errors,
    })
}

/// Prints the summary.
pub fn print_summary(r: &IdleReport) {
    if let (Some(b), Some(s), Some(a)) =
        (r.rss_before_bytes, r.rss_settled_bytes, r.rss_after_bytes)
    {
        println!(
            "broker RSS before {}, settled {}, after hold {}",
            human_mib(b),
            human_mib(s),
            human_mib(a)
        );
    }
    if let Some(p) = r.per_connection_bytes {
        println!(
            "broker memory per idle connection (one channel): {:.1} KiB",
            p / 1024.0
        );
    }
    for e in &r.errors {
        println!("error: {e}");
    }
}
