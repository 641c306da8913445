//! Soak mode (issue 13): many consuming connections plus publishers, held for a long
//! time, watching the broker's memory and file descriptors and counting every message
//! and every error.
//!
//! 1. Opens N consumer connections, 64 handshakes at a time (as the idle mode). Each
//!    opens channel 1, declares its own exclusive non-durable queue
//!    (`<prefix>-soak-<i>`, gone with its connection), sends basic.qos (`--prefetch`) and
//!    basic.consume with manual acks; it acknowledges every delivery it reads, one
//!    basic.ack each, and sends heartbeats.
//! 2. Opens `--producers` publisher connections (the lean producer of `raw`), each with
//!    confirm mode if `--confirm N` is given, cycling through all N queues (default
//!    exchange, routing key = queue name; publisher i starts at queue i·N/P so the
//!    queues are covered evenly) at `--soak-rate` / P msg/s each.
//! 3. Waits `--idle-settle` seconds and reads the broker's RSS: (that − RSS before) / N
//!    is the memory per connection with its channel, queue and consumer.
//! 4. Publishes for `--duration` seconds. RSS is read every second (for its minimum and
//!    maximum); every `--soak-interval` seconds a sample line holds RSS, open fds, CPU,
//!    the counters and the interval's delivery latency.
//! 5. Waits up to `--soak-drain` seconds for every published message to be delivered,
//!    reads RSS once more with every connection still open, then closes them all at
//!    once (connection.close, up to 60 s for close-ok each) and times that.
//!
//! Any connection or channel closed by the broker, cancelled consumer, socket or
//! framing error, wrong body size, nack or timeout is an error; so is a message
//! published but never delivered. A consumer whose close fails at the end counts as a
//! close error, reported apart from the errors of the run itself. Redeliveries are counted (there should be none: no
//! consumer ever goes away while the queues are in use).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, queue, AMQPClass};
use amq_protocol::types::{FieldTable, ShortString};
use bytes::BytesMut;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::sleep_until;
use warren_codec::{encode, Frame};

use crate::cli::Cli;
use crate::error::PerfError;
use crate::histogram::Histogram;
use crate::procfs;
use crate::raw::{check_close, stamp_of, RawPlan, RawProducer};
use crate::rawconn::{unexpected, RawConnection, Target};
use crate::stats::{human_mib, human_ns, Counters, Percentiles, Recorder};

/// Handshakes in flight at once while opening.
const OPEN_CONCURRENCY: usize = 64;

/// Longest one connection may take to be ready (handshake, declare, qos, consume).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Spare room a consumer keeps in its read buffer before reading. With prefetch 10 and
/// 1 KiB bodies less than 11 KiB is ever in flight, so the buffer stays small: 10,000
/// consumers must not cost the client gigabytes.
const READ_ROOM: usize = 8 * 1024;

/// Errors kept word for word (all are counted).
const ERRORS_KEPT: usize = 100;

/// How long each consumer waits for connection.close-ok at the end. Every connection
/// closes at once, and a broker may take a while to tear down 10,000 of them.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);

/// File descriptors this process needs besides its connections.
const FD_HEADROOM: u64 = 64;

/// One sample line.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since publishing started.
    pub t_s: f64,
    /// Broker RSS.
    pub rss_bytes: Option<u64>,
    /// Broker open file descriptors.
    pub fds: Option<u64>,
    /// Broker CPU seconds since publishing started.
    pub broker_cpu_s: Option<f64>,
    /// This process's RSS.
    pub client_rss_bytes: Option<u64>,
    /// Messages published so far (written to a socket).
    pub published: u64,
    /// Publisher confirms (basic.ack) so far.
    pub confirmed: u64,
    /// Deliveries read so far.
    pub delivered: u64,
    /// basic.ack sent by the consumers so far.
    pub acked: u64,
    /// Errors so far.
    pub errors: u64,
    /// Published per second over the interval.
    pub publish_rate: f64,
    /// Delivered per second over the interval.
    pub deliver_rate: f64,
    /// Publish-to-deliver latency over the interval.
    pub latency: Percentiles,
}

/// What the soak mode measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Consumer connections (each with a channel, an exclusive queue and a consumer).
    pub connections: usize,
    /// Publisher connections.
    pub publishers: usize,
    /// Target publish rate, all publishers together, msg/s.
    pub target_rate: f64,
    /// Body size, bytes.
    pub size: usize,
    /// Seconds to open every connection and start every consumer.
    pub open_seconds: f64,
    /// Seconds of publishing.
    pub duration_s: f64,
    /// Seconds waited after publishing for the last deliveries.
    pub drain_s: f64,
    /// Broker RSS before the first connection.
    pub rss_before_bytes: Option<u64>,
    /// Broker RSS `--idle-settle` s after every connection was ready, before publishing.
    pub rss_after_open_bytes: Option<u64>,
    /// Lowest broker RSS read (every second) from after the open to the end.
    pub rss_min_bytes: Option<u64>,
    /// Highest broker RSS read over the same span.
    pub rss_max_bytes: Option<u64>,
    /// Broker RSS at the end (after the drain, every connection still open).
    pub rss_end_bytes: Option<u64>,
    /// (rss_after_open − rss_before) / connections.
    pub per_connection_bytes: Option<f64>,
    /// Broker open fds before the first connection.
    pub fds_before: Option<u64>,
    /// Broker open fds after the open.
    pub fds_after_open: Option<u64>,
    /// Most broker fds seen in a sample.
    pub fds_max: Option<u64>,
    /// Broker open fds at the end (every connection still open).
    pub fds_end: Option<u64>,
    /// Broker CPU over publishing and drain, in cores.
    pub broker_cpu_cores: Option<f64>,
    /// Highest RSS of this process seen in a sample.
    pub client_rss_max_bytes: Option<u64>,
    /// Messages published (written whole to a socket).
    pub published: u64,
    /// Publisher confirms received as basic.ack.
    pub confirmed: u64,
    /// Publisher confirms received as basic.nack.
    pub nacked: u64,
    /// Deliveries read by the consumers.
    pub delivered: u64,
    /// basic.ack sent by the consumers.
    pub acked: u64,
    /// Deliveries flagged redelivered.
    pub redelivered: u64,
    /// Every published message was delivered (and, with confirms, confirmed), once.
    pub all_delivered: bool,
    /// Publish-to-deliver latency over the whole run.
    pub latency: Percentiles,
    /// Publish-to-confirm latency over the whole run (with --confirm).
    pub confirm_latency: Percentiles,
    /// Seconds from the signal to close to the last consumer connection closed.
    pub close_seconds: f64,
    /// Consumer connections whose connection.close failed at the end (no close-ok in
    /// 60 s, or a socket error); the first few are in `errors`.
    pub close_errors: u64,
    /// Errors counted before the close; `errors` keeps the first [`ERRORS_KEPT`].
    pub error_count: u64,
    /// Errors, each prefixed with the second (since publishing started) it happened.
    pub errors: Vec<String>,
    /// The sample lines.
    pub samples: Vec<Sample>,
}

/// Counters shared by every task.
#[derive(Debug)]
struct Tally {
    /// published, confirmed, nacked, consumed (= delivered).
    counters: Counters,
    acked: AtomicU64,
    redelivered: AtomicU64,
    error_count: AtomicU64,
    close_errors: AtomicU64,
    errors: Mutex<Vec<String>>,
    /// Origin of the error times (set again when publishing starts).
    t0: Mutex<Instant>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            counters: Counters::new(),
            acked: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            error_count: AtomicU64::new(0),
            close_errors: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            t0: Mutex::new(Instant::now()),
        }
    }

    fn error(&self, what: String) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        self.keep(what);
    }

    fn close_error(&self, what: String) {
        if self.close_errors.fetch_add(1, Ordering::Relaxed) < 10 {
            self.keep(what);
        }
    }

    fn keep(&self, what: String) {
        let t0 = *self.t0.lock().unwrap_or_else(|e| e.into_inner());
        let t = Instant::now().saturating_duration_since(t0).as_secs_f64();
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < ERRORS_KEPT {
            errors.push(format!("{t:.1} s: {what}"));
        }
    }
}

/// Lowest and highest of a series of readings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Extremes {
    min: Option<u64>,
    max: Option<u64>,
}

impl Extremes {
    fn add(&mut self, v: Option<u64>) {
        if let Some(v) = v {
            self.min = Some(self.min.map_or(v, |m| m.min(v)));
            self.max = Some(self.max.map_or(v, |m| m.max(v)));
        }
    }
}

/// Where a consumer is within a delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Expecting basic.deliver (or another method).
    Idle,
    /// basic.deliver seen, expecting its content header.
    Header { tag: u64 },
    /// Expecting `left` more body bytes.
    Body { tag: u64, left: u64, first: bool },
}

/// The name of consumer `i`'s queue.
fn queue_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-soak-{i}")
}

/// The queue publisher `i` of `publishers` starts its round robin at: the publishers
/// start evenly spread over the `queues`.
fn first_queue(i: usize, publishers: usize, queues: usize) -> usize {
    (i * queues).checked_div(publishers).unwrap_or(0)
}

/// Fails if a process allowed `limit` open files cannot hold `needed`.
fn check_fd_limit(who: &str, limit: Option<u64>, needed: u64) -> Result<(), PerfError> {
    match limit {
        Some(l) if l < needed => Err(PerfError::Options(format!(
            "{who} may open {l} files but the soak needs about {needed}: raise `ulimit -n` \
             (bench/soak.sh does)"
        ))),
        _ => Ok(()),
    }
}

/// Opens consumer `i`: handshake, channel 1, queue.declare (exclusive, non-durable),
/// basic.qos if `prefetch > 0`, basic.consume with manual acks.
async fn open_consumer(
    target: &Target,
    queue: &str,
    i: usize,
    prefetch: u16,
) -> Result<RawConnection, PerfError> {
    let mut conn = RawConnection::open(target, true).await?;
    conn.send_method(
        1,
        &AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: ShortString::from(queue),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await?;
    match conn.next_method().await? {
        (1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))) => {}
        other => return Err(unexpected("queue.declare-ok", &other)),
    }
    if prefetch > 0 {
        conn.send_method(
            1,
            &AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: prefetch,
                global: false,
            })),
        )
        .await?;
        match conn.next_method().await? {
            (1, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))) => {}
            other => return Err(unexpected("basic.qos-ok", &other)),
        }
    }
    conn.send_method(
        1,
        &AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: ShortString::from(queue),
            consumer_tag: ShortString::from(format!("soak-{i}")),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await?;
    match conn.next_method().await? {
        (1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))) => {}
        other => return Err(unexpected("basic.consume-ok", &other)),
    }
    Ok(conn)
}

/// Reads deliveries until `stop` turns true, acknowledging each one (one basic.ack per
/// delivery, written after each read) and sending heartbeats. The caller closes the
/// connection.
///
/// # Errors
/// A socket or framing error, a body of other than `size` bytes, the broker closed the
/// channel or the connection or cancelled the consumer.
async fn consume(
    conn: &mut RawConnection,
    size: usize,
    tally: &Tally,
    rec: &Recorder,
    mut stop: watch::Receiver<bool>,
) -> Result<(), PerfError> {
    let mut out = BytesMut::with_capacity(256);
    let mut state = State::Idle;
    let beat = Duration::from_secs(u64::from(conn.heartbeat.max(1)));
    let mut ticker = tokio::time::interval(beat / 2);
    ticker.tick().await;
    loop {
        let mut delivered = 0u64;
        let mut acks = 0u64;
        while let Some(f) = conn
            .decoder
            .decode(&mut conn.buf)
            .map_err(|e| PerfError::Protocol(format!("undecodable frame: {e}")))?
        {
            let done = match (state, f) {
                (State::Idle, Frame::Method { channel, method }) => {
                    if let AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) = &*method {
                        if d.redelivered {
                            tally.redelivered.fetch_add(1, Ordering::Relaxed);
                        }
                        state = State::Header {
                            tag: d.delivery_tag,
                        };
                    } else {
                        check_close(channel, &method)?;
                    }
                    None
                }
                (State::Header { tag }, Frame::Header { body_size, .. }) => {
                    if body_size != size as u64 {
                        return Err(PerfError::Protocol(format!(
                            "delivery {tag} has {body_size} body bytes, {size} were published"
                        )));
                    }
                    if body_size == 0 {
                        state = State::Idle;
                        Some(tag)
                    } else {
                        state = State::Body {
                            tag,
                            left: body_size,
                            first: true,
                        };
                        None
                    }
                }
                (State::Body { tag, left, first }, Frame::Body { payload, .. }) => {
                    if first {
                        if let Some(stamp) = stamp_of(&payload) {
                            rec.record(tally.counters.now_ns().saturating_sub(stamp));
                        }
                    }
                    let left = left.checked_sub(payload.len() as u64).ok_or_else(|| {
                        PerfError::Protocol(format!("delivery {tag}: more body than announced"))
                    })?;
                    if left == 0 {
                        state = State::Idle;
                        Some(tag)
                    } else {
                        state = State::Body {
                            tag,
                            left,
                            first: false,
                        };
                        None
                    }
                }
                (_, Frame::Heartbeat { .. }) => None,
                (s, f) => {
                    return Err(PerfError::Protocol(format!(
                        "unexpected frame in state {s:?}: {}",
                        match f {
                            Frame::Method { method, .. } => format!("{method:?}"),
                            Frame::Header { .. } => "content header".into(),
                            _ => "content body".into(),
                        }
                    )))
                }
            };
            if let Some(tag) = done {
                delivered += 1;
                acks += 1;
                encode::method(
                    &mut out,
                    1,
                    &AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: tag,
                        multiple: false,
                    })),
                );
            }
        }
        if delivered > 0 {
            tally
                .counters
                .consumed
                .fetch_add(delivered, Ordering::Relaxed);
        }
        if !out.is_empty() {
            conn.stream
                .write_all(&out)
                .await
                .map_err(PerfError::io("socket write"))?;
            out.clear();
            if acks > 0 {
                tally.acked.fetch_add(acks, Ordering::Relaxed);
            }
        }
        if *stop.borrow() {
            break;
        }
        if conn.buf.capacity() - conn.buf.len() < READ_ROOM / 2 {
            conn.buf.reserve(READ_ROOM);
        }
        tokio::select! {
            biased;
            r = stop.changed() => {
                // A dropped sender means the run is over too.
                let _ = r;
                break;
            }
            _ = ticker.tick(), if conn.heartbeat > 0 => encode::heartbeat(&mut out),
            r = conn.stream.read_buf(&mut conn.buf) => {
                let n = r.map_err(PerfError::io("socket read"))?;
                if n == 0 {
                    return Err(PerfError::Protocol("broker closed the socket".into()));
                }
            }
        }
    }
    Ok(())
}

/// Consumer `i` for the whole run: consumes until `stop`, then closes; failures go to
/// the tally (a failed close as a close error).
async fn hold(
    i: usize,
    mut conn: RawConnection,
    size: usize,
    tally: &Tally,
    rec: &Recorder,
    stop: watch::Receiver<bool>,
) {
    match consume(&mut conn, size, tally, rec, stop).await {
        Ok(()) => {
            if let Err(e) = conn.close_within(CLOSE_TIMEOUT).await {
                tally.close_error(format!("consumer {i}: closing: {e}"));
            }
        }
        Err(e) => tally.error(format!("consumer {i}: {e}")),
    }
}

/// Reads the broker's RSS, fds and CPU, and our RSS.
struct Probe {
    pid: Option<u32>,
}

impl Probe {
    fn rss(&self) -> Option<u64> {
        self.pid.and_then(|p| procfs::rss_bytes(p).ok())
    }
    fn fds(&self) -> Option<u64> {
        self.pid.and_then(|p| procfs::open_fds(p).ok())
    }
    fn cpu(&self) -> Option<f64> {
        self.pid.and_then(|p| procfs::cpu_seconds(Some(p)).ok())
    }
    fn client_rss(&self) -> Option<u64> {
        procfs::rss_bytes(std::process::id()).ok()
    }
}

/// Runs the mode.
///
/// # Errors
/// Too low a file descriptor limit, or a connection could not be opened (then the run
/// stops before publishing). Failures once every connection is open are in the report.
pub async fn run(cli: &Cli, n: usize) -> Result<SoakReport, PerfError> {
    let target = Target::parse(&cli.uri)?;
    let publishers = cli.producers;
    let needed = (n + publishers) as u64 + FD_HEADROOM;
    check_fd_limit("warren-perf", procfs::open_files_limit(None)?, needed)?;
    if let Some(pid) = cli.broker_pid {
        // Another user's broker may not let us read its limits; then we do not know.
        if let Ok(limit) = procfs::open_files_limit(Some(pid)) {
            check_fd_limit("the broker", limit, needed)?;
        }
    }
    let probe = Probe {
        pid: cli.broker_pid,
    };
    let prefix = cli.prefix();
    let tally = Arc::new(Tally::new());
    let latency = Recorder::new();
    let confirm_latency = Recorder::new();
    let rss_before = probe.rss();
    let fds_before = probe.fds();

    // Consumers, each held by its own task as soon as it is ready.
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let started = Instant::now();
    let mut opening = JoinSet::new();
    for i in 0..n {
        let (target, permits, queue) = (target.clone(), permits.clone(), queue_name(&prefix, i));
        let prefetch = cli.prefetch;
        opening.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let conn =
                tokio::time::timeout(OPEN_TIMEOUT, open_consumer(&target, &queue, i, prefetch))
                    .await
                    .map_err(|_| PerfError::Timeout(format!("opening consumer {i}")))?
                    .map_err(|e| PerfError::Protocol(format!("consumer {i}: {e}")))?;
            Ok::<_, PerfError>((i, conn))
        });
    }
    let mut holders = JoinSet::new();
    let mut open_error = None;
    let mut opened = 0usize;
    while let Some(r) = opening.join_next().await {
        match r {
            Ok(Ok((i, conn))) => {
                let (tally, rec, stop) = (tally.clone(), latency.clone(), stop_rx.clone());
                let size = cli.size;
                holders.spawn(async move { hold(i, conn, size, &tally, &rec, stop).await });
                opened += 1;
                if !cli.quiet && opened % 1000 == 0 {
                    println!(
                        "{opened} consumers ready after {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            Ok(Err(e)) => {
                open_error.get_or_insert(e);
            }
            Err(e) => {
                open_error.get_or_insert(PerfError::Protocol(format!("open task: {e}")));
            }
        }
    }
    let mut producers = Vec::with_capacity(publishers);
    if open_error.is_none() {
        let queues: Vec<String> = (0..n).map(|i| queue_name(&prefix, i)).collect();
        for i in 0..publishers {
            let p = RawProducer::open_round_robin(
                &target,
                i,
                "",
                queues.clone(),
                first_queue(i, publishers, n),
                cli.confirm.is_some(),
            );
            match tokio::time::timeout(OPEN_TIMEOUT, p).await {
                Ok(Ok(p)) => producers.push(p),
                Ok(Err(e)) => {
                    open_error = Some(PerfError::Protocol(format!("publisher {i}: {e}")));
                    break;
                }
                Err(_) => {
                    open_error = Some(PerfError::Timeout(format!("opening publisher {i}")));
                    break;
                }
            }
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    if let Some(e) = open_error {
        let _ = stop_tx.send(true);
        while holders.join_next().await.is_some() {}
        return Err(e);
    }
    println!(
        "{n} consumers (connection, channel, exclusive queue, consumer each) and \
         {publishers} publishers ready in {open_seconds:.2} s"
    );

    tokio::time::sleep(Duration::from_secs_f64(cli.idle_settle.max(0.0))).await;
    let rss_after_open = probe.rss();
    let fds_after_open = probe.fds();
    let per_connection_bytes = match (rss_before, rss_after_open) {
        (Some(b), Some(a)) => Some((a as f64 - b as f64) / n as f64),
        _ => None,
    };
    if let (Some(a), Some(p)) = (rss_after_open, per_connection_bytes) {
        println!(
            "broker RSS {} after the open: {:.1} KiB per connection",
            human_mib(a),
            p / 1024.0
        );
    }

    // Publishing.
    let start = Instant::now();
    *tally.t0.lock().unwrap_or_else(|e| e.into_inner()) = start;
    let deadline = start + Duration::from_secs_f64(cli.duration);
    let cpu_start = probe.cpu();
    let plan = RawPlan {
        size: cli.size,
        rate: (publishers > 0).then(|| cli.soak_rate / publishers as f64),
        persistent: cli.persistent,
        confirm: cli.confirm,
        auto_ack: false,
        ack_every: 1,
        start,
        deadline,
    };
    let mut publishing = JoinSet::new();
    for p in producers {
        let (plan, tally, rec) = (plan.clone(), tally.clone(), confirm_latency.clone());
        publishing.spawn(async move {
            let id = p.id;
            if let Err(e) = p.run(&plan, &tally.counters, &rec).await {
                tally.error(format!("publisher {id}: {e}"));
            }
        });
    }

    let mut rss_range = Extremes::default();
    let mut fds_range = Extremes::default();
    let mut client_range = Extremes::default();
    rss_range.add(rss_after_open);
    fds_range.add(fds_after_open);
    let mut samples = Vec::new();
    let mut last = tally.counters.snapshot();
    let mut last_t = 0.0;
    let interval = cli.soak_interval.max(1);
    let mut second = 0u64;
    loop {
        second += 1;
        let tick = start + Duration::from_secs(second);
        if tick > deadline {
            break;
        }
        sleep_until(tick.into()).await;
        rss_range.add(probe.rss());
        if second % interval != 0 {
            continue;
        }
        let t = start.elapsed().as_secs_f64();
        let s = sample(&probe, &tally, &latency, cpu_start, t, &last, last_t);
        fds_range.add(s.fds);
        client_range.add(s.client_rss_bytes);
        if !cli.quiet {
            print_sample(&format!("{:6.0} s", s.t_s), &s);
        }
        last = tally.counters.snapshot();
        last_t = t;
        samples.push(s);
    }
    while let Some(r) = publishing.join_next().await {
        if let Err(e) = r {
            tally.error(format!("publisher task: {e}"));
        }
    }
    let duration_s = (Instant::now().min(deadline) - start).as_secs_f64();

    // Drain: every published message delivered.
    let drain_start = Instant::now();
    let drain_until = drain_start + Duration::from_secs_f64(cli.soak_drain);
    loop {
        let s = tally.counters.snapshot();
        if s.consumed >= s.published || Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_range.add(probe.rss());
    }
    let drain_s = drain_start.elapsed().as_secs_f64();
    let end = sample(
        &probe,
        &tally,
        &latency,
        cpu_start,
        start.elapsed().as_secs_f64(),
        &last,
        last_t,
    );
    rss_range.add(end.rss_bytes);
    fds_range.add(end.fds);
    client_range.add(end.client_rss_bytes);
    if !cli.quiet {
        print_sample("   end  ", &end);
    }
    let broker_cpu_cores = end.broker_cpu_s.map(|c| c / end.t_s.max(1e-9));
    let (rss_end, fds_end) = (end.rss_bytes, end.fds);
    samples.push(end);

    let closing = Instant::now();
    let _ = stop_tx.send(true);
    while let Some(r) = holders.join_next().await {
        if let Err(e) = r {
            tally.error(format!("consumer task: {e}"));
        }
    }
    let close_seconds = closing.elapsed().as_secs_f64();

    let totals = tally.counters.snapshot();
    let delivered = totals.consumed;
    let confirms_ok = cli.confirm.is_none() || totals.confirmed == totals.published;
    let all_delivered = delivered == totals.published && totals.nacked == 0 && confirms_ok;
    let error_count = tally.error_count.load(Ordering::Relaxed);
    let errors = tally
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(SoakReport {
        connections: n,
        publishers,
        target_rate: if publishers > 0 { cli.soak_rate } else { 0.0 },
        size: cli.size,
        open_seconds,
        duration_s,
        drain_s,
        rss_before_bytes: rss_before,
        rss_after_open_bytes: rss_after_open,
        rss_min_bytes: rss_range.min,
        rss_max_bytes: rss_range.max,
        rss_end_bytes: rss_end,
        per_connection_bytes,
        fds_before,
        fds_after_open,
        fds_max: fds_range.max,
        fds_end,
        broker_cpu_cores,
        client_rss_max_bytes: client_range.max,
        published: totals.published,
        confirmed: totals.confirmed,
        nacked: totals.nacked,
        delivered,
        acked: tally.acked.load(Ordering::Relaxed),
        redelivered: tally.redelivered.load(Ordering::Relaxed),
        all_delivered,
        latency: Percentiles::from(&whole(&latency)),
        confirm_latency: Percentiles::from(&whole(&confirm_latency)),
        close_seconds,
        close_errors: tally.close_errors.load(Ordering::Relaxed),
        error_count,
        errors,
        samples,
    })
}

fn whole(rec: &Arc<Recorder>) -> Histogram {
    crate::stats::totals(std::slice::from_ref(rec))
}

/// One sample line's numbers; rates are over the time since `last` (taken at `last_t`).
fn sample(
    probe: &Probe,
    tally: &Tally,
    latency: &Arc<Recorder>,
    cpu_start: Option<f64>,
    t: f64,
    last: &crate::stats::Snapshot,
    last_t: f64,
) -> Sample {
    let now = tally.counters.snapshot();
    let d = now.since(last);
    let dt = (t - last_t).max(1e-9);
    let interval_latency = crate::stats::take_intervals(std::slice::from_ref(latency));
    Sample {
        t_s: t,
        rss_bytes: probe.rss(),
        fds: probe.fds(),
        broker_cpu_s: probe.cpu().zip(cpu_start).map(|(now, then)| now - then),
        client_rss_bytes: probe.client_rss(),
        published: now.published,
        confirmed: now.confirmed,
        delivered: now.consumed,
        acked: tally.acked.load(Ordering::Relaxed),
        errors: tally.error_count.load(Ordering::Relaxed),
        publish_rate: d.published as f64 / dt,
        deliver_rate: d.consumed as f64 / dt,
        latency: Percentiles::from(&interval_latency),
    }
}

fn print_sample(label: &str, s: &Sample) {
    let mib = |b: Option<u64>| b.map_or_else(|| "?".to_string(), human_mib);
    println!(
        "{label}  broker RSS {}  fds {}  published {} ({:.0}/s)  delivered {} ({:.0}/s)  \
         p99 {}  errors {}  (client RSS {})",
        mib(s.rss_bytes),
        s.fds.map_or_else(|| "?".to_string(), |f| f.to_string()),
        s.published,
        s.publish_rate,
        s.delivered,
        s.deliver_rate,
        human_ns(s.latency.p99_ns),
        s.errors,
        mib(s.client_rss_bytes),
    );
}

/// Prints the summary.
pub fn print_summary(r: &SoakReport) {
    let mib = |b: Option<u64>| b.map_or_else(|| "?".to_string(), human_mib);
    println!(
        "soak: {} consumer connections + {} publishers, {:.0} s at {:.0} msg/s target, {} B bodies",
        r.connections, r.publishers, r.duration_s, r.target_rate, r.size
    );
    println!(
        "broker RSS before {}, after open {}, min {}, max {}, at end {}",
        mib(r.rss_before_bytes),
        mib(r.rss_after_open_bytes),
        mib(r.rss_min_bytes),
        mib(r.rss_max_bytes),
        mib(r.rss_end_bytes)
    );
    if let Some(p) = r.per_connection_bytes {
        println!(
            "broker memory per connection (channel, queue, consumer): {:.1} KiB",
            p / 1024.0
        );
    }
    let opt = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    println!(
        "broker fds before {}, after open {}, max {}, at end {}; broker CPU {} cores",
        opt(r.fds_before),
        opt(r.fds_after_open),
        opt(r.fds_max),
        opt(r.fds_end),
        r.broker_cpu_cores
            .map_or_else(|| "?".to_string(), |c| format!("{c:.2}"))
    );
    println!(
        "messages: published {}, confirmed {}, nacked {}, delivered {}, acked {}, \
         redelivered {}; all delivered: {} (drain {:.1} s)",
        r.published,
        r.confirmed,
        r.nacked,
        r.delivered,
        r.acked,
        r.redelivered,
        if r.all_delivered { "yes" } else { "NO" },
        r.drain_s
    );
    if r.latency.count > 0 {
        println!(
            "publish-to-deliver latency: p50 {}, p99 {}, max {}",
            human_ns(r.latency.p50_ns),
            human_ns(r.latency.p99_ns),
            human_ns(r.latency.max_ns)
        );
    }
    println!(
        "closed every consumer connection in {:.1} s; close errors: {}",
        r.close_seconds, r.close_errors
    );
    println!("errors: {}", r.error_count);
    for e in &r.errors {
        println!("error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{channel, connection};
    use tokio::net::{TcpListener, TcpStream};
    use warren_codec::FrameDecoder;

    #[test]
    fn extremes_skip_missing_readings() {
        let mut e = Extremes::default();
        e.add(None);
        assert_eq!(e, Extremes::default());
        for v in [5, 3, 9, 4] {
            e.add(Some(v));
        }
        e.add(None);
        assert_eq!((e.min, e.max), (Some(3), Some(9)));
    }

    #[test]
    fn publishers_start_spread_over_the_queues() {
        assert_eq!(
            (0..4)
                .map(|i| first_queue(i, 4, 10_000))
                .collect::<Vec<_>>(),
            [0, 2500, 5000, 7500]
        );
        assert_eq!(first_queue(2, 3, 2), 1);
        assert_eq!(first_queue(0, 0, 5), 0);
    }

    #[test]
    fn fd_limit_check() {
        assert!(check_fd_limit("x", Some(20_000), 10_100).is_ok());
        assert!(check_fd_limit("x", None, 10_100).is_ok());
        let e = check_fd_limit("x", Some(1024), 10_100).unwrap_err();
        assert!(e.to_string().contains("ulimit -n"), "{e}");
    }

    fn deliver(out: &mut BytesMut, tag: u64, redelivered: bool, body: &[u8], frame_max: u32) {
        encode::method(
            out,
            1,
            &AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: ShortString::from("soak-0"),
                delivery_tag: tag,
                redelivered,
                exchange: ShortString::from(""),
                routing_key: ShortString::from("q"),
            })),
        );
        encode::content(out, 1, &encode::EMPTY_PROPERTIES, body, frame_max);
    }

    /// A consumer's connection to a fake broker on a local socket (the handshake is
    /// skipped: the consumer loop starts after consume-ok).
    async fn connected() -> (RawConnection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let conn = RawConnection {
            stream: client.unwrap(),
            buf: BytesMut::with_capacity(4096),
            decoder: FrameDecoder::new(4096),
            heartbeat: 0,
            frame_max: 4096,
        };
        (conn, accepted.unwrap().0)
    }

    /// Reads methods from the consumer until `n` have arrived.
    async fn read_methods(broker: &mut TcpStream, buf: &mut BytesMut, n: usize) -> Vec<AMQPClass> {
        let dec = FrameDecoder::new(0);
        let mut got = Vec::new();
        while got.len() < n {
            while let Some(f) = dec.decode(buf).unwrap() {
                if let Frame::Method { method, .. } = f {
                    got.push(*method);
                }
            }
            if got.len() < n {
                assert!(broker.read_buf(buf).await.unwrap() > 0, "consumer hung up");
            }
        }
        got
    }

    #[tokio::test]
    async fn consumer_acks_every_delivery_then_closes_on_stop() {
        let (conn, mut broker) = connected().await;
        let tally = Arc::new(Tally::new());
        let rec = Recorder::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let size = 5000; // two body frames at frame_max 4096
        let task = {
            let (tally, rec) = (tally.clone(), rec.clone());
            tokio::spawn(async move { hold(0, conn, size, &tally, &rec, stop_rx).await })
        };
        let mut body = vec![7u8; size];
        crate::raw::stamp_body(&mut body, tally.counters.now_ns(), 0);
        let mut out = BytesMut::new();
        for tag in 1..=3 {
            deliver(&mut out, tag, tag == 2, &body, 4096);
        }
        // Cut mid-frame: the consumer must reassemble across reads.
        let rest = out.split_off(out.len() / 2 + 3);
        broker.write_all(&out).await.unwrap();
        broker.write_all(&rest).await.unwrap();
        let mut inbound = BytesMut::new();
        let acks = read_methods(&mut broker, &mut inbound, 3).await;
        let tags: Vec<u64> = acks
            .iter()
            .map(|m| match m {
                AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
                    assert!(!a.multiple);
                    a.delivery_tag
                }
                other => panic!("expected basic.ack, got {other:?}"),
            })
            .collect();
        assert_eq!(tags, [1, 2, 3]);

        stop_tx.send(true).unwrap();
        let close = read_methods(&mut broker, &mut inbound, 1).await;
        assert!(matches!(
            close[0],
            AMQPClass::Connection(connection::AMQPMethod::Close(_))
        ));
        let mut ok = BytesMut::new();
        encode::method(
            &mut ok,
            0,
            &AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        );
        broker.write_all(&ok).await.unwrap();
        task.await.unwrap();
        assert_eq!(tally.error_count.load(Ordering::Relaxed), 0);
        assert_eq!(tally.close_errors.load(Ordering::Relaxed), 0);
        assert_eq!(tally.counters.snapshot().consumed, 3);
        assert_eq!(tally.acked.load(Ordering::Relaxed), 3);
        assert_eq!(tally.redelivered.load(Ordering::Relaxed), 1);
        assert_eq!(whole(&rec).count(), 3);
    }

    #[tokio::test]
    async fn channel_close_and_wrong_body_size_are_errors() {
        let (conn, mut broker) = connected().await;
        let tally = Tally::new();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let mut out = BytesMut::new();
        encode::method(
            &mut out,
            1,
            &AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: 404,
                reply_text: ShortString::from("NOT_FOUND"),
                class_id: 60,
                method_id: 20,
            })),
        );
        broker.write_all(&out).await.unwrap();
        let mut conn = conn;
        let e = consume(&mut conn, 16, &tally, &Recorder::new(), stop_rx.clone())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("404"), "{e}");

        let (mut conn, mut broker) = connected().await;
        let mut out = BytesMut::new();
        deliver(&mut out, 1, false, &[0u8; 15], 4096);
        broker.write_all(&out).await.unwrap();
        let e = consume(&mut conn, 16, &tally, &Recorder::new(), stop_rx)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("15 body bytes"), "{e}");
        assert_eq!(tally.counters.snapshot().consumed, 0);
    }
}
