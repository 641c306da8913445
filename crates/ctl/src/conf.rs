//! `rabbitmq-server`'s configuration: RabbitMQ's `rabbitmq.conf` (the sysctl-like
//! format) and the `RABBITMQ_*` environment variables, applied over Warren's own
//! configuration.
//!
//! Precedence, lowest first: built-in defaults, `config.toml` (as for `warren`),
//! `rabbitmq.conf` (`RABBITMQ_CONFIG_FILE`, else `/etc/rabbitmq/rabbitmq.conf` and
//! `/etc/rabbitmq/conf.d/*.conf`), the `RABBITMQ_*` variables, then command-line flags.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use warren_server::config::{Config, TlsVerify, User};

/// What the launcher learned besides the configuration.
#[derive(Debug, Default)]
pub struct Launch {
    /// The node name (`RABBITMQ_NODENAME`, default `rabbit@HOST`).
    pub node: String,
    /// Keys and variables read but not implemented, to log once at start.
    pub ignored: Vec<String>,
    /// Plugins the enabled-plugins file lists (`None`: no file, Warren's defaults).
    pub plugins: Option<Vec<String>>,
    /// Files read.
    pub files: Vec<PathBuf>,
    /// `log.file` as written (`false`, or a path relative to the log directory).
    log_file: Option<String>,
    /// `log.console` was set explicitly.
    log_console_set: bool,
}

/// A malformed `rabbitmq.conf` or an invalid value.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ConfError {
    /// The file.
    pub file: String,
    /// 1-based line number (0 for an environment variable).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Parses `rabbitmq.conf` text: `key = value` lines, `#` comments, blank lines.
///
/// # Errors
/// A line without `=` or with an empty key.
pub fn parse(text: &str, file: &str) -> Result<Vec<(String, String, usize)>, ConfError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(ConfError {
                file: file.into(),
                line: i + 1,
                reason: format!("expected 'key = value', got '{line}'"),
            });
        };
        let key = k.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(ConfError {
                file: file.into(),
                line: i + 1,
                reason: format!("invalid key '{key}'"),
            });
        }
        let value = v.trim();
        // Values may be quoted; a trailing comment after a value is not RabbitMQ syntax.
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        out.push((key.to_string(), value.to_string(), i + 1));
    }
    Ok(out)
}

/// A size with RabbitMQ's units (`50MB`, `2GB`, `1GiB`, `500kB`).
pub fn bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" => 1,
        "k" | "kB" | "KB" => 1_000,
        "K" | "KiB" => 1024,
        "M" | "MiB" => 1 << 20,
        "MB" | "mB" => 1_000_000,
        "G" | "GiB" => 1 << 30,
        "GB" | "gB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// RabbitMQ's enabled plugins file, `[rabbitmq_management,rabbitmq_prometheus].`: the
/// plugin names.
pub fn parse_enabled_plugins(text: &str) -> Vec<String> {
    text.trim()
        .trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn bool_of(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A listener value: a port, `IP:PORT` or `[IPv6]:PORT`.
fn listener(v: &str, default_ip: IpAddr) -> Option<SocketAddr> {
    if let Ok(port) = v.parse::<u16>() {
        return Some(SocketAddr::new(default_ip, port));
    }
    v.parse().ok()
}

/// Applies `rabbitmq.conf` entries to `config`.
///
/// # Errors
/// An invalid value, naming the file and line.
pub fn apply_conf(
    config: &mut Config,
    entries: &[(String, String, usize)],
    file: &str,
    launch: &mut Launch,
) -> Result<(), ConfError> {
    let err = |line: usize, reason: String| ConfError {
        file: file.into(),
        line,
        reason,
    };
    let any = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let mut tcp: BTreeMap<String, SocketAddr> = BTreeMap::new();
    let mut default_user: Option<String> = None;
    let mut default_pass: Option<String> = None;
    let mut mechanisms: BTreeMap<String, String> = BTreeMap::new();
    for (key, value, line) in entries {
        let (key, v, line) = (key.as_str(), value.as_str(), *line);
        let bad = |what: &str| err(line, format!("invalid value '{v}' for {key} ({what})"));
        let num = |what: &str| v.parse::<u64>().map_err(|_| bad(what));
        match key {
            k if k.starts_with("listeners.tcp.") => {
                let a = listener(v, any).ok_or_else(|| bad("a port or IP:PORT"))?;
                tcp.insert(k["listeners.tcp.".len()..].to_string(), a);
            }
            k if k.starts_with("listeners.ssl.") => {
                config.tls.listen = listener(v, any).ok_or_else(|| bad("a port or IP:PORT"))?;
            }
            "ssl_options.certfile" => config.tls.cert = Some(PathBuf::from(v)),
            "ssl_options.keyfile" => config.tls.key = Some(PathBuf::from(v)),
            "ssl_options.cacertfile" => config.tls.ca = Some(PathBuf::from(v)),
            "ssl_options.verify" => {
                config.tls.verify = match v {
                    "verify_peer" => TlsVerify::Peer,
                    "verify_none" => TlsVerify::None,
                    _ => return Err(bad("verify_peer or verify_none")),
                }
            }
            "ssl_options.fail_if_no_peer_cert" => {
                config.tls.fail_if_no_peer_cert = bool_of(v).ok_or_else(|| bad("true or false"))?;
            }
            "ssl_cert_login_from" => {
                config.auth.ssl_cert_login_from = match v {
                    "common_name" => warren_server::config::CertLoginFrom::CommonName,
                    "distinguished_name" => warren_server::config::CertLoginFrom::DistinguishedName,
                    _ => return Err(bad("common_name or distinguished_name")),
                }
            }
            k if k.starts_with("auth_mechanisms.") => {
                mechanisms.insert(k.to_string(), v.to_string());
            }
            "default_user" => default_user = Some(v.to_string()),
            "default_pass" => default_pass = Some(v.to_string()),
            "default_vhost" => set_default_vhost(config, v),
            "loopback_users" if v == "none" => config.auth.loopback_users.clear(),
            k if k.starts_with("loopback_users.") => {
                let user = &k["loopback_users.".len()..];
                config.auth.loopback_users.retain(|u| u != user);
                if bool_of(v).ok_or_else(|| bad("true or false"))? {
                    config.auth.loopback_users.push(user.to_string());
                }
            }
            "vm_memory_high_watermark.relative" => {
                let f: f64 = v.parse().map_err(|_| bad("a fraction"))?;
                config.resources.memory_high_watermark = f;
                config.resources.memory_high_watermark_bytes = 0;
            }
            "vm_memory_high_watermark.absolute" => {
                config.resources.memory_high_watermark_bytes =
                    bytes(v).ok_or_else(|| bad("a size"))?;
            }
            "disk_free_limit.absolute" => {
                config.resources.disk_free_limit_bytes = bytes(v).ok_or_else(|| bad("a size"))?;
            }
            "heartbeat" => {
                config.limits.heartbeat_secs = num("seconds")?.min(u64::from(u16::MAX)) as u16
            }
            "frame_max" => {
                config.limits.frame_max_bytes = num("bytes")?.min(u64::from(u32::MAX)) as u32
            }
            "channel_max" => config.limits.channel_max = num("a count")?.clamp(1, 65_535) as u16,
            "max_message_size" => config.limits.max_message_bytes = num("bytes")?,
            "handshake_timeout" => {
                config.limits.handshake_timeout_secs = num("milliseconds")?.div_ceil(1000)
            }
            "load_definitions" | "management.load_definitions" => {
                config.load_definitions = Some(PathBuf::from(v));
            }
            "management.tcp.port" => {
                let p = v.parse::<u16>().map_err(|_| bad("a port"))?;
                config.management.listen.set_port(p);
            }
            "management.tcp.ip" => {
                let ip: IpAddr = v.parse().map_err(|_| bad("an IP address"))?;
                config.management.listen.set_ip(ip);
            }
            "management.ssl.port" => {
                let p = v.parse::<u16>().map_err(|_| bad("a port"))?;
                config.management.tls_listen = Some(SocketAddr::new(any, p));
            }
            // The stream plugin (rabbitmq_stream).
            k if k.starts_with("stream.listeners.tcp.") => {
                config.stream.listen = listener(v, any).ok_or_else(|| bad("a port or IP:PORT"))?;
            }
            k if k.starts_with("stream.listeners.ssl.") => {
                config.stream.tls_listen =
                    Some(listener(v, any).ok_or_else(|| bad("a port or IP:PORT"))?);
            }
            "stream.advertised_host" => config.stream.advertised_host = v.to_string(),
            "stream.advertised_port" => {
                config.stream.advertised_port = v.parse::<u16>().map_err(|_| bad("a port"))?;
            }
            "stream.advertised_tls_port" => {
                config.stream.advertised_tls_port = v.parse::<u16>().map_err(|_| bad("a port"))?;
            }
            "prometheus.tcp.port" => {
                let p = v.parse::<u16>().map_err(|_| bad("a port"))?;
                config.prometheus.listen.set_port(p);
            }
            "prometheus.tcp.ip" => {
                let ip: IpAddr = v.parse().map_err(|_| bad("an IP address"))?;
                config.prometheus.listen.set_ip(ip);
            }
            "log.console.level" | "log.default.level" => config.log_level = v.to_string(),
            "log.console" => {
                config.log_console = bool_of(v).ok_or_else(|| bad("true or false"))?;
                launch.log_console_set = true;
            }
            "log.file" => launch.log_file = Some(v.to_string()),
            "log.file.level" => config.log_level = v.to_string(),
            "cluster_name" => config.identity.cluster_name = v.to_string(),
            "anonymous_login_user" => config.auth.anonymous_login_user = Some(v.to_string()),
            "anonymous_login_pass" => config.auth.anonymous_login_pass = Some(v.to_string()),
            other => launch.ignored.push(format!("{other} ({file}:{line})")),
        }
    }
    if let Some(a) = tcp.get("default").or_else(|| tcp.values().next()) {
        config.listen = *a;
        if tcp.len() > 1 {
            launch
                .ignored
                .push("listeners.tcp: only the first TCP listener is used".to_string());
        }
    }
    if !mechanisms.is_empty() {
        config.auth.mechanisms = mechanisms.into_values().collect();
    }
    if default_user.is_some() || default_pass.is_some() {
        set_default_user(
            config,
            default_user.as_deref().unwrap_or("guest"),
            default_pass.as_deref().unwrap_or("guest"),
        );
    }
    Ok(())
}

/// The default vhost replaces `/` among the vhosts a fresh node creates.
fn set_default_vhost(config: &mut Config, vhost: &str) {
    config.vhosts.retain(|v| v != "/");
    if !config.vhosts.iter().any(|v| v == vhost) {
        config.vhosts.insert(0, vhost.to_string());
    }
}

/// A default user replaces `guest` (RabbitMQ creates only the configured one).
fn set_default_user(config: &mut Config, user: &str, pass: &str) {
    config.auth.users = vec![User {
        name: user.to_string(),
        password: Some(pass.to_string()),
        password_hash: None,
        hashing_algorithm: Default::default(),
        tags: vec!["administrator".into()],
    }];
}

/// The `rabbitmq.conf` files to read: `RABBITMQ_CONFIG_FILE` (with `.conf` added when
/// it names no existing file), else the Debian locations when present.
pub fn conf_files(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    if let Some(f) = env("RABBITMQ_CONFIG_FILE") {
        let p = PathBuf::from(&f);
        if !p.exists() && p.extension().is_none() {
            return vec![PathBuf::from(format!("{f}.conf"))];
        }
        return vec![p];
    }
    let mut files = Vec::new();
    let main = Path::new("/etc/rabbitmq/rabbitmq.conf");
    if main.exists() {
        files.push(main.to_path_buf());
    }
    if let Ok(dir) = std::fs::read_dir("/etc/rabbitmq/conf.d") {
        let mut extra: Vec<PathBuf> = dir
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        extra.sort();
        files.extend(extra);
    }
    files
}

/// Applies `rabbitmq.conf` and the `RABBITMQ_*` variables (read through `env`) to
/// `config`.
///
/// # Errors
/// An unreadable or malformed file, or an invalid variable.
pub fn apply_environment(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Launch, ConfError> {
    let mut launch = Launch {
        node: crate::node::qualify(env("RABBITMQ_NODENAME").as_deref().unwrap_or("rabbit")),
        ..Launch::default()
    };
    for file in conf_files(env) {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| ConfError {
            file: name.clone(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        let entries = parse(&text, &name)?;
        apply_conf(config, &entries, &name, &mut launch)?;
        launch.files.push(file);
    }
    let bad = |var: &str, v: &str, what: &str| ConfError {
        file: format!("${var}"),
        line: 0,
        reason: format!("invalid value '{v}' ({what})"),
    };
    if let Some(v) = env("RABBITMQ_NODE_PORT") {
        let port: u16 = v
            .parse()
            .map_err(|_| bad("RABBITMQ_NODE_PORT", &v, "a port"))?;
        config.listen.set_port(port);
    }
    if let Some(v) = env("RABBITMQ_NODE_IP_ADDRESS") {
        let ip: IpAddr = v
            .parse()
            .map_err(|_| bad("RABBITMQ_NODE_IP_ADDRESS", &v, "an IP address"))?;
        config.listen.set_ip(ip);
    }
    if let Some(dir) = env("RABBITMQ_MNESIA_DIR") {
        config.data_dir = PathBuf::from(dir);
    } else if let Some(base) = env("RABBITMQ_MNESIA_BASE") {
        config.data_dir = PathBuf::from(base).join(&launch.node);
    }
    if env("RABBITMQ_DEFAULT_USER").is_some() || env("RABBITMQ_DEFAULT_PASS").is_some() {
        set_default_user(
            config,
            env("RABBITMQ_DEFAULT_USER").as_deref().unwrap_or("guest"),
            env("RABBITMQ_DEFAULT_PASS").as_deref().unwrap_or("guest"),
        );
    }
    if let Some(v) = env("RABBITMQ_DEFAULT_VHOST") {
        set_default_vhost(config, &v);
    }
    if let Some(f) = env("RABBITMQ_ENABLED_PLUGINS_FILE") {
        // `[rabbitmq_management,rabbitmq_prometheus].`; a missing file enables none, and
        // the stream listener (port 5552) runs only with rabbitmq_stream, as in RabbitMQ.
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let plugins = parse_enabled_plugins(&text);
        config.management.enabled = plugins.iter().any(|p| p == "rabbitmq_management");
        config.prometheus.enabled = plugins.iter().any(|p| p == "rabbitmq_prometheus");
        config.stream.enabled = plugins.iter().any(|p| p == "rabbitmq_stream");
        launch.plugins = Some(plugins);
    }
    // Where RabbitMQ would log: RABBITMQ_LOGS (a file, or "-" for standard output),
    // else log.file (relative to RABBITMQ_LOG_BASE), else RABBITMQ_LOG_BASE/NODE.log.
    // Logging to a file turns standard output off unless log.console = true, as in
    // RabbitMQ (the startup line still reaches standard output: see Launch).
    let base = env("RABBITMQ_LOG_BASE").map(PathBuf::from);
    let file = match (env("RABBITMQ_LOGS"), launch.log_file.as_deref()) {
        (Some(l), _) if l == "-" => None,
        (Some(l), _) => Some(PathBuf::from(l)),
        (None, Some("false")) => None,
        (None, Some(f)) => Some(match &base {
            Some(b) if Path::new(f).is_relative() => b.join(f),
            _ => PathBuf::from(f),
        }),
        (None, None) => base.map(|b| b.join(format!("{}.log", launch.node))),
    };
    if let Some(f) = file {
        config.log_file = Some(f);
        if !launch.log_console_set {
            config.log_console = false;
        }
    }
    for var in [
        "RABBITMQ_DIST_PORT",
        "RABBITMQ_USE_LONGNAME",
        "RABBITMQ_ERLANG_COOKIE",
        "RABBITMQ_SERVER_ERL_ARGS",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
    ] {
        if env(var).is_some() {
            launch.ignored.push(format!(
                "${var} (no meaning for Warren: it has no Erlang distribution)"
            ));
        }
    }
    Ok(launch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str) -> (Config, Launch) {
        let mut c = Config::default();
        let mut l = Launch::default();
        let entries = parse(text, "t.conf").unwrap();
        apply_conf(&mut c, &entries, "t.conf", &mut l).unwrap();
        (c, l)
    }

    #[test]
    fn rabbitmq_conf_keys_map_onto_the_configuration() {
        let (c, l) = apply(
            "# comment\nlisteners.tcp.default = 5673\ndefault_user = admin\ndefault_pass = s3cret\n\
             default_vhost = apps\nloopback_users = none\nvm_memory_high_watermark.absolute = 1GB\n\
             disk_free_limit.absolute = 2GB\nheartbeat = 30\nframe_max = 65536\nchannel_max = 100\n\
             management.tcp.port = 15673\nprometheus.tcp.port = 15693\nlisteners.ssl.default = 5674\n\
             ssl_options.verify = verify_peer\nauth_mechanisms.1 = PLAIN\nauth_mechanisms.2 = EXTERNAL\n\
             collect_statistics_interval = 10000\n\
             stream.listeners.tcp.default = 5553\nstream.listeners.ssl.default = 5551\n\
             stream.advertised_host = broker.example\n",
        );
        assert_eq!(c.listen.port(), 5673);
        assert_eq!(c.auth.users.len(), 1);
        assert_eq!(c.auth.users[0].name, "admin");
        assert_eq!(c.vhosts, vec!["apps".to_string()]);
        assert!(c.auth.loopback_users.is_empty());
        assert_eq!(c.resources.memory_high_watermark_bytes, 1_000_000_000);
        assert_eq!(c.resources.disk_free_limit_bytes, 2_000_000_000);
        assert_eq!(c.limits.heartbeat_secs, 30);
        assert_eq!(c.limits.frame_max_bytes, 65536);
        assert_eq!(c.limits.channel_max, 100);
        assert_eq!(c.management.listen.port(), 15673);
        assert_eq!(c.prometheus.listen.port(), 15693);
        assert_eq!(c.tls.listen.port(), 5674);
        assert_eq!(c.tls.verify, TlsVerify::Peer);
        assert_eq!(c.stream.listen.port(), 5553);
        assert_eq!(c.stream.tls_listen.map(|a| a.port()), Some(5551));
        assert_eq!(c.stream.advertised_host, "broker.example");
        assert_eq!(
            c.auth.mechanisms,
            vec!["PLAIN".to_string(), "EXTERNAL".to_string()]
        );
        assert_eq!(l.ignored.len(), 1, "{:?}", l.ignored);
    }

    #[test]
    fn sizes_parse_as_rabbitmq_reads_them() {
        assert_eq!(bytes("1000"), Some(1000));
        assert_eq!(bytes("50MB"), Some(50_000_000));
        assert_eq!(bytes("1GiB"), Some(1 << 30));
        assert_eq!(bytes("2x"), None);
    }

    #[test]
    fn malformed_lines_and_values_name_file_and_line() {
        let e = parse("a = 1\nnonsense\n", "r.conf").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("r.conf", 2));
        let entries = parse("heartbeat = soon\n", "r.conf").unwrap();
        let e = apply_conf(
            &mut Config::default(),
            &entries,
            "r.conf",
            &mut Launch::default(),
        )
        .unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.to_string().contains("heartbeat"), "{e}");
    }

    #[test]
    fn environment_variables_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("rabbitmq.conf");
        std::fs::write(&conf, "listeners.tcp.default = 5673\n").unwrap();
        let plugins = dir.path().join("enabled_plugins");
        std::fs::write(&plugins, "[rabbitmq_management].\n").unwrap();
        let vars: std::collections::HashMap<&str, String> = [
            ("RABBITMQ_CONFIG_FILE", conf.display().to_string()),
            ("RABBITMQ_NODE_PORT", "5999".to_string()),
            ("RABBITMQ_NODENAME", "test2".to_string()),
            ("RABBITMQ_MNESIA_BASE", "/tmp/mn".to_string()),
            ("RABBITMQ_DEFAULT_USER", "u".to_string()),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                plugins.display().to_string(),
            ),
            ("RABBITMQ_DIST_PORT", "25672".to_string()),
        ]
        .into_iter()
        .collect();
        let env = |k: &str| vars.get(k).cloned();
        let mut c = Config::default();
        let l = apply_environment(&mut c, &env).unwrap();
        assert_eq!(c.listen.port(), 5999);
        assert!(l.node.starts_with("test2@"));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/mn").join(&l.node));
        assert_eq!(c.auth.users[0].name, "u");
        assert!(c.management.enabled);
        assert!(!c.prometheus.enabled);
        // Without rabbitmq_stream in the file, no listener on 5552.
        assert!(!c.stream.enabled);
        assert_eq!(l.ignored.len(), 1);
    }

    #[test]
    fn log_destinations_follow_rabbitmq() {
        let dir = tempfile::tempdir().unwrap();
        let run = |conf: &str, vars: &[(&str, &str)]| {
            let path = dir.path().join("rabbitmq.conf");
            std::fs::write(&path, conf).unwrap();
            let mut vars: std::collections::HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            vars.insert("RABBITMQ_CONFIG_FILE".into(), path.display().to_string());
            vars.insert("RABBITMQ_NODENAME".into(), "n1@h".into());
            let env = |k: &str| vars.get(k).cloned();
            let mut c = Config::default();
            apply_environment(&mut c, &env).unwrap();
            (c.log_file, c.log_console)
        };
        // Nothing set: standard output only.
        assert_eq!(run("", &[]), (None, true));
        // RABBITMQ_LOG_BASE: NODE.log there, and no console (RabbitMQ's default).
        assert_eq!(
            run("", &[("RABBITMQ_LOG_BASE", "/var/log/r")]),
            (Some(PathBuf::from("/var/log/r/n1@h.log")), false)
        );
        // log.file is relative to the log directory; log.console = true keeps both.
        assert_eq!(
            run(
                "log.file = broker.log\nlog.console = true\n",
                &[("RABBITMQ_LOG_BASE", "/var/log/r")]
            ),
            (Some(PathBuf::from("/var/log/r/broker.log")), true)
        );
        assert_eq!(
            run("log.file = false\n", &[("RABBITMQ_LOG_BASE", "/x")]),
            (None, true)
        );
        // RABBITMQ_LOGS wins: a path, or "-" for standard output.
        assert_eq!(
            run("", &[("RABBITMQ_LOGS", "-"), ("RABBITMQ_LOG_BASE", "/x")]),
            (None, true)
        );
        assert_eq!(
            run("", &[("RABBITMQ_LOGS", "/tmp/a.log")]),
            (Some(PathBuf::from("/tmp/a.log")), false)
        );
        let path = dir.path().join("rabbitmq.conf");
        std::fs::write(&path, "log.console = maybe\n").unwrap();
        let env = |k: &str| (k == "RABBITMQ_CONFIG_FILE").then(|| path.display().to_string());
        let e = apply_environment(&mut Config::default(), &env).unwrap_err();
        assert!(e.to_string().contains(":1:"), "{e}");
    }
}
