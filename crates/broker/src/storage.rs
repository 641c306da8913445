//! The data directory: durable definitions per vhost, one segment store per durable
//! queue, the format version, and a lock so that two brokers never share a directory.
//!
//! ```text
//! DATA_DIR/
//!   VERSION                         "1": the on-disk format; another value refuses to start
//!   LOCK                            held (flock) while a broker runs
//!   vhosts/<fnv64 of name>/
//!     definitions.toml              durable exchanges, queues, bindings (atomic rewrite)
//!     queues/<fnv64 of name>/       the queue's segment store
//!   transient/<n>/                  pages of non-durable queues (emptied at every start)
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amq_protocol::frame::WriteContext;
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::FieldTable;
use serde::{Deserialize, Serialize};

use crate::store::{FsyncPolicy, PageBudget, Persister, SegmentConfig, SegmentStore};

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: &str = "1";

/// Storage settings.
#[derive(Debug, Clone, Copy)]
pub struct StorageConfig {
    /// When persistent messages are forced to disk.
    pub fsync: FsyncPolicy,
    /// Segment store tuning.
    pub segment: SegmentConfig,
    /// Message bodies all queues together keep in memory; beyond it they are paged out
    /// to the data directory (each queue also stops at `segment.cache_bytes`).
    pub ram_budget_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            fsync: FsyncPolicy::default(),
            segment: SegmentConfig::default(),
            ram_budget_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O error on a path.
    #[error("data directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Another broker holds the lock.
    #[error("data directory {0} is locked by another running Warren")]
    Locked(PathBuf),
    /// Written by an incompatible format version.
    #[error("data directory {path} has format version '{found}', this Warren reads version {FORMAT_VERSION}; refusing to touch it")]
    Version {
        /// The directory.
        path: PathBuf,
        /// What VERSION says.
        found: String,
    },
    /// A definitions file cannot be parsed.
    #[error("cannot parse {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A durable exchange.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExchangeDef {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: String,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Internal flag.
    pub internal: bool,
    /// Arguments, AMQP field-table bytes in hex.
    pub arguments: String,
}

/// A durable queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueDef {
    /// Name.
    pub name: String,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Arguments, AMQP field-table bytes in hex.
    pub arguments: String,
}

/// A durable binding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BindingDef {
    /// Source exchange.
    pub source: String,
    /// Destination queue or exchange.
    pub destination: String,
    /// Whether the destination is an exchange.
    pub destination_is_exchange: bool,
    /// Binding key.
    pub routing_key: String,
    /// Arguments, AMQP field-table bytes in hex.
    pub arguments: String,
}

/// Everything durable in one vhost.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Definitions {
    /// Vhost name.
    pub vhost: String,
    /// Durable exchanges (not the predeclared ones).
    #[serde(default)]
    pub exchanges: Vec<ExchangeDef>,
    /// Durable queues.
    #[serde(default)]
    pub queues: Vec<QueueDef>,
    /// Bindings between durable entities.
    #[serde(default)]
    pub bindings: Vec<BindingDef>,
}

/// Encodes a field table as hex of its AMQP wire form.
pub fn table_to_hex(t: &FieldTable) -> String {
    let bytes = gen_field_table(t)(WriteContext::from(Vec::new()))
        .map(|c| c.write)
        .unwrap_or_default();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes [`table_to_hex`]'s output.
pub fn table_from_hex(s: &str) -> Option<FieldTable> {
    if s.is_empty() {
        return Some(FieldTable::default());
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    let bytes = bytes?;
    warren_codec::nesting::parse_field_table(bytes.as_slice()).map(|(_, t)| t)
}

/// FNV-1a, 64 bits: a stable file name for any entity name.
fn fnv(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// An open data directory.
#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
    config: StorageConfig,
    persister: Persister,
    budget: Arc<PageBudget>,
    /// Names the next non-durable queue's page directory.
    transient_seq: std::sync::atomic::AtomicU64,
    _lock: File,
}

impl Storage {
    /// Opens `root`, creating it if missing.
    ///
    /// # Errors
    /// Unreadable or uncreatable directory, a lock held by another broker, or a format
    /// version this build does not read. The directory is never modified in these cases.
    pub fn open(root: &Path, config: StorageConfig) -> Result<Arc<Self>, StorageError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        fs::read_dir(root).map_err(io_err(root))?;
        let lock_path = root.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked(root.to_path_buf()))
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let version_path = root.join("VERSION");
        match fs::read_to_string(&version_path) {
            Ok(v) => {
                if v.trim() != FORMAT_VERSION {
                    return Err(StorageError::Version {
                        path: root.to_path_buf(),
                        found: v.trim().chars().take(40).collect(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_atomically(&version_path, format!("{FORMAT_VERSION}\n").as_bytes())
                    .map_err(io_err(&version_path))?;
            }
            Err(e) => return Err(io_err(&version_path)(e)),
        }
        // Pages of non-durable queues never outlive the broker that wrote them.
        let transient = root.join("transient");
        match fs::remove_dir_all(&transient) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&transient)(e)),
        }
        let persister = Persister::start(config.fsync).map_err(io_err(root))?;
        Ok(Arc::new(Storage {
            root: root.to_path_buf(),
            config,
            persister,
            budget: PageBudget::new(config.ram_budget_bytes),
            transient_seq: std::sync::atomic::AtomicU64::new(0),
            _lock: lock,
        }))
    }

    /// The group-commit thread.
    pub fn persister(&self) -> &Persister {
        &self.persister
    }

    fn vhost_dir(&self, vhost: &str) -> PathBuf {
        self.root.join("vhosts").join(fnv(vhost))
    }

    /// Opens (recovering) the store of a durable queue.
    ///
    /// # Errors
    /// I/O errors.
    pub fn queue_store(&self, vhost: &str, queue: &str, levels: usize) -> io::Result<SegmentStore> {
        let dir = self.vhost_dir(vhost).join("queues").join(fnv(queue));
        SegmentStore::open_with_budget(&dir, self.config.segment, levels, self.budget.clone())
    }

    fn stream_dir(&self, vhost: &str, queue: &str) -> PathBuf {
        self.vhost_dir(vhost).join("streams").join(fnv(queue))
    }

    /// Opens (recovering) a stream's log.
    ///
    /// # Errors
    /// I/O errors.
    pub fn stream(
        &self,
        vhost: &str,
        queue: &str,
        settings: crate::stream::StreamSettings,
    ) -> io::Result<crate::stream::StreamLog> {
        crate::stream::StreamLog::open(&self.stream_dir(vhost, queue), settings)
    }

    /// Creates an empty log for a newly declared stream, discarding files left by an
    /// earlier stream of the same name that was not in the definitions.
    ///
    /// # Errors
    /// I/O errors.
    pub fn fresh_stream(
        &self,
        vhost: &str,
        queue: &str,
        settings: crate::stream::StreamSettings,
    ) -> io::Result<crate::stream::StreamLog> {
        let dir = self.stream_dir(vhost, queue);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        crate::stream::StreamLog::open(&dir, settings)
    }

    /// The store of a non-durable queue: in memory within the budgets, paged out to
    /// `transient/<n>` beyond them (the directory is made on the first page-out).
    pub fn transient_queue_store(&self, levels: usize) -> SegmentStore {
        let n = self
            .transient_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.root.join("transient").join(n.to_string());
        SegmentStore::transient(&dir, self.config.segment, levels, self.budget.clone())
    }

    /// The memory budget shared by every queue's message bodies.
    pub fn page_budget(&self) -> &Arc<PageBudget> {
        &self.budget
    }

    /// Creates an empty store for a newly declared durable queue, discarding any files
    /// left by an earlier queue of the same name that was not in the definitions.
    ///
    /// # Errors
    /// I/O errors.
    pub fn fresh_queue_store(
        &self,
        vhost: &str,
        queue: &str,
        levels: usize,
    ) -> io::Result<SegmentStore> {
        let dir = self.vhost_dir(vhost).join("queues").join(fnv(queue));
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        SegmentStore::open_with_budget(&dir, self.config.segment, levels, self.budget.clone())
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes everything stored for a vhost (its definitions and queue stores).
    ///
    /// # Errors
    /// I/O errors other than the directory being absent.
    pub fn remove_vhost(&self, vhost: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.vhost_dir(vhost)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes a vhost's definitions atomically and durably.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, defs: &Definitions) -> io::Result<()> {
        let dir = self.vhost_dir(&defs.vhost);
        fs::create_dir_all(&dir)?;
        let text = toml::to_string(defs).map_err(io::Error::other)?;
        write_atomically(&dir.join("definitions.toml"), text.as_bytes())
    }

    /// Reads every vhost's definitions.
    ///
    /// # Errors
    /// Unreadable or unparsable files.
    pub fn load(&self) -> Result<Vec<Definitions>, StorageError> {
        let dir = self.root.join("vhosts");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path().join("definitions.toml");
            let text = match fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e)),
            };
            let defs: Definitions = toml::from_str(&text).map_err(|e| StorageError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            out.push(defs);
        }
        Ok(out)
    }
}

/// Writes `path` via a temporary file, fsync and rename, then syncs the directory.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::AMQPValue;

    #[test]
    fn lock_version_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), StorageConfig::default()).unwrap();
        assert!(matches!(
            Storage::open(dir.path(), StorageConfig::default()),
            Err(StorageError::Locked(_))
        ));
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongInt(10));
        let defs = Definitions {
            vhost: "/".into(),
            exchanges: vec![],
            queues: vec![QueueDef {
                name: "q \"quoted\" ü".into(),
                auto_delete: false,
                arguments: table_to_hex(&args),
            }],
            bindings: vec![],
        };
        s.save(&defs).unwrap();
        assert_eq!(s.load().unwrap(), vec![defs.clone()]);
        assert_eq!(table_from_hex(&defs.queues[0].arguments), Some(args));
        drop(s);
        fs::write(dir.path().join("VERSION"), "99\n").unwrap();
        assert!(matches!(
            Storage::open(dir.path(), StorageConfig::default()),
            Err(StorageError::Version { .. })
        ));
    }
}
