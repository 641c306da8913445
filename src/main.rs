//! The `warren` binary: command line → configuration → tracing → server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use warren_ctl::cli::Tool;
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
    /// Product reported to clients in connection.start: `warren` or `rabbitmq`
    /// (overrides `[identity] report_as`).
    #[arg(long, value_name = "PRODUCT", value_parser = parse_product)]
    identity: Option<warren_server::config::Product>,
    /// Management HTTP API listener, e.g. 127.0.0.1:15672 (overrides the config file).
    #[arg(long, value_name = "ADDR:PORT")]
    management_listen: Option<std::net::SocketAddr>,
    /// HTTPS listener for the management API with the --tls-cert/--tls-key certificate,
    /// e.g. [::]:15671 (overrides `[management] tls_listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    management_tls_listen: Option<std::net::SocketAddr>,
    /// Prometheus metrics listener, e.g. 127.0.0.1:15692 (overrides the config file).
    #[arg(long, value_name = "ADDR:PORT")]
    prometheus_listen: Option<std::net::SocketAddr>,
    /// Stream protocol listener, e.g. [::]:5552 (overrides `[stream] listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    stream_listen: Option<std::net::SocketAddr>,
    /// Stream protocol TLS listener with the --tls-cert/--tls-key certificate, e.g.
    /// [::]:5551 (overrides `[stream] tls_listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    stream_tls_listen: Option<std::net::SocketAddr>,
    /// A RabbitMQ definitions file (JSON) imported at start: users, vhosts, permissions,
    /// topic permissions, limits (overrides `load_definitions`).
    #[arg(long, value_name = "FILE")]
    load_definitions: Option<PathBuf>,
    /// AMQPS (TLS) listener address, e.g. [::]:5671 (overrides `[tls] listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    tls_listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain for the TLS listener, server certificate first.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listener.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle client certificates are verified against.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate verification: none or peer.
    #[arg(long, value_name = "MODE", value_parser = parse_verify)]
    tls_verify: Option<warren_server::config::TlsVerify>,
    /// With --tls-verify peer, refuse clients that present no certificate.
    #[arg(long)]
    tls_fail_if_no_peer_cert: bool,
}

fn parse_verify(s: &str) -> Result<warren_server::config::TlsVerify, String> {
    match s.to_ascii_lowercase().as_str() {
        "none" | "verify_none" => Ok(warren_server::config::TlsVerify::None),
        "peer" | "verify_peer" => Ok(warren_server::config::TlsVerify::Peer),
        other => Err(format!(
            "unknown verify mode '{other}' (expected none or peer)"
        )),
    }
}

fn parse_product(s: &str) -> Result<warren_server::config::Product, String> {
    match s.to_ascii_lowercase().as_str() {
        "warren" => Ok(warren_server::config::Product::Warren),
        "rabbitmq" => Ok(warren_server::config::Product::Rabbitmq),
        other => Err(format!(
            "unknown identity '{other}' (expected warren or rabbitmq)"
        )),
    }
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
    if let Some(addr) = cli.management_listen {
        config.management.listen = addr;
        config.management.enabled = true;
    }
    if let Some(addr) = cli.management_tls_listen {
        config.management.tls_listen = Some(addr);
    }
    if let Some(addr) = cli.stream_listen {
        config.stream.listen = addr;
        config.stream.enabled = true;
    }
    if let Some(addr) = cli.stream_tls_listen {
        config.stream.tls_listen = Some(addr);
        config.stream.enabled = true;
    }
    if let Some(addr) = cli.prometheus_listen {
        config.prometheus.listen = addr;
        config.prometheus.enabled = true;
    }
    if let Some(file) = &cli.load_definitions {
        config.load_definitions = Some(file.clone());
    }
    if let Some(product) = cli.identity {
        config.identity.report_as = product;
    }
    if let Some(addr) = cli.tls_listen {
        config.tls.listen = addr;
    }
    if let Some(file) = &cli.tls_cert {
        config.tls.cert = Some(file.clone());
    }
    if let Some(file) = &cli.tls_key {
        config.tls.key = Some(file.clone());
    }
    if let Some(file) = &cli.tls_ca {
        config.tls.ca = Some(file.clone());
    }
    if let Some(mode) = cli.tls_verify {
        config.tls.verify = mode;
    }
    if cli.tls_fail_if_no_peer_cert {
        config.tls.fail_if_no_peer_cert = true;
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // One binary, RabbitMQ's names: what it was invoked as decides what it is.
    let prog = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("warren");
    let rest = |from: usize| args.get(from..).unwrap_or(&[]).to_vec();
    match prog {
        "rabbitmqctl" => return tool(Tool::Ctl, &rest(1)),
        "rabbitmq-diagnostics" => return tool(Tool::Diagnostics, &rest(1)),
        "rabbitmq-plugins" => return tool(Tool::Plugins, &rest(1)),
        "rabbitmq-streams" => return tool(Tool::Streams, &rest(1)),
        "rabbitmq-server" => return rabbitmq_server(&rest(1)),
        "rabbitmqadmin" => return rabbitmqadmin(&rest(1)),
        _ => {}
    }
    match args.get(1).map(String::as_str) {
        Some("ctl") => return tool(Tool::Ctl, &rest(2)),
        Some("diagnostics") => return tool(Tool::Diagnostics, &rest(2)),
        Some("plugins") => return tool(Tool::Plugins, &rest(2)),
        Some("streams") => return tool(Tool::Streams, &rest(2)),
        Some("admin") => return rabbitmqadmin(&rest(2)),
        Some("install-links") => return install_links(args.get(2).map(String::as_str)),
        _ => {}
    }
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warren: {e}");
            return ExitCode::from(2);
        }
    };
    let node = warren_ctl::node::resolve(None);
    serve(config, node, false, Vec::new())
}

/// Runs `rabbitmqctl` and friends.
fn tool(which: Tool, args: &[String]) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let code = runtime.block_on(warren_ctl::cli::run(which, args));
    ExitCode::from(u8::try_from(code).unwrap_or(70))
}

/// Runs `rabbitmqadmin` (the v1 syntax, over the management HTTP API).
fn rabbitmqadmin(args: &[String]) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rabbitmqadmin: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let (mut out, mut err, mut stdin) = (
        std::io::stdout().lock(),
        std::io::stderr().lock(),
        std::io::stdin().lock(),
    );
    let mut io = warren_ctl::admin::Io {
        out: &mut out,
        err: &mut err,
        stdin: &mut stdin,
    };
    let code = runtime.block_on(warren_ctl::admin::run(args, &mut io));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// `warren install-links DIR`: `rabbitmq-server`, `rabbitmqctl`, `rabbitmq-diagnostics`,
/// `rabbitmq-plugins`, `rabbitmq-streams` and `rabbitmqadmin` as symbolic links to this
/// binary.
fn install_links(dir: Option<&str>) -> ExitCode {
    let Some(dir) = dir else {
        eprintln!("usage: warren install-links DIR");
        return ExitCode::from(64);
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warren: cannot find its own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("warren: cannot create {dir}: {e}");
        return ExitCode::FAILURE;
    }
    for name in [
        "rabbitmq-server",
        "rabbitmqctl",
        "rabbitmq-diagnostics",
        "rabbitmq-plugins",
        "rabbitmq-streams",
        "rabbitmqadmin",
    ] {
        let link = std::path::Path::new(dir).join(name);
        let _ = std::fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink(&exe, &link) {
            eprintln!("warren: cannot create {}: {e}", link.display());
            return ExitCode::FAILURE;
        }
        println!("{}", link.display());
    }
    ExitCode::SUCCESS
}

/// `rabbitmq-server`: Warren's configuration, then `rabbitmq.conf` and the `RABBITMQ_*`
/// variables; `-detached` runs it in the background.
fn rabbitmq_server(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-detached" || a == "--detached") {
        use std::os::unix::process::CommandExt;
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("rabbitmq-server: cannot find its own executable: {e}");
                return ExitCode::FAILURE;
            }
        };
        let others: Vec<&String> = args.iter().filter(|a| !a.contains("detached")).collect();
        let spawned = std::process::Command::new(exe)
            .arg0("rabbitmq-server")
            .args(others)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn();
        return match spawned {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rabbitmq-server: cannot start in the background: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse_from(["rabbitmq-server"]);
    let mut config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rabbitmq-server: {e}");
            return ExitCode::from(2);
        }
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let launch = match warren_ctl::conf::apply_environment(&mut config, &env) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rabbitmq-server: invalid configuration: {e}");
            return ExitCode::from(78);
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("rabbitmq-server: {e}");
        return ExitCode::from(78);
    }
    serve(config, launch.node, true, launch.ignored)
}

/// Runs the broker until SIGTERM, SIGINT or `rabbitmqctl stop`. `node` names its
/// control socket; with `strict_node` a live node of the same name is fatal (as for
/// RabbitMQ), otherwise the socket is just not opened.
fn serve(config: Config, node: String, strict_node: bool, ignored: Vec<String>) -> ExitCode {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Standard output (colours only on a terminal) and/or a log file (plain text).
    let file = match &config.log_file {
        Some(path) => match open_log_file(path) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("warren: cannot open the log file {}: {e}", path.display());
                return ExitCode::from(78);
            }
        },
        None => None,
    };
    let console = config.log_console;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let stdout_layer = console.then(|| tracing_subscriber::fmt::layer().with_ansi(ansi));
        let file_layer = file.map(|f| {
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
        });
        tracing_subscriber::registry()
            .with(filter)
            .with(stdout_layer)
            .with(file_layer)
            .init();
    }
    if let (false, Some(path)) = (console, &config.log_file) {
        // RabbitMQ's banner names the log file when it does not log to the console.
        println!("  Logs: {}", path.display());
    }
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
    for what in &ignored {
        tracing::warn!("ignoring {what}");
    }
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
        let management = if server.admin().config().management.enabled {
            let listen = server.admin().config().management.listen;
            match warren_management::start(server.admin(), listen).await {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::error!(error = %e, %listen, "cannot start the management API");
                    eprintln!("warren: cannot listen on {listen} (management API): {e}");
                    server.shutdown().await;
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        let management_tls = match server.admin().config().management.tls_listen {
            Some(listen) if server.admin().config().management.enabled => {
                let admin = server.admin();
                let config = admin.config();
                let started = match warren_server::tls::http_server_config(&config.tls) {
                    Ok(tls) => {
                        let timeout = std::time::Duration::from_secs(
                            config.limits.handshake_timeout_secs.max(1),
                        );
                        warren_management::start_tls(server.admin(), listen, tls, timeout)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                match started {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::error!(error = %e, %listen, "cannot start the management API over TLS");
                        eprintln!("warren: cannot serve HTTPS on {listen} (management API): {e}");
                        server.shutdown().await;
                        return ExitCode::FAILURE;
                    }
                }
            }
            _ => None,
        };
        // The stream protocol listener. Like RabbitMQ's stream plugin it is an extra: a
        // port already in use is reported and the broker runs without it.
        let stream = if server.admin().config().stream.enabled {
            let admin = server.admin();
            let config = admin.config();
            let listen = config.stream.listen;
            let tls = match config.stream.tls_listen {
                Some(addr) => match warren_server::tls::server_config(&config.tls) {
                    Ok(tls) => Some((addr, tls)),
                    Err(e) => {
                        tracing::error!(error = %e, %addr, "cannot start the stream protocol TLS listener");
                        eprintln!("warren: no stream protocol TLS listener on {addr}: {e}");
                        None
                    }
                },
                None => None,
            };
            match warren_stream::start_with_tls(server.admin(), listen, tls).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, %listen, "cannot start the stream protocol listener");
                    eprintln!("warren: cannot listen on {listen} (stream protocol): {e}; running without it");
                    None
                }
            }
        } else {
            None
        };
        let metrics = if server.admin().config().prometheus.enabled {
            let listen = server.admin().config().prometheus.listen;
            match warren_management::metrics::start(server.admin(), listen).await {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::error!(error = %e, %listen, "cannot start the Prometheus endpoint");
                    eprintln!("warren: cannot listen on {listen} (Prometheus): {e}");
                    drop(management);
                    drop(management_tls);
                    server.shutdown().await;
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        // The control socket for rabbitmqctl, named after the node.
        let (stop_tx, mut stop_rx) = tokio::sync::mpsc::unbounded_channel();
        // The HTTP listeners as bound (a configured port 0 is a real port here), for
        // rabbitmq-diagnostics listeners and its checks.
        let mut http = Vec::new();
        if let Some(m) = &management {
            http.push(("http", m.local_addr()));
        }
        if let Some(m) = &management_tls {
            http.push(("https", m.local_addr()));
        }
        if let Some(m) = &metrics {
            http.push(("http/prometheus", m.local_addr()));
        }
        let control = warren_ctl::server::serve(
            server.admin(),
            &node,
            std::sync::Arc::new(StopHandle { stop: stop_tx, http }),
        )
        .await;
        let control = match control {
            Ok(c) => Some(c),
            Err(e) if strict_node => {
                tracing::error!(error = %e, "cannot open the control socket");
                eprintln!("ERROR: {e}");
                drop((metrics, management_tls, management));
                server.shutdown().await;
                return ExitCode::FAILURE;
            }
            Err(e) => {
                tracing::warn!(error = %e, "rabbitmqctl will not reach this node (set RABBITMQ_NODENAME to give it its own name)");
                None
            }
        };
        // Every listener is bound: RabbitMQ's line, which container wait strategies and
        // fixtures look for on standard output.
        let mut plugins = Vec::new();
        if management.is_some() {
            plugins.extend(["rabbitmq_management", "rabbitmq_management_agent", "rabbitmq_web_dispatch"]);
        }
        if metrics.is_some() {
            plugins.push("rabbitmq_prometheus");
        }
        if stream.is_some() {
            plugins.push("rabbitmq_stream");
        }
        tracing::info!(
            node = %node,
            "Server startup complete; {} plugins started. AMQP listener on {}",
            plugins.len(),
            server.local_addr()
        );
        if !console {
            // Wait strategies read standard output even when the log goes to a file.
            println!(
                "Server startup complete; {} plugins started. AMQP listener on {}",
                plugins.len(),
                server.local_addr()
            );
        }
        for p in &plugins {
            tracing::info!(" * {p}");
        }
        tokio::select! {
            _ = signals.wait() => {}
            Some(()) = stop_rx.recv() => tracing::info!("stop requested by rabbitmqctl"),
        }
        drop(control);
        drop(stream);
        drop(metrics);
        drop(management_tls);
        drop(management);
        tracing::info!("stopping");
        server.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Opens (creating it and its directory) a log file for appending.
fn open_log_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// `rabbitmqctl stop`: wakes the main task as SIGTERM would.
struct StopHandle {
    stop: tokio::sync::mpsc::UnboundedSender<()>,
    http: Vec<(&'static str, std::net::SocketAddr)>,
}

impl warren_ctl::server::NodeControl for StopHandle {
    fn stop(&self) {
        let _ = self.stop.send(());
    }

    fn http_listeners(&self) -> Option<Vec<(&'static str, std::net::SocketAddr)>> {
        Some(self.http.clone())
    }
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
