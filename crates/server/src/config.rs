//! Configuration, loaded once from TOML and passed down as `Arc<Config>`.
//!
//! Every key has a default that matches RabbitMQ's (port 5672, guest/guest allowed from
//! loopback only, frame_max 131072, channel_max 2047, heartbeat 60 s). `config.toml` at
//! the repository root documents every key with its default value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// AMQP listener address.
    pub listen: SocketAddr,
    /// Where durable state lives.
    pub data_dir: PathBuf,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    /// `RUST_LOG` overrides it.
    pub log_level: String,
    /// Also log to this file, appending (RabbitMQ's `log.file`; the `rabbitmq-server`
    /// launcher sets it from `RABBITMQ_LOG_BASE` / `RABBITMQ_LOGS` as RabbitMQ does).
    pub log_file: Option<PathBuf>,
    /// Log to standard output (RabbitMQ's `log.console`).
    pub log_console: bool,
    /// Protocol and resource limits.
    pub limits: Limits,
    /// Users and their access.
    pub auth: Auth,
    /// Virtual hosts created at start (`/` is always there).
    pub vhosts: Vec<String>,
    /// Resource alarms.
    pub resources: Resources,
    /// Durable storage.
    pub storage: Storage,
    /// Policies (RabbitMQ's `set_policy`), applied to matching queues and exchanges.
    pub policies: Vec<warren_broker::policy::PolicyConfig>,
    /// What the broker calls itself in `connection.start`.
    pub identity: Identity,
    /// The management HTTP API.
    pub management: Management,
    /// The stream protocol listener.
    pub stream: Stream,
    /// The Prometheus metrics endpoint.
    pub prometheus: Prometheus,
    /// The AMQPS (TLS) listener.
    pub tls: Tls,
    /// A RabbitMQ definitions file (JSON, as `rabbitmqctl export_definitions` writes it)
    /// imported at every start: users, vhosts, permissions, topic permissions, limits
    /// (RabbitMQ's `load_definitions`).
    pub load_definitions: Option<PathBuf>,
}

/// The management HTTP API (RabbitMQ's management plugin).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Management {
    /// Serve it at all.
    pub enabled: bool,
    /// Listener (RabbitMQ: port 15672, all interfaces).
    pub listen: SocketAddr,
    /// Window over which `*_details.rate` values are computed, milliseconds (RabbitMQ
    /// samples every 5000 ms; Warren's counts are exact and its rates at most this old).
    pub rate_interval_ms: u64,
    /// HTTPS listener for the same API with the `[tls]` certificate (RabbitMQ's
    /// `management.ssl.port`, 15671); off when unset.
    pub tls_listen: Option<SocketAddr>,
}

impl Default for Management {
    fn default() -> Self {
        Management {
            enabled: true,
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 15672)),
            rate_interval_ms: 1000,
            tls_listen: None,
        }
    }
}

/// RabbitMQ's stream protocol (its `rabbitmq_stream` plugin).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Stream {
    /// Serve it at all.
    pub enabled: bool,
    /// Listener (RabbitMQ: port 5552, all interfaces).
    pub listen: SocketAddr,
    /// Host name clients are told to connect to (`metadata`); the listener's address,
    /// or `localhost` for an unspecified one, when empty.
    pub advertised_host: String,
    /// Port clients are told to connect to; the listener's when 0.
    pub advertised_port: u16,
    /// TLS listener (RabbitMQ's `stream.listeners.ssl`, usually port 5551), with the
    /// `[tls]` certificate and client verification; none when unset.
    pub tls_listen: Option<SocketAddr>,
    /// Port TLS clients are told to connect to; the TLS listener's when 0.
    pub advertised_tls_port: u16,
}

impl Default for Stream {
    fn default() -> Self {
        Stream {
            enabled: true,
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 5552)),
            advertised_host: String::new(),
            advertised_port: 0,
            tls_listen: None,
            advertised_tls_port: 0,
        }
    }
}

/// The Prometheus endpoint (RabbitMQ's `rabbitmq_prometheus` plugin).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prometheus {
    /// Serve it at all.
    pub enabled: bool,
    /// Listener (RabbitMQ: port 15692).
    pub listen: SocketAddr,
}

impl Default for Prometheus {
    fn default() -> Self {
        Prometheus {
            enabled: true,
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 15692)),
        }
    }
}

/// The AMQPS listener (RabbitMQ's `listeners.ssl` and `ssl_options`). It runs when a
/// certificate and a key are set, beside the plain listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// Listener (RabbitMQ: 5671).
    pub listen: SocketAddr,
    /// PEM certificate chain, the server's certificate first (`ssl_options.certfile`).
    pub cert: Option<PathBuf>,
    /// PEM private key (`ssl_options.keyfile`).
    pub key: Option<PathBuf>,
    /// PEM CA bundle that client certificates are checked against
    /// (`ssl_options.cacertfile`).
    pub ca: Option<PathBuf>,
    /// `none`: no client certificate asked for; `peer`: asked for and verified
    /// (`ssl_options.verify = verify_none | verify_peer`).
    pub verify: TlsVerify,
    /// With `verify = "peer"`, refuse clients that send no certificate
    /// (`ssl_options.fail_if_no_peer_cert`).
    pub fail_if_no_peer_cert: bool,
}

impl Tls {
    /// Whether the TLS listener is configured.
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 5671)),
            cert: None,
            key: None,
            ca: None,
            verify: TlsVerify::None,
            fail_if_no_peer_cert: false,
        }
    }
}

/// Client certificate verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsVerify {
    /// No client certificate is requested.
    #[default]
    None,
    /// A client certificate is requested and must chain to the CA bundle.
    Peer,
}

/// Where SASL EXTERNAL takes the user name from (RabbitMQ's `ssl_cert_login_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CertLoginFrom {
    /// The subject's full distinguished name, RFC 4514 form (`CN=app,O=corp`).
    #[default]
    DistinguishedName,
    /// The subject's common name.
    CommonName,
}

/// Which product the broker reports in `connection.start`'s server properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    /// "Warren", with Warren's own version.
    #[default]
    Warren,
    /// RabbitMQ's product, version, platform and information strings, for clients and
    /// test suites that branch on them (amqplib's asserts `product == "RabbitMQ"`,
    /// kombu picks its QoS semantics from it).
    Rabbitmq,
}

/// The server properties sent in `connection.start`. Empty strings take the value of
/// the chosen `report_as` product.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Identity {
    /// `warren` (default) or `rabbitmq`.
    pub report_as: Product,
    /// `product` property.
    pub product: String,
    /// `version` property.
    pub version: String,
    /// `platform` property.
    pub platform: String,
    /// `information` property.
    pub information: String,
    /// `copyright` property.
    pub copyright: String,
    /// `cluster_name` property.
    pub cluster_name: String,
}

/// The RabbitMQ release Warren reports under `report_as = "rabbitmq"`.
pub const RABBITMQ_VERSION: &str = "3.13.7";

impl Identity {
    /// The effective strings: `(product, version, platform, information, copyright,
    /// cluster_name)`, overrides applied over the chosen product's defaults.
    pub fn resolved(&self) -> ResolvedIdentity {
        let host = hostname();
        let base = match self.report_as {
            Product::Warren => ResolvedIdentity {
                product: "Warren".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                platform: "Rust".into(),
                information: "Licensed under MIT or Apache-2.0".into(),
                copyright: "Copyright (c) the Warren authors".into(),
                cluster_name: format!("warren@{host}"),
            },
            Product::Rabbitmq => ResolvedIdentity {
                product: "RabbitMQ".into(),
                version: RABBITMQ_VERSION.into(),
                platform: "Erlang/OTP 26.2.5".into(),
                information: "Licensed under the MPL 2.0. Website: https://rabbitmq.com".into(),
                copyright: "Copyright (c) 2007-2024 Broadcom Inc and/or its subsidiaries".into(),
                cluster_name: format!("rabbit@{host}"),
            },
        };
        let pick = |o: &str, d: String| if o.is_empty() { d } else { o.to_string() };
        ResolvedIdentity {
            product: pick(&self.product, base.product),
            version: pick(&self.version, base.version),
            platform: pick(&self.platform, base.platform),
            information: pick(&self.information, base.information),
            copyright: pick(&self.copyright, base.copyright),
            cluster_name: pick(&self.cluster_name, base.cluster_name),
        }
    }
}

/// Server property strings after defaults and overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedIdentity {
    /// `product`.
    pub product: String,
    /// `version`.
    pub version: String,
    /// `platform`.
    pub platform: String,
    /// `information`.
    pub information: String,
    /// `copyright`.
    pub copyright: String,
    /// `cluster_name`.
    pub cluster_name: String,
}

/// The machine's short host name (as in RabbitMQ's `rabbit@HOST` node names).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().split('.').next().unwrap_or("").to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// Durable storage settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// `always`: a persistent message is fsynced before its confirm or commit-ok;
    /// `never`: it is written to the OS first (survives a crash of Warren, not of the
    /// machine).
    pub fsync: warren_broker::store::FsyncPolicy,
    /// Size at which a queue starts a new segment file.
    pub segment_bytes: u64,
    /// Message bodies each queue keeps in memory; the rest is paged out to disk.
    pub queue_cache_bytes: u64,
    /// Message bodies all queues together keep in memory; the rest is paged out to disk
    /// (transient messages to a scratch area that is emptied at start).
    pub ram_budget_bytes: u64,
    /// Index entries (about 64 bytes each) a queue without priorities keeps in memory;
    /// beyond them messages are only on disk until the queue drains to them.
    pub queue_index_entries: usize,
}

impl Default for Storage {
    fn default() -> Self {
        let seg = warren_broker::store::SegmentConfig::default();
        Storage {
            fsync: warren_broker::store::FsyncPolicy::Always,
            segment_bytes: seg.segment_bytes,
            queue_cache_bytes: seg.cache_bytes,
            ram_budget_bytes: warren_broker::storage::StorageConfig::default().ram_budget_bytes,
            queue_index_entries: seg.index_entries,
        }
    }
}

/// Resource alarms (RabbitMQ's `vm_memory_high_watermark`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resources {
    /// Fraction of physical memory at which publishers are blocked (RabbitMQ 3.x: 0.4).
    pub memory_high_watermark: f64,
    /// Absolute watermark in bytes; when non-zero it replaces the fraction.
    pub memory_high_watermark_bytes: u64,
    /// Publishers are blocked while the data directory's file system has less free
    /// space than this (RabbitMQ's `disk_free_limit`, 50 MB by default); 0 disables it.
    pub disk_free_limit_bytes: u64,
    /// How often memory use and free disk space are sampled.
    pub check_interval_ms: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            memory_high_watermark: 0.4,
            memory_high_watermark_bytes: 0,
            disk_free_limit_bytes: 50_000_000,
            check_interval_ms: 1000,
        }
    }
}

impl Resources {
    /// The watermark in bytes (0 = no alarm).
    pub fn watermark_bytes(&self) -> u64 {
        if self.memory_high_watermark_bytes > 0 {
            return self.memory_high_watermark_bytes;
        }
        crate::alarm::total_memory_bytes().map_or(0, |total| {
            (total as f64 * self.memory_high_watermark) as u64
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // Dual-stack, as RabbitMQ's default listener: IPv6 and IPv4 clients.
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 5672)),
            data_dir: PathBuf::from("./data"),
            log_level: "info".into(),
            log_file: None,
            log_console: true,
            limits: Limits::default(),
            auth: Auth::default(),
            vhosts: vec!["/".into()],
            resources: Resources::default(),
            storage: Storage::default(),
            policies: Vec::new(),
            identity: Identity::default(),
            management: Management::default(),
            stream: Stream::default(),
            prometheus: Prometheus::default(),
            tls: Tls::default(),
            load_definitions: None,
        }
    }
}

/// Protocol and resource limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame the server accepts and offers in connection.tune.
    pub frame_max_bytes: u32,
    /// Most channels a connection may have open at once.
    pub channel_max: u16,
    /// Heartbeat interval offered in connection.tune; 0 disables.
    pub heartbeat_secs: u16,
    /// Largest message body accepted (RabbitMQ 3.x: 128 MiB).
    pub max_message_bytes: u64,
    /// Most client connections at once; further connections wait in the accept backlog.
    pub max_connections: usize,
    /// Time a client has to complete the handshake up to connection.open (after the
    /// TLS handshake, on the AMQPS listener).
    pub handshake_timeout_secs: u64,
    /// Time a client has to complete the TLS handshake (RabbitMQ's
    /// `ssl_handshake_timeout`, 5 s).
    pub ssl_handshake_timeout_secs: u64,
    /// A connection whose pending output has not moved for this long is closed
    /// (RabbitMQ's socket `send_timeout`, 30 s): a client that stopped reading.
    pub send_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_max_bytes: 131_072,
            channel_max: 2047,
            heartbeat_secs: 60,
            max_message_bytes: 128 * 1024 * 1024,
            max_connections: 65_536,
            handshake_timeout_secs: 10,
            ssl_handshake_timeout_secs: 5,
            send_timeout_secs: 30,
        }
    }
}

/// Users and SASL.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Users created on a fresh data directory (as RabbitMQ creates its default user on
    /// a fresh node), each with full permissions on every vhost of `vhosts`. Later
    /// changes are made at run time (and kept in the data directory).
    pub users: Vec<User>,
    /// Users that may only connect from a loopback address (RabbitMQ's `loopback_users`).
    pub loopback_users: Vec<String>,
    /// Enables SASL ANONYMOUS, which logs in as this user (RabbitMQ 4's
    /// `anonymous_login_user`). Off when absent.
    pub anonymous_login_user: Option<String>,
    /// The password ANONYMOUS logs in with (RabbitMQ 4's `anonymous_login_pass`).
    pub anonymous_login_pass: Option<String>,
    /// SASL mechanisms offered (RabbitMQ's `auth_mechanisms`): `PLAIN`, `AMQPLAIN`,
    /// `EXTERNAL` (offered only on TLS connections that sent a client certificate).
    /// ANONYMOUS is offered when `anonymous_login_user` is set.
    pub mechanisms: Vec<String>,
    /// Where EXTERNAL takes the user name from: `distinguished_name` (default) or
    /// `common_name` (RabbitMQ's `ssl_cert_login_from`).
    pub ssl_cert_login_from: CertLoginFrom,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            users: vec![User {
                name: "guest".into(),
                password: Some("guest".into()),
                password_hash: None,
                hashing_algorithm: warren_broker::access::HashingAlgorithm::Sha256,
                tags: vec!["administrator".into()],
            }],
            loopback_users: vec!["guest".into()],
            anonymous_login_user: None,
            anonymous_login_pass: None,
            mechanisms: vec!["PLAIN".into(), "AMQPLAIN".into()],
            ssl_cert_login_from: CertLoginFrom::DistinguishedName,
        }
    }
}

/// A user seeded from the configuration: a password in clear (hashed at load) or a
/// RabbitMQ password hash.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User name.
    pub name: String,
    /// Password, in clear; hashed when the user is created.
    #[serde(default)]
    pub password: Option<String>,
    /// A RabbitMQ password hash (base64 of salt and digest), instead of `password`.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// How `password_hash` was made (`rabbit_password_hashing_sha256` by default).
    #[serde(default)]
    pub hashing_algorithm: warren_broker::access::HashingAlgorithm,
    /// Tags, e.g. `["administrator"]`.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Parses TOML text.
    ///
    /// # Errors
    /// Parse errors and invalid values.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// I/O errors, parse errors and invalid values.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// The first value out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.limits.frame_max_bytes != 0 && self.limits.frame_max_bytes < 4096 {
            return Err(ConfigError::Invalid(
                "limits.frame_max_bytes must be at least 4096".into(),
            ));
        }
        if self.limits.channel_max == 0 {
            return Err(ConfigError::Invalid(
                "limits.channel_max must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.resources.memory_high_watermark) {
            return Err(ConfigError::Invalid(
                "resources.memory_high_watermark must be between 0 and 1".into(),
            ));
        }
        if self.resources.check_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "resources.check_interval_ms must be at least 1".into(),
            ));
        }
        if self.storage.segment_bytes < 4096 {
            return Err(ConfigError::Invalid(
                "storage.segment_bytes must be at least 4096".into(),
            ));
        }
        for p in &self.policies {
            warren_broker::policy::Policy::compile(p).map_err(ConfigError::Invalid)?;
        }
        for u in &self.auth.users {
            match (&u.password, &u.password_hash) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::Invalid(format!(
                        "auth.users '{}': give password or password_hash, not both",
                        u.name
                    )))
                }
                (None, Some(h)) => warren_broker::access::validate_hash(u.hashing_algorithm, h)
                    .map_err(|why| {
                        ConfigError::Invalid(format!("auth.users '{}': {why}", u.name))
                    })?,
                _ => {}
            }
        }
        for m in &self.auth.mechanisms {
            if !["PLAIN", "AMQPLAIN", "EXTERNAL", "ANONYMOUS"].contains(&m.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "auth.mechanisms: unknown mechanism '{m}' (PLAIN, AMQPLAIN, EXTERNAL, ANONYMOUS)"
                )));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid(
                "tls: give both cert and key, or neither".into(),
            ));
        }
        if self.management.tls_listen.is_some() && !self.tls.enabled() {
            return Err(ConfigError::Invalid(
                "management.tls_listen needs the [tls] cert and key".into(),
            ));
        }
        if self.tls.verify == TlsVerify::Peer && self.tls.ca.is_none() {
            return Err(ConfigError::Invalid(
                "tls.verify = \"peer\" needs tls.ca (the CA bundle client certificates are checked against)".into(),
            ));
        }
        if self.limits.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_connections must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_config_toml_parses_and_equals_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.toml");
        let c = Config::load(&path).unwrap();
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.limits.frame_max_bytes, d.limits.frame_max_bytes);
        assert_eq!(c.limits.channel_max, d.limits.channel_max);
        assert_eq!(c.limits.heartbeat_secs, d.limits.heartbeat_secs);
        assert_eq!(c.limits.max_message_bytes, d.limits.max_message_bytes);
        assert_eq!(c.auth.loopback_users, d.auth.loopback_users);
    }

    #[test]
    fn policies_parse_and_bad_ones_are_refused() {
        let ok = "[[policies]]\nname = \"ttl\"\npattern = \"^tmp\\\\.\"\napply_to = \"queues\"\npriority = 1\ndefinition = { message-ttl = 1000, dead-letter-exchange = \"dlx\" }\n";
        let c = Config::from_toml(ok, Path::new("x")).unwrap();
        assert_eq!(c.policies.len(), 1);
        assert_eq!(c.policies[0].definition.message_ttl, Some(1000));
        let bad = "[[policies]]\nname = \"x\"\npattern = \"(\"\ndefinition = {}\n";
        assert!(Config::from_toml(bad, Path::new("x")).is_err());
        let unknown =
            "[[policies]]\nname = \"x\"\npattern = \".*\"\ndefinition = { max-priority = 5 }\n";
        assert!(Config::from_toml(unknown, Path::new("x")).is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Config::from_toml("nonsense = 1", Path::new("x")).is_err());
        assert!(Config::from_toml("[limits]\nframe_max_bytes = 100", Path::new("x")).is_err());
        let c = Config::from_toml("listen = \"127.0.0.1:5673\"", Path::new("x")).unwrap();
        assert_eq!(c.listen.port(), 5673);
    }

    #[test]
    fn identity_reports_warren_by_default_and_rabbitmq_on_request() {
        let d = Config::default().identity.resolved();
        assert_eq!(d.product, "Warren");
        let c = Config::from_toml("[identity]\nreport_as = \"rabbitmq\"", Path::new("x")).unwrap();
        let r = c.identity.resolved();
        assert_eq!(r.product, "RabbitMQ");
        assert_eq!(r.version, RABBITMQ_VERSION);
        assert!(r.cluster_name.starts_with("rabbit@"));
        let o = Config::from_toml(
            "[identity]\nreport_as = \"rabbitmq\"\nversion = \"3.12.0\"",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(o.identity.resolved().version, "3.12.0");
        assert!(Config::from_toml("[identity]\nreport_as = \"qpid\"", Path::new("x")).is_err());
    }
}
