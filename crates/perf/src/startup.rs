//! Start-up probe: how long from the broker's process start until a client completes the
//! handshake (`connection.open-ok`). The probe connects every millisecond until one
//! attempt succeeds and reports the moment (`connected_unix_ns`). The caller either
//! passes the broker's start time as `--since-unix-ns`, or (as `bench/compare.sh` does)
//! starts the probe first, notes the time just before it spawns the broker, and
//! subtracts; that way the probe's own start-up is not counted.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::cli::Cli;
use crate::error::PerfError;
use crate::rawconn::{RawConnection, Target};

/// What the probe measured.
#[derive(Debug, Clone, Serialize)]
pub struct StartupReport {
    /// Milliseconds from `--since-unix-ns` (or the probe's start) to connection.open-ok.
    pub startup_ms: f64,
    /// Connection attempts made, the successful one included.
    pub attempts: u64,
    /// When connection.open-ok arrived, in nanoseconds since the Unix epoch, so a caller
    /// can measure from a moment it notes after starting the probe.
    pub connected_unix_ns: u128,
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Runs the probe.
///
/// # Errors
/// No attempt succeeded within `--startup-timeout` seconds.
pub async fn run(cli: &Cli) -> Result<StartupReport, PerfError> {
    let target = Target::parse(&cli.uri)?;
    let since = cli.since_unix_ns.unwrap_or_else(unix_ns);
    let give_up = Instant::now() + Duration::from_secs_f64(cli.startup_timeout.max(0.0));
    let mut attempts = 0u64;
    let mut last_error = String::from("no attempt made");
    while Instant::now() < give_up {
        attempts += 1;
        match tokio::time::timeout(Duration::from_secs(5), RawConnection::open(&target, false))
            .await
        {
            Ok(Ok(conn)) => {
                let connected_unix_ns = unix_ns();
                let startup_ms = connected_unix_ns.saturating_sub(since) as f64 / 1e6;
                let _ = conn.close().await;
                return Ok(StartupReport {
                    startup_ms,
                    attempts,
                    connected_unix_ns,
                });
            }
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "handshake timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(PerfError::Timeout(format!(
        "no successful connection after {attempts} attempts; last error: {last_error}"
    )))
}
