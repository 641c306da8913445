//! Crash tests: the real `warren` binary is killed with SIGKILL at random points while
//! publishers and consumers work, then restarted on the same data directory. Every
//! confirmed message must be there, intact and in per-publisher order; nothing acked
//! comes back as new; nothing unacked is lost. Also: a hand-damaged segment tail.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amq_protocol::types::FieldTable;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::{BasicProperties, Connection, ConnectionProperties};

const TIMEOUT: Duration = Duration::from_secs(30);
const QUEUE: &str = "crash-q";
const STREAM: &str = "crash-stream";

/// A pseudo-random number, different in every call and every run.
fn random_below(n: u64) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.finish() % n.max(1)
}

fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Body: "publisher:seq:" + padding + 16 hex digits of the checksum of the rest.
fn body(publisher: u32, seq: u64) -> Vec<u8> {
    let mut b = format!("{publisher}:{seq}:").into_bytes();
    let pad = 200 + (seq % 300) as usize;
    b.extend((0..pad).map(|i| b'a' + ((i as u64 + seq) % 26) as u8));
    let sum = checksum(&b);
    b.extend(format!("{sum:016x}").into_bytes());
    b
}

/// Parses and verifies a body; panics on corruption.
fn parse(b: &[u8]) -> (u32, u64) {
    assert!(b.len() > 16, "short body");
    let (data, sum) = b.split_at(b.len() - 16);
    let want = format!("{:016x}", checksum(data));
    assert_eq!(std::str::from_utf8(sum).unwrap(), want, "corrupted body");
    let text = std::str::from_utf8(data).unwrap();
    let mut parts = text.splitn(3, ':');
    let p = parts.next().unwrap().parse().unwrap();
    let s = parts.next().unwrap().parse().unwrap();
    (p, s)
}

struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
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
            .arg(dir)
            .args(["--config", "/dev/null"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn warren");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(rest) = line.split("AMQP listener on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(TIMEOUT)
            .expect("warren prints its startup line")
            .parse()
            .expect("address in startup line");
        Broker { child, addr }
    }

    fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(uri: &str) -> Connection {
    tokio::time::timeout(
        TIMEOUT,
        Connection::connect(uri, ConnectionProperties::default()),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

async fn declare(ch: &lapin::Channel) {
    declare_target(ch, QUEUE).await;
}

/// Declares the durable queue, or (for [`STREAM`]) the stream.
async fn declare_target(ch: &lapin::Channel, name: &str) {
    let mut args = FieldTable::default();
    if name == STREAM {
        args.insert(
            "x-queue-type".into(),
            amq_protocol::types::AMQPValue::LongString("stream".into()),
        );
    }
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .expect("declare durable queue");
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Ready messages in the test queue (passive declare: the queue must exist).
async fn ready_count(ch: &lapin::Channel) -> u32 {
    ch.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("the durable queue exists")
    .message_count()
}

/// Consumes everything in the queue of a restarted broker: (publisher, seq, redelivered).
async fn drain(uri: &str) -> Vec<(u32, u64, bool)> {
    let conn = connect(uri).await;
    let ch = conn.create_channel().await.expect("channel");
    let total = ready_count(&ch).await as usize;
    let mut consumer = ch
        .basic_consume(
            QUEUE.into(),
            "drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut got = Vec::with_capacity(total);
    while got.len() < total {
        let d = tokio::time::timeout(TIMEOUT, consumer.next())
            .await
            .expect("delivery in time")
            .expect("stream open")
            .expect("delivery");
        let (p, s) = parse(&d.data);
        got.push((p, s, d.redelivered));
    }
    let _ = conn.close(200, "bye".into()).await;
    got
}

/// Publishes from `publishers` connections until `kill_after` confirms were received in
/// total, then kills the broker. Returns the confirmed seqs per publisher.
async fn publish_until_kill(
    broker: Broker,
    publishers: u32,
    kill_after: usize,
) -> HashMap<u32, BTreeSet<u64>> {
    publish_until_kill_to(broker, QUEUE, 0, publishers, kill_after).await
}

/// [`publish_until_kill`] into `target` (the queue or the stream).
/// Publisher ids are `id_base..id_base + publishers`.
async fn publish_until_kill_to(
    broker: Broker,
    target: &'static str,
    id_base: u32,
    publishers: u32,
    kill_after: usize,
) -> HashMap<u32, BTreeSet<u64>> {
    let confirmed: Arc<Mutex<HashMap<u32, BTreeSet<u64>>>> = Arc::default();
    let uri = broker.uri();
    let setup = connect(&uri).await;
    declare_target(&setup.create_channel().await.expect("channel"), target).await;
    let mut tasks = Vec::new();
    for p in id_base..id_base + publishers {
        let uri = uri.clone();
        let confirmed = confirmed.clone();
        tasks.push(tokio::spawn(async move {
            let conn = connect(&uri).await;
            let ch = conn.create_channel().await.expect("channel");
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirm.select");
            // Keep up to 64 publishes in flight; record each confirm as it arrives.
            let mut inflight = std::collections::VecDeque::new();
            for seq in 0.. {
                let b = body(p, seq);
                let Ok(pc) = ch
                    .basic_publish(
                        "".into(),
                        target.into(),
                        BasicPublishOptions::default(),
                        &b,
                        persistent(),
                    )
                    .await
                else {
                    break;
                };
                inflight.push_back((seq, pc));
                if inflight.len() >= 64 {
                    let (s, pc) = inflight.pop_front().expect("non-empty");
                    match pc.await {
                        Ok(c) if c.is_ack() => {
                            confirmed.lock().unwrap().entry(p).or_default().insert(s);
                        }
                        _ => break,
                    }
                }
            }
        }));
    }
    // Wait (bounded) until enough confirms arrived, and every publisher has some (on a
    // busy machine one publisher may connect late: killing before its first confirm would
    // leave nothing to check for it), then SIGKILL.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let (n, with_confirms) = {
            let map = confirmed.lock().unwrap();
            let n: usize = map.values().map(|s| s.len()).sum();
            (n, map.values().filter(|s| !s.is_empty()).count())
        };
        if n >= kill_after && with_confirms == publishers as usize {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "publishers too slow: {n} confirms, {with_confirms} of {publishers} publishers confirmed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    broker.kill9();
    for t in tasks {
        let _ = tokio::time::timeout(TIMEOUT, t).await;
    }
    let map = confirmed.lock().unwrap().clone();
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_kill_9_at_random_points() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all_confirmed: HashMap<u32, BTreeSet<u64>> = HashMap::new();
    // Several rounds on the same data directory, each killed at a random point; the
    // publishers of each round use fresh publisher ids.
    for round in 0..3u32 {
        let kill_after = 200 + random_below(1500) as usize;
        let broker = Broker::start(dir.path());
        let confirmed = publish_until_kill(broker, 3, kill_after).await;
        for (p, seqs) in confirmed {
            all_confirmed
                .entry(round * 10 + p)
                .or_default()
                .extend(seqs);
        }
        // Each round's publishers are 0..3; give them distinct ids for the check below by
        // draining now and re-tagging.
        let broker = Broker::start(dir.path());
        let got = drain(&broker.uri()).await;
        let mut by_pub: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for (p, s, _) in got {
            by_pub.entry(round * 10 + p).or_default().push(s);
        }
        for (p, seqs) in &by_pub {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "publisher {p}: order not kept or duplicates: {seqs:?}"
            );
        }
        for p in 0..3 {
            let id = round * 10 + p;
            let have: BTreeSet<u64> = by_pub
                .get(&id)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect();
            let want = all_confirmed.get(&id).cloned().unwrap_or_default();
            let missing: Vec<_> = want.difference(&have).collect();
            assert!(
                missing.is_empty(),
                "round {round} publisher {p}: confirmed but lost: {missing:?}"
            );
            assert!(
                !want.is_empty(),
                "round {round} publisher {p} got no confirms"
            );
        }
        broker.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_stay_acked_and_unacked_are_kept_across_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let total: u64 = 3000;
    let broker = Broker::start(dir.path());
    {
        let conn = connect(&broker.uri()).await;
        let ch = conn.create_channel().await.expect("channel");
        declare(&ch).await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm");
        let mut pending = Vec::new();
        for seq in 0..total {
            let b = body(0, seq);
            pending.push(
                ch.basic_publish(
                    "".into(),
                    QUEUE.into(),
                    BasicPublishOptions::default(),
                    &b,
                    persistent(),
                )
                .await
                .expect("publish"),
            );
        }
        for pc in pending {
            assert!(pc.await.expect("confirm").is_ack());
        }
    }
    // A consumer acks one by one (waiting for nothing); kill at a random point.
    let kill_after = 300 + random_below(2000);
    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let conn = connect(&broker.uri()).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(50, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = ch
        .basic_consume(
            QUEUE.into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut n = 0;
    while n < kill_after {
        let d = tokio::time::timeout(TIMEOUT, consumer.next())
            .await
            .expect("delivery in time")
            .expect("open")
            .expect("delivery");
        let (_, seq) = parse(&d.data);
        d.ack(BasicAckOptions::default()).await.expect("ack sent");
        acked.lock().unwrap().insert(seq);
        n += 1;
    }
    // Make sure the acks reached the broker: a round trip on the same channel.
    ch.basic_qos(50, BasicQosOptions::default())
        .await
        .expect("qos round trip");
    let acked_before_kill = acked.lock().unwrap().clone();
    broker.kill9();
    drop(conn);

    let broker = Broker::start(dir.path());
    let got = drain(&broker.uri()).await;
    let mut seen = BTreeSet::new();
    for (_, seq, redelivered) in &got {
        assert!(
            !acked_before_kill.contains(seq),
            "message {seq} was acked (and the ack confirmed by a round trip) but came back (redelivered={redelivered})"
        );
        seen.insert(*seq);
    }
    let everything: BTreeSet<u64> = (0..total).collect();
    let lost: Vec<_> = everything
        .difference(&seen)
        .filter(|s| !acked_before_kill.contains(s))
        .collect();
    assert!(lost.is_empty(), "unacked messages lost: {lost:?}");
    // Messages that were delivered (within the prefetch window) but not acked come back
    // marked redelivered; the rest of the queue is in publish order.
    let seqs: Vec<u64> = got.iter().map(|(_, s, _)| *s).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "order not kept");
    assert!(
        got.iter().take(1).all(|(_, _, r)| *r),
        "the first unacked message was delivered before the kill"
    );
    broker.kill9();
}

/// Declares the durable queue and publishes `seqs` one by one, each confirmed.
async fn publish_confirmed(uri: &str, seqs: std::ops::Range<u64>) {
    let conn = connect(uri).await;
    let ch = conn.create_channel().await.expect("channel");
    declare(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm");
    for seq in seqs {
        let b = body(0, seq);
        let pc = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                &b,
                persistent(),
            )
            .await
            .expect("publish");
        assert!(pc.await.expect("confirm").is_ack());
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "seg") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_segment_tail_is_dropped_and_intact_messages_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    publish_confirmed(&broker.uri(), 0..100).await;
    broker.kill9();
    // Truncate the last record in the middle, then restart: 99 intact messages.
    let seg = segment_files(dir.path())
        .into_iter()
        .find(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .expect("a non-empty segment");
    let len = std::fs::metadata(&seg).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len(len - 10).expect("truncate");
    drop(f);
    let broker = Broker::start(dir.path());
    let got = drain(&broker.uri()).await;
    let seqs: Vec<u64> = got.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(seqs, (0..99).collect::<Vec<_>>());
    broker.kill9();

    // Now a fresh batch, and flip bytes inside the last record: it is dropped, not
    // delivered corrupted.
    let broker = Broker::start(dir.path());
    publish_confirmed(&broker.uri(), 1000..1010).await;
    broker.kill9();
    let seg = segment_files(dir.path())
        .into_iter()
        .rfind(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .expect("segment");
    let len = std::fs::metadata(&seg).expect("meta").len();
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.write_all_at(b"XXXX", len - 30).expect("corrupt");
    drop(f);
    let broker = Broker::start(dir.path());
    let got = drain(&broker.uri()).await;
    let seqs: Vec<u64> = got.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(seqs, (1000..1009).collect::<Vec<_>>());
    broker.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_data_directories_are_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = Broker::start(dir.path());
    // A second broker on the same directory: clear error, non-zero exit.
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--config",
            "/dev/null",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run warren");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked by another running Warren"), "{err}");
    running.kill9();

    // Another format version: refused, VERSION file unchanged.
    std::fs::write(dir.path().join("VERSION"), "999\n").expect("write version");
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--config",
            "/dev/null",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run warren");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("format version '999'"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("VERSION")).expect("read"),
        "999\n"
    );

    // A path that cannot be a directory (a regular file).
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--config",
            "/dev/null",
            "--data-dir",
        ])
        .arg(&file)
        .output()
        .expect("run warren");
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&file).expect("read"), b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_definitions_survive_a_restart_and_transient_ones_do_not() {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    {
        let conn = connect(&broker.uri()).await;
        let ch = conn.create_channel().await.expect("channel");
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let mut args = FieldTable::default();
        args.insert(
            "x-max-length".into(),
            amq_protocol::types::AMQPValue::LongInt(5),
        );
        ch.queue_declare("d-q".into(), durable, args.clone())
            .await
            .expect("durable queue");
        ch.queue_declare(
            "t-q".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("transient queue");
        ch.queue_declare(
            "x-q".into(),
            QueueDeclareOptions {
                durable: true,
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exclusive queue");
        ch.exchange_declare(
            "d-x".into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("durable exchange");
        ch.exchange_declare(
            "t-x".into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("transient exchange");
        ch.queue_bind(
            "d-q".into(),
            "d-x".into(),
            "a.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        // Graceful close, then a crash: definitions must already be on disk.
        let _ = conn.close(200, "bye".into()).await;
    }
    broker.kill9();
    let broker = Broker::start(dir.path());
    let conn = connect(&broker.uri()).await;
    let passive = |name: &'static str| {
        let conn = &conn;
        async move {
            let ch = conn.create_channel().await.expect("channel");
            ch.queue_declare(
                name.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok()
        }
    };
    assert!(passive("d-q").await, "durable queue must survive");
    assert!(!passive("t-q").await, "transient queue must be gone");
    assert!(!passive("x-q").await, "exclusive queue must be gone");
    let ch = conn.create_channel().await.expect("channel");
    // The durable queue kept its arguments (redeclaring with different ones fails)...
    let mut other = FieldTable::default();
    other.insert(
        "x-max-length".into(),
        amq_protocol::types::AMQPValue::LongInt(6),
    );
    let redeclare = ch
        .queue_declare(
            "d-q".into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            other,
        )
        .await;
    assert!(
        redeclare.is_err(),
        "x-max-length 5 must have been recovered"
    );
    // ...and the durable exchange and its binding route again.
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm");
    let pc = ch
        .basic_publish(
            "d-x".into(),
            "a.b.c".into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"routed",
            persistent(),
        )
        .await
        .expect("publish");
    let c = pc.await.expect("confirm");
    assert!(c.is_ack());
    assert!(c.take_message().is_none(), "must be routed, not returned");
    let missing = ch
        .exchange_declare(
            "t-x".into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(missing.is_err(), "transient exchange must be gone");
    broker.kill9();
}

/// Publishes `n` persistent messages without confirms (a plain channel) and waits for a
/// round trip, so the broker has handled them all.
async fn publish_unconfirmed(uri: &str, n: u64) {
    let conn = connect(uri).await;
    let ch = conn.create_channel().await.expect("channel");
    declare(&ch).await;
    for seq in 0..n {
        // Not in confirm mode: the confirmation resolves at once as "not requested".
        ch.basic_publish(
            "".into(),
            QUEUE.into(),
            BasicPublishOptions::default(),
            &body(0, seq),
            persistent(),
        )
        .await
        .expect("publish")
        .await
        .expect("no confirm");
    }
    assert_eq!(u64::from(ready_count(&ch).await), n);
    let _ = conn.close(200, "bye".into()).await;
}

fn segments_contain(dir: &Path, needle: &[u8]) -> bool {
    segment_files(dir)
        .iter()
        .any(|p| std::fs::read(p).is_ok_and(|data| data.windows(needle.len()).any(|w| w == needle)))
}

/// Records of persistent messages published without confirms are buffered, then written
/// by the periodic tick: once the segment files stop growing they hold every message,
/// and a SIGKILL then loses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_persistent_messages_reach_the_disk_within_a_tick() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    publish_unconfirmed(&broker.uri(), 500).await;
    // Records are appended in order: once the last message's body is in a segment file,
    // every earlier one is too.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let last = body(0, 499);
    while !segments_contain(dir.path(), &last) {
        assert!(
            std::time::Instant::now() < deadline,
            "the last unconfirmed message never reached a segment file"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    broker.kill9();
    let broker = Broker::start(dir.path());
    let got = drain(&broker.uri()).await;
    let seqs: Vec<u64> = got.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(seqs, (0..500).collect::<Vec<_>>());
}

/// A graceful stop (SIGTERM) writes out whatever is still buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_persistent_messages_survive_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    publish_unconfirmed(&broker.uri(), 300).await;
    let pid = broker.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = broker.child.wait().expect("wait for warren");
    assert!(exit.success(), "warren exited with {exit:?}");
    let broker = Broker::start(dir.path());
    let got = drain(&broker.uri()).await;
    let seqs: Vec<u64> = got.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(seqs, (0..300).collect::<Vec<_>>());
}

/// Passive exchange.declare on a fresh channel: whether `name` exists.
async fn exchange_exists(conn: &Connection, name: &str) -> bool {
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_declare(
        name.into(),
        lapin::ExchangeKind::Direct,
        lapin::options::ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .is_ok()
}

fn durable_exchange() -> lapin::options::ExchangeDeclareOptions {
    lapin::options::ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

// See #16: exchange.declare did not write the definitions; only a later queue change did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_a_durable_exchange_declared_alone_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    {
        let conn = connect(&broker.uri()).await;
        let ch = conn.create_channel().await.expect("channel");
        ch.exchange_declare(
            "solo-x".into(),
            lapin::ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
        // declare-ok has arrived: nothing else happens before the crash.
    }
    broker.kill9();
    let broker = Broker::start(dir.path());
    let conn = connect(&broker.uri()).await;
    assert!(
        exchange_exists(&conn, "solo-x").await,
        "a confirmed durable exchange.declare must survive kill -9"
    );
    broker.kill9();
}

// See #16: exchange.bind between durable exchanges was not written either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_an_exchange_to_exchange_binding_survives_kill_9() {
    use lapin::options::{ExchangeBindOptions, QueueBindOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    {
        let conn = connect(&broker.uri()).await;
        let ch = conn.create_channel().await.expect("channel");
        for (name, kind) in [
            ("e2e-src", lapin::ExchangeKind::Direct),
            ("e2e-dst", lapin::ExchangeKind::Fanout),
        ] {
            ch.exchange_declare(name.into(), kind, durable_exchange(), FieldTable::default())
                .await
                .expect("declare exchange");
        }
        ch.queue_declare(
            "e2e-q".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare queue");
        ch.queue_bind(
            "e2e-q".into(),
            "e2e-dst".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("queue.bind");
        // The last change before the crash: only it adds the e2e binding.
        ch.exchange_bind(
            "e2e-dst".into(),
            "e2e-src".into(),
            "k".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("exchange.bind");
    }
    broker.kill9();
    let broker = Broker::start(dir.path());
    let conn = connect(&broker.uri()).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm");
    let confirm = ch
        .basic_publish(
            "e2e-src".into(),
            "k".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"via e2e",
            persistent(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(
        confirm.take_message().is_none(),
        "the e2e binding must survive kill -9 and route the message"
    );
    broker.kill9();
}

// See #16: a tx.commit that failed part-way dropped the acks it held, leaving messages
// neither settled nor requeued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_a_failed_tx_commit_leaves_its_acked_messages_in_the_queue() {
    use lapin::options::{BasicGetOptions, ExchangeDeleteOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let conn = connect(&broker.uri()).await;
    let setup = conn.create_channel().await.expect("channel");
    declare(&setup).await;
    setup
        .exchange_declare(
            "tx-x".into(),
            lapin::ExchangeKind::Fanout,
            lapin::options::ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
    publish_confirmed(&broker.uri(), 0..3).await;
    let tx = conn.create_channel().await.expect("channel");
    tx.tx_select().await.expect("tx.select");
    for _ in 0..3 {
        let got = tx
            .basic_get(QUEUE.into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")
            .expect("a message");
        tx.basic_ack(got.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .expect("ack inside the transaction");
    }
    tx.basic_publish(
        "tx-x".into(),
        "".into(),
        BasicPublishOptions::default(),
        b"never routed",
        persistent(),
    )
    .await
    .expect("publish inside the transaction");
    // The exchange goes away before the commit, so routing the held publish fails.
    setup
        .exchange_delete("tx-x".into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete exchange");
    let err = tx.tx_commit().await.expect_err("the commit fails");
    assert!(
        format!("{err:?}").contains("NOT_FOUND - no exchange 'tx-x'"),
        "commit fails with 404: {err:?}"
    );
    // Every acked message of the failed transaction is back in the queue.
    let check = conn.create_channel().await.expect("channel");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let ready = ready_count(&check).await;
        if ready == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ready} of 3 messages back in the queue after the failed commit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And they stay there across a crash.
    drop(conn);
    broker.kill9();
    let broker = Broker::start(dir.path());
    let got = drain(&broker.uri()).await;
    assert_eq!(got.len(), 3, "messages after restart: {got:?}");
    broker.kill9();
}

// See #10: users, vhosts and permissions are kept in the data directory; a definitions
// file loaded at boot writes them there before the broker says it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_users_and_permissions_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let defs = dir.path().join("defs.json");
    // User u1's hash is RabbitMQ 3.10.8's for password "p1".
    std::fs::write(
        &defs,
        r#"{"users": [{"name": "u1", "password_hash": "lzE5Yxb3zmj/myS3bmd6N11fV+aS1HolG2eCjLtohHZ7LV+6",
             "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"]}],
            "vhosts": [{"name": "jobs"}],
            "permissions": [{"user": "u1", "vhost": "jobs", "configure": ".*", "write": ".*", "read": ".*"}]}"#,
    )
    .expect("write definitions");
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
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
        .arg(&data)
        .args(["--config", "/dev/null", "--load-definitions"])
        .arg(&defs)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warren");
    let stdout = child.stdout.take().expect("stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("Server startup complete"));
    assert!(ready, "warren starts with the definitions");
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    // Restarted without the file: the state is in the data directory.
    let broker = Broker::start(&data);
    let uri = format!("amqp://u1:p1@{}/jobs", broker.addr);
    let conn = connect(&uri).await;
    let ch = conn.create_channel().await.expect("channel");
    declare(&ch).await;
    broker.kill9();
}

/// Reads a restarted broker's stream from its first offset: (offset, publisher, seq).
async fn read_stream(uri: &str) -> Vec<(i64, u32, u64)> {
    let conn = connect(uri).await;
    let ch = conn.create_channel().await.expect("channel");
    let total = ch
        .queue_declare(
            STREAM.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the stream exists")
        .message_count() as usize;
    ch.basic_qos(1000, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        amq_protocol::types::AMQPValue::LongString("first".into()),
    );
    let mut consumer = ch
        .basic_consume(
            STREAM.into(),
            "read".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .expect("consume");
    let mut got = Vec::with_capacity(total);
    while got.len() < total {
        let d = tokio::time::timeout(TIMEOUT, consumer.next())
            .await
            .expect("delivery in time")
            .expect("stream open")
            .expect("delivery");
        let offset = match d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned())
        {
            Some(amq_protocol::types::AMQPValue::LongLongInt(o)) => o,
            other => panic!("x-stream-offset: {other:?}"),
        };
        let (p, s) = parse(&d.data);
        got.push((offset, p, s));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let _ = conn.close(200, "bye".into()).await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_stream_messages_survive_kill_9_with_their_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all_confirmed: HashMap<u32, BTreeSet<u64>> = HashMap::new();
    let mut before = 0usize;
    for round in 0..3u32 {
        let kill_after = 200 + random_below(1500) as usize;
        let broker = Broker::start(dir.path());
        all_confirmed
            .extend(publish_until_kill_to(broker, STREAM, round * 10, 2, kill_after).await);
        let broker = Broker::start(dir.path());
        let got = read_stream(&broker.uri()).await;
        // Offsets are 0, 1, 2, ... without a gap, across every round so far.
        for (i, (offset, _, _)) in got.iter().enumerate() {
            assert_eq!(*offset, i as i64, "round {round}: offsets have a gap");
        }
        assert!(got.len() >= before, "round {round}: the stream shrank");
        before = got.len();
        let mut by_pub: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for (_, p, s) in &got {
            by_pub.entry(*p).or_default().push(*s);
        }
        for (p, want) in &all_confirmed {
            let seqs = by_pub.get(p).cloned().unwrap_or_default();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "round {round} publisher {p}: order not kept or duplicates"
            );
            let have: BTreeSet<u64> = seqs.into_iter().collect();
            let missing: Vec<_> = want.difference(&have).collect();
            assert!(
                missing.is_empty(),
                "round {round} publisher {p}: confirmed but lost: {missing:?}"
            );
        }
        for p in round * 10..round * 10 + 2 {
            assert!(
                all_confirmed.get(&p).is_some_and(|w| !w.is_empty()),
                "round {round} publisher {p} got no confirms"
            );
        }
        broker.kill9();
    }
}
