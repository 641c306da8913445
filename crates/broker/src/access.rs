//! Who may do what: users (with RabbitMQ's password hashes and tags), virtual hosts'
//! metadata and limits, permissions (configure / write / read regular expressions per user
//! and vhost), topic permissions and user limits.
//!
//! Responsibilities: the state and its persistence (`DATA_DIR/access.toml`, rewritten
//! atomically on every change), password checks, and the permission checks, one function
//! per RabbitMQ check ([`Grant::check_configure`], [`Grant::check_write`],
//! [`Grant::check_read`], [`Grant::check_topic_write`], [`Grant::check_topic_read`]), which
//! every view (AMQP, HTTP, CLI) calls. Collaborators: [`crate::Broker`], which owns the
//! routing side of a vhost and calls [`Access`] when vhosts come and go.
//!
//! A connection takes a [`Grant`] at `connection.open`: the compiled permissions of its
//! user in its vhost. As in RabbitMQ, permission changes apply to connections opened
//! afterwards.
//!
//! ```
//! use warren_broker::access::{Access, Resource};
//!
//! let access = Access::in_memory();
//! access.add_vhost("/", "Default virtual host", &[]).unwrap();
//! access.add_user("app", Some("s3cret"), &["monitoring"]).unwrap();
//! access.set_permissions("app", "/", "^app\\.", ".*", ".*").unwrap();
//! assert!(access.check_password("app", "s3cret").is_ok());
//! let grant = access.grant("app", "/", None).unwrap();
//! assert!(grant.check_configure(Resource::Queue, "app.jobs").is_ok());
//! assert!(grant.check_configure(Resource::Queue, "other").is_err());
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::Error;

/// RabbitMQ's password hashing functions, by their definitions-file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HashingAlgorithm {
    /// `rabbit_password_hashing_sha256` (RabbitMQ's default since 3.6).
    #[default]
    #[serde(rename = "rabbit_password_hashing_sha256")]
    Sha256,
    /// `rabbit_password_hashing_sha512`.
    #[serde(rename = "rabbit_password_hashing_sha512")]
    Sha512,
    /// `rabbit_password_hashing_md5` (RabbitMQ before 3.6).
    #[serde(rename = "rabbit_password_hashing_md5")]
    Md5,
}

impl HashingAlgorithm {
    /// The name used in definitions files and the HTTP API.
    pub fn name(self) -> &'static str {
        match self {
            HashingAlgorithm::Sha256 => "rabbit_password_hashing_sha256",
            HashingAlgorithm::Sha512 => "rabbit_password_hashing_sha512",
            HashingAlgorithm::Md5 => "rabbit_password_hashing_md5",
        }
    }

    /// Parses a definitions-file name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Sha256, Self::Sha512, Self::Md5]
            .into_iter()
            .find(|a| a.name() == name)
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        let mut input = Vec::with_capacity(salt.len() + password.len());
        input.extend_from_slice(salt);
        input.extend_from_slice(password);
        match self {
            HashingAlgorithm::Sha256 => sha2::Sha256::digest(&input).to_vec(),
            HashingAlgorithm::Sha512 => sha2::Sha512::digest(&input).to_vec(),
            HashingAlgorithm::Md5 => <md5::Md5 as Digest>::digest(&input).to_vec(),
        }
    }

    fn digest_len(self) -> usize {
        match self {
            HashingAlgorithm::Sha256 => 32,
            HashingAlgorithm::Sha512 => 64,
            HashingAlgorithm::Md5 => 16,
        }
    }
}

/// RabbitMQ's scheme: 4 random salt bytes, the digest of salt ‖ UTF-8 password, stored as
/// base64 of salt ‖ digest.
pub fn hash_password(algorithm: HashingAlgorithm, password: &str) -> String {
    let mut salt = [0u8; 4];
    // A failing OS random source leaves a zero salt: still a valid hash, and this
    // cannot happen on the platforms Warren runs on.
    let _ = getrandom::fill(&mut salt);
    let mut out = salt.to_vec();
    out.extend(algorithm.digest(&salt, password.as_bytes()));
    BASE64.encode(out)
}

/// Whether `password` matches a stored hash (constant time in the digest).
pub fn verify_password(algorithm: HashingAlgorithm, stored: &str, password: &str) -> bool {
    let Ok(raw) = BASE64.decode(stored.as_bytes()) else {
        return false;
    };
    if raw.len() != 4 + algorithm.digest_len() {
        return false;
    }
    let (salt, digest) = raw.split_at(4);
    let computed = algorithm.digest(salt, password.as_bytes());
    computed.len() == digest.len()
        && computed
            .iter()
            .zip(digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Checks that a stored hash decodes for its algorithm (for imports).
///
/// # Errors
/// A text saying what is wrong (never the hash itself).
pub fn validate_hash(algorithm: HashingAlgorithm, stored: &str) -> Result<(), String> {
    if stored.is_empty() {
        return Ok(());
    }
    let raw = BASE64
        .decode(stored.as_bytes())
        .map_err(|_| "password_hash is not valid base64".to_string())?;
    if raw.len() != 4 + algorithm.digest_len() {
        return Err(format!(
            "password_hash has {} bytes, {} expects {}",
            raw.len(),
            algorithm.name(),
            4 + algorithm.digest_len()
        ));
    }
    Ok(())
}

/// A user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// User name.
    pub name: String,
    /// base64(salt ‖ digest); empty for a user without a password (who cannot log in
    /// with PLAIN or AMQPLAIN).
    #[serde(default)]
    pub password_hash: String,
    /// How `password_hash` was made.
    #[serde(default)]
    pub hashing_algorithm: HashingAlgorithm,
    /// Tags (`administrator`, `monitoring`, `policymaker`, `management`, `impersonator`,
    /// or anything else, kept as given).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Per-user limits.
    #[serde(default)]
    pub limits: UserLimits,
}

impl User {
    /// Whether the user has `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// User limits (`rabbitmqctl set_user_limits`); `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLimits {
    /// `max-connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// `max-channels` (over all of the user's connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_channels: Option<u64>,
}

/// Virtual-host limits (`rabbitmqctl set_vhost_limits`); `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VHostLimits {
    /// `max-connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// `max-queues`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queues: Option<u64>,
}

/// A limit value as RabbitMQ takes it: a negative number removes the limit.
pub fn limit_value(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

/// A virtual host's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VHostInfo {
    /// Name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Limits.
    #[serde(default)]
    pub limits: VHostLimits,
    /// The firehose (`rabbitmqctl trace_on`) is on; kept across restarts, as RabbitMQ
    /// keeps it in the vhost's metadata.
    #[serde(default)]
    pub tracing: bool,
}

/// A user's permissions in a vhost: three regular expressions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// User name.
    pub user: String,
    /// Vhost name.
    pub vhost: String,
    /// Names the user may create, delete or bind (as destination... see RabbitMQ's table).
    pub configure: String,
    /// Names the user may write to (publish, bind destination).
    pub write: String,
    /// Names the user may read from (consume, get, purge, bind source).
    pub read: String,
}

/// A user's topic permissions on one topic exchange of a vhost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPermission {
    /// User name.
    pub user: String,
    /// Vhost name.
    pub vhost: String,
    /// Topic exchange name.
    pub exchange: String,
    /// Routing keys the user may publish with.
    pub write: String,
    /// Routing keys the user may bind with.
    pub read: String,
}

/// Everything [`Access`] stores, as written to `access.toml` (and as the management
/// definitions export lists it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessState {
    /// Users.
    #[serde(default)]
    pub users: Vec<User>,
    /// Vhosts.
    #[serde(default)]
    pub vhosts: Vec<VHostInfo>,
    /// Permissions.
    #[serde(default)]
    pub permissions: Vec<Permission>,
    /// Topic permissions.
    #[serde(default)]
    pub topic_permissions: Vec<TopicPermission>,
    /// Policies (RabbitMQ's `set_policy`).
    #[serde(default)]
    pub policies: Vec<crate::policy::PolicyRecord>,
    /// Operator policies (`set_operator_policy`).
    #[serde(default)]
    pub operator_policies: Vec<crate::policy::PolicyRecord>,
    /// Global runtime parameters (`set_global_parameter`).
    #[serde(default)]
    pub global_parameters: Vec<GlobalParameter>,
}

/// A global runtime parameter: a name and any JSON value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalParameter {
    /// Name.
    pub name: String,
    /// Value, as JSON text (so any JSON survives the TOML file).
    pub value: String,
}

/// Why an administrative change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// No such user.
    #[error("user '{0}' does not exist")]
    NoSuchUser(String),
    /// No such vhost.
    #[error("virtual host '{0}' does not exist")]
    NoSuchVHost(String),
    /// The user exists already.
    #[error("user '{0}' already exists")]
    UserExists(String),
    /// The vhost exists already.
    #[error("virtual host '{0}' already exists")]
    VHostExists(String),
    /// A permission pattern that is not a regular expression.
    #[error("invalid regular expression '{pattern}': {reason}")]
    InvalidRegex {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A name that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// A policy or parameter that does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A policy or parameter the engine refuses (RabbitMQ's "Validation failed").
    #[error("Validation failed\n\n{0}\n")]
    Validation(String),
    /// The state could not be written.
    #[error("cannot write access state: {0}")]
    Storage(String),
}

/// The resource kinds of a permission check, named as RabbitMQ names them in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// An exchange (the default exchange is checked as `amq.default`).
    Exchange,
    /// A queue.
    Queue,
}

impl Resource {
    fn as_str(self) -> &'static str {
        match self {
            Resource::Exchange => "exchange",
            Resource::Queue => "queue",
        }
    }
}

/// A compiled permission pattern. RabbitMQ matches with `re:run` (unanchored) and takes
/// the empty pattern as `^$`.
#[derive(Debug, Clone)]
enum Matcher {
    /// `.*`: everything (no regex run on the message path).
    Any,
    /// Anything else.
    Regex(regex::Regex),
}

impl Matcher {
    fn compile(pattern: &str) -> Result<Self, AdminError> {
        if pattern == ".*" {
            return Ok(Matcher::Any);
        }
        let effective = if pattern.is_empty() { "^$" } else { pattern };
        regex::Regex::new(effective)
            .map(Matcher::Regex)
            .map_err(|e| AdminError::InvalidRegex {
                pattern: pattern.to_string(),
                reason: e.to_string(),
            })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Regex(r) => r.is_match(name),
        }
    }
}

/// A topic permission with its variables expanded.
#[derive(Debug, Clone)]
struct TopicGrant {
    exchange: String,
    write: Matcher,
    read: Matcher,
}

/// What one user may do in one vhost, compiled when a connection opens.
#[derive(Debug, Clone)]
pub struct Grant {
    user: String,
    vhost: String,
    configure: Matcher,
    write: Matcher,
    read: Matcher,
    topics: Vec<TopicGrant>,
    /// `impersonator` tag: may publish with another user's `user_id`.
    pub impersonator: bool,
}

/// The name a resource has in permission checks: the default exchange is `amq.default`.
fn checked_name(kind: Resource, name: &str) -> &str {
    if kind == Resource::Exchange && name.is_empty() {
        "amq.default"
    } else {
        name
    }
}

impl Grant {
    /// Full permissions (for embedded use and tests).
    pub fn unrestricted(user: &str, vhost: &str) -> Self {
        Grant {
            user: user.to_string(),
            vhost: vhost.to_string(),
            configure: Matcher::Any,
            write: Matcher::Any,
            read: Matcher::Any,
            topics: Vec::new(),
            impersonator: false,
        }
    }

    /// The user.
    pub fn user(&self) -> &str {
        &self.user
    }

    fn refused(&self, kind: Resource, name: &str) -> Error {
        Error::AccessRefused {
            kind: kind.as_str(),
            name: checked_name(kind, name).to_string(),
            vhost: self.vhost.clone(),
            user: self.user.clone(),
        }
    }

    fn check(&self, m: &Matcher, kind: Resource, name: &str) -> Result<(), Error> {
        if m.matches(checked_name(kind, name)) {
            Ok(())
        } else {
            Err(self.refused(kind, name))
        }
    }

    /// `configure` permission on a resource (declare, delete).
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED in RabbitMQ's words.
    pub fn check_configure(&self, kind: Resource, name: &str) -> Result<(), Error> {
        self.check(&self.configure, kind, name)
    }

    /// `write` permission on a resource (publish, bind destination).
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED in RabbitMQ's words.
    pub fn check_write(&self, kind: Resource, name: &str) -> Result<(), Error> {
        self.check(&self.write, kind, name)
    }

    /// `read` permission on a resource (consume, get, purge, bind source).
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED in RabbitMQ's words.
    pub fn check_read(&self, kind: Resource, name: &str) -> Result<(), Error> {
        self.check(&self.read, kind, name)
    }

    /// RabbitMQ's checks for `queue.declare` (AMQP or HTTP): `configure` on the queue
    /// (`new = false`, run once its name is known); for a queue about to be created with
    /// a dead-letter exchange also `read` on the queue and `write` on the exchange
    /// (`new = true`).
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED in RabbitMQ's words.
    pub fn check_queue_declare(
        &self,
        queue: &str,
        new: bool,
        dlx: Option<&str>,
    ) -> Result<(), Error> {
        if !new {
            return self.check_configure(Resource::Queue, queue);
        }
        if let Some(dlx) = dlx {
            self.check_read(Resource::Queue, queue)?;
            self.check_write(Resource::Exchange, dlx)?;
        }
        Ok(())
    }

    /// RabbitMQ's checks for binding and unbinding (queue.bind/unbind,
    /// exchange.bind/unbind, HTTP bindings), in its order: `write` on the destination,
    /// `read` on the source, and topic `read` on the routing key when the source is a
    /// topic exchange (`source_is_topic`).
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED in RabbitMQ's words.
    pub fn check_bind(
        &self,
        dest_kind: Resource,
        destination: &str,
        source: &str,
        key: &str,
        source_is_topic: bool,
    ) -> Result<(), Error> {
        self.check_write(dest_kind, destination)?;
        self.check_read(Resource::Exchange, source)?;
        if source_is_topic {
            self.check_topic_read(source, key)?;
        }
        Ok(())
    }

    /// Whether any topic permission applies (so the caller can skip looking up the
    /// exchange's type on the message path).
    pub fn has_topic_permissions(&self) -> bool {
        !self.topics.is_empty()
    }

    fn check_topic(&self, exchange: &str, key: &str, write: bool) -> Result<(), Error> {
        // RabbitMQ: no topic permission for the exchange means everything is allowed.
        let mut any = false;
        for t in self.topics.iter().filter(|t| t.exchange == exchange) {
            any = true;
            if (if write { &t.write } else { &t.read }).matches(key) {
                return Ok(());
            }
        }
        if !any {
            return Ok(());
        }
        Err(Error::TopicAccessRefused {
            routing_key: key.to_string(),
            exchange: exchange.to_string(),
            vhost: self.vhost.clone(),
            user: self.user.clone(),
        })
    }

    /// Topic `write` permission: publishing to topic exchange `exchange` with `key`.
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED "access to topic ... refused".
    pub fn check_topic_write(&self, exchange: &str, key: &str) -> Result<(), Error> {
        self.check_topic(exchange, key, true)
    }

    /// Topic `read` permission: binding to topic exchange `exchange` with `key`.
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED "access to topic ... refused".
    pub fn check_topic_read(&self, exchange: &str, key: &str) -> Result<(), Error> {
        self.check_topic(exchange, key, false)
    }
}

/// Why a login was refused (the detail is for the log, never for the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// No such user.
    UnknownUser,
    /// The user has no password (PLAIN/AMQPLAIN cannot log in).
    NoPassword,
    /// Wrong password.
    BadPassword,
}

impl LoginError {
    /// A short reason for the log.
    pub fn reason(&self) -> &'static str {
        match self {
            LoginError::UnknownUser => "no such user",
            LoginError::NoPassword => "user has no password",
            LoginError::BadPassword => "wrong password",
        }
    }
}

/// Why a connection or channel may not open (RabbitMQ's 530 texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The user has no permissions in the vhost.
    #[error("access to vhost '{vhost}' refused for user '{user}'")]
    VHostRefused {
        /// Vhost.
        vhost: String,
        /// User.
        user: String,
    },
    /// The vhost's `max-connections`.
    #[error("access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached")]
    VHostConnections {
        /// Vhost.
        vhost: String,
        /// User.
        user: String,
        /// The limit.
        limit: u64,
    },
    /// The user's `max-connections`.
    #[error("connection refused for user '{user}': user connection limit ({limit}) is reached")]
    UserConnections {
        /// User.
        user: String,
        /// The limit.
        limit: u64,
    },
    /// The user's `max-channels`.
    #[error("number of channels opened for user '{user}' has reached the maximum allowed user limit of ({limit})")]
    UserChannels {
        /// User.
        user: String,
        /// The limit.
        limit: u64,
    },
}

#[derive(Debug, Default)]
struct Inner {
    users: BTreeMap<String, User>,
    vhosts: BTreeMap<String, VHostInfo>,
    permissions: BTreeMap<(String, String), Permission>,
    topic_permissions: BTreeMap<(String, String, String), TopicPermission>,
    policies: BTreeMap<(String, String), crate::policy::PolicyRecord>,
    operator_policies: BTreeMap<(String, String), crate::policy::PolicyRecord>,
    global_parameters: BTreeMap<String, GlobalParameter>,
}

impl Inner {
    fn policy_map(
        &mut self,
        kind: crate::policy::PolicyKind,
    ) -> &mut BTreeMap<(String, String), crate::policy::PolicyRecord> {
        match kind {
            crate::policy::PolicyKind::Regular => &mut self.policies,
            crate::policy::PolicyKind::Operator => &mut self.operator_policies,
        }
    }

    /// Both exist.
    fn require(&self, user: &str, vhost: &str) -> Result<(), AdminError> {
        if !self.users.contains_key(user) {
            return Err(AdminError::NoSuchUser(user.to_string()));
        }
        if !self.vhosts.contains_key(vhost) {
            return Err(AdminError::NoSuchVHost(vhost.to_string()));
        }
        Ok(())
    }

    fn snapshot(&self) -> AccessState {
        AccessState {
            users: self.users.values().cloned().collect(),
            vhosts: self.vhosts.values().cloned().collect(),
            permissions: self.permissions.values().cloned().collect(),
            topic_permissions: self.topic_permissions.values().cloned().collect(),
            policies: self.policies.values().cloned().collect(),
            operator_policies: self.operator_policies.values().cloned().collect(),
            global_parameters: self.global_parameters.values().cloned().collect(),
        }
    }
}

/// Open connections and channels, counted for the limits.
#[derive(Debug, Default)]
struct Counters {
    vhost_connections: BTreeMap<String, u64>,
    user_connections: BTreeMap<String, u64>,
    user_channels: BTreeMap<String, u64>,
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str, up: bool) {
    if up {
        *map.entry(key.to_string()).or_default() += 1;
    } else if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// Users, vhosts' metadata, permissions and limits, persisted in the data directory.
#[derive(Debug)]
pub struct Access {
    inner: RwLock<Inner>,
    /// `DATA_DIR/access.toml`; `None` for an in-memory broker.
    file: Option<PathBuf>,
    /// Serialises writes of the file, in the order of the changes.
    save_lock: Mutex<()>,
    counters: Mutex<Counters>,
}

/// The access file's name in the data directory.
pub const ACCESS_FILE: &str = "access.toml";

fn validate_name(kind: &str, name: &str) -> Result<(), AdminError> {
    if name.is_empty() {
        return Err(AdminError::Invalid(format!(
            "{kind} name must not be empty"
        )));
    }
    if name.len() > 255 {
        return Err(AdminError::Invalid(format!(
            "{kind} name is longer than 255 bytes"
        )));
    }
    Ok(())
}

impl Access {
    /// Empty state, kept in memory only.
    pub fn in_memory() -> Self {
        Access {
            inner: RwLock::new(Inner::default()),
            file: None,
            save_lock: Mutex::new(()),
            counters: Mutex::new(Counters::default()),
        }
    }

    /// Loads `DIR/access.toml`; `Ok(None)` if the directory has none yet (a fresh data
    /// directory, which the caller seeds).
    ///
    /// # Errors
    /// Unreadable or invalid file (a pattern that does not compile, a bad hash).
    pub fn load(dir: &Path) -> Result<(Self, bool), String> {
        let path = dir.join(ACCESS_FILE);
        let mut access = Access::in_memory();
        access.file = Some(path.clone());
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((access, true)),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let state: AccessState =
            toml::from_str(&text).map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
        access
            .apply(&state, false)
            .map_err(|e| format!("invalid {}: {e}", path.display()))?;
        Ok((access, false))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one change under the write lock and writes the file if it succeeded.
    fn change<R>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<R, AdminError>,
    ) -> Result<R, AdminError> {
        let (result, snapshot) = {
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            let r = f(&mut inner)?;
            (r, inner.snapshot())
        };
        self.save(&snapshot)?;
        Ok(result)
    }

    fn save(&self, state: &AccessState) -> Result<(), AdminError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let _order = self.save_lock.lock().unwrap_or_else(|e| e.into_inner());
        let text = toml::to_string(state).map_err(|e| AdminError::Storage(e.to_string()))?;
        crate::storage::write_atomically(path, text.as_bytes()).map_err(|e| {
            tracing::error!(path = %path.display(), error = %e, "cannot write access state");
            AdminError::Storage(e.to_string())
        })
    }

    /// Validates `state` whole, then merges it in (users, vhosts, permissions and topic
    /// permissions are created or replaced; nothing is removed). With `save`, the file is
    /// written once at the end.
    ///
    /// # Errors
    /// The first invalid entry, before anything changed.
    pub fn apply(&self, state: &AccessState, save: bool) -> Result<(), AdminError> {
        for u in &state.users {
            validate_name("user", &u.name)?;
            validate_hash(u.hashing_algorithm, &u.password_hash)
                .map_err(|why| AdminError::Invalid(format!("user '{}': {why}", u.name)))?;
        }
        for v in &state.vhosts {
            validate_name("vhost", &v.name)?;
        }
        let known_vhost = |name: &str| {
            state.vhosts.iter().any(|v| v.name == name) || self.read().vhosts.contains_key(name)
        };
        let known_user = |name: &str| {
            state.users.iter().any(|u| u.name == name) || self.read().users.contains_key(name)
        };
        for p in &state.permissions {
            if !known_user(&p.user) {
                return Err(AdminError::NoSuchUser(p.user.clone()));
            }
            if !known_vhost(&p.vhost) {
                return Err(AdminError::NoSuchVHost(p.vhost.clone()));
            }
            for pattern in [&p.configure, &p.write, &p.read] {
                Matcher::compile(pattern)?;
            }
        }
        for t in &state.topic_permissions {
            if !known_user(&t.user) {
                return Err(AdminError::NoSuchUser(t.user.clone()));
            }
            if !known_vhost(&t.vhost) {
                return Err(AdminError::NoSuchVHost(t.vhost.clone()));
            }
            for pattern in [&t.write, &t.read] {
                Matcher::compile(&expand(pattern, "u", "v", None))?;
            }
        }
        for (kind, list) in [
            (crate::policy::PolicyKind::Regular, &state.policies),
            (
                crate::policy::PolicyKind::Operator,
                &state.operator_policies,
            ),
        ] {
            for p in list {
                if !known_vhost(&p.vhost) {
                    return Err(AdminError::NoSuchVHost(p.vhost.clone()));
                }
                crate::policy::Policy::from_record(p, kind).map_err(|why| {
                    AdminError::Invalid(format!(
                        "policy '{}' in vhost '{}': {why}",
                        p.name, p.vhost
                    ))
                })?;
            }
        }
        for g in &state.global_parameters {
            serde_json::from_str::<serde_json::Value>(&g.value)
                .map_err(|e| AdminError::Invalid(format!("global parameter '{}': {e}", g.name)))?;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for u in &state.users {
            inner.users.insert(u.name.clone(), u.clone());
        }
        for p in &state.policies {
            inner
                .policies
                .insert((p.vhost.clone(), p.name.clone()), p.clone());
        }
        for p in &state.operator_policies {
            inner
                .operator_policies
                .insert((p.vhost.clone(), p.name.clone()), p.clone());
        }
        for g in &state.global_parameters {
            inner.global_parameters.insert(g.name.clone(), g.clone());
        }
        for v in &state.vhosts {
            let mut v = v.clone();
            // Definitions do not carry the firehose switch: an existing vhost keeps it.
            v.tracing |= inner.vhosts.get(&v.name).is_some_and(|old| old.tracing);
            inner.vhosts.insert(v.name.clone(), v);
        }
        for p in &state.permissions {
            inner
                .permissions
                .insert((p.user.clone(), p.vhost.clone()), p.clone());
        }
        for t in &state.topic_permissions {
            inner.topic_permissions.insert(
                (t.user.clone(), t.vhost.clone(), t.exchange.clone()),
                t.clone(),
            );
        }
        let snapshot = inner.snapshot();
        drop(inner);
        if save {
            self.save(&snapshot)?;
        }
        Ok(())
    }

    /// Everything, as stored.
    pub fn snapshot(&self) -> AccessState {
        self.read().snapshot()
    }

    // ----- users -----

    /// Creates a user with a password (hashed with SHA-256) or none.
    ///
    /// # Errors
    /// The user exists, or the name is invalid.
    pub fn add_user(
        &self,
        name: &str,
        password: Option<&str>,
        tags: &[&str],
    ) -> Result<(), AdminError> {
        let hash = password
            .map(|p| hash_password(HashingAlgorithm::Sha256, p))
            .unwrap_or_default();
        self.add_user_with_hash(
            name,
            &hash,
            HashingAlgorithm::Sha256,
            &tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        )
    }

    /// Creates a user from a stored hash (definitions import, HTTP `password_hash`).
    ///
    /// # Errors
    /// The user exists, the name is invalid, or the hash does not decode.
    pub fn add_user_with_hash(
        &self,
        name: &str,
        hash: &str,
        algorithm: HashingAlgorithm,
        tags: &[String],
    ) -> Result<(), AdminError> {
        validate_name("user", name)?;
        validate_hash(algorithm, hash).map_err(AdminError::Invalid)?;
        self.change(|inner| {
            if inner.users.contains_key(name) {
                return Err(AdminError::UserExists(name.to_string()));
            }
            inner.users.insert(
                name.to_string(),
                User {
                    name: name.to_string(),
                    password_hash: hash.to_string(),
                    hashing_algorithm: algorithm,
                    tags: tags.to_vec(),
                    limits: UserLimits::default(),
                },
            );
            Ok(())
        })
    }

    /// Creates or replaces a user (HTTP `PUT /api/users/{name}`); limits are kept.
    ///
    /// # Errors
    /// Invalid name or hash.
    pub fn put_user(
        &self,
        name: &str,
        hash: &str,
        algorithm: HashingAlgorithm,
        tags: &[String],
    ) -> Result<(), AdminError> {
        validate_name("user", name)?;
        validate_hash(algorithm, hash).map_err(AdminError::Invalid)?;
        self.change(|inner| {
            let limits = inner.users.get(name).map(|u| u.limits).unwrap_or_default();
            inner.users.insert(
                name.to_string(),
                User {
                    name: name.to_string(),
                    password_hash: hash.to_string(),
                    hashing_algorithm: algorithm,
                    tags: tags.to_vec(),
                    limits,
                },
            );
            Ok(())
        })
    }

    /// Deletes a user with their permissions and topic permissions.
    ///
    /// # Errors
    /// No such user.
    pub fn delete_user(&self, name: &str) -> Result<(), AdminError> {
        self.change(|inner| {
            if inner.users.remove(name).is_none() {
                return Err(AdminError::NoSuchUser(name.to_string()));
            }
            inner.permissions.retain(|(u, _), _| u != name);
            inner.topic_permissions.retain(|(u, _, _), _| u != name);
            Ok(())
        })
    }

    /// Sets (or with `None` clears) a user's password.
    ///
    /// # Errors
    /// No such user.
    pub fn change_password(&self, name: &str, password: Option<&str>) -> Result<(), AdminError> {
        let hash = password
            .map(|p| hash_password(HashingAlgorithm::Sha256, p))
            .unwrap_or_default();
        self.change(|inner| {
            let u = inner
                .users
                .get_mut(name)
                .ok_or_else(|| AdminError::NoSuchUser(name.to_string()))?;
            u.password_hash = hash;
            u.hashing_algorithm = HashingAlgorithm::Sha256;
            Ok(())
        })
    }

    /// Replaces a user's tags.
    ///
    /// # Errors
    /// No such user.
    pub fn set_user_tags(&self, name: &str, tags: &[String]) -> Result<(), AdminError> {
        self.change(|inner| {
            let u = inner
                .users
                .get_mut(name)
                .ok_or_else(|| AdminError::NoSuchUser(name.to_string()))?;
            u.tags = tags.to_vec();
            Ok(())
        })
    }

    /// Sets a user's limits (each `None` removes that limit).
    ///
    /// # Errors
    /// No such user.
    pub fn set_user_limits(&self, name: &str, limits: UserLimits) -> Result<(), AdminError> {
        self.change(|inner| {
            let u = inner
                .users
                .get_mut(name)
                .ok_or_else(|| AdminError::NoSuchUser(name.to_string()))?;
            u.limits = limits;
            Ok(())
        })
    }

    /// A user.
    pub fn user(&self, name: &str) -> Option<User> {
        self.read().users.get(name).cloned()
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<User> {
        self.read().users.values().cloned().collect()
    }

    /// Checks a user's password (PLAIN, AMQPLAIN, HTTP basic auth).
    ///
    /// # Errors
    /// Why the login is refused (for the log only).
    pub fn check_password(&self, name: &str, password: &str) -> Result<User, LoginError> {
        let inner = self.read();
        let user = inner.users.get(name).ok_or(LoginError::UnknownUser)?;
        // RabbitMQ's internal backend: "password is required", whatever the hash.
        if user.password_hash.is_empty() || password.is_empty() {
            return Err(LoginError::NoPassword);
        }
        if verify_password(user.hashing_algorithm, &user.password_hash, password) {
            Ok(user.clone())
        } else {
            Err(LoginError::BadPassword)
        }
    }

    // ----- vhosts -----

    /// Records a vhost's metadata.
    ///
    /// # Errors
    /// The vhost exists, or the name is invalid.
    pub fn add_vhost(
        &self,
        name: &str,
        description: &str,
        tags: &[String],
    ) -> Result<(), AdminError> {
        validate_name("vhost", name)?;
        self.change(|inner| {
            if inner.vhosts.contains_key(name) {
                return Err(AdminError::VHostExists(name.to_string()));
            }
            inner.vhosts.insert(
                name.to_string(),
                VHostInfo {
                    name: name.to_string(),
                    description: description.to_string(),
                    tags: tags.to_vec(),
                    limits: VHostLimits::default(),
                    tracing: false,
                },
            );
            Ok(())
        })
    }

    /// Records whether a vhost's firehose is on.
    ///
    /// # Errors
    /// No such vhost, or the state cannot be written.
    pub fn set_vhost_tracing(&self, name: &str, on: bool) -> Result<(), AdminError> {
        self.change(|inner| match inner.vhosts.get_mut(name) {
            Some(v) => {
                v.tracing = on;
                Ok(())
            }
            None => Err(AdminError::NoSuchVHost(name.to_string())),
        })
    }

    /// Forgets a vhost with every permission in it.
    ///
    /// # Errors
    /// No such vhost.
    pub fn delete_vhost(&self, name: &str) -> Result<(), AdminError> {
        self.change(|inner| {
            if inner.vhosts.remove(name).is_none() {
                return Err(AdminError::NoSuchVHost(name.to_string()));
            }
            inner.permissions.retain(|(_, v), _| v != name);
            inner.topic_permissions.retain(|(_, v, _), _| v != name);
            inner.policies.retain(|(v, _), _| v != name);
            inner.operator_policies.retain(|(v, _), _| v != name);
            Ok(())
        })
    }

    /// Sets a vhost's limits (each `None` removes that limit).
    ///
    /// # Errors
    /// No such vhost.
    pub fn set_vhost_limits(&self, name: &str, limits: VHostLimits) -> Result<(), AdminError> {
        self.change(|inner| {
            let v = inner
                .vhosts
                .get_mut(name)
                .ok_or_else(|| AdminError::NoSuchVHost(name.to_string()))?;
            v.limits = limits;
            Ok(())
        })
    }

    /// A vhost's metadata.
    pub fn vhost(&self, name: &str) -> Option<VHostInfo> {
        self.read().vhosts.get(name).cloned()
    }

    /// Every vhost's metadata, by name.
    pub fn vhosts(&self) -> Vec<VHostInfo> {
        self.read().vhosts.values().cloned().collect()
    }

    // ----- policies and global parameters -----

    /// Creates or replaces a policy after validating it. Returns whether it existed.
    ///
    /// # Errors
    /// No such vhost, an invalid policy ([`AdminError::Validation`]), or the state
    /// cannot be written.
    pub fn put_policy(
        &self,
        kind: crate::policy::PolicyKind,
        record: crate::policy::PolicyRecord,
    ) -> Result<bool, AdminError> {
        validate_name("policy", &record.name)?;
        crate::policy::Policy::from_record(&record, kind).map_err(AdminError::Validation)?;
        self.change(|inner| {
            if !inner.vhosts.contains_key(&record.vhost) {
                return Err(AdminError::NoSuchVHost(record.vhost.clone()));
            }
            let key = (record.vhost.clone(), record.name.clone());
            Ok(inner.policy_map(kind).insert(key, record).is_some())
        })
    }

    /// Deletes a policy.
    ///
    /// # Errors
    /// No such policy, or the state cannot be written.
    pub fn delete_policy(
        &self,
        kind: crate::policy::PolicyKind,
        vhost: &str,
        name: &str,
    ) -> Result<(), AdminError> {
        self.change(|inner| {
            inner
                .policy_map(kind)
                .remove(&(vhost.to_string(), name.to_string()))
                .map(|_| ())
                .ok_or_else(|| AdminError::NotFound(format!("policy '{name}' in vhost '{vhost}'")))
        })
    }

    /// The policies of one kind, in one vhost or all, ordered by vhost and name.
    pub fn policies(
        &self,
        kind: crate::policy::PolicyKind,
        vhost: Option<&str>,
    ) -> Vec<crate::policy::PolicyRecord> {
        let inner = self.read();
        let map = match kind {
            crate::policy::PolicyKind::Regular => &inner.policies,
            crate::policy::PolicyKind::Operator => &inner.operator_policies,
        };
        map.values()
            .filter(|p| vhost.is_none_or(|v| p.vhost == v))
            .cloned()
            .collect()
    }

    /// Sets a global parameter (any JSON value). Returns whether it existed.
    ///
    /// # Errors
    /// The state cannot be written.
    pub fn put_global_parameter(
        &self,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<bool, AdminError> {
        validate_name("global parameter", name)?;
        let p = GlobalParameter {
            name: name.to_string(),
            value: value.to_string(),
        };
        self.change(|inner| {
            Ok(inner
                .global_parameters
                .insert(name.to_string(), p)
                .is_some())
        })
    }

    /// Deletes a global parameter.
    ///
    /// # Errors
    /// No such parameter, or the state cannot be written.
    pub fn delete_global_parameter(&self, name: &str) -> Result<(), AdminError> {
        self.change(|inner| {
            inner
                .global_parameters
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| AdminError::NotFound(format!("global parameter '{name}'")))
        })
    }

    /// The global parameters with their values.
    pub fn global_parameters(&self) -> Vec<(String, serde_json::Value)> {
        self.read()
            .global_parameters
            .values()
            .map(|g| {
                let v = serde_json::from_str(&g.value).unwrap_or(serde_json::Value::Null);
                (g.name.clone(), v)
            })
            .collect()
    }

    // ----- permissions -----

    /// Sets a user's permissions in a vhost.
    ///
    /// # Errors
    /// No such user or vhost, or a pattern that is not a regular expression.
    pub fn set_permissions(
        &self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<(), AdminError> {
        for p in [configure, write, read] {
            Matcher::compile(p)?;
        }
        self.change(|inner| {
            inner.require(user, vhost)?;
            inner.permissions.insert(
                (user.to_string(), vhost.to_string()),
                Permission {
                    user: user.to_string(),
                    vhost: vhost.to_string(),
                    configure: configure.to_string(),
                    write: write.to_string(),
                    read: read.to_string(),
                },
            );
            Ok(())
        })
    }

    /// Removes a user's permissions in a vhost (no error if there were none).
    ///
    /// # Errors
    /// No such user or vhost.
    pub fn clear_permissions(&self, user: &str, vhost: &str) -> Result<(), AdminError> {
        self.change(|inner| {
            inner.require(user, vhost)?;
            inner
                .permissions
                .remove(&(user.to_string(), vhost.to_string()));
            Ok(())
        })
    }

    /// Every permission, by user then vhost.
    pub fn permissions(&self) -> Vec<Permission> {
        self.read().permissions.values().cloned().collect()
    }

    /// Sets a user's topic permissions on an exchange of a vhost.
    ///
    /// # Errors
    /// No such user or vhost, or a pattern that is not a regular expression.
    pub fn set_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> Result<(), AdminError> {
        for p in [write, read] {
            Matcher::compile(&expand(p, "u", "v", None))?;
        }
        self.change(|inner| {
            inner.require(user, vhost)?;
            inner.topic_permissions.insert(
                (user.to_string(), vhost.to_string(), exchange.to_string()),
                TopicPermission {
                    user: user.to_string(),
                    vhost: vhost.to_string(),
                    exchange: exchange.to_string(),
                    write: write.to_string(),
                    read: read.to_string(),
                },
            );
            Ok(())
        })
    }

    /// Removes a user's topic permissions in a vhost: on one exchange, or all of them.
    ///
    /// # Errors
    /// No such user or vhost.
    pub fn clear_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> Result<(), AdminError> {
        self.change(|inner| {
            inner.require(user, vhost)?;
            inner.topic_permissions.retain(|(u, v, x), _| {
                !(u == user && v == vhost && exchange.is_none_or(|e| e == x))
            });
            Ok(())
        })
    }

    /// Every topic permission.
    pub fn topic_permissions(&self) -> Vec<TopicPermission> {
        self.read().topic_permissions.values().cloned().collect()
    }

    /// The compiled permissions of `user` in `vhost`, or `None` if the user has none
    /// there. `client_id` fills `{client_id}` in topic permission patterns.
    pub fn grant(&self, user: &str, vhost: &str, client_id: Option<&str>) -> Option<Grant> {
        let inner = self.read();
        let u = inner.users.get(user)?;
        let p = inner
            .permissions
            .get(&(user.to_string(), vhost.to_string()))?;
        // Patterns were validated when stored.
        let compile = |s: &str| Matcher::compile(s).ok();
        let topics = inner
            .topic_permissions
            .values()
            .filter(|t| t.user == user && t.vhost == vhost)
            .filter_map(|t| {
                Some(TopicGrant {
                    exchange: t.exchange.clone(),
                    write: compile(&expand(&t.write, user, vhost, client_id))?,
                    read: compile(&expand(&t.read, user, vhost, client_id))?,
                })
            })
            .collect();
        Some(Grant {
            user: user.to_string(),
            vhost: vhost.to_string(),
            configure: compile(&p.configure)?,
            write: compile(&p.write)?,
            read: compile(&p.read)?,
            topics,
            impersonator: u.has_tag("impersonator"),
        })
    }

    // ----- limits -----

    /// Admits a connection of `user` to `vhost` if the vhost's and the user's
    /// `max-connections` allow; the returned slot frees it when dropped.
    ///
    /// # Errors
    /// RabbitMQ's 530 texts.
    pub fn open_connection(
        self: &Arc<Self>,
        user: &str,
        vhost: &str,
    ) -> Result<ConnectionSlot, LimitError> {
        let (vhost_limit, user_limit) = {
            let inner = self.read();
            (
                inner
                    .vhosts
                    .get(vhost)
                    .and_then(|v| v.limits.max_connections),
                inner.users.get(user).and_then(|u| u.limits.max_connections),
            )
        };
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(limit) = vhost_limit {
            if c.vhost_connections.get(vhost).copied().unwrap_or(0) >= limit {
                return Err(LimitError::VHostConnections {
                    vhost: vhost.to_string(),
                    user: user.to_string(),
                    limit,
                });
            }
        }
        if let Some(limit) = user_limit {
            if c.user_connections.get(user).copied().unwrap_or(0) >= limit {
                return Err(LimitError::UserConnections {
                    user: user.to_string(),
                    limit,
                });
            }
        }
        bump(&mut c.vhost_connections, vhost, true);
        bump(&mut c.user_connections, user, true);
        Ok(ConnectionSlot {
            access: self.clone(),
            user: user.to_string(),
            vhost: vhost.to_string(),
        })
    }

    /// Admits one more channel of `user` if their `max-channels` allows; the returned
    /// slot frees it when dropped.
    ///
    /// # Errors
    /// RabbitMQ's 530 text.
    pub fn open_channel(self: &Arc<Self>, user: &str) -> Result<ChannelSlot, LimitError> {
        let limit = self
            .read()
            .users
            .get(user)
            .and_then(|u| u.limits.max_channels);
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(limit) = limit {
            if c.user_channels.get(user).copied().unwrap_or(0) >= limit {
                return Err(LimitError::UserChannels {
                    user: user.to_string(),
                    limit,
                });
            }
        }
        bump(&mut c.user_channels, user, true);
        Ok(ChannelSlot {
            access: self.clone(),
            user: user.to_string(),
        })
    }

    /// Open connections to a vhost.
    pub fn vhost_connection_count(&self, vhost: &str) -> u64 {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.vhost_connections.get(vhost).copied().unwrap_or(0)
    }

    /// A vhost's `max-queues`.
    pub fn max_queues(&self, vhost: &str) -> Option<u64> {
        self.read()
            .vhosts
            .get(vhost)
            .and_then(|v| v.limits.max_queues)
    }
}

/// An admitted connection; counted until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    access: Arc<Access>,
    user: String,
    vhost: String,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut c = self
            .access
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        bump(&mut c.vhost_connections, &self.vhost, false);
        bump(&mut c.user_connections, &self.user, false);
    }
}

/// An admitted channel; counted until dropped.
#[derive(Debug)]
pub struct ChannelSlot {
    access: Arc<Access>,
    user: String,
}

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        let mut c = self
            .access
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        bump(&mut c.user_channels, &self.user, false);
    }
}

/// RabbitMQ's topic-permission variables: `{username}`, `{vhost}`, `{client_id}` (left
/// as written when the client gave none).
fn expand(pattern: &str, user: &str, vhost: &str, client_id: Option<&str>) -> String {
    let mut s = pattern
        .replace("{username}", &regex::escape(user))
        .replace("{vhost}", &regex::escape(vhost));
    if let Some(id) = client_id {
        s = s.replace("{client_id}", &regex::escape(id));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_from_a_real_rabbitmq_export_verify() {
        // `rabbitmqctl export_definitions` of RabbitMQ 3.10.8: user u1, password p1.
        let stored = "lzE5Yxb3zmj/myS3bmd6N11fV+aS1HolG2eCjLtohHZ7LV+6";
        assert!(verify_password(HashingAlgorithm::Sha256, stored, "p1"));
        assert!(!verify_password(HashingAlgorithm::Sha256, stored, "p2"));
        assert!(!verify_password(HashingAlgorithm::Sha512, stored, "p1"));
        assert!(!verify_password(
            HashingAlgorithm::Sha256,
            "not base64!",
            "p1"
        ));
    }

    #[test]
    fn our_hashes_have_rabbitmqs_shape_and_verify() {
        for algo in [
            HashingAlgorithm::Sha256,
            HashingAlgorithm::Sha512,
            HashingAlgorithm::Md5,
        ] {
            let h = hash_password(algo, "pässword");
            let raw = BASE64.decode(&h).unwrap();
            assert_eq!(raw.len(), 4 + algo.digest_len());
            assert!(verify_password(algo, &h, "pässword"));
            assert!(!verify_password(algo, &h, "password"));
            assert!(validate_hash(algo, &h).is_ok());
        }
        assert_ne!(
            hash_password(HashingAlgorithm::Sha256, "x"),
            hash_password(HashingAlgorithm::Sha256, "x"),
            "a fresh salt each time"
        );
        assert!(validate_hash(HashingAlgorithm::Sha256, "AAAA").is_err());
    }

    fn sample() -> Access {
        let a = Access::in_memory();
        a.add_vhost("/", "", &[]).unwrap();
        a.add_user("u", Some("p"), &[]).unwrap();
        a
    }

    #[test]
    fn permissions_match_like_rabbitmq() {
        let a = sample();
        a.set_permissions("u", "/", "^u\\.", "", ".*").unwrap();
        let g = a.grant("u", "/", None).unwrap();
        assert!(g.check_configure(Resource::Queue, "u.q").is_ok());
        let err = g.check_configure(Resource::Queue, "x.u.q").unwrap_err();
        assert_eq!(
            err.to_string(),
            "access to queue 'x.u.q' in vhost '/' refused for user 'u'"
        );
        // The empty pattern is ^$; the default exchange is checked as amq.default.
        assert!(g.check_write(Resource::Exchange, "amq.direct").is_err());
        assert_eq!(
            g.check_write(Resource::Exchange, "")
                .unwrap_err()
                .to_string(),
            "access to exchange 'amq.default' in vhost '/' refused for user 'u'"
        );
        assert!(g.check_read(Resource::Queue, "anything").is_ok());
        assert!(a.grant("u", "/other", None).is_none());
        assert!(matches!(
            a.set_permissions("u", "/", "(", ".*", ".*"),
            Err(AdminError::InvalidRegex { .. })
        ));
        assert_eq!(
            a.set_permissions("nobody", "/", ".*", ".*", ".*"),
            Err(AdminError::NoSuchUser("nobody".into()))
        );
    }

    #[test]
    fn topic_permissions_expand_variables_and_default_to_allowed() {
        let a = sample();
        a.set_permissions("u", "/", ".*", ".*", ".*").unwrap();
        a.set_topic_permissions("u", "/", "amq.topic", "^{username}\\.", "^r\\.{vhost}")
            .unwrap();
        let g = a.grant("u", "/", None).unwrap();
        assert!(g.has_topic_permissions());
        assert!(g.check_topic_write("amq.topic", "u.a").is_ok());
        assert_eq!(
            g.check_topic_write("amq.topic", "zz")
                .unwrap_err()
                .to_string(),
            "access to topic 'zz' in exchange 'amq.topic' in vhost '/' refused for user 'u'"
        );
        assert!(g.check_topic_read("amq.topic", "r./").is_ok());
        assert!(g.check_topic_read("amq.topic", "u.a").is_err());
        assert!(g.check_topic_write("other.topic", "zz").is_ok());
        a.clear_topic_permissions("u", "/", None).unwrap();
        assert!(!a.grant("u", "/", None).unwrap().has_topic_permissions());
    }

    #[test]
    fn passwords_users_without_password_and_deletion() {
        let a = sample();
        assert!(a.check_password("u", "p").is_ok());
        assert_eq!(a.check_password("u", "q"), Err(LoginError::BadPassword));
        assert_eq!(a.check_password("v", "p"), Err(LoginError::UnknownUser));
        a.change_password("u", None).unwrap();
        assert_eq!(a.check_password("u", ""), Err(LoginError::NoPassword));
        a.set_permissions("u", "/", ".*", ".*", ".*").unwrap();
        a.delete_user("u").unwrap();
        assert!(a.permissions().is_empty());
        assert_eq!(a.delete_user("u"), Err(AdminError::NoSuchUser("u".into())));
    }

    #[test]
    fn limits_count_connections_and_channels() {
        let a = Arc::new(sample());
        a.add_user("w", Some("p"), &[]).unwrap();
        a.set_vhost_limits(
            "/",
            VHostLimits {
                max_connections: Some(2),
                max_queues: Some(3),
            },
        )
        .unwrap();
        a.set_user_limits(
            "u",
            UserLimits {
                max_connections: Some(1),
                max_channels: Some(1),
            },
        )
        .unwrap();
        let s1 = a.open_connection("u", "/").unwrap();
        assert_eq!(
            a.open_connection("u", "/").unwrap_err().to_string(),
            "connection refused for user 'u': user connection limit (1) is reached"
        );
        let _s2 = a.open_connection("w", "/").unwrap();
        assert_eq!(
            a.open_connection("w", "/").unwrap_err().to_string(),
            "access to vhost '/' refused for user 'w': connection limit (2) is reached"
        );
        drop(s1);
        assert!(a.open_connection("u", "/").is_ok());
        let ch = a.open_channel("u").unwrap();
        assert!(a.open_channel("u").is_err());
        drop(ch);
        assert!(a.open_channel("u").is_ok());
        assert_eq!(a.max_queues("/"), Some(3));
    }

    #[test]
    fn state_persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let (a, fresh) = Access::load(dir.path()).unwrap();
        assert!(fresh);
        a.add_vhost("/", "Default virtual host", &[]).unwrap();
        a.add_user("u", Some("p"), &["administrator"]).unwrap();
        a.set_permissions("u", "/", ".*", ".*", ".*").unwrap();
        a.set_topic_permissions("u", "/", "amq.topic", ".*", ".*")
            .unwrap();
        let (b, fresh) = Access::load(dir.path()).unwrap();
        assert!(!fresh);
        assert_eq!(a.snapshot(), b.snapshot());
        assert!(b.check_password("u", "p").is_ok());
        std::fs::write(dir.path().join(ACCESS_FILE), "users = 3").unwrap();
        assert!(Access::load(dir.path()).is_err());
    }

    #[test]
    fn apply_refuses_a_bad_state_whole() {
        let a = sample();
        let bad = AccessState {
            users: vec![User {
                name: "new".into(),
                password_hash: String::new(),
                hashing_algorithm: HashingAlgorithm::Sha256,
                tags: vec![],
                limits: UserLimits::default(),
            }],
            permissions: vec![Permission {
                user: "new".into(),
                vhost: "/nope".into(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            }],
            ..AccessState::default()
        };
        assert_eq!(
            a.apply(&bad, false),
            Err(AdminError::NoSuchVHost("/nope".into()))
        );
        assert!(a.user("new").is_none(), "nothing applied");
    }
}
