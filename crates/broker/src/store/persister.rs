//! Group commit: one thread runs every fsync that publisher confirms and transaction
//! commits wait for. Requests pile up while a sync is in flight and the next sync covers
//! them all, so a thousand concurrent publishers cost one `fdatasync` per file per round,
//! not a thousand. No fsync ever runs on a runtime worker thread.

use std::fs::File;
use std::sync::mpsc;
use std::sync::Arc;

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

type Done = Box<dyn FnOnce(bool) + Send>;

struct Request {
    files: Vec<Arc<File>>,
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
        std::thread::Builder::new()
            .name("warren-persister".into())
            .spawn(move || run(rx))?;
        Ok(Persister { tx, policy })
    }

    /// The policy in force.
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Syncs `files` (per the policy), then calls `done(ok)`. Requests complete in the
    /// order they were made, so a request with no files is a barrier behind earlier ones.
    pub fn sync(&self, files: Vec<Arc<File>>, done: impl FnOnce(bool) + Send + 'static) {
        let files = if self.policy == FsyncPolicy::Never {
            Vec::new()
        } else {
            files
        };
        if let Err(mpsc::SendError(r)) = self.tx.send(Request {
            files,
            done: Box::new(done),
        }) {
            // The thread is gone (only at process exit): report failure.
            (r.done)(false);
        }
    }
}

fn run(rx: mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut files: Vec<&Arc<File>> = Vec::new();
        for r in &batch {
            for f in &r.files {
                if !files.iter().any(|g| Arc::ptr_eq(g, f)) {
                    files.push(f);
                }
            }
        }
        let mut ok = true;
        for f in files {
            if let Err(e) = f.sync_data() {
                tracing::error!(error = %e, "fsync failed");
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
    use std::io::Write;

    #[test]
    fn requests_complete_in_order() {
        let p = Persister::start(FsyncPolicy::Always).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut f = File::create(dir.path().join("x")).unwrap();
        f.write_all(b"hello").unwrap();
        let f = Arc::new(f);
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
    }
}
