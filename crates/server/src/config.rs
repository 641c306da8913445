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
    /// Message bodies each durable queue keeps in memory; the rest stays on disk.
    pub queue_cache_bytes: u64,
}

impl Default for Storage {
    fn default() -> Self {
        let seg = warren_broker::store::SegmentConfig::default();
        Storage {
            fsync: warren_broker::store::FsyncPolicy::Always,
            segment_bytes: seg.segment_bytes,
            queue_cache_bytes: seg.cache_bytes,
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
            listen: SocketAddr::from(([0, 0, 0, 0], 5672)),
            data_dir: PathBuf::from("./data"),
            log_level: "info".into(),
            limits: Limits::default(),
            auth: Auth::default(),
            vhosts: vec!["/".into()],
            resources: Resources::default(),
            storage: Storage::default(),
            policies: Vec::new(),
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
    /// Time a client has to complete the handshake up to connection.open.
    pub handshake_timeout_secs: u64,
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
        }
    }
}

/// Users.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Known users.
    pub users: Vec<User>,
    /// Users that may only connect from a loopback address (RabbitMQ's `loopback_users`).
    pub loopback_users: Vec<String>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            users: vec![User {
                name: "guest".into(),
                password: "guest".into(),
            }],
            loopback_users: vec!["guest".into()],
        }
    }
}

/// A user with a password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User name.
    pub name: String,
    /// Password, in clear.
    pub password: String,
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
}
