//! Starting and stopping: the real `warren` binary (startup line, SIGTERM and SIGINT
//! handling, exit status, bad configuration) and in-process shutdown.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::util::{
    assert_close, consume, declare_queue, eventually, next_delivery, publish, within, RawClient,
    TestBroker, TIMEOUT,
};

const FORCED: &str = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'";

/// A `warren` process, killed if the test ends while it still runs.
struct Warren {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Warren {
    /// Starts the binary on 127.0.0.1:0 with a temp data dir and config file, and waits for
    /// its startup line.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("warren.toml");
        std::fs::write(&config, "log_level = \"info\"\n").unwrap();
        let mut child = spawn(dir.path(), &config);
        let stdout = child.stdout.take().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut warren = Warren {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            _dir: dir,
        };
        let addr = within("the startup line", async {
            loop {
                let Some(line) = rx.recv().await else {
                    panic!("warren exited before its startup line")
                };
                if let Some(addr) = startup_addr(&line) {
                    break addr;
                }
            }
        })
        .await;
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        assert_ne!(addr.port(), 0);
        warren.addr = addr;
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        warren
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child).await
    }
}

impl Drop for Warren {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn(dir: &Path, config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--config")
        .arg(config)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--management-listen",
            "127.0.0.1:0",
            "--prometheus-listen",
            "127.0.0.1:0",
            "--stream-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warren")
}

/// The address in "Server startup complete; AMQP listener on 127.0.0.1:PORT".
fn startup_addr(line: &str) -> Option<SocketAddr> {
    const MARK: &str = "AMQP listener on ";
    if !line.contains("Server startup complete") {
        return None;
    }
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

async fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "warren did not exit within {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn signal_closes_clients_with_320_and_exits_0(signal: &str) {
    let mut warren = Warren::start().await;
    let conn = crate::util::connect_uri(&format!("amqp://guest:guest@{}/%2f", warren.addr))
        .await
        .expect("lapin connects to the binary");
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "life.q").await;
    let mut c = consume(&ch, "life.q").await;
    publish(&ch, "", "life.q", b"alive").await;
    assert_eq!(next_delivery(&mut c).await.data, b"alive");
    let mut raw = RawClient::open(warren.addr).await;
    raw.open_channel(1).await;

    warren.signal(signal);
    let close = raw.expect_close().await;
    assert_close(&close, 320, FORCED);
    eventually(TIMEOUT, "lapin sees the forced close", || {
        !conn.status().connected()
    })
    .await;
    let status = warren.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIG{signal}: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_320_and_exits_0() {
    signal_closes_clients_with_320_and_exits_0("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_closes_clients_with_320_and_exits_0() {
    signal_closes_clients_with_320_and_exits_0("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_no_clients_exits_0() {
    // The signal arrives right after the startup line: the handler must already be in place
    // by then, or the default action kills the process (exit by signal, not status 0).
    let mut warren = Warren::start().await;
    warren.signal("TERM");
    let status = warren.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_config_file_is_an_error_not_a_silent_default() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--config")
        .arg(&missing)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--management-listen",
            "127.0.0.1:0",
            "--prometheus-listen",
            "127.0.0.1:0",
            "--stream-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warren");
    let status = wait_exit(&mut child).await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "warren started without its config file");
    assert!(
        stderr.contains("does-not-exist.toml"),
        "the error names the file: {stderr:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_shutdown_closes_clients_with_320() {
    let broker = TestBroker::start().await;
    let addr = broker.addr();
    let conn = broker.connect().await;
    let mut raw = RawClient::open(addr).await;
    raw.open_channel(1).await;
    let closing = tokio::spawn(async move {
        let close = raw.expect_close().await;
        assert_close(&close, 320, FORCED);
    });
    broker.shutdown().await;
    within("the raw client to see 320", closing).await.unwrap();
    eventually(TIMEOUT, "lapin sees the forced close", || {
        !conn.status().connected()
    })
    .await;
}
