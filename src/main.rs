//! The `warren` binary: command line → configuration → tracing → server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use warren_server::Config;

/// glibc malloc serialises on per-arena locks when one thread frees what another
/// allocated (messages are built on the publisher's connection task and freed on the
/// consumer's): under load a fifth of the broker's CPU went to futex waits in malloc and
/// free. mimalloc frees cross-thread without a lock.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Warren: an AMQP 0-9-1 message broker, a drop-in replacement for RabbitMQ.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file. Default: ./config.toml if it exists, else built-in defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// AMQP listener address, e.g. 127.0.0.1:5672 (overrides the config file).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Data directory (overrides the config file).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn load_config(cli: &Cli) -> Result<Config, String> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => {
            let default = PathBuf::from("config.toml");
            if default.exists() {
                Config::load(&default).map_err(|e| e.to_string())?
            } else {
                Config::default()
            }
        }
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warren: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: log files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warren: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Install the signal handlers before the startup line is logged, so a SIGTERM
        // right after it still shuts down cleanly instead of killing the process.
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("warren: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let server = match warren_server::start(config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("warren: {e}");
                return ExitCode::FAILURE;
            }
        };
        signals.wait().await;
        tracing::info!("signal received, stopping");
        server.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// SIGINT and SIGTERM, registered up front.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
