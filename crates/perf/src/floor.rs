//! `--latency-floor`: the publish-to-deliver latency this machine allows with no broker.
//!
//! A broker's latency at a fixed rate (scenario f of `bench/compare.sh`) includes the
//! machine's own: two loopback hops, three processes woken per message, the scheduler of
//! a small shared VM. This mode measures that part alone. It starts a bare TCP relay in
//! a child process (this binary again, with the hidden `--relay-listen 127.0.0.1:0`; the
//! child prints its port on stdout and runs on a multi-threaded tokio runtime with a
//! worker per core, as Warren does), then connects a producer and a consumer to it, each
//! on its own connection with `TCP_NODELAY`, as the raw client does. The producer sends
//! `--size`-byte messages (16 by default) paced exactly as the raw producer paces
//! publishes at `--rate` ([`crate::raw::due`]) and stamped with the same clock
//! ([`Counters::now_ns`]) in the same layout (timestamp, sequence number); the relay
//! forwards every byte from the producer's connection to the consumer's; the consumer
//! records the latency of each message as the raw consumer does. Same sockets, runtime,
//! pacing and clock as a broker run, no AMQP work: the floor any broker is measured
//! against on this machine.
//!
//! Each client announces itself with one byte ([`ROLE_PRODUCER`] or [`ROLE_CONSUMER`]);
//! once both are there the relay sends [`READY`] to the consumer, and the clock starts
//! when the consumer has read it. At the end the producer's connection closes first, the
//! relay sees the end of its stream, closes the consumer's connection and exits; the
//! parent reaps it (and kills it if it has not exited within 2 s).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::pin::pin;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep_until, timeout};

use crate::cli::Cli;
use crate::error::PerfError;
use crate::procfs;
use crate::raw::{due, stamp_body, stamp_of, RawPlan, BATCH};
use crate::stats::{self, human_ns, Counters, Percentiles, Recorder, Snapshot};
use crate::throughput::{report_seconds, Second};

/// `--rate` when none is given.
pub const DEFAULT_RATE: f64 = 1000.0;
/// The first byte a producer sends the relay.
pub const ROLE_PRODUCER: u8 = b'P';
/// The first byte a consumer sends the relay.
pub const ROLE_CONSUMER: u8 = b'C';
/// What the relay sends the consumer once both clients are connected.
pub const READY: u8 = b'R';
/// How long starting the relay and connecting to it may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the relay may take to exit once the producer has closed.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// The relay's read buffer.
const RELAY_BUF: usize = 64 * 1024;
/// Bytes the consumer asks the socket for at a time.
const READ_CHUNK: usize = 64 * 1024;

/// What the latency-floor mode measured.
#[derive(Debug, Clone, Serialize)]
pub struct FloorReport {
    /// Measured duration, seconds.
    pub duration_s: f64,
    /// Messages per second sent.
    pub rate: f64,
    /// Bytes per message.
    pub size: usize,
    /// Totals within the duration (confirmed and nacked stay 0).
    pub totals: Snapshot,
    /// Sent per second.
    pub publish_rate: f64,
    /// Received per second.
    pub consume_rate: f64,
    /// Send-to-receive latency over the whole run.
    pub latency: Percentiles,
    /// The relay process.
    pub relay_pid: u32,
    /// CPU seconds the relay used during the run divided by the duration.
    pub relay_cpu_cores: Option<f64>,
    /// The same for this process.
    pub client_cpu_cores: Option<f64>,
    /// Every second (`confirm_rate` 0, no `broker_rss_bytes`).
    pub per_second: Vec<Second>,
    /// Failures of the producer, the consumer or the relay.
    pub errors: Vec<String>,
}

// ------------------------------------------------------------------------ the relay

/// The relay process (`warren-perf --relay-listen ADDR`): binds, prints the port on a
/// line of its own on stdout, and serves one producer and one consumer ([`serve`]).
pub async fn relay_main(addr: &str) -> ExitCode {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("warren-perf relay: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => {
            eprintln!("warren-perf relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{port}").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    drop(out);
    match serve(listener).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren-perf relay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts one producer and one consumer, in either order (each names itself with its
/// first byte), within [`SETUP_TIMEOUT`]; sends [`READY`] to the consumer; then forwards
/// every byte from the producer to the consumer until the producer closes, and closes
/// the consumer's side. Returns the bytes forwarded.
///
/// # Errors
/// A socket error, an unknown role byte, two clients of one role, or a timeout.
pub async fn serve(listener: TcpListener) -> Result<u64, PerfError> {
    let (producer, mut consumer) = timeout(SETUP_TIMEOUT, accept_pair(&listener))
        .await
        .map_err(|_| PerfError::Timeout("relay: waiting for the producer and consumer".into()))??;
    drop(listener);
    consumer
        .write_all(&[READY])
        .await
        .map_err(PerfError::io("relay: write to the consumer"))?;
    forward(producer, consumer).await
}

async fn accept_pair(listener: &TcpListener) -> Result<(TcpStream, TcpStream), PerfError> {
    let (mut producer, mut consumer) = (None, None);
    while producer.is_none() || consumer.is_none() {
        let (mut s, _) = listener
            .accept()
            .await
            .map_err(PerfError::io("relay: accept"))?;
        s.set_nodelay(true)
            .map_err(PerfError::io("relay: TCP_NODELAY"))?;
        let mut role = [0u8];
        s.read_exact(&mut role)
            .await
            .map_err(PerfError::io("relay: read the role byte"))?;
        let slot = match role[0] {
            ROLE_PRODUCER => &mut producer,
            ROLE_CONSUMER => &mut consumer,
            other => {
                return Err(PerfError::Protocol(format!(
                    "relay: unknown role byte {other:#04x}"
                )))
            }
        };
        if slot.replace(s).is_some() {
            return Err(PerfError::Protocol(format!(
                "relay: a second client with role {:?}",
                char::from(role[0])
            )));
        }
    }
    match (producer, consumer) {
        (Some(p), Some(c)) => Ok((p, c)),
        _ => unreachable!("the loop ends when both are set"),
    }
}

/// Copies `from` to `to` as it arrives, one read then one write, until `from` ends.
async fn forward(mut from: TcpStream, mut to: TcpStream) -> Result<u64, PerfError> {
    let mut buf = vec![0u8; RELAY_BUF];
    let mut total = 0u64;
    loop {
        let n = from
            .read(&mut buf)
            .await
            .map_err(PerfError::io("relay: read from the producer"))?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n])
            .await
            .map_err(PerfError::io("relay: write to the consumer"))?;
        total += n as u64;
    }
    to.shutdown()
        .await
        .map_err(PerfError::io("relay: close the consumer's side"))?;
    Ok(total)
}

/// The relay child process, killed and reaped when dropped unless [`RelayChild::stop`]
/// reaped it.
struct RelayChild {
    child: Option<Child>,
    pid: u32,
    port: u16,
}

impl RelayChild {
    /// Starts `current_exe() --relay-listen 127.0.0.1:0` and reads its port.
    async fn spawn() -> Result<Self, PerfError> {
        let exe = std::env::current_exe().map_err(PerfError::io("find the warren-perf binary"))?;
        let mut child = Command::new(exe)
            .args(["--relay-listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(PerfError::io("start the relay process"))?;
        let pid = child.id();
        let stdout = child.stdout.take();
        let mut relay = RelayChild {
            child: Some(child),
            pid,
            port: 0,
        };
        let Some(stdout) = stdout else {
            return Err(PerfError::Protocol(
                "the relay's stdout is not a pipe".into(),
            ));
        };
        // The pipe is read on a blocking thread; if the relay hangs, dropping `relay`
        // kills it, which closes the pipe and ends the read.
        let read = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = match timeout(SETUP_TIMEOUT, read).await {
            Ok(Ok(Ok(line))) => line,
            Ok(Ok(Err(e))) => return Err(PerfError::io("read the relay's port")(e)),
            Ok(Err(e)) => return Err(PerfError::Protocol(format!("relay port reader: {e}"))),
            Err(_) => {
                return Err(PerfError::Timeout(
                    "the relay did not print its port within 10 s".into(),
                ))
            }
        };
        relay.port = line.trim().parse().map_err(|_| {
            PerfError::Protocol(format!(
                "the relay printed {:?} instead of its port",
                line.trim()
            ))
        })?;
        Ok(relay)
    }

    /// Waits up to [`STOP_TIMEOUT`] for the relay to exit by itself (it does once the
    /// producer's connection is closed), killing it otherwise, and reaps it. Returns
    /// what went wrong, if anything.
    async fn stop(mut self) -> Option<String> {
        let mut child = self.child.take()?;
        let give_up = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return None,
                Ok(Some(status)) => return Some(format!("the relay exited with {status}")),
                Ok(None) if Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Some("the relay did not exit within 2 s of the end; killed".into());
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Some(format!("waiting for the relay: {e}"));
                }
            }
        }
    }
}

impl Drop for RelayChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ------------------------------------------------------------------------- the run

/// Runs the mode: starts the relay, measures for `--duration` seconds at `--rate`
/// (default [`DEFAULT_RATE`]), stops the relay.
///
/// # Errors
/// The relay could not be started or connected to. Failures during the run are
/// reported in [`FloorReport::errors`] instead.
pub async fn run(cli: &Cli) -> Result<FloorReport, PerfError> {
    let rate = cli.rate.unwrap_or(DEFAULT_RATE);
    let relay = RelayChild::spawn().await?;
    let result = measure(cli, rate, relay.port, relay.pid).await;
    // measure() has closed both connections (or failed before the relay had both).
    let relay_error = relay.stop().await;
    let mut report = result?;
    report.errors.extend(relay_error);
    Ok(report)
}

async fn connect(addr: SocketAddr, role: u8) -> Result<TcpStream, PerfError> {
    let mut s = timeout(SETUP_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| PerfError::Timeout("connecting to the relay".into()))?
        .map_err(PerfError::io("connect to the relay"))?;
    s.set_nodelay(true).map_err(PerfError::io("TCP_NODELAY"))?;
    s.write_all(&[role])
        .await
        .map_err(PerfError::io("write the role byte"))?;
    Ok(s)
}

async fn measure(
    cli: &Cli,
    rate: f64,
    port: u16,
    relay_pid: u32,
) -> Result<FloorReport, PerfError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut consumer = connect(addr, ROLE_CONSUMER).await?;
    let producer = connect(addr, ROLE_PRODUCER).await?;
    let mut ready = [0u8];
    timeout(SETUP_TIMEOUT, consumer.read_exact(&mut ready))
        .await
        .map_err(|_| PerfError::Timeout("waiting for the relay to pair the clients".into()))?
        .map_err(PerfError::io("read the relay's ready byte"))?;
    if ready[0] != READY {
        return Err(PerfError::Protocol(format!(
            "the relay sent {:#04x} instead of its ready byte",
            ready[0]
        )));
    }

    let counters = Arc::new(Counters::new());
    let rec = Recorder::new();
    let start = Instant::now();
    let plan = RawPlan {
        size: cli.size,
        rate: Some(rate),
        persistent: false,
        confirm: None,
        auto_ack: true,
        ack_every: 1,
        start,
        deadline: start + Duration::from_secs_f64(cli.duration),
    };
    let cpu_client_start = procfs::cpu_seconds(None).ok();
    let cpu_relay_start = procfs::cpu_seconds(Some(relay_pid)).ok();
    let producing = tokio::spawn({
        let (plan, counters) = (plan.clone(), counters.clone());
        async move { produce(producer, &plan, &counters).await }
    });
    let consuming = tokio::spawn({
        let (plan, counters, rec) = (plan.clone(), counters.clone(), rec.clone());
        async move { consume(consumer, &plan, &counters, &rec).await }
    });
    let (per_second, totals) = report_seconds(
        start,
        plan.deadline,
        &counters,
        std::slice::from_ref(&rec),
        None,
        (!cli.quiet).then_some(false),
    )
    .await;
    let per_core = |s: f64| s / cli.duration;
    let client_cpu = cpu_client_start
        .and_then(|s| Some(procfs::cpu_seconds(None).ok()? - s))
        .map(per_core);
    let relay_cpu = cpu_relay_start
        .and_then(|s| Some(procfs::cpu_seconds(Some(relay_pid)).ok()? - s))
        .map(per_core);

    // The producer's connection closes first (when its task ends), so the relay sees the
    // end of its input, closes the consumer's side and exits; the consumer's connection
    // is then read to its end, so that the relay never writes to a closed socket.
    let mut errors = Vec::new();
    match producing.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => errors.push(format!("producer: {e}")),
        Err(e) => errors.push(format!("producer task: {e}")),
    }
    match consuming.await {
        Ok(Ok(stream)) => {
            if let Err(e) = drain(stream).await {
                errors.push(format!("consumer: {e}"));
            }
        }
        Ok(Err(e)) => errors.push(format!("consumer: {e}")),
        Err(e) => errors.push(format!("consumer task: {e}")),
    }
    let secs = cli.duration;
    Ok(FloorReport {
        duration_s: secs,
        rate,
        size: cli.size,
        totals,
        publish_rate: totals.published as f64 / secs,
        consume_rate: totals.consumed as f64 / secs,
        latency: Percentiles::from(&stats::totals(&[rec])),
        relay_pid,
        relay_cpu_cores: relay_cpu,
        client_cpu_cores: client_cpu,
        per_second,
        errors,
    })
}

/// Sends messages until the deadline, as many per write as are due (at most
/// [`BATCH`]), then closes the connection.
async fn produce(
    mut stream: TcpStream,
    plan: &RawPlan,
    counters: &Counters,
) -> Result<(), PerfError> {
    let mut body = vec![0u8; plan.size];
    let mut out = Vec::with_capacity(plan.size * BATCH);
    let mut seq = 0u64;
    while let Some(n) = due(plan, seq).await {
        out.clear();
        for _ in 0..n {
            stamp_body(&mut body, counters.now_ns(), seq);
            out.extend_from_slice(&body);
            seq += 1;
        }
        match tokio::time::timeout_at(plan.deadline.into(), stream.write_all(&out)).await {
            Ok(r) => r.map_err(PerfError::io("socket write"))?,
            // Still blocked at the deadline: count none of the batch (as the raw client).
            Err(_) => break,
        }
        counters.published.fetch_add(n as u64, Ordering::Relaxed);
    }
    stream
        .shutdown()
        .await
        .map_err(PerfError::io("close the producer's side"))
}

/// Receives messages until the deadline, recording the latency of each; returns the
/// connection, still open.
async fn consume(
    mut stream: TcpStream,
    plan: &RawPlan,
    counters: &Counters,
    rec: &Recorder,
) -> Result<TcpStream, PerfError> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut next_seq = 0u64;
    let mut deadline = pin!(sleep_until(plan.deadline.into()));
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            _ = &mut deadline => None,
            r = stream.read_buf(&mut buf) => Some(r),
        };
        let Some(read) = read else {
            return Ok(stream);
        };
        if read.map_err(PerfError::io("socket read"))? == 0 {
            if Instant::now() >= plan.deadline {
                return Ok(stream);
            }
            return Err(PerfError::Protocol(
                "the relay closed the connection before the deadline".into(),
            ));
        }
        let n = take_messages(&mut buf, plan.size, &mut next_seq, |stamp| {
            rec.record(counters.now_ns().saturating_sub(stamp));
        })?;
        counters.consumed.fetch_add(n, Ordering::Relaxed);
    }
}

/// Reads the consumer's connection to its end (the relay closes it after the producer's),
/// for at most [`STOP_TIMEOUT`].
async fn drain(mut stream: TcpStream) -> Result<(), PerfError> {
    let mut sink = vec![0u8; READ_CHUNK];
    let until_end = async {
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    timeout(STOP_TIMEOUT, until_end)
        .await
        .map_err(|_| {
            PerfError::Timeout("the relay did not close the consumer's connection".into())
        })?
        .map_err(PerfError::io("socket read"))
}

/// Takes every whole `size`-byte message off the front of `buf`, checks that its
/// sequence number (bytes 8..16) is `*next_seq` and calls `on_message` with its
/// timestamp (bytes 0..8). Returns how many it took; a partial message stays in `buf`.
///
/// # Errors
/// A message out of sequence (bytes lost, duplicated or reordered).
fn take_messages(
    buf: &mut BytesMut,
    size: usize,
    next_seq: &mut u64,
    mut on_message: impl FnMut(u64),
) -> Result<u64, PerfError> {
    let mut n = 0;
    while buf.len() >= size {
        let seq = buf
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes);
        if seq != Some(*next_seq) {
            return Err(PerfError::Protocol(format!(
                "message {seq:?} arrived where {} was expected",
                *next_seq
            )));
        }
        if let Some(stamp) = stamp_of(buf) {
            on_message(stamp);
        }
        buf.advance(size);
        *next_seq += 1;
        n += 1;
    }
    Ok(n)
}

/// Prints the end-of-run summary.
pub fn print_summary(r: &FloorReport) {
    println!(
        "== latency floor: 1 producer → bare TCP relay (pid {}) → 1 consumer, {} B at {} msg/s, {:.1} s",
        r.relay_pid, r.size, r.rate, r.duration_s
    );
    println!(
        "published {:>12} msg  {:>10.0} msg/s",
        r.totals.published, r.publish_rate
    );
    println!(
        "consumed  {:>12} msg  {:>10.0} msg/s",
        r.totals.consumed, r.consume_rate
    );
    let l = &r.latency;
    if l.count > 0 {
        println!(
            "latency publish→deliver p50 {} p95 {} p99 {} max {} ({} samples)",
            human_ns(l.p50_ns),
            human_ns(l.p95_ns),
            human_ns(l.p99_ns),
            human_ns(l.max_ns),
            l.count
        );
    }
    if let (Some(b), Some(c)) = (r.relay_cpu_cores, r.client_cpu_cores) {
        println!("CPU (cores busy): relay {b:.2}, warren-perf {c:.2}");
    }
    for e in &r.errors {
        println!("error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(size: usize, stamp: u64, seq: u64) -> Vec<u8> {
        let mut b = vec![0u8; size];
        stamp_body(&mut b, stamp, seq);
        b
    }

    #[test]
    fn takes_whole_messages_in_sequence() {
        let mut buf = BytesMut::new();
        for seq in 0..3 {
            buf.extend_from_slice(&message(20, 100 + seq, seq));
        }
        buf.extend_from_slice(&message(20, 103, 3)[..7]);
        let mut next = 0;
        let mut stamps = Vec::new();
        assert_eq!(
            take_messages(&mut buf, 20, &mut next, |s| stamps.push(s)).unwrap(),
            3
        );
        assert_eq!(stamps, [100, 101, 102]);
        assert_eq!((next, buf.len()), (3, 7));
        buf.extend_from_slice(&message(20, 103, 3)[7..]);
        assert_eq!(
            take_messages(&mut buf, 20, &mut next, |s| stamps.push(s)).unwrap(),
            1
        );
        assert_eq!(stamps, [100, 101, 102, 103]);
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_a_message_out_of_sequence() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&message(16, 1, 0));
        buf.extend_from_slice(&message(16, 1, 2));
        let mut next = 0;
        let mut seen = 0;
        let e = take_messages(&mut buf, 16, &mut next, |_| seen += 1).unwrap_err();
        assert!(e.to_string().contains("where 1 was expected"), "{e}");
        assert_eq!(seen, 1);
    }

    /// The producer connects first, the consumer second: roles come from the first
    /// byte, not the order. Every byte arrives, in order, and the relay closes the
    /// consumer's side after the producer's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relay_forwards_every_byte_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relay = tokio::spawn(serve(listener));
        let mut producer = connect(addr, ROLE_PRODUCER).await.unwrap();
        let mut consumer = connect(addr, ROLE_CONSUMER).await.unwrap();
        let mut ready = [0u8];
        consumer.read_exact(&mut ready).await.unwrap();
        assert_eq!(ready[0], READY);

        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            // Irregular chunks, so reads and writes on the relay do not line up.
            let mut rest = &sent[..];
            let mut k = 1usize;
            while !rest.is_empty() {
                let n = (k * 7919 % 20_000 + 1).min(rest.len());
                producer.write_all(&rest[..n]).await.unwrap();
                rest = &rest[n..];
                k += 1;
            }
            producer.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        timeout(Duration::from_secs(20), consumer.read_to_end(&mut got))
            .await
            .expect("the relay closes the consumer's side")
            .unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes differ");
        assert_eq!(relay.await.unwrap().unwrap(), data.len() as u64);
    }

    #[tokio::test]
    async fn relay_refuses_an_unknown_role() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relay = tokio::spawn(serve(listener));
        let _c = connect(addr, b'X').await.unwrap();
        let e = relay.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("unknown role"), "{e}");
    }
}
