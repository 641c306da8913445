//! Group commit: one thread runs every fsync that publisher confirms and transaction
//! commits wait for. Requests pile up while a sync is in flight and the next sync covers
//! them all, so a thousand concurrent publishers cost one `fdatasync` per file per round,
//! not a thousand. No fsync ever runs on a runtime worker thread.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::{mpsc, Mutex};

use serde::Deserialize;

/// When persistent messages are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fdatasync before a confirm or commit-ok is sent (RabbitMQ's guarantee).
    #[default]
    Always,
    /// Written to the OS (survives a crash of Warren, not of the machine) before the
    /// confirm; never forced.
    Never,
}

/// Buffered appends beyond which [`SyncFile::append`] writes through.
const WRITE_BATCH: usize = 256 * 1024;

/// An append-only file written through a buffer: records collect in memory and reach
/// the OS in one `write` when the buffer fills, when a sync needs them (on the persister
/// thread, so the publishing connection does not pay for the system call), when a reader
/// needs them, or when the owner flushes (every queue tick). Publishes are confirmed
/// only after their sync, so nothing confirmed is ever only in this buffer.
#[derive(Debug)]
pub struct SyncFile {
    file: File,
    pending: Mutex<Pending>,
    /// Writes that moved bytes to the OS (a stream starts a new chunk after one).
    writes: std::sync::atomic::AtomicU64,
}

/// Bytes not yet written, and where they start in the file.
#[derive(Debug)]
struct Pending {
    /// File length covered by successful writes: `buf` starts here.
    written: u64,
    buf: Vec<u8>,
}

impl Pending {
    /// Writes as much of `buf` as the file takes; what was written leaves the buffer
    /// even when a later write fails, so no byte is ever written twice.
    fn write_out(&mut self, mut file: &File) -> io::Result<()> {
        let mut done = 0;
        let result = loop {
            if done == self.buf.len() {
                break Ok(());
            }
            match file.write(&self.buf[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..done);
        self.written += done as u64;
        result
    }
}

impl SyncFile {
    /// Wraps a file opened for appending.
    ///
    /// # Errors
    /// Its length cannot be read.
    pub fn new(file: File) -> io::Result<Self> {
        let written = file.metadata()?.len();
        Ok(SyncFile {
            file,
            pending: Mutex::new(Pending {
                written,
                buf: Vec::new(),
            }),
            writes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many writes have moved buffered bytes to the OS so far.
    pub fn write_count(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Acquire)
    }

    fn write_out(&self, p: &mut Pending) -> io::Result<()> {
        let had = p.buf.len();
        let r = p.write_out(&self.file);
        if p.buf.len() < had {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        r
    }

    /// Appends `data` to the buffer, and writes the buffer out once it holds
    /// [`WRITE_BATCH`] bytes. Never fails: a write error is logged and the bytes stay
    /// buffered, so the file's layout stays what the caller computed; the sync that a
    /// confirm waits for then reports the error (the publisher gets a nack).
    pub fn append(&self, data: &[u8]) {
        let mut p = self.pending();
        p.buf.extend_from_slice(data);
        if p.buf.len() >= WRITE_BATCH {
            if let Err(e) = self.write_out(&mut p) {
                tracing::error!(error = %e, "cannot write to a segment file (will retry)");
            }
        }
    }

    /// Reads `out.len()` bytes at `offset`, from the file or from the buffer (a record
    /// still being buffered is read without writing anything).
    ///
    /// # Errors
    /// The file read failed or the range is beyond what was appended.
    pub fn read_at(&self, out: &mut [u8], offset: u64) -> io::Result<()> {
        let p = self.pending();
        let end = offset + out.len() as u64;
        let in_file = end.min(p.written).saturating_sub(offset) as usize;
        if in_file > 0 {
            self.file.read_exact_at(&mut out[..in_file], offset)?;
        }
        if in_file < out.len() {
            let from = (offset + in_file as u64 - p.written) as usize;
            let rest = &mut out[in_file..];
            let src = p
                .buf
                .get(from..from + rest.len())
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "beyond the end"))?;
            rest.copy_from_slice(src);
        }
        Ok(())
    }

    /// Writes buffered appends to the OS.
    ///
    /// # Errors
    /// The write failed (what was not written stays buffered).
    pub fn write_pending(&self) -> io::Result<()> {
        let mut p = self.pending();
        if p.buf.is_empty() {
            return Ok(());
        }
        self.write_out(&mut p)
    }

    /// Writes buffered appends, then forces them to disk if `fsync`.
    ///
    /// # Errors
    /// The write or the sync failed.
    pub fn sync(&self, fsync: bool) -> io::Result<()> {
        self.write_pending()?;
        if fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

impl Drop for SyncFile {
    fn drop(&mut self) {
        if let Err(e) = self.write_pending() {
            tracing::error!(error = %e, "cannot write buffered records");
        }
    }
}

type Done = Box<dyn FnOnce(bool) + Send>;

struct Request {
    files: Vec<Arc<SyncFile>>,
    done: Done,
}

/// Handle to the sync thread.
#[derive(Debug, Clone)]
pub struct Persister {
    tx: mpsc::Sender<Request>,
    policy: FsyncPolicy,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Request({} files)", self.files.len())
    }
}

impl Persister {
    /// Starts the sync thread.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start(policy: FsyncPolicy) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        let fsync = policy == FsyncPolicy::Always;
        std::thread::Builder::new()
            .name("warren-persister".into())
            .spawn(move || run(rx, fsync))?;
        Ok(Persister { tx, policy })
    }

    /// The policy in force.
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Writes out and syncs `files` (fsync per the policy), then calls `done(ok)`.
    /// Requests complete in the order they were made, so a request with no files is a
    /// barrier behind earlier ones.
    pub fn sync(&self, files: Vec<Arc<SyncFile>>, done: impl FnOnce(bool) + Send + 'static) {
        if let Err(mpsc::SendError(r)) = self.tx.send(Request {
            files,
            done: Box::new(done),
        }) {
            // The thread is gone (only at process exit): report failure.
            (r.done)(false);
        }
    }
}

fn run(rx: mpsc::Receiver<Request>, fsync: bool) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut files: Vec<&Arc<SyncFile>> = Vec::new();
        for r in &batch {
            for f in &r.files {
                if !files.iter().any(|g| Arc::ptr_eq(g, f)) {
                    files.push(f);
                }
            }
        }
        let mut ok = true;
        for f in files {
            if let Err(e) = f.sync(fsync) {
                tracing::error!(error = %e, "writing or syncing a segment failed");
                ok = false;
            }
        }
        for r in batch {
            (r.done)(ok);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_complete_in_order() {
        let p = Persister::start(FsyncPolicy::Always).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let f = Arc::new(SyncFile::new(File::create(&path).unwrap()).unwrap());
        f.append(b"hello");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "buffered");
        let (tx, rx) = mpsc::channel();
        for i in 0..50 {
            let tx = tx.clone();
            let files = if i % 2 == 0 { vec![f.clone()] } else { vec![] };
            p.sync(files, move |ok| {
                let _ = tx.send((i, ok));
            });
        }
        let got: Vec<(i32, bool)> = (0..50).map(|_| rx.recv().unwrap()).collect();
        assert!(got.iter().all(|(_, ok)| *ok));
        assert_eq!(
            got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (0..50).collect::<Vec<_>>()
        );
        // The sync wrote the buffered bytes.
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
    }

    #[test]
    fn never_policy_still_writes_before_confirming() {
        let p = Persister::start(FsyncPolicy::Never).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let f = Arc::new(SyncFile::new(File::create(&path).unwrap()).unwrap());
        f.append(b"abc");
        let (tx, rx) = mpsc::channel();
        p.sync(vec![f.clone()], move |ok| {
            let _ = tx.send(ok);
        });
        assert!(rx.recv().unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
    }

    #[test]
    fn large_appends_write_through_and_drop_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .unwrap();
        let f = SyncFile::new(file).unwrap();
        f.append(&vec![7u8; WRITE_BATCH]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), WRITE_BATCH as u64);
        f.append(b"tail");
        // Reads see buffered bytes, and ranges across the written/buffered boundary.
        let mut got = [0u8; 6];
        f.read_at(&mut got, WRITE_BATCH as u64 - 2).unwrap();
        assert_eq!(&got, b"\x07\x07tail");
        assert!(f.read_at(&mut got, WRITE_BATCH as u64 + 1).is_err());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), WRITE_BATCH as u64);
        drop(f);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            WRITE_BATCH as u64 + 4
        );
    }
}
