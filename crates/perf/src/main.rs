//! `warren-perf`: a load generator for AMQP 0-9-1 brokers, modelled on RabbitMQ PerfTest
//! and lavinmqperf, used to compare Warren with RabbitMQ (`bench/compare.sh`,
//! `docs/performance.md`).
//!
//! It owns the client side of every benchmark: producers and consumers over
//! [lapin](https://docs.rs/lapin) (one connection and channel each), publish-to-deliver
//! latency from a timestamp in the first 8 bytes of each body, the broker's RSS and CPU
//! from `/proc/PID`, an idle-connection mode, a soak mode (thousands of consuming
//! connections plus publishers for minutes, see `soak`) and a start-up probe (those use
//! a small raw client built on `warren_codec`, see `rawconn`). It depends on the broker
//! crates only for that codec; it talks to any broker over TCP.
//!
//! ```text
//! warren-perf --uri amqp://guest:guest@127.0.0.1:5672/%2f -x 1 -y 1 -s 16 -a -z 10
//! warren-perf --uri amqp://guest:guest@127.0.0.1:5672/%2f --raw -x 1 -y 1 -s 16 -a -z 10
//! warren-perf --idle-connections 1000 --broker-pid 1234 -z 10
//! warren-perf --soak-connections 10000 -x 4 --soak-rate 5000 -s 1024 -q 10 -c 1000 --broker-pid 1234 -z 600
//! warren-perf --startup-probe --since-unix-ns "$(date +%s%N)"
//! warren-perf --latency-floor --rate 1000 -z 10
//! ```
//!
//! The last line of output is `JSON {...}` with every number.
//!
//! # Why lapin
//!
//! Measured on the 2-core development machine against Warren, 1 producer and 1 consumer,
//! auto-ack, 5 s: lapin 4.12 with a window of 256 publishes in flight sent 185k msg/s
//! (16 B) and 144k msg/s (1 KiB) and received 163k and 113k; amqprs 2.1.5 (publish
//! awaited per message, which only queues the frame for its writer task) sent 104k and
//! 80k and received 102k and 77k. lapin awaited one publish at a time manages only
//! 21k msg/s, because each publish waits for lapin's I/O thread to write it, hence
//! `--pipeline`. lapin is faster here and the workspace's tests already use it.
//!
//! # `--raw`
//!
//! lapin still costs more CPU per message than Warren does, so on a small machine a
//! lapin run measures the client. `--raw` swaps producers and consumers for a lean
//! client on `warren_codec` (see `raw`): publishes encoded 256 to a socket write,
//! deliveries decoded straight from a large read buffer. Same machine, scenario
//! `-x 1 -y 1 -s 16 -a -z 5` against Warren: lapin sent 181k-207k and received
//! 110k-138k msg/s with warren-perf at 1.40-1.45 cores and Warren at 0.46; raw sent
//! 402k-489k and received 361k-408k msg/s with warren-perf at 0.33-0.35 cores and
//! Warren at 1.35-1.40. The report and JSON are the same (`client` says which).
//! Publisher confirms work as in the lapin mode (`--confirm N`: at most N unconfirmed
//! per producer; see `raw` and `confirms`). `bench/compare.sh` uses `--raw` for its
//! message scenarios unless `CLIENT=lapin`.
//!
//! # `--latency-floor`
//!
//! The same latency measurement with no broker: producer → a bare TCP relay in a child
//! process (this binary, hidden flag `--relay-listen`) → consumer, at `--rate` (default
//! 1000 msg/s), with the raw client's pacing, clock and message layout (see `floor`).
//! On a small shared machine the tail of a broker's latency is mostly the machine's;
//! this is the floor to read it against. The JSON has `"mode": "latency-floor"` and
//! the same `result.latency` fields.

mod cli;
mod confirms;
mod error;
mod floor;
mod histogram;
mod idle;
mod procfs;
mod raw;
mod rawconn;
mod soak;
mod startup;
mod stats;
mod throughput;

use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use tracing_subscriber::EnvFilter;

use crate::cli::Cli;
use crate::error::PerfError;

/// The JSON line.
#[derive(Debug, Serialize)]
struct Output<'a, T: Serialize> {
    tool: &'static str,
    version: &'static str,
    client: &'static str,
    mode: &'static str,
    options: &'a Cli,
    result: Option<T>,
    error: Option<String>,
}

fn emit<T: Serialize>(cli: &Cli, mode: &'static str, result: Result<T, PerfError>) -> ExitCode {
    let (result, error, code) = match result {
        Ok(r) => (Some(r), None, ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("warren-perf: {e}");
            (None, Some(e.to_string()), ExitCode::FAILURE)
        }
    };
    let out = Output {
        tool: "warren-perf",
        version: env!("CARGO_PKG_VERSION"),
        client: match mode {
            "throughput" if cli.raw => "raw (warren_codec)",
            "soak" => "raw (warren_codec)",
            "latency-floor" => "bare TCP relay (no AMQP)",
            _ => "lapin 4",
        },
        mode,
        options: cli,
        result,
        error,
    };
    match serde_json::to_string(&out) {
        Ok(line) => println!("JSON {line}"),
        Err(e) => eprintln!("warren-perf: cannot serialise the report: {e}"),
    }
    code
}

async fn run(cli: Cli) -> ExitCode {
    if let Some(addr) = &cli.relay_listen {
        return floor::relay_main(addr).await;
    }
    if cli.latency_floor {
        let r = floor::run(&cli).await;
        let failed = match &r {
            Ok(r) => {
                floor::print_summary(r);
                !r.errors.is_empty()
            }
            Err(_) => true,
        };
        let code = emit(&cli, "latency-floor", r);
        return if failed { ExitCode::FAILURE } else { code };
    }
    if cli.startup_probe {
        let r = startup::run(&cli).await;
        if let Ok(r) = &r {
            println!(
                "first connection.open-ok after {:.1} ms ({} attempts)",
                r.startup_ms, r.attempts
            );
        }
        return emit(&cli, "startup", r);
    }
    if let Some(n) = cli.idle_connections {
        let r = idle::run(&cli, n).await;
        if let Ok(r) = &r {
            idle::print_summary(r);
        }
        return emit(&cli, "idle", r);
    }
    if let Some(n) = cli.soak_connections {
        let r = soak::run(&cli, n).await;
        let failed = match &r {
            Ok(r) => {
                soak::print_summary(r);
                r.error_count > 0 || r.close_errors > 0 || !r.all_delivered
            }
            Err(_) => true,
        };
        let code = emit(&cli, "soak", r);
        return if failed { ExitCode::FAILURE } else { code };
    }
    let r = throughput::run(&cli).await;
    let failed = match &r {
        Ok(r) => {
            throughput::print_summary(&cli, r);
            !r.errors.is_empty()
        }
        Err(_) => true,
    };
    let code = emit(&cli, "throughput", r);
    if failed {
        ExitCode::FAILURE
    } else {
        code
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,lapin=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = cli.validate() {
        eprintln!("warren-perf: {e}");
        return ExitCode::from(2);
    }
    let mut builder = if cli.relay_listen.is_some() {
        // The relay of --latency-floor stands in for a broker: a multi-threaded runtime
        // with a worker per core, as Warren's.
        tokio::runtime::Builder::new_multi_thread()
    } else if cli.threads == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cli.threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warren-perf: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}
