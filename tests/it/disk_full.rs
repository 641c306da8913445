//! A data directory that runs out of space mid-write (#13): the broker runs on a small
//! tmpfs made by the test. Persistent messages that could not be written are nacked, the
//! disk alarm blocks publishers, nothing already confirmed is lost, and publishing works
//! again once space returns.
//!
//! Mounting needs root (CI runs as root). As another user the test says so and returns.

use std::path::{Path, PathBuf};
use std::process::Command;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};

use crate::util::{checksum, eventually, queue_state, ss, within, TestBroker, TIMEOUT};

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct SmallFs {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    /// A `size`-byte tmpfs, or `None` when this user may not mount (not root).
    fn mount(size: u64) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mount = dir.path().join("fs");
        std::fs::create_dir(&mount).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .output()
            .expect("run mount");
        if !out.status.success() {
            let root = Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
            assert!(
                !root,
                "mounting a tmpfs as root failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(SmallFs { mount, _dir: dir })
    }

    fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn body(i: u32, len: usize) -> Vec<u8> {
    let mut b = format!("message {i:06} ").into_bytes();
    b.resize(len, b'a' + (i % 26) as u8);
    b
}

/// Publishes `body` persistently and returns its confirm.
async fn publish(ch: &lapin::Channel, queue: &str, body: &[u8]) -> Confirmation {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            ss(""),
            ss(queue),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        ),
    )
    .await
    .expect("basic.publish");
    within("publisher confirm", confirm)
        .await
        .expect("publisher confirm")
}

async fn start(data: &Path) -> TestBroker {
    let data = data.to_path_buf();
    TestBroker::start_with(move |c| {
        c.data_dir = data;
        c.resources.disk_free_limit_bytes = 1024 * 1024;
        c.resources.check_interval_ms = 50;
        // Small segments, so the run also rolls over to new files on a full disk.
        c.storage.segment_bytes = 1024 * 1024;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_nacks_unwritten_messages_raises_the_alarm_and_loses_nothing_confirmed() {
    let Some(fs) = SmallFs::mount(16 * 1024 * 1024) else {
        eprintln!("disk_full: not root, cannot mount a tmpfs; not run");
        return;
    };
    let data = fs.path().join("data");
    let broker = start(&data).await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(ss("full.q"), durable, FieldTable::default())
        .await
        .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();

    // Leave about 3 MiB free, above the 1 MiB alarm limit.
    let filler = fs.path().join("filler");
    let free = fs2_free(fs.path());
    std::fs::write(&filler, vec![0u8; (free - 3 * 1024 * 1024) as usize]).unwrap();
    eventually(TIMEOUT, "no disk alarm with 3 MiB free", || {
        !broker.running().alarm_active()
    })
    .await;

    // Confirmed: 1 MiB in 64 KiB messages.
    let mut confirmed = Vec::new();
    for i in 0..16 {
        let b = body(i, 64 * 1024);
        assert_eq!(publish(&ch, "full.q", &b).await, Confirmation::Ack(None));
        confirmed.push(checksum(&b));
    }
    // One message larger than the space left: its write fails part-way.
    let big = body(16, 4 * 1024 * 1024);
    assert_eq!(
        publish(&ch, "full.q", &big).await,
        Confirmation::Nack(None),
        "a message that could not be written is nacked"
    );
    eventually(TIMEOUT, "the disk alarm", || {
        broker.running().alarm_active()
    })
    .await;

    // Space returns: the alarm clears and publishing is confirmed again.
    std::fs::remove_file(&filler).unwrap();
    eventually(TIMEOUT, "the disk alarm to clear", || {
        !broker.running().alarm_active()
    })
    .await;
    for i in 17..33 {
        let b = body(i, 64 * 1024);
        assert_eq!(publish(&ch, "full.q", &b).await, Confirmation::Ack(None));
        confirmed.push(checksum(&b));
    }
    drop(ch);
    drop(conn);
    broker.shutdown().await;

    // After a restart every confirmed message is there, intact and in order. The nacked
    // one may be too (a nack says the broker could not vouch for it, not that it is gone).
    let broker = start(&data).await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let (ready, _) = queue_state(&conn, "full.q").await.unwrap();
    let ready = ready as usize;
    assert!(
        ready == confirmed.len() || ready == confirmed.len() + 1,
        "{ready} messages recovered, {} confirmed",
        confirmed.len()
    );
    let mut consumer = ch
        .basic_consume(
            ss("full.q"),
            ss(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let big_sum = checksum(&big);
    let mut got = Vec::new();
    for _ in 0..ready {
        let d = match within("a recovered message", consumer.next()).await {
            Some(Ok(d)) => d,
            other => panic!("consumer ended: {other:?}"),
        };
        let sum = checksum(&d.data);
        d.ack(BasicAckOptions::default()).await.unwrap();
        if sum != big_sum {
            got.push(sum);
        }
    }
    // The nacked message, if kept, is the only extra one.
    assert_eq!(
        got, confirmed,
        "every confirmed message, intact and in order"
    );
    drop(fs);
}

/// Bytes available to unprivileged users on the file system of `path`.
fn fs2_free(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("run df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

/// Consumes and acks every message of `queue` on a fresh channel, returning their
/// checksums in delivery order.
async fn drain(conn: &lapin::Connection, queue: &str) -> Vec<u64> {
    let (ready, _) = queue_state(conn, queue).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            ss(queue),
            ss(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..ready {
        let d = match within("a recovered message", consumer.next()).await {
            Some(Ok(d)) => d,
            other => panic!("consumer ended: {other:?}"),
        };
        got.push(checksum(&d.data));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_torn_write_keeps_confirmed_messages_and_appends_cleanly() {
    let Some(fs) = SmallFs::mount(16 * 1024 * 1024) else {
        eprintln!("disk_full: not root, cannot mount a tmpfs; not run");
        return;
    };
    let data = fs.path().join("data");
    let broker = start(&data).await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(ss("torn.q"), durable, FieldTable::default())
        .await
        .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let filler = fs.path().join("filler");
    let free = fs2_free(fs.path());
    std::fs::write(&filler, vec![0u8; (free - 2 * 1024 * 1024) as usize]).unwrap();
    let mut confirmed = Vec::new();
    for i in 0..8 {
        let b = body(i, 64 * 1024);
        assert_eq!(publish(&ch, "torn.q", &b).await, Confirmation::Ack(None));
        confirmed.push(checksum(&b));
    }
    // Written part-way, then the disk is full: the segment ends in a torn record.
    let big = body(8, 4 * 1024 * 1024);
    assert_eq!(publish(&ch, "torn.q", &big).await, Confirmation::Nack(None));
    // Stopped while the disk is still full (what is buffered cannot be written), then
    // started again once there is room.
    drop(ch);
    drop(conn);
    broker.shutdown().await;
    std::fs::remove_file(&filler).unwrap();
    let broker = start(&data).await;
    let conn = broker.connect().await;
    let got = drain(&conn, "torn.q").await;
    let big_sum = checksum(&big);
    let kept: Vec<u64> = got.iter().copied().filter(|s| *s != big_sum).collect();
    assert_eq!(
        kept, confirmed,
        "every confirmed message survives the torn write"
    );

    // What is appended after the torn record survives the next restart too.
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let mut later = Vec::new();
    for i in 100..110 {
        let b = body(i, 64 * 1024);
        assert_eq!(publish(&ch, "torn.q", &b).await, Confirmation::Ack(None));
        later.push(checksum(&b));
    }
    drop(ch);
    drop(conn);
    broker.shutdown().await;
    let broker = start(&data).await;
    let conn = broker.connect().await;
    assert_eq!(drain(&conn, "torn.q").await, later);
    drop(conn);
    broker.shutdown().await;
    drop(fs);
}
